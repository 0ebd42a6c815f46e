"""Evaluate a sentence-embedding model: STS (mono- and cross-lingual), Tatoeba
translation retrieval, and MSE to a teacher; cross-space figures with `--teacher`.

    python -m training.evaluate --model PATH --data ../shared/data \
        --languages de,es,fr,it [--teacher PATH] [--output eval.json]

Named parallel evaluation sets (`--parallel-dev docs=corpus/cpu-recipe`: the held-out
`dev/` split a `python -m training.corpus build` folder holds, or any folder or file of
English<TAB>translation TSV) add translation retrieval and MSE to the teacher on text of
another domain than stsb and Tatoeba (documentation, for instance).
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


def retrieval_accuracy(
    queries: np.ndarray, candidates: np.ndarray, gold: np.ndarray | None = None
) -> float:
    """Share (x100) of queries (n, d) whose nearest candidate (m, d) by cosine is the right
    one: candidate `gold[i]` for query i (n indices), or the aligned row i without `gold`."""
    q = queries / np.clip(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12, None)
    c = candidates / np.clip(np.linalg.norm(candidates, axis=1, keepdims=True), 1e-12, None)
    best = np.argmax(q @ c.T, axis=1)
    target = np.arange(len(q)) if gold is None else np.asarray(gold)
    return float(np.mean(best == target) * 100.0)


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


def parse_parallel_dev(spec: str) -> tuple[str, Path]:
    """`NAME=PATH` -> (NAME, PATH); a bare PATH is named after its folder (`corpus/docs` and
    `corpus/docs/dev` -> "docs"). Raises ValueError on an empty name or path."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = "", spec
    folder = Path(path)
    if not name:
        name = (folder.parent if folder.name == "dev" else folder).name
    if not name or not path:
        raise ValueError(f"--parallel-dev expects NAME=PATH or PATH, got {spec!r}")
    return name, folder


def load_parallel_dev(path: str | Path, languages: list[str]) -> list[tuple[str, str, str]]:
    """(english, translation, language) triples of a held-out parallel set, for the
    `languages` it has: a corpus folder (its `dev/` split, as `python -m training.corpus
    build` writes it), a folder of `*-en-xx.tsv[.gz]` files, or one such file. Raises
    `training.data.DataError` when nothing usable is found."""
    from training import data

    path = Path(path)
    if path.is_dir() and (path / "dev").is_dir():
        corpus = data.read_tsv_folder(path, languages, split="dev")
    elif path.is_dir() and (path / "train").is_dir():
        raise data.DataError(f"{path} has a train/ split but no dev/: not evaluating on it")
    elif path.is_dir():
        corpus = data.read_tsv_folder(path, languages, split="train")  # the folder's own files
    else:
        corpus = data.read_parallel_tsv(path)
    for problem in corpus.problems[:10]:
        log.warning("skipped %s", problem)
    triples = [t for t in corpus.triples if t[2] in languages]
    if not triples:
        raise data.DataError(f"no pairs for {', '.join(languages)} in {path}")
    missing = sorted(set(languages) - {t[2] for t in triples} - {"en"})
    if missing:
        log.warning("%s has no pairs for %s: skipped in that set", path, ", ".join(missing))
    return triples


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
    # named parallel sets (--parallel-dev), keys "<set>:<code>->eng" and "<set>:<lang>"
    parallel_retrieval: dict[str, float] = field(default_factory=dict)  # model(xx)->model(en)
    parallel_retrieval_cross_space: dict[str, float] = field(default_factory=dict)  # ->teacher
    parallel_mse: dict[str, float] = field(default_factory=dict)  # MSE x100 to teacher(en)

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


def evaluate_parallel_set(
    name: str,
    encode: CachedEncoder,
    triples: list[tuple[str, str, str]],
    teacher: CachedEncoder | None = None,
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Translation retrieval (%) model(xx) -> model(en) per language of (english, text,
    lang) triples, the candidates being the language's distinct English sentences (a
    sentence with two translations is one candidate); with a teacher, also model(xx) ->
    teacher(en) and MSE x100 of model(xx) to teacher(en). Keys "<name>:<code>->eng" for
    retrieval, "<name>:<lang>" for MSE."""
    by_lang: dict[str, list[tuple[str, str, str]]] = {}
    for triple in triples:
        by_lang.setdefault(triple[2], []).append(triple)
    same, cross_space, mse = {}, {}, {}
    for lang, items in sorted(by_lang.items()):
        english = list(dict.fromkeys(e for e, _, _ in items))
        gold = np.array([english.index(e) for e, _, _ in items])
        queries = encode([t for _, t, _ in items])
        key = f"{name}:{tatoeba_code(lang)}->eng"
        same[key] = retrieval_accuracy(queries, encode(english), gold)
        if teacher is not None:
            cross_space[key] = retrieval_accuracy(queries, teacher(english), gold)
            mse[f"{name}:{lang}"] = mse_x100(queries, teacher([e for e, _, _ in items]))
    return same, cross_space, mse


def evaluate_model(
    model: Encoder,
    data_dir: Path | None,
    languages: list[str],
    teacher: Encoder | None = None,
    dev_pairs: list[tuple[str, str, str]] | None = None,
    batch_size: int = 128,
    limit: int | None = None,
    parallel_sets: dict[str, list[tuple[str, str, str]]] | None = None,
) -> EvaluationResult:
    """Run every evaluation the data allows (the first `limit` rows of each set, for quick
    checks); missing data sets, and languages a set does not have (stsb-multi-mt has no
    Turkish, for instance), are skipped with a log line. `parallel_sets` maps a set's name
    to its (english, text, lang) triples (`load_parallel_dev`), evaluated whole (no
    `limit`) with `evaluate_parallel_set`."""
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
    for name, triples in (parallel_sets or {}).items():
        same, cross_space, mse = evaluate_parallel_set(name, encode, triples, teach)
        result.parallel_retrieval.update(same)
        result.parallel_retrieval_cross_space.update(cross_space)
        result.parallel_mse.update(mse)
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
    if group.startswith("parallel_"):
        name, _, rest = key.rpartition(":")
        if group == "parallel_retrieval":
            return f"{name} retrieval {rest}"
        if group == "parallel_retrieval_cross_space":
            return f"{name} retrieval model({rest.split('->')[0]})->teacher(eng)"
        return f"{name} MSE x100 {rest}"
    return f"MSE x100 {key}"


def markdown_table(results: dict[str, EvaluationResult]) -> str:
    """One column per evaluated model, one row per metric."""
    names = list(results)
    rows: dict[str, list[str]] = {}
    for col, res in enumerate(results.values()):
        for group, values in res.to_dict().items():
            for key, value in values.items():
                cell = f"{value:.3f}" if group.endswith("mse") else f"{value:.1f}"
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
    parser.add_argument(
        "--parallel-dev",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="a named held-out parallel set: a corpus folder (its dev/ split), a folder of "
        "*-en-xx.tsv[.gz] files or one file; repeatable (e.g. docs=corpus/cpu-recipe)",
    )
    parser.add_argument(
        "--parallel-dev-only",
        action="store_true",
        help="evaluate only the --parallel-dev sets (no stsb, Tatoeba)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    languages = parse_languages(args.languages)
    if args.parallel_dev_only and not args.parallel_dev:
        parser.error("--parallel-dev-only needs at least one --parallel-dev")
    try:
        parallel_sets = dict(
            (name, load_parallel_dev(path, languages))
            for name, path in map(parse_parallel_dev, args.parallel_dev)
        )
    except ValueError as exc:  # DataError is a ValueError
        parser.error(str(exc))

    from sentence_transformers import SentenceTransformer

    data_dir = None if args.parallel_dev_only else resolve_data_dir(args.data)
    if data_dir is None and not args.parallel_dev_only:
        parser.error("no data folder: pass --data or set POLYGLOT_DATA")
    model = SentenceTransformer(args.model)
    teacher = SentenceTransformer(args.teacher) if args.teacher else None
    result = evaluate_model(
        model,
        data_dir,
        languages,
        teacher,
        batch_size=args.batch_size,
        limit=args.limit,
        parallel_sets=parallel_sets,
    )
    print(markdown_table({Path(args.model).name or args.model: result}))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result.to_dict(), indent=2))


if __name__ == "__main__":
    main()
