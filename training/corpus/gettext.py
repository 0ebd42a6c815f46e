"""English -> translation pairs from gettext message catalogues (`.mo` / `.po`, read with
`polib`): the `libreoffice-l10n-XX` UI catalogues and other `*-l10n` / `*-locales`
packages that ship `<locale>/LC_MESSAGES/*.mo`. UI strings are mostly short fragments;
markup, format placeholders, plural and fuzzy entries are dropped here, short ones later."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import polib

log = logging.getLogger(__name__)

PACKAGE_CODES = {"pt": ["pt", "pt-br"], "zh": ["zh-cn"]}
# locale regions accepted for a language (None: any); zh_TW/zh_HK are traditional script
REGIONS = {"zh": {"", "cn", "sg"}}
# format placeholders, markup, escapes, URLs: not sentences a user would embed
NOT_PROSE = re.compile(r"%[-+ #0-9.]*[a-zA-Z]|%\d|\$\(|\$\w|\{|\}|<|>|\\|https?://|\|")


def package_names(language: str) -> list[str]:
    """`de` -> ["libreoffice-l10n-de"]; `pt` -> pt and pt-br; `zh` -> zh-cn."""
    return [f"libreoffice-l10n-{code}" for code in PACKAGE_CODES.get(language, [language])]


def locale_language(locale: str) -> str | None:
    """`de_AT` -> de, `pt-BR` -> pt, `zh_CN` -> zh, `zh_TW` -> None, `sr@latin` -> None."""
    if "@" in locale:
        return None
    base, _, region = locale.replace("-", "_").partition("_")
    base, region = base.lower(), region.lower()
    allowed = REGIONS.get(base)
    if allowed is not None and region not in allowed:
        return None
    return base or None


def catalogues(root: Path, language: str) -> list[Path]:
    """Every `<locale>/LC_MESSAGES/*.mo|*.po` under `root` whose locale is `language`."""
    found = []
    for path in sorted(root.rglob("LC_MESSAGES/*")):
        if path.suffix in {".mo", ".po"} and locale_language(path.parent.parent.name) == language:
            found.append(path)
    return found


def _strip_accelerator(text: str, marker: str | None) -> str:
    """Remove the catalogue's accelerator marker (`~` in LibreOffice) and the GTK `_File`
    / Qt `&File` marks at the start of a word."""
    if marker:
        text = text.replace(marker, "")
    return re.sub(r"(?<!\w)[_&](?=\w)", "", text)


def catalogue_pairs(path: Path) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of one catalogue: translated, not fuzzy, not plural, no markup or
    placeholders; accelerator marks removed, whitespace collapsed."""
    try:
        catalogue = polib.mofile(str(path)) if path.suffix == ".mo" else polib.pofile(str(path))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.warning("cannot read catalogue %s: %s", path, exc)
        return
    marker = catalogue.metadata.get("X-Accelerator-Marker") or None
    for entry in catalogue:
        if entry.obsolete or "fuzzy" in entry.flags or entry.msgid_plural or not entry.msgstr:
            continue
        if NOT_PROSE.search(entry.msgid) or NOT_PROSE.search(entry.msgstr):
            continue
        english = " ".join(_strip_accelerator(entry.msgid, marker).split())
        other = " ".join(_strip_accelerator(entry.msgstr, marker).split())
        if english and other:
            yield english, other
