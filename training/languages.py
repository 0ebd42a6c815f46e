"""Language codes: stsb-multi-mt uses ISO 639-1 (`de`), Tatoeba uses ISO 639-3 (`deu`)."""

from __future__ import annotations

ISO1_TO_TATOEBA = {
    "ar": "ara",
    "de": "deu",
    "en": "eng",
    "es": "spa",
    "fr": "fra",
    "it": "ita",
    "ja": "jpn",
    "nl": "nld",
    "pl": "pol",
    "pt": "por",
    "ru": "rus",
    "tr": "tur",
    "uk": "ukr",
    "zh": "cmn",
}


def tatoeba_code(language: str) -> str:
    """`de` -> `deu`; a three-letter code passes through unchanged."""
    if len(language) == 3:
        return language
    try:
        return ISO1_TO_TATOEBA[language]
    except KeyError:
        raise ValueError(
            f"no Tatoeba code known for language '{language}'; "
            f"known: {', '.join(sorted(ISO1_TO_TATOEBA))} (or pass a 3-letter code)"
        ) from None


def parse_languages(value: str | list[str] | None) -> list[str]:
    """`"de, es"` or `["de", "es"]` -> `["de", "es"]` (lower-cased, de-duplicated)."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    seen: list[str] = []
    for item in items:
        code = item.strip().lower()
        if code and code not in seen:
            seen.append(code)
    return seen
