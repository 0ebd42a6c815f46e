"""Debian's translated package descriptions (the DDTP `Translation-XX` indexes): every
description is keyed by the md5 of its English text (`Description-md5`), so the English
(`Translation-en`) and a translation with the same key are the same description. The
short descriptions pair with each other; the long ones pair paragraph by paragraph (and
list item by list item) when both have the same number of them.

Their licence is NOT stated anywhere (descriptions are written by package maintainers and
translated by the DDTP), so the source is opt-in (`--sources ...,debian-descriptions`) and
the data card says so.

The indexes are fetched with apt's own client into a private folder (the system's apt
lists are not touched): `apt-get update -o Dir::State::Lists=DIR -o Acquire::Languages=en,
de,...`, with the Packages indexes switched off; they are read with `apt-helper cat-file`,
which undoes apt's compression.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from training.corpus.debian import Package, PackageError
from training.corpus.sentences import split_pair

log = logging.getLogger(__name__)

PREFIX = "i18n:"  # the extractor asks the fetcher for "i18n:en,de,fr"
APT_HELPER = Path("/usr/lib/apt/apt-helper")
_ITEM = re.compile(r"^\s*[*+-]\s+")


def fetch(languages: list[str], folder: Path) -> Package | None:
    """Download the `Translation-*` indexes of `languages` (English included) into
    `folder` with `apt-get update` (needs root); None when apt fails."""
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        raise PackageError("apt-get not found: the corpus builder needs a Debian/Ubuntu host")
    (folder / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    wanted = ",".join(dict.fromkeys(["en", *languages]))
    result = subprocess.run(
        [
            apt_get, "update", "-q",
            f"-o=Dir::State::Lists={folder / 'lists'}",
            f"-o=Dir::Cache={folder / 'cache'}",
            f"-o=Acquire::Languages={wanted}",
            "-o=Acquire::IndexTargets::deb::Packages::DefaultEnabled=false",
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    if result.returncode != 0:
        log.warning("apt-get update (Translation indexes) failed: %s", result.stderr[-300:])
        return None
    return Package(f"Translation-{wanted}", release_date(folder / "lists"), "not stated", folder)


def release_date(lists: Path) -> str:
    """The suites and `Date:`s of the `*_InRelease` files in `lists` whose suite has a
    `Translation-*` index there (the version of the indexes read)."""
    dates = []
    for path in sorted(lists.glob("*_InRelease")):
        suite = path.name.removesuffix("_InRelease")
        if not list(lists.glob(f"{suite}_*_i18n_Translation-*")):
            continue
        match = re.search(r"^Date:\s*(.+)$", path.read_text(errors="replace"), re.M)
        dates.append(f"{suite.split('_dists_')[-1]} {match.group(1).strip() if match else '?'}")
    return "; ".join(dates) or "unknown"


def read_index(path: Path) -> str:
    """The text of an index file, decompressed by `apt-helper cat-file` when compressed."""
    if path.suffix in {".lz4", ".gz", ".xz", ".bz2", ".zst", ".lzma"}:
        if not APT_HELPER.is_file():
            raise PackageError(f"{APT_HELPER} not found: cannot read {path.name}")
        return subprocess.run(
            [str(APT_HELPER), "cat-file", str(path)], capture_output=True, text=True, check=True
        ).stdout
    return path.read_text(encoding="utf-8", errors="replace")


def descriptions(text: str, language: str) -> dict[str, str]:
    """{Description-md5: the `Description-<language>` field (first line, then the long
    description lines)} of one index."""
    found: dict[str, str] = {}
    field = f"Description-{language}:"
    for stanza in text.split("\n\n"):
        md5, lines, inside = None, [], False
        for line in stanza.splitlines():
            if line.startswith("Description-md5:"):
                md5 = line.split(":", 1)[1].strip()
                inside = False
            elif line.startswith(field):
                lines, inside = [line[len(field) :].strip()], True
            elif inside and line.startswith(" "):
                lines.append(line[1:])
            else:
                inside = False
        if md5 and lines:
            found[md5] = "\n".join(lines)
    return found


def blocks(description: str) -> list[str]:
    """The short description, then each paragraph (` .` separates them) and list item of
    the long description, whitespace collapsed."""
    first, *rest = description.split("\n")
    out, current = [first.strip()], []
    for line in rest:
        if line.strip() == ".":
            out.append(" ".join(current))
            current = []
        elif _ITEM.match(line):
            out.append(" ".join(current))
            current = [_ITEM.sub("", line)]
        else:
            current.append(line.strip())
    out.append(" ".join(current))
    return [" ".join(block.split()) for block in out if block.strip()]


def index_files(folder: Path, language: str) -> list[Path]:
    """The `*_i18n_Translation-<language>[.ext]` files under `folder` (any depth)."""
    return sorted(folder.rglob(f"*_i18n_Translation-{language}*"))


def language_descriptions(folder: Path, language: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in index_files(folder, language):
        merged.update(descriptions(read_index(path), language))
    return merged


def aligned_pairs(english: dict[str, str], other: dict[str, str]) -> Iterator[tuple[str, str]]:
    """(english, translation) of every description key in both, block by block when the
    block counts agree (else the short descriptions only)."""
    for md5, translated in other.items():
        source = english.get(md5)
        if not source:
            continue
        left, right = blocks(source), blocks(translated)
        if len(left) != len(right):
            left, right = left[:1], right[:1]
        for en, xx in zip(left, right):
            yield from split_pair(en, xx)
