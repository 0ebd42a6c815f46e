"""The LanceDB sink (upsert by id, meta refusal, ANN index past its threshold) and search
over both the Parquet output and the LanceDB table, as a function and as the CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from service.bulk.batch import EmbedOptions, fixed_size_vectors
from service.bulk.job import run_embed
from service.bulk.output import read_output
from service.bulk.schema import output_schema
from service.bulk.search import search
from service.bulk.sinks import Sink, SinkMismatchError, open_sink
from service.bulk.sinks.lancedb import TABLE, LanceDBSink, has_index
from tests.bulk.conftest import SEARCH_DOCS, cli, write_jsonl

META = {"model": "m", "fingerprint": "f" * 64, "variant": "model.onnx", "dim": 16,
        "options": {"include_text": False}}  # fmt: skip


def _rows(ids: list[str], seed: int, dim: int = 16) -> pa.Table:
    vectors = np.random.default_rng(seed).normal(size=(len(ids), dim)).astype(np.float32)
    n = len(ids)
    columns = {"id": ids, "doc_id": ids, "chunk_index": pa.array([0] * n, pa.int32()),
               "char_start": pa.array([0] * n, pa.int64()),
               "char_end": pa.array([1] * n, pa.int64()),
               "vector": fixed_size_vectors(vectors)}  # fmt: skip
    return pa.table(columns, schema=output_schema(dim, False))


def test_lancedb_sink_upserts_by_id_and_refuses_other_meta(tmp_path):
    sink = open_sink(f"lancedb:{tmp_path / 'db'}")
    assert isinstance(sink, LanceDBSink) and isinstance(sink, Sink)
    sink.open(META, 16, overwrite=False)
    sink.write(_rows([f"r{i}" for i in range(10)], 0))
    sink.write(_rows([f"r{i}" for i in range(5, 15)], 1))  # a shard written again, overlapping
    sink.close()
    stored = sink.table.to_arrow()
    assert sorted(stored.column("id").to_pylist()) == sorted(f"r{i}" for i in range(15))
    again = LanceDBSink(tmp_path / "db")
    again.open(META, 16, overwrite=False)  # same meta: reopened, rows kept
    assert again.table.count_rows() == 15
    other = {**META, "fingerprint": "0" * 64}
    with pytest.raises(SinkMismatchError, match="fingerprint: stored 'ffff"):
        LanceDBSink(tmp_path / "db").open(other, 16, overwrite=False)
    rebuilt = LanceDBSink(tmp_path / "db")
    rebuilt.open(other, 16, overwrite=True)
    assert rebuilt.table.count_rows() == 0
    with pytest.raises(ValueError, match="expected lancedb:PATH or a postgresql"):
        open_sink("mysql://x")


def test_lancedb_builds_an_ann_index_once_the_table_is_large_enough(tmp_path):
    small = LanceDBSink(tmp_path / "small", index_min_rows=300)
    small.open(META, 16, overwrite=False)
    small.write(_rows([f"r{i}" for i in range(200)], 0))
    small.close()
    assert not has_index(small.table)
    large = LanceDBSink(tmp_path / "large", index_min_rows=300)
    large.open(META, 16, overwrite=False)
    large.write(_rows([f"r{i}" for i in range(600)], 0))
    large.close()
    assert has_index(large.table)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, job_settings):
    from service.bulk.job import JobConfig

    root = tmp_path_factory.mktemp("indexed")
    path = write_jsonl(root / "docs.jsonl", SEARCH_DOCS)
    config = JobConfig(inputs=[str(path)], output=root / "out", id_field="id",
                       sink=f"lancedb:{root / 'db'}", options=EmbedOptions(include_text=True),
                       settings=dict(job_settings), progress=False)  # fmt: skip
    run_embed(config)
    return root


@pytest.mark.parametrize("where", ["parquet", "lancedb"])
def test_search_finds_the_matching_document(indexed, job_settings, where):
    index = indexed / "out" if where == "parquet" else f"lancedb:{indexed / 'db'}"
    hits = search(index, "a pet that purrs and naps", k=3, settings=job_settings)
    assert [h["id"] for h in hits][0] == "cats" and len(hits) == 3
    assert hits[0]["text"] == SEARCH_DOCS[0]["text"]
    assert hits[0]["score"] > hits[1]["score"] >= hits[2]["score"]
    hits = search(index, "Ein bellender Hund an der Tür", k=1, settings=job_settings)
    assert hits[0]["id"] == "hund"


def test_the_lancedb_table_holds_the_parquet_rows(indexed):
    import lancedb

    table = lancedb.connect(str(indexed / "db")).open_table(TABLE).to_arrow().sort_by("id")
    parquet = read_output(indexed / "out").sort_by("id")
    assert table.column("id").to_pylist() == parquet.column("id").to_pylist()
    np.testing.assert_array_equal(
        np.asarray(table.column("vector").to_pylist()),
        np.asarray(parquet.column("vector").to_pylist()),
    )


def test_a_finished_output_run_again_with_a_new_sink_loads_its_rows_into_it(indexed, job_settings):
    """Index once, load into another store later: the same command with another --sink
    embeds nothing and writes the finished shards into that sink."""
    from service.bulk.job import JobConfig, format_summary

    config = JobConfig(inputs=[str(indexed / "docs.jsonl")], output=indexed / "out",
                       id_field="id", sink=f"lancedb:{indexed / 'db2'}",
                       options=EmbedOptions(include_text=True), settings=dict(job_settings),
                       progress=False)  # fmt: skip
    summary = run_embed(config)
    assert summary["already_complete"] and summary["loaded_into_sink"] == len(SEARCH_DOCS)
    assert f"loaded     {len(SEARCH_DOCS)} rows" in format_summary(summary)
    hits = search(f"lancedb:{indexed / 'db2'}", "a pet that purrs and naps", k=1,
                  settings=job_settings)  # fmt: skip
    assert hits[0]["id"] == "cats"


def test_search_cli_prints_json_lines_and_both_indexes_agree(indexed, cache_dir):
    lines = {}
    for index in (str(indexed / "out"), str(indexed / "db")):
        result = cli("search", "--index", index, "--query", "how to bake bread", "--k", "2",
                     cache_dir=cache_dir)  # fmt: skip
        hits = [json.loads(line) for line in result.stdout.splitlines()]
        assert [set(h) >= {"id", "score", "text"} for h in hits] == [True, True]
        lines[index] = hits
    first, second = lines.values()
    assert first[0]["id"] == second[0]["id"] == "bread"
    assert [h["id"] for h in first] == [h["id"] for h in second]
    assert abs(first[0]["score"] - second[0]["score"]) < 1e-5
    missing = cli("search", "--index", str(indexed / "nothing"), "--query", "x",
                  cache_dir=cache_dir, check=False)  # fmt: skip
    assert missing.returncode == 1 and "no manifest.json" in missing.stderr
