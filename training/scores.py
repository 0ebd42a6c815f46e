"""Evaluate a sentence-embedding model on the evaluation sets: STS (mono- and
cross-lingual), Tatoeba translation retrieval, MSE to a teacher and named parallel sets;
cross-space figures with a teacher. Every figure comes from `training.metrics`; the data
from `training.testsets`; the tables and the command line are `training.evaluate`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from training.languages import tatoeba_code
from training.metrics import mse_x100, retrieval_accuracy, sts_spearman
from training.testsets import load_sts, load_tatoeba

log = logging.getLogger(__name__)


class Encoder(Protocol):
    def encode(self, sentences: list[str], **kwargs) -> np.ndarray: ...


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
    mono["en-en"] = sts_spearman(encode(en1), encode(en2), gold)
    if teacher is not None:
        cross_space["en-en"] = sts_spearman(teacher(en1), encode(en2), gold)
    for lang in languages:
        if lang == "en":
            continue
        if not (Path(data_dir) / "stsb-multi-mt" / f"stsb-{lang}-test.csv").exists():
            log.warning("stsb-multi-mt has no '%s' test file: STS skipped for it", lang)
            continue
        xx1, xx2, _ = load_sts(data_dir, lang, limit=limit)
        mono[f"{lang}-{lang}"] = sts_spearman(encode(xx1), encode(xx2), gold)
        mono[f"en-{lang}"] = sts_spearman(encode(en1), encode(xx2), gold)
        if teacher is not None:
            cross_space[f"en-{lang}"] = sts_spearman(teacher(en1), encode(xx2), gold)
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
