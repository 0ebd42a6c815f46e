"""Evaluate a sentence-embedding model: STS (mono- and cross-lingual), Tatoeba
translation retrieval, and MSE to a teacher; cross-space figures with `--teacher`.

    python -m training.evaluate --model PATH --data ../shared/data \
        --languages de,es,fr,it [--teacher PATH] [--output eval.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy.stats import spearmanr

from training.languages import parse_languages, tatoeba_code

log = logging.getLogger(__name__)
DATA_ENV = "POLYGLOT_DATA"
DEFAULT_LANGUAGES = ["de", "es", "fr", "it"]


class Encoder(Protocol):
    def encode(self, sentences: list[str], **kwargs) -> np.ndarray: ...


# ---------------------------------------------------------------- metrics


def spearman_x100(predicted: np.ndarray, gold: np.ndarray) -> float:
    """Spearman rank correlation x100 (the STS convention)."""
    rho = spearmanr(np.asarray(predicted), np.asarray(gold)).statistic
    return float(rho * 100.0)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of a[i] with b[i] for every row i."""
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return np.sum(a * b, axis=1)


def retrieval_accuracy(queries: np.ndarray, candidates: np.ndarray) -> float:
    """Share (x100) of queries whose nearest candidate by cosine is the aligned row."""
    q = queries / np.clip(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12, None)
    c = candidates / np.clip(np.linalg.norm(candidates, axis=1, keepdims=True), 1e-12, None)
    best = np.argmax(q @ c.T, axis=1)
    return float(np.mean(best == np.arange(len(q))) * 100.0)


def mse_x100(predicted: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error x100, as sentence-transformers' MSEEvaluator reports it."""
    return float(np.mean((np.asarray(predicted) - np.asarray(target)) ** 2) * 100.0)


# ---------------------------------------------------------------- data


def resolve_data_dir(data: str | Path | None) -> Path | None:
    """`--data`, else `$POLYGLOT_DATA`, else `../shared/data` if it exists."""
    for candidate in (data, os.environ.get(DATA_ENV), Path("../shared/data")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def load_sts(data_dir: Path, language: str, split: str = "test", limit: int | None = None):
    """(sentence1, sentence2, score) columns of `stsb-<lang>-<split>.csv` (first `limit` rows)."""
    path = Path(data_dir) / "stsb-multi-mt" / f"stsb-{language}-{split}.csv"
    if not path.exists():
        raise FileNotFoundError(f"STS file not found: {path}")
    s1, s2, scores = [], [], []
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.reader(handle):
            if limit is not None and len(s1) >= limit:
                break
            s1.append(row[0])
            s2.append(row[1])
            scores.append(float(row[2]))
    return s1, s2, np.asarray(scores)


def load_tatoeba(
    data_dir: Path, language: str, limit: int | None = None
) -> tuple[list[str], list[str]]:
    """(sentences in `language`, their English translations), line-aligned."""
    code = tatoeba_code(language)
    base = Path(data_dir) / "tatoeba"
    own, eng = base / f"tatoeba.{code}-eng.{code}", base / f"tatoeba.{code}-eng.eng"
    if not own.exists() or not eng.exists():
        raise FileNotFoundError(f"Tatoeba files not found for '{code}' in {base}")
    xx = own.read_text(encoding="utf-8").splitlines()
    en = eng.read_text(encoding="utf-8").splitlines()
    if len(xx) != len(en):
        raise ValueError(f"{own} and {eng} are not aligned ({len(xx)} vs {len(en)} lines)")
    return xx[:limit], en[:limit]


# ---------------------------------------------------------------- encoding


class CachedEncoder:
    """Encodes with a model, remembering each distinct sentence's vector."""

    def __init__(self, model: Encoder, batch_size: int = 128) -> None:
        self.model, self.batch_size = model, batch_size
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, sentences: list[str]) -> np.ndarray:
        todo = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        if todo:
            vectors = self.model.encode(
                todo, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
            )
            self._cache.update(zip(todo, np.asarray(vectors, dtype=np.float32)))
        return np.stack([self._cache[s] for s in sentences])


# ---------------------------------------------------------------- evaluation


@dataclass
class EvaluationResult:
    sts: dict[str, float] = field(default_factory=dict)  # "en-en", "de-de", "en-de"
    sts_cross_space: dict[str, float] = field(default_factory=dict)  # teacher(en) vs model(xx)
    tatoeba: dict[str, float] = field(default_factory=dict)  # "deu->eng", "eng->deu"
    tatoeba_cross_space: dict[str, float] = field(default_factory=dict)  # model(xx)->teacher(en)
    mse: dict[str, float] = field(default_factory=dict)  # MSE x100 to teacher per language

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: dict(v) for k, v in self.__dict__.items()}


def evaluate_sts(
    encode: CachedEncoder,
    data_dir: Path,
    languages: list[str],
    teacher: CachedEncoder | None = None,
    limit: int | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Monolingual (xx-xx) and cross-lingual (en-xx) STS Spearman x100; with a teacher,
    also sentence1 (English) by the teacher against sentence2 (xx) by the model."""
    mono, cross_space = {}, {}
    en1, en2, gold = load_sts(data_dir, "en", limit=limit)
    mono["en-en"] = spearman_x100(cosine_rows(encode(en1), encode(en2)), gold)
    if teacher is not None:
        cross_space["en-en"] = spearman_x100(cosine_rows(teacher(en1), encode(en2)), gold)
    for lang in languages:
        if lang == "en":
            continue
        if not (Path(data_dir) / "stsb-multi-mt" / f"stsb-{lang}-test.csv").exists():
            log.warning("stsb-multi-mt has no '%s' test file: STS skipped for it", lang)
            continue
        xx1, xx2, _ = load_sts(data_dir, lang, limit=limit)
        mono[f"{lang}-{lang}"] = spearman_x100(cosine_rows(encode(xx1), encode(xx2)), gold)
        mono[f"en-{lang}"] = spearman_x100(cosine_rows(encode(en1), encode(xx2)), gold)
        if teacher is not None:
            cross_space[f"en-{lang}"] = spearman_x100(cosine_rows(teacher(en1), encode(xx2)), gold)
    return mono, cross_space


def evaluate_tatoeba(
    encode: CachedEncoder,
    data_dir: Path,
    languages: list[str],
    teacher: CachedEncoder | None = None,
    limit: int | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Translation retrieval accuracy (%) both ways per language; with a teacher, also
    model(xx) -> teacher(en) (an index built by the teacher answering xx queries)."""
    same, cross_space = {}, {}
    for lang in languages:
        if lang == "en":
            continue
        code = tatoeba_code(lang)
        if not (Path(data_dir) / "tatoeba" / f"tatoeba.{code}-eng.{code}").exists():
            log.warning("tatoeba has no '%s' file: retrieval skipped for it", code)
            continue
        xx, en = load_tatoeba(data_dir, lang, limit)
        xx_vec, en_vec = encode(xx), encode(en)
        same[f"{code}->eng"] = retrieval_accuracy(xx_vec, en_vec)
        same[f"eng->{code}"] = retrieval_accuracy(en_vec, xx_vec)
        if teacher is not None:
            cross_space[f"{code}->eng"] = retrieval_accuracy(xx_vec, teacher(en))
    return same, cross_space


def evaluate_mse(
    encode: CachedEncoder, teacher: CachedEncoder, pairs: list[tuple[str, str, str]]
) -> dict[str, float]:
    """MSE x100 of model(text) to teacher(english), per language of (english, text, lang)."""
    by_lang: dict[str, list[tuple[str, str]]] = {}
    for english, text, lang in pairs:
        by_lang.setdefault(lang, []).append((english, text))
    result = {}
    for lang, items in sorted(by_lang.items()):
        english = [e for e, _ in items]
        texts = [t for _, t in items]
        result[lang] = mse_x100(encode(texts), teacher(english))
    return result


def evaluate_model(
    model: Encoder,
    data_dir: Path | None,
    languages: list[str],
    teacher: Encoder | None = None,
    dev_pairs: list[tuple[str, str, str]] | None = None,
    batch_size: int = 128,
    limit: int | None = None,
) -> EvaluationResult:
    """Run every evaluation the data allows (the first `limit` rows of each set, for quick
    checks); missing data sets, and languages a set does not have (stsb-multi-mt has no
    Turkish, for instance), are skipped with a log line."""
    encode = CachedEncoder(model, batch_size)
    teach = CachedEncoder(teacher, batch_size) if teacher is not None else None
    result = EvaluationResult()
    if data_dir is not None:
        if (Path(data_dir) / "stsb-multi-mt").is_dir():
            result.sts, result.sts_cross_space = evaluate_sts(
                encode, data_dir, languages, teach, limit
            )
        else:
            log.warning("no stsb-multi-mt in %s: STS skipped", data_dir)
        if (Path(data_dir) / "tatoeba").is_dir():
            result.tatoeba, result.tatoeba_cross_space = evaluate_tatoeba(
                encode, data_dir, languages, teach, limit
            )
        else:
            log.warning("no tatoeba in %s: retrieval skipped", data_dir)
    if teach is not None and dev_pairs:
        result.mse = evaluate_mse(encode, teach, dev_pairs)
    return result


def metric_label(group: str, key: str) -> str:
    """A readable row label for one metric of an EvaluationResult group."""
    if group == "sts":
        return f"STS {key}"
    if group == "sts_cross_space":
        return f"STS teacher(en)-model({key.split('-')[-1]})"
    if group == "tatoeba":
        return f"Tatoeba {key}"
    if group == "tatoeba_cross_space":
        return f"Tatoeba model({key.split('->')[0]})->teacher(eng)"
    return f"MSE x100 {key}"


def markdown_table(results: dict[str, EvaluationResult]) -> str:
    """One column per evaluated model, one row per metric."""
    names = list(results)
    rows: dict[str, list[str]] = {}
    for col, res in enumerate(results.values()):
        for group, values in res.to_dict().items():
            for key, value in values.items():
                cell = f"{value:.3f}" if group == "mse" else f"{value:.1f}"
                rows.setdefault(metric_label(group, key), [""] * len(names))[col] = cell
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(vals) + " |" for label, vals in rows.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Evaluate a sentence-embedding model.")
    parser.add_argument("--model", required=True, help="model folder or hub id")
    parser.add_argument("--data", help=f"data folder (default: ${DATA_ENV} or ../shared/data)")
    parser.add_argument("--languages", default=",".join(DEFAULT_LANGUAGES))
    parser.add_argument("--teacher", help="teacher model for cross-space figures and MSE")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--limit", type=int, help="only the first N rows of each set (quick look)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    from sentence_transformers import SentenceTransformer

    data_dir = resolve_data_dir(args.data)
    if data_dir is None:
        parser.error("no data folder: pass --data or set POLYGLOT_DATA")
    model = SentenceTransformer(args.model)
    teacher = SentenceTransformer(args.teacher) if args.teacher else None
    result = evaluate_model(
        model,
        data_dir,
        parse_languages(args.languages),
        teacher,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    print(markdown_table({Path(args.model).name or args.model: result}))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
