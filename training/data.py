"""Readers for parallel (English -> translation) training data.

Every reader returns a `ParallelCorpus`: (english, text, language) triples, where a
triple with language "en" trains student(en) onto teacher(en). Malformed lines are
reported with file:line and skipped with a count, never trained on.

Formats (`--train` / `--dev`, repeatable):
- `*.tsv` / `*.tsv.gz`: `english<TAB>translation[<TAB>translation...]` per line (the
  sentence-transformers parallel-sentences format); the language is taken from the file
  name (`...-en-de.tsv.gz` -> de) or, failing that, reported as "xx";
- a folder in the stsb-multi-mt layout (`stsb-<lang>-<split>.csv`, rows aligned across
  languages, or the data root that holds `stsb-multi-mt/`), with `--languages`;
- `hf:<dataset>[:<config>]`: a hub dataset with `english`/`non_english` columns.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


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

    def capped(self, max_per_language: int | None) -> ParallelCorpus:
        """At most `max_per_language` triples of each language (first ones kept)."""
        if not max_per_language:
            return self
        counts: Counter = Counter()
        kept = []
        for triple in self.triples:
            if counts[triple[2]] < max_per_language:
                counts[triple[2]] += 1
                kept.append(triple)
        return ParallelCorpus(kept, list(self.problems))


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
                line = raw.decode("utf-8").rstrip("\r\n")
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
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        decoded = text.decode("utf-8", errors="replace")
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
        return read_stsb_parallel(path, languages, split=split)
    if path.name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz")):
        return read_parallel_tsv(path)
    if not path.exists():
        raise DataError(f"training data not found: {path}")
    raise DataError(f"unsupported training data {path}: expected .tsv[.gz], a folder or hf:<name>")


def read_sources(
    sources: list[str],
    languages: list[str],
    max_per_language: int | None = None,
    split: str = "train",
) -> ParallelCorpus:
    """All sources merged, capped per language, problems logged (first ten shown)."""
    corpus = ParallelCorpus()
    for source in sources:
        corpus.extend(read_parallel(source, languages, split))
    corpus = corpus.capped(max_per_language)
    if corpus.problems:
        log.warning("skipped %d malformed line(s):", corpus.skipped)
        for problem in corpus.problems[:10]:
            log.warning("  %s", problem)
    if not corpus.triples:
        raise DataError(f"no usable sentence pairs in {', '.join(map(str, sources))}")
    return corpus
