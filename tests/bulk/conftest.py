"""Bulk-job fixtures: small corpora in every input format, the job's settings (fp32 ONNX in
the session's export cache), and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.bulk.batch import EmbedOptions
from service.bulk.job import JobConfig

ROOT = Path(__file__).resolve().parents[2]

SENTENCES = [
    "A man is playing a guitar.",
    "Der Hund spielt im Garten.",
    "Un avión está despegando.",
    "北京是中国的首都。",
    "The quick brown fox jumps over the lazy dog.",
    "emoji 🙂🚀 and symbols ∑∫",
    "A woman slices a tomato in the kitchen.",
    "Les enfants jouent dans le parc.",
]


def corpus(n: int) -> list[dict]:
    """n small documents with unique ids; every 5th is two sentences long."""
    rows = []
    for i in range(n):
        text = f"{SENTENCES[i % len(SENTENCES)]} Item {i}."
        if i % 5 == 0:
            text += f" A second sentence for document {i} adds more words to it."
        rows.append({"id": f"doc-{i:04d}", "text": text})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=50)
    return path


@pytest.fixture(scope="session")
def job_settings(cache_dir) -> dict:
    """Settings overrides of every job in these tests: fp32 ONNX in the session cache."""
    return {"cache_dir": str(cache_dir), "onnx_file": "model.onnx"}


@pytest.fixture
def make_config(job_settings, tmp_path):
    def make(inputs, **kwargs) -> JobConfig:
        options = kwargs.pop("options", EmbedOptions(batch_size=8))
        kwargs.setdefault("output", tmp_path / "out")
        kwargs.setdefault("progress", False)
        return JobConfig(inputs=[str(p) for p in inputs], options=options,
                         settings=dict(job_settings), **kwargs)  # fmt: skip

    return make


def cli(*args: str, cache_dir: Path, check: bool = True, **popen) -> subprocess.CompletedProcess:
    """`python -m service.bulk ARGS` with the tests' model settings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EMBED_CACHE_DIR": str(cache_dir),
           "EMBED_ONNX_FILE": "model.onnx"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "service.bulk", *args], env=env, capture_output=True, text=True,
        timeout=600, **popen,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}: {result.stderr[-3000:]}")
    return result


def cli_env(cache_dir: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EMBED_CACHE_DIR": str(cache_dir),
            "EMBED_ONNX_FILE": "model.onnx"}  # fmt: skip


# five unrelated documents, one a query can find by topic (the search tests)
SEARCH_DOCS = [
    {"id": "cats", "text": "Cats sleep most of the day and purr when they are happy."},
    {"id": "rust", "text": "Rust is a systems programming language with a borrow checker."},
    {"id": "bread", "text": "Knead the dough, let it rise, then bake the bread for an hour."},
    {"id": "moon", "text": "The Moon orbits the Earth about once every 27 days."},
    {"id": "hund", "text": "Der Hund bellt laut, wenn jemand an der Tür klingelt."},
]
