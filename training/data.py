"""Readers for parallel (English -> translation) training data.

Every reader returns a `ParallelCorpus`: (english, text, language) triples, where a
triple with language "en" trains student(en) onto teacher(en). Malformed lines are
reported with file:line and skipped with a count, never trained on.

Formats (`--train` / `--dev`, repeatable):
- `*.tsv` / `*.tsv.gz`: `english<TAB>translation[<TAB>translation...]` per line (the
  sentence-transformers parallel-sentences format); the language is taken from the file
  name (`...-en-de.tsv.gz` -> de) or, failing that, reported as "xx";
- a folder of such TSV files (what `python -m training.corpus build` writes: `train/` and
  `dev/` subfolders of `corpus.en-xx.tsv.gz`), the files of `--languages` read;
- a folder in the stsb-multi-mt layout (`stsb-<lang>-<split>.csv`, rows aligned across
  languages, or the data root that holds `stsb-multi-mt/`), with `--languages`;
- `hf:<dataset>[:<config>]`: a hub dataset with `english`/`non_english` columns.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class DataError(ValueError):
    """Training data that cannot be used at all (missing file, unknown language)."""


@dataclass
class ParallelCorpus:
    """English sentences paired with their translations."""

    triples: list[tuple[str, str, str]] = field(default_factory=list)  # (english, text, lang)
    problems: list[str] = field(default_factory=list)  # "file:line: reason"

    @property
    def skipped(self) -> int:
        return len(self.problems)

    def extend(self, other: ParallelCorpus) -> None:
        self.triples.extend(other.triples)
        self.problems.extend(other.problems)

    def languages(self) -> Counter:
        return Counter(lang for _, _, lang in self.triples)

    def english(self) -> list[str]:
        """Distinct English sentences, in first-seen order."""
        return list(dict.fromkeys(e for e, _, _ in self.triples))

    def training_samples(self, include_english: bool = True) -> list[tuple[str, str]]:
        """(text, english) samples: each distinct English sentence once (student(en) ->
        teacher(en)) and every distinct translation (student(xx) -> teacher(en))."""
        samples: dict[tuple[str, str], None] = {}
        if include_english:
            for english in self.english():
                samples[(english, english)] = None
        for english, text, _ in self.triples:
            samples[(text, english)] = None
        return list(samples)

    def capped(self, max_per_language: int | None, seed: int = 42) -> ParallelCorpus:
        """At most `max_per_language` triples of each language, drawn uniformly at random
        (seeded, so a run is reproducible) from the whole of each language's data, never
        its first rows: files are often ordered by genre. Kept triples stay in file order."""
        if not max_per_language:
            return self
        kept = sample_per_language(self.triples, lambda t: t[2], max_per_language, seed)
        return ParallelCorpus(kept, list(self.problems))


def sample_per_language(
    items: list[T], language_of: Callable[[T], str], per_language: int, seed: int
) -> list[T]:
    """At most `per_language` items of each language, drawn uniformly at random from all of
    that language's items (seeded: languages in sorted order, one `random.Random(seed)`),
    kept in their original order."""
    rng = random.Random(seed)
    by_language: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_language.setdefault(language_of(item), []).append(index)
    keep: set[int] = set()
    for language in sorted(by_language):
        indices = by_language[language]
        keep.update(rng.sample(indices, min(per_language, len(indices))))
    return [item for index, item in enumerate(items) if index in keep]


def _clean(text: str) -> str:
    return " ".join(text.split())


def _language_from_name(path: Path) -> str:
    match = re.search(r"[-_.]en[-_]([a-z]{2,3})(?:[-_.]|$)", path.name)
    return match.group(1) if match else "xx"


def read_parallel_tsv(path: Path, language: str | None = None) -> ParallelCorpus:
    """`english<TAB>translation...` lines from a .tsv or .tsv.gz file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"training file not found: {path}")
    lang = language or _language_from_name(path)
    corpus = ParallelCorpus()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            try:
                # utf-8-sig on the first line: a BOM is not part of the first sentence
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                corpus.problems.append(
                    f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                )
                continue
            if not line.strip():
                continue
            columns = [_clean(c) for c in line.split("\t")]
            if len(columns) < 2:
                corpus.problems.append(f"{where}: expected english<TAB>translation, got 1 column")
                continue
            english, translations = columns[0], columns[1:]
            if not english or not all(translations):
                corpus.problems.append(f"{where}: empty sentence")
                continue
            corpus.triples.extend((english, t, lang) for t in translations)
    return corpus


def _stsb_dir(path: Path) -> Path:
    return path / "stsb-multi-mt" if (path / "stsb-multi-mt").is_dir() else path


def available_stsb_languages(path: Path, split: str = "train") -> list[str]:
    folder = _stsb_dir(Path(path))
    return sorted(p.name.split("-")[1] for p in folder.glob(f"stsb-*-{split}.csv"))


def _read_stsb_rows(path: Path, corpus: ParallelCorpus) -> list[tuple[str, str] | None]:
    rows: list[tuple[str, str] | None] = []
    text = path.read_bytes()
    try:
        decoded = text.decode("utf-8-sig")
    except UnicodeDecodeError:
        decoded = text.decode("utf-8-sig", errors="replace")
    for number, row in enumerate(csv.reader(io.StringIO(decoded, newline="")), start=1):
        where = f"{path}:{number}"
        if len(row) < 2:
            corpus.problems.append(f"{where}: expected sentence1,sentence2,score")
            rows.append(None)
            continue
        s1, s2 = _clean(row[0]), _clean(row[1])
        if "\ufffd" in s1 + s2:
            corpus.problems.append(f"{where}: not valid UTF-8")
            rows.append(None)
        elif not s1 or not s2:
            corpus.problems.append(f"{where}: empty sentence")
            rows.append(None)
        else:
            rows.append((s1, s2))
    return rows


def read_stsb_parallel(path: Path, languages: list[str], split: str = "train") -> ParallelCorpus:
    """Aligned English/translated sentences of the stsb-multi-mt `split` (train only for
    training: never pass dev or test rows here). Language "en" adds en-en samples only."""
    folder = _stsb_dir(Path(path))
    english_file = folder / f"stsb-en-{split}.csv"
    if not english_file.is_file():
        raise DataError(f"not an stsb-multi-mt folder (no {english_file.name}): {folder}")
    available = available_stsb_languages(folder, split)
    unknown = [lang for lang in languages if lang not in available]
    if unknown:
        raise DataError(
            f"unknown language(s) {', '.join(unknown)} for {folder}; available: "
            f"{', '.join(available)}"
        )
    corpus = ParallelCorpus()
    english_rows = _read_stsb_rows(english_file, corpus)
    for lang in languages:
        if lang == "en":
            corpus.triples.extend((s, s, "en") for row in english_rows if row for s in row)
            continue
        lang_file = folder / f"stsb-{lang}-{split}.csv"
        rows = _read_stsb_rows(lang_file, corpus)
        if len(rows) != len(english_rows):
            raise DataError(
                f"{lang_file} has {len(rows)} rows but {english_file.name} has "
                f"{len(english_rows)}: the files are not aligned"
            )
        for en_row, xx_row in zip(english_rows, rows):
            if en_row and xx_row:
                corpus.triples.extend((en, xx, lang) for en, xx in zip(en_row, xx_row))
    return corpus


def read_hf_parallel(
    spec: str, languages: list[str], max_rows: int | None = None
) -> ParallelCorpus:
    """`hf:<dataset>[:<config>]` with `english` and `non_english` columns (needs the hub)."""
    from datasets import load_dataset

    name, _, config = spec.removeprefix("hf:").partition(":")
    corpus = ParallelCorpus()
    configs = [config] if config else [f"en-{lang}" for lang in languages if lang != "en"]
    for cfg in configs:
        try:
            dataset = load_dataset(name, cfg, split="train")
        except Exception as exc:  # noqa: BLE001 - the hub raises many kinds
            raise DataError(f"cannot load hub dataset {name} ({cfg}): {exc}") from exc
        lang = cfg.split("-")[-1]
        for number, row in enumerate(dataset, start=1):
            if max_rows and number > max_rows:
                break
            english, other = _clean(row.get("english", "")), _clean(row.get("non_english", ""))
            if english and other:
                corpus.triples.append((english, other, lang))
            else:
                corpus.problems.append(f"{spec}/{cfg}:{number}: empty sentence")
    return corpus


TSV_SUFFIXES = (".tsv", ".tsv.gz", ".txt", ".txt.gz")


def read_tsv_folder(path: Path, languages: list[str], split: str = "train") -> ParallelCorpus:
    """Every `*.tsv[.gz]` of a folder such as `python -m training.corpus build` writes
    (`DIR/<split>/*-en-xx.tsv.gz`, else `DIR/*.tsv.gz` for the train split), keeping the
    files whose language (from the name) is in `languages` (all when empty)."""
    folder = Path(path) / split if (Path(path) / split).is_dir() else Path(path)
    if folder == Path(path) and split != "train":
        raise DataError(f"{path} has no {split}/ folder of TSV files")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(TSV_SUFFIXES))
    chosen = [p for p in files if not languages or _language_from_name(p) in languages]
    if not chosen:
        found = ", ".join(sorted({_language_from_name(p) for p in files})) or "none"
        raise DataError(
            f"no TSV file for language(s) {', '.join(languages)} in {folder}; found: {found}"
        )
    corpus = ParallelCorpus()
    for file in chosen:
        corpus.extend(read_parallel_tsv(file))
    return corpus


def _has_tsv(path: Path) -> bool:
    return any(
        p.name.endswith(TSV_SUFFIXES)
        for folder in (path, path / "train")
        if folder.is_dir()
        for p in folder.iterdir()
    )


def read_parallel(source: str | Path, languages: list[str], split: str = "train") -> ParallelCorpus:
    """Read one `--train`/`--dev` source, choosing the reader by its form; a folder
    source reads its `split` (train for `--train`, dev for `--dev`)."""
    text = str(source)
    if text.startswith("hf:"):
        return read_hf_parallel(text, languages)
    path = Path(source)
    if path.is_dir():
        if not languages:
            raise DataError(f"{path} is a folder: name its languages with --languages de,es,...")
        if not (_stsb_dir(path) / f"stsb-en-{split}.csv").is_file() and _has_tsv(path):
            return read_tsv_folder(path, languages, split=split)
        return read_stsb_parallel(path, languages, split=split)
    if path.name.endswith(TSV_SUFFIXES):
        return read_parallel_tsv(path)
    if not path.exists():
        raise DataError(f"training data not found: {path}")
    raise DataError(f"unsupported training data {path}: expected .tsv[.gz], a folder or hf:<name>")


def read_sources(
    sources: list[str],
    languages: list[str],
    max_per_language: int | None = None,
    split: str = "train",
    seed: int = 42,
) -> ParallelCorpus:
    """All sources merged, capped per language (a seeded random sample), problems logged
    (first ten shown)."""
    corpus = ParallelCorpus()
    for source in sources:
        corpus.extend(read_parallel(source, languages, split))
    corpus = corpus.capped(max_per_language, seed)
    if corpus.problems:
        log.warning("skipped %d malformed line(s):", corpus.skipped)
        for problem in corpus.problems[:10]:
            log.warning("  %s", problem)
    if not corpus.triples:
        raise DataError(f"no usable sentence pairs in {', '.join(map(str, sources))}")
    return corpus
