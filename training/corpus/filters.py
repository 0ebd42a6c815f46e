"""The filters every candidate pair goes through, each counting what it removed per
source and language (the data card lists the counts).

Order: English length, minimum words of UI strings, untranslated copies, script of the
translation, length ratio, evaluation-set overlap, exact duplicates, translations per
English sentence; then the share of UI strings is capped per language.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

# the scripts a translation's letters must mostly be in; Latin for languages not listed
SCRIPTS = {
    "ru": {"CYRILLIC"},
    "uk": {"CYRILLIC"},
    "bg": {"CYRILLIC"},
    "zh": {"CJK"},
    "ja": {"CJK", "HIRAGANA", "KATAKANA"},
    "ko": {"HANGUL", "CJK"},
    "ar": {"ARABIC"},
    "el": {"GREEK"},
    "he": {"HEBREW"},
}
CHARACTER_RATIO_LANGUAGES = {"zh", "ja"}  # no spaces between words: compare characters


@dataclass
class FilterConfig:
    """Bounds of the filters; the data card records them."""

    min_english_words: int = 3
    max_english_words: int = 60
    min_ui_words: int = 5  # English side of a gettext (UI) string
    word_ratio: tuple[float, float] = (0.5, 2.0)  # translation words / English words
    character_ratio: tuple[float, float] = (0.15, 1.0)  # zh/ja characters / English ones
    min_script_share: float = 0.5  # of the translation's letters, in the language's script
    max_translations_per_english: int = 3
    max_ui_share: float = 0.3  # of a language's pairs, at most this share from UI strings


@dataclass
class Pair:
    english: str
    text: str
    language: str
    source: str  # "libreoffice-help", "gettext", ...
    ui: bool = False  # a UI message (gettext): the min-words filter and the share cap apply


@dataclass
class FilterStats:
    """removed[(source, language, filter)] = number of pairs that filter dropped."""

    removed: Counter = field(default_factory=Counter)

    def drop(self, pair: Pair, reason: str) -> None:
        self.removed[(pair.source, pair.language, reason)] += 1

    def by_source(self) -> dict[str, dict[str, dict[str, int]]]:
        """{source: {filter: {language: count}}}, JSON-ready."""
        table: dict = {}
        for (source, language, reason), count in sorted(self.removed.items()):
            table.setdefault(source, {}).setdefault(reason, {})[language] = count
        return table


def normalise(text: str) -> str:
    """Comparison key: case-folded, punctuation and spacing removed."""
    return " ".join(re.sub(r"[\W_]+", " ", text.casefold()).split())


def script_share(text: str, scripts: set[str]) -> float:
    """Share of the letters of `text` whose Unicode name starts with one of `scripts`."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    hits = sum(unicodedata.name(ch, "?").split(" ")[0] in scripts for ch in letters)
    return hits / len(letters)


def length_ratio(pair: Pair) -> float:
    if pair.language in CHARACTER_RATIO_LANGUAGES:
        return len(pair.text.replace(" ", "")) / max(1, len(pair.english.replace(" ", "")))
    return len(pair.text.split()) / max(1, len(pair.english.split()))


def first_failure(pair: Pair, config: FilterConfig, evaluation: set[str]) -> str | None:
    """The name of the first per-pair filter `pair` fails, or None when it passes."""
    words = len(pair.english.split())
    if not config.min_english_words <= words <= config.max_english_words:
        return "english_length"
    if pair.ui and words < config.min_ui_words:
        return "ui_min_words"
    english_key, text_key = normalise(pair.english), normalise(pair.text)
    if not text_key or english_key == text_key:
        return "untranslated"
    scripts = SCRIPTS.get(pair.language, {"LATIN"})
    if script_share(pair.text, scripts) < config.min_script_share:
        return "script"
    low, high = (
        config.character_ratio if pair.language in CHARACTER_RATIO_LANGUAGES else config.word_ratio
    )
    if not low <= length_ratio(pair) <= high:
        return "length_ratio"
    if english_key in evaluation or text_key in evaluation:
        return "evaluation_overlap"
    return None


def filter_pairs(
    pairs: list[Pair], config: FilterConfig, evaluation: set[str], stats: FilterStats
) -> list[Pair]:
    """The per-pair filters, exact-duplicate removal and the cap on translations per
    English sentence (per language), in input order."""
    kept: list[Pair] = []
    seen: set[tuple[str, str, str]] = set()
    per_english: Counter = Counter()
    for pair in pairs:
        reason = first_failure(pair, config, evaluation)
        key = (pair.language, normalise(pair.english), normalise(pair.text))
        if reason is None and key in seen:
            reason = "duplicate"
        if reason is None and per_english[key[:2]] >= config.max_translations_per_english:
            reason = "translations_per_english"
        if reason:
            stats.drop(pair, reason)
            continue
        seen.add(key)
        per_english[key[:2]] += 1
        kept.append(pair)
    return kept


def cap_ui_share(
    pairs: list[Pair], config: FilterConfig, stats: FilterStats, seed: int
) -> list[Pair]:
    """Per language, keep at most `max_ui_share` of the pairs from UI strings (a seeded
    random sample of them): ui <= share / (1 - share) * other pairs."""
    by_language: dict[str, list[int]] = {}
    for index, pair in enumerate(pairs):
        if pair.ui:
            by_language.setdefault(pair.language, []).append(index)
    others = Counter(pair.language for pair in pairs if not pair.ui)
    drop: set[int] = set()
    rng = random.Random(seed)
    share = config.max_ui_share
    for language in sorted(by_language):
        indices = by_language[language]
        allowed = int(share / (1 - share) * others[language]) if share < 1 else len(indices)
        if len(indices) > allowed:
            drop.update(rng.sample(indices, len(indices) - allowed))
    for index in sorted(drop):
        stats.drop(pairs[index], "ui_share_cap")
    return [pair for index, pair in enumerate(pairs) if index not in drop]


def filter_english(
    sentences: list[Pair], config: FilterConfig, evaluation: set[str], stats: FilterStats
) -> list[Pair]:
    """English-only sentences (pairs of language "en" whose text is the English): the
    English length bounds, the evaluation-set overlap and duplicates (case and punctuation
    ignored, across all English-only sources), in input order."""
    kept: list[Pair] = []
    seen: set[str] = set()
    for pair in sentences:
        words = len(pair.english.split())
        key = normalise(pair.english)
        if not config.min_english_words <= words <= config.max_english_words:
            reason = "english_length"
        elif key in evaluation:
            reason = "evaluation_overlap"
        elif key in seen:
            reason = "duplicate"
        else:
            seen.add(key)
            kept.append(pair)
            continue
        stats.drop(pair, reason)
    return kept
