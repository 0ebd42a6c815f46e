"""Readers of the evaluation data sets: the STS Benchmark and its translations
(stsb-multi-mt), the Tatoeba translation pairs, and named held-out parallel sets
(`--parallel-dev`). Paths and file layouts: ../shared/data/README.md."""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import numpy as np

from training.languages import tatoeba_code

log = logging.getLogger(__name__)
DATA_ENV = "POLYGLOT_DATA"


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
