"""Aligned paragraphs of the LibreOffice offline help (`libreoffice-help-en-us` and
`libreoffice-help-XX`, MPL-2.0): every help page exists in every language under the same
path, and its headings and paragraphs carry the same `id` (`par_id...`, `hd_id...`), so
(page, id, occurrence) pairs an English paragraph with its translation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import lxml.html

log = logging.getLogger(__name__)

ID_PREFIXES = ("par_id", "hd_id")
PARSER = lxml.html.HTMLParser(encoding="utf-8")  # the help is UTF-8, meta tag or not
# our language code -> the help package suffixes that translate into it
PACKAGE_CODES = {"pt": ["pt", "pt-br"], "zh": ["zh-cn"]}


def package_names(language: str) -> list[str]:
    """`de` -> ["libreoffice-help-de"]; `pt` -> pt and pt-br; `zh` -> zh-cn (simplified)."""
    return [f"libreoffice-help-{code}" for code in PACKAGE_CODES.get(language, [language])]


def help_root(package_root: Path) -> Path | None:
    """The language folder of an unpacked help package (`.../help/de`, `.../help/pt-BR`)."""
    base = package_root / "usr" / "share" / "libreoffice" / "help"
    folders = [p for p in base.glob("*") if (p / "text").is_dir()] if base.is_dir() else []
    return folders[0] if len(folders) == 1 else None


def _clean(text: str) -> str:
    return " ".join(text.split())


def paragraphs(page: Path) -> Iterator[tuple[str, str]]:
    """(key, text) for the id'd headings and paragraphs of one help page. A paragraph with
    hidden platform variants (the macOS/other menu paths) is skipped: its visible text is
    chosen by JavaScript, so the text content would mix both."""
    try:
        tree = lxml.html.parse(str(page), parser=PARSER)
    except (OSError, ValueError) as exc:
        log.warning("cannot parse %s: %s", page, exc)
        return
    seen: dict[str, int] = {}
    for element in tree.iter():
        element_id = element.get("id") if isinstance(element.tag, str) else None
        if not element_id or not element_id.startswith(ID_PREFIXES):
            continue
        occurrence = seen.get(element_id, 0)
        seen[element_id] = occurrence + 1
        if element.xpath(".//*[@hidden]"):
            continue
        text = _clean(element.text_content())
        if text:
            yield f"{element_id}#{occurrence}", text


def read_tree(root: Path) -> dict[tuple[str, str], str]:
    """{(page path relative to the language folder, key): text} for every .html page."""
    texts = {}
    for page in sorted((root / "text").rglob("*.html")):
        relative = str(page.relative_to(root))
        for key, text in paragraphs(page):
            texts[(relative, key)] = text
    return texts


def aligned_pairs(english_root: Path, other_root: Path) -> Iterator[tuple[str, str]]:
    """(english, translation) for every paragraph present in both trees."""
    english = read_tree(english_root)
    other = read_tree(other_root)
    for key, text in english.items():
        translation = other.get(key)
        if translation:
            yield text, translation
