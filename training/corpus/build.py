"""Build the parallel corpus: fetch the packages of each source, extract candidate pairs,
filter them, split a small dev share off by English sentence, and write the TSV files
(`train/corpus.en-xx.tsv.gz`, `dev/...`, `train/corpus.en-en.tsv.gz` for the en->en term)
plus the data card (`DATA_CARD.md`, `data_card.json`)."""

from __future__ import annotations

import gzip
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.corpus import gettext, libreoffice_help
from training.corpus.debian import Package, fetch
from training.corpus.evalsets import evaluation_sentences
from training.corpus.filters import (
    FilterConfig,
    FilterStats,
    Pair,
    cap_ui_share,
    filter_pairs,
    normalise,
)

log = logging.getLogger(__name__)

SOURCES = ("libreoffice-help", "libreoffice-l10n")
LICENCE_NOTE = {
    "libreoffice-help": "MPL-2.0 (LibreOffice help; see each package's copyright file)",
    "libreoffice-l10n": "MPL-2.0 (LibreOffice UI translations)",
}
Fetcher = Callable[[str], "Package | None"]


@dataclass
class BuildConfig:
    """What to build; `python -m training.corpus build` fills it from the command line."""

    languages: list[str]
    output: Path
    sources: tuple[str, ...] = SOURCES
    data_dir: Path | None = None  # evaluation sets to exclude (stsb dev/test, Tatoeba)
    dev_per_language: int = 500
    max_train_per_language: int | None = None  # a balanced, seeded random sample
    seed: int = 42
    filters: FilterConfig = field(default_factory=FilterConfig)


@dataclass
class SourceReport:
    """Per source: the packages read and the raw pairs they gave per language."""

    packages: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    candidates: Counter = field(default_factory=Counter)


def _fetch_all(names: list[str], fetcher: Fetcher, report: SourceReport) -> list[Package]:
    found = []
    for name in names:
        package = fetcher(name)
        if package is None:
            report.missing.append(name)
        else:
            report.packages.append(package.card())
            found.append(package)
    return found


def help_pairs(languages: list[str], fetcher: Fetcher, report: SourceReport) -> list[Pair]:
    """Aligned LibreOffice help paragraphs for every language."""
    english = _fetch_all(["libreoffice-help-en-us"], fetcher, report)
    english_root = libreoffice_help.help_root(english[0].root) if english else None
    if english_root is None:
        log.warning("no English LibreOffice help: skipping the source")
        return []
    pairs = []
    for language in languages:
        for package in _fetch_all(libreoffice_help.package_names(language), fetcher, report):
            root = libreoffice_help.help_root(package.root)
            if root is None:
                log.warning("%s has no help folder", package.name)
                continue
            for en, xx in libreoffice_help.aligned_pairs(english_root, root):
                pairs.append(Pair(en, xx, language, "libreoffice-help"))
                report.candidates[language] += 1
        log.info("libreoffice-help %s: %d candidate pairs", language, report.candidates[language])
    return pairs


def gettext_pairs(languages: list[str], fetcher: Fetcher, report: SourceReport) -> list[Pair]:
    """msgid -> msgstr of the LibreOffice UI catalogues for every language."""
    pairs = []
    for language in languages:
        for package in _fetch_all(gettext.package_names(language), fetcher, report):
            for catalogue in gettext.catalogues(package.root, language):
                for en, xx in gettext.catalogue_pairs(catalogue):
                    pairs.append(Pair(en, xx, language, "libreoffice-l10n", ui=True))
                    report.candidates[language] += 1
        log.info("libreoffice-l10n %s: %d candidate pairs", language, report.candidates[language])
    return pairs


EXTRACTORS = {"libreoffice-help": help_pairs, "libreoffice-l10n": gettext_pairs}


def split_dev(pairs: list[Pair], per_language: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, dev): per language, pairs of randomly chosen English sentences until about
    `per_language` dev pairs; a dev English sentence leaves the train split in every
    language, so no dev sentence is ever trained on."""
    rng = random.Random(seed)
    by_language: dict[str, dict[str, int]] = {}
    for pair in pairs:
        counts = by_language.setdefault(pair.language, {})
        key = normalise(pair.english)
        counts[key] = counts.get(key, 0) + 1
    dev_english: set[tuple[str, str]] = set()
    for language in sorted(by_language):
        english = sorted(by_language[language])
        rng.shuffle(english)
        taken = 0
        for key in english:
            if taken >= per_language:
                break
            dev_english.add((language, key))
            taken += by_language[language][key]
    dev_keys = {key for _, key in dev_english}
    dev = [p for p in pairs if (p.language, normalise(p.english)) in dev_english]
    train = [p for p in pairs if normalise(p.english) not in dev_keys]
    return train, dev


def sample_train(pairs: list[Pair], per_language: int | None, seed: int) -> list[Pair]:
    """At most `per_language` train pairs of each language, drawn uniformly at random
    (seeded) from all of that language's pairs, kept in their original order; all pairs
    when `per_language` is None. Used for a balanced sample that fits a training budget."""
    if not per_language:
        return pairs
    rng = random.Random(seed)
    by_language: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        by_language.setdefault(pair.language, []).append(index)
    keep: set[int] = set()
    for language in sorted(by_language):
        indices = by_language[language]
        keep.update(rng.sample(indices, min(per_language, len(indices))))
    return [pair for index, pair in enumerate(pairs) if index in keep]


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    """`english<TAB>translation` lines, gzip-compressed, UTF-8 without BOM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for english, text in rows:
            handle.write(f"{english}\t{text}\n")


def write_corpus(output: Path, train: list[Pair], dev: list[Pair]) -> dict[str, dict]:
    """The TSV files; returns {split: {language: pairs written}}."""
    counts: dict[str, dict] = {"train": {}, "dev": {}}
    for split, pairs in (("train", train), ("dev", dev)):
        for language in sorted({p.language for p in pairs}):
            rows = [(p.english, p.text) for p in pairs if p.language == language]
            write_tsv(output / split / f"corpus.en-{language}.tsv.gz", rows)
            counts[split][language] = len(rows)
    dev_english = {normalise(p.english) for p in dev}
    english = {}
    for pair in train:
        key = normalise(pair.english)
        if key not in dev_english:
            english.setdefault(key, pair.english)
    write_tsv(output / "train" / "corpus.en-en.tsv.gz", [(e, e) for e in english.values()])
    counts["train"]["en"] = len(english)
    return counts


def build(config: BuildConfig, fetcher: Fetcher = fetch, command: str = "") -> dict:
    """Run the whole build; returns the data card as a dict (also written to disk)."""
    started = time.time()
    evaluation, eval_files = (
        evaluation_sentences(config.data_dir) if config.data_dir else (set(), [])
    )
    if not evaluation:
        log.warning("no evaluation sets found: the evaluation-overlap filter does nothing")
    reports: dict[str, SourceReport] = {}
    candidates: list[Pair] = []
    for source in config.sources:
        reports[source] = SourceReport()
        candidates += EXTRACTORS[source](config.languages, fetcher, reports[source])
    stats = FilterStats()
    kept = filter_pairs(candidates, config.filters, evaluation, stats)
    kept = cap_ui_share(kept, config.filters, stats, config.seed)
    train, dev = split_dev(kept, config.dev_per_language, config.seed)
    available = dict(Counter(p.language for p in train))
    train = sample_train(train, config.max_train_per_language, config.seed)
    counts = write_corpus(config.output, train, dev)
    card = {
        "command": command,
        "languages": config.languages,
        "seed": config.seed,
        "wall_time_s": round(time.time() - started, 1),
        "pairs": counts,
        "pairs_by_source": {
            source: dict(Counter(p.language for p in train if p.source == source))
            for source in config.sources
        },
        "sources": {
            source: {
                "licence": LICENCE_NOTE[source],
                "packages": report.packages,
                "missing_packages": report.missing,
                "candidate_pairs": dict(report.candidates),
            }
            for source, report in reports.items()
        },
        "filters": {**asdict(config.filters), "removed": stats.by_source()},
        "evaluation_sets_excluded": eval_files,
        "dev_per_language": config.dev_per_language,
        "max_train_per_language": config.max_train_per_language,
        "train_pairs_before_sampling": available,
    }
    from training.corpus.card import write_data_card

    write_data_card(config.output, card)
    return card
