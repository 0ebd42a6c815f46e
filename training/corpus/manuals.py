"""Aligned prose of translated books and manuals that Debian ships as one folder per
language with the same pages in each:

- `debian-handbook` (GPL-2+ / CC-BY-SA-3.0): Publican HTML, `html/<ll-CC>/*.html`;
- `installation-guide-amd64` (GPL-2+): DocBook HTML, `<ll>/*.html`;
- `gnome-user-docs` (CC-BY-SA-3.0): Mallard XML, `help/<ll>/<guide>/*.page` (English: `C`).

The translations are made with po4a / itstool, which translate element by element and
keep the document structure, so the k-th text block of a page pairs with the k-th block
of the same page in another language. A page whose block counts differ is skipped (the
count is logged), never aligned by guesswork. Paragraph pairs are split into sentence
pairs when both sides have the same number of sentences (`sentences.split_pair`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lxml.etree
import lxml.html

from training.corpus.gettext import locale_language
from training.corpus.sentences import split_pair

log = logging.getLogger(__name__)

HTML_PARSER = lxml.html.HTMLParser(encoding="utf-8")
XML_PARSER = lxml.etree.XMLParser(recover=True, resolve_entities=False, no_network=True)
# Publican (`div.para`) and DocBook (`p`) paragraphs, headings, definition terms
HTML_BLOCKS = "//div[@class='para'] | //p | //h1 | //h2 | //h3 | //h4 | //h5 | //dt"
MALLARD_BLOCKS = {"title", "subtitle", "desc", "p"}
# Mallard elements whose text is not part of the translated page (translator credits,
# editors' comments that itstool does not translate)
MALLARD_SKIP = {"credit", "comment"}


def _clean(text: str) -> str:
    return " ".join(text.split())


def html_blocks(page: Path) -> list[str]:
    """Text of the paragraphs, headings and definition terms of an HTML page, in order."""
    try:
        tree = lxml.html.parse(str(page), parser=HTML_PARSER)
    except (OSError, ValueError) as exc:
        log.warning("cannot parse %s: %s", page, exc)
        return []
    return [_clean(element.text_content()) for element in tree.xpath(HTML_BLOCKS)]


def mallard_blocks(page: Path) -> list[str]:
    """Text of the titles, descriptions and paragraphs of a Mallard page, in order,
    without translator credits and editors' comments."""
    try:
        tree = lxml.etree.parse(str(page), parser=XML_PARSER)
    except (OSError, lxml.etree.XMLSyntaxError) as exc:
        log.warning("cannot parse %s: %s", page, exc)
        return []
    blocks = []
    for element in tree.iter():
        if not isinstance(element.tag, str):
            continue
        if lxml.etree.QName(element).localname not in MALLARD_BLOCKS:
            continue
        if any(
            isinstance(a.tag, str) and lxml.etree.QName(a).localname in MALLARD_SKIP
            for a in element.iterancestors()
        ):
            continue
        blocks.append(_clean("".join(element.itertext())))
    return blocks


@dataclass(frozen=True)
class Manual:
    """Where a package keeps its per-language folders and how to read a page."""

    package: str
    base: str  # folder under the package root holding one folder per language
    english: str  # the English folder's name
    pattern: str  # pages, relative to a language folder
    blocks: Callable[[Path], list[str]]

    def folders(self, package_root: Path, language: str) -> list[Path]:
        """The language folders of `language` (`de-DE`, `pt_BR`, ...), sorted."""
        base = package_root / self.base
        if not base.is_dir():
            return []
        return sorted(
            path
            for path in base.iterdir()
            if path.is_dir()
            and path.name != self.english
            and locale_language(path.name) == language
        )

    def english_folder(self, package_root: Path) -> Path | None:
        folder = package_root / self.base / self.english
        return folder if folder.is_dir() else None


MANUALS = {
    "debian-handbook": Manual(
        "debian-handbook", "usr/share/doc/debian-handbook/html", "en-US", "*.html", html_blocks
    ),
    "installation-guide-amd64": Manual(
        "installation-guide-amd64",
        "usr/share/doc/installation-guide-amd64",
        "en",
        "*.html",
        html_blocks,
    ),
    "gnome-user-docs": Manual("gnome-user-docs", "usr/share/help", "C", "*/*.page", mallard_blocks),
}


@dataclass
class AlignStats:
    """Pages aligned, and pages skipped because their block counts differ."""

    pages: int = 0
    mismatched: int = 0


def aligned_pairs(
    english: Path, other: Path, manual: Manual, stats: AlignStats | None = None
) -> Iterator[tuple[str, str]]:
    """(english, translation) sentence or paragraph pairs of every page present in both
    folders with the same number of text blocks; empty blocks are skipped."""
    stats = stats if stats is not None else AlignStats()
    for page in sorted(english.glob(manual.pattern)):
        translated = other / page.relative_to(english)
        if not translated.is_file():
            continue
        left, right = manual.blocks(page), manual.blocks(translated)
        if len(left) != len(right):
            stats.mismatched += 1
            log.debug("%s: %d blocks in English, %d translated", translated, len(left), len(right))
            continue
        stats.pages += 1
        for en, xx in zip(left, right):
            if en and xx:
                yield from split_pair(en, xx)
