"""Benchmark texts: real sentences from stsb-multi-mt when the shared data is there,
otherwise a built-in sample. Short = one sentence (~12 tokens); passage = ~128 tokens."""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path

from service.parity import SAMPLE


def resolve_data_dir(data: str | Path | None) -> Path | None:
    """`--data`, else `$POLYGLOT_DATA`, else `../shared/data` if it exists (the lookup of
    training.evaluate.resolve_data_dir, here so that the serving benchmarks need no
    training code)."""
    for candidate in (data, os.environ.get("POLYGLOT_DATA"), Path("../shared/data")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def sentences(data: str | None = None, limit: int = 4000) -> list[str]:
    data_dir = resolve_data_dir(data)
    if data_dir is None:
        return list(SAMPLE)
    out: list[str] = []
    for lang in ("en", "de", "es", "fr"):
        path = data_dir / "stsb-multi-mt" / f"stsb-{lang}-test.csv"
        if path.exists():
            with path.open(encoding="utf-8", newline="") as handle:
                for row in csv.reader(handle):
                    out.extend(row[:2])
    return out[:limit] or list(SAMPLE)


def passages(source: list[str], words: int = 95) -> list[str]:
    """Consecutive sentences joined to about `words` words (~128 tokens)."""
    out, current = [], []
    for sentence in itertools.islice(itertools.cycle(source), len(source) * 2):
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= words:
            out.append(" ".join(current))
            current = []
    return out


def texts(kind: str, data: str | None = None) -> list[str]:
    base = sentences(data)
    return base if kind == "short" else passages(base)


__all__ = ["texts", "sentences", "passages", "Path"]
