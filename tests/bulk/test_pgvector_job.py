"""`python -m service.bulk embed ... --sink postgresql://...` end to end: the job's rows land
in a real PostgreSQL + pgvector table equal to its Parquet output, a second run stores
nothing twice, another model's run is refused, and a query embedded by the job's pipeline
finds its document through `search` (the function and `python -m service.bulk search`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("psycopg")
pytest.importorskip("pgvector")

import psycopg  # noqa: E402

from service.bulk.batch import BatchEmbedder, EmbedOptions  # noqa: E402
from service.bulk.output import read_output  # noqa: E402
from service.bulk.sinks.pgvector import parse_dsn, read_meta, search, with_params  # noqa: E402
from service.config import Settings  # noqa: E402
from tests.bulk.conftest import SEARCH_DOCS, cli, write_jsonl  # noqa: E402
from tests.bulk.pg_server import pg_dsn  # noqa: E402,F401


def stored_rows(dsn: str) -> dict[str, tuple]:
    target = parse_dsn(dsn)
    with psycopg.connect(target.conninfo) as conn:
        rows = conn.execute(
            "SELECT id, doc_id, chunk_index, char_start, char_end, text, vector::text "
            f'FROM "{target.name}"'
        ).fetchall()
    return {row[0]: row[1:] for row in rows}


def test_the_job_writes_its_rows_into_pgvector(pg_dsn, tmp_path, cache_dir, job_settings):  # noqa: F811
    dsn = with_params(pg_dsn, table="test_job_rows")
    with psycopg.connect(parse_dsn(dsn).conninfo) as conn:
        conn.execute('DROP TABLE IF EXISTS "test_job_rows"')
    corpus = write_jsonl(tmp_path / "docs.jsonl", SEARCH_DOCS)
    args = ["embed", str(corpus), "--id-field", "id", "--include-text", "--shard-rows", "2",
            "--no-progress", "--sink", dsn]  # fmt: skip
    result = cli(*args, "--output", str(tmp_path / "out"), cache_dir=cache_dir)
    assert "secret" not in result.stderr + result.stdout

    output = read_output(tmp_path / "out")
    stored = stored_rows(dsn)
    ids = sorted(d["id"] for d in SEARCH_DOCS)
    assert sorted(stored) == sorted(output.column("id").to_pylist()) == ids
    for row in output.to_pylist():
        doc_id, chunk_index, start, end, text, vector = stored[row["id"]]
        assert (doc_id, chunk_index, start, end, text) == (
            row["doc_id"], row["chunk_index"], row["char_start"], row["char_end"], row["text"]
        )  # fmt: skip
        np.testing.assert_allclose(np.array(json.loads(vector)), row["vector"], rtol=0, atol=1e-6)
    manifest_meta = read_meta(dsn)
    assert manifest_meta["fingerprint"] and manifest_meta["dim"] == 384

    # the same command again: complete, nothing stored twice
    cli(*args, "--output", str(tmp_path / "out"), cache_dir=cache_dir)
    assert len(stored_rows(dsn)) == len(SEARCH_DOCS)

    # another model's vectors (here: other options) into the same table are refused
    refused = cli(*args, "--dimensions", "128", "--output", str(tmp_path / "out128"),
                  cache_dir=cache_dir, check=False)  # fmt: skip
    assert refused.returncode == 1
    assert "test_job_rows holds vectors of another model or options" in refused.stderr
    assert "--overwrite" in refused.stderr
    assert len(stored_rows(dsn)) == len(SEARCH_DOCS)

    # a query embedded by the served pipeline finds its document
    embedder = BatchEmbedder(Settings(**job_settings), EmbedOptions())
    try:
        query = embedder.embed_texts(["Which animal purrs?"])[0][0]
    finally:
        embedder.close()
    hits = search(dsn, query, k=3)
    assert hits[0]["id"] == "cats" and hits[0]["text"] == SEARCH_DOCS[0]["text"]
    assert hits[0]["score"] > hits[1]["score"] > hits[2]["score"]

    # and `python -m service.bulk search --index postgresql://...` prints the same hits
    found = cli("search", "--index", dsn, "--query", "Which animal purrs?", "--k", "3",
                cache_dir=cache_dir)  # fmt: skip
    lines = [json.loads(line) for line in found.stdout.splitlines()]
    assert [hit["id"] for hit in lines] == [hit["id"] for hit in hits]
    np.testing.assert_allclose([h["score"] for h in lines], [h["score"] for h in hits], atol=1e-5)
