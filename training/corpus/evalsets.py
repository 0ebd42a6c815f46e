"""Sentences of the evaluation sets, so that no training pair contains one: the
stsb-multi-mt dev and test splits (every language) and Tatoeba (every file)."""

from __future__ import annotations

import csv
from pathlib import Path

from training.corpus.filters import normalise


def evaluation_sentences(data_dir: Path) -> tuple[set[str], list[str]]:
    """(normalised sentences, the files read) from `data_dir`'s `stsb-multi-mt/` dev and
    test CSVs and `tatoeba/` files. Empty when the folder has none of them."""
    keys: set[str] = set()
    files: list[str] = []
    stsb = Path(data_dir) / "stsb-multi-mt"
    for path in sorted(stsb.glob("stsb-*-dev.csv")) + sorted(stsb.glob("stsb-*-test.csv")):
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.reader(handle):
                keys.update(normalise(cell) for cell in row[:2])
        files.append(str(path))
    for path in sorted((Path(data_dir) / "tatoeba").glob("tatoeba.*-eng.*")):
        keys.update(normalise(line) for line in path.read_text(encoding="utf-8").splitlines())
        files.append(str(path))
    keys.discard("")
    return keys, files
