"""The pgvector sink against a real PostgreSQL + pgvector server (tests/bulk/pg_server.py):
upserts keyed by id (a resumed job stores each row once), the model's meta recorded and a
mismatch refused, the HNSW index built at close, and search."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("psycopg")
pytest.importorskip("pgvector")

import psycopg  # noqa: E402

from service.bulk.schema import output_schema  # noqa: E402
from service.bulk.sinks import Sink, SinkError, SinkMismatchError, open_sink  # noqa: E402
from service.bulk.sinks.pgvector import (  # noqa: E402
    PgvectorSink,
    parse_dsn,
    read_meta,
    redact,
    search,
    search_many,
    with_params,
)
from tests.bulk.pg_server import pg_dsn  # noqa: E402,F401

DIM = 16


def meta(fingerprint: str = "f1", **options) -> dict:
    return {
        "model": "test-model",
        "fingerprint": fingerprint,
        "variant": "model.onnx",
        "dim": DIM,
        "options": {"normalize": True, "prompt_name": None, **options},
    }


def unit_vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def rows(ids: list[str], vectors: np.ndarray, text: bool = False) -> pa.Table:
    """A table of the job's output schema: doc ids "d<i>", chunk offsets from the id."""
    columns = {
        "id": ids,
        "doc_id": [i.split("#")[0] for i in ids],
        "chunk_index": pa.array([int(i.split("#")[1]) if "#" in i else 0 for i in ids], pa.int32()),
        "char_start": pa.array([0] * len(ids), pa.int64()),
        "char_end": pa.array([10] * len(ids), pa.int64()),
    }
    if text:
        columns["text"] = [f"text of {i}" for i in ids]
    dim = vectors.shape[1]
    columns["vector"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    return pa.Table.from_pydict(columns, schema=output_schema(dim, text))


@pytest.fixture
def dsn(pg_dsn, request):  # noqa: F811
    """The server's DSN naming a table of this test's own (dropped first)."""
    table = "test_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")
    table = table[:60].lower()
    with psycopg.connect(parse_dsn(pg_dsn).conninfo) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        if conn.execute("SELECT to_regclass('polyglot_embed_indexes')").fetchone()[0]:
            conn.execute("DELETE FROM polyglot_embed_indexes WHERE name = %s", (table,))
    return with_params(pg_dsn, table=table)


def count(dsn: str) -> int:
    target = parse_dsn(dsn)
    with psycopg.connect(target.conninfo) as conn:
        return conn.execute(f'SELECT count(*) FROM "{target.name}"').fetchone()[0]


def indexes(dsn: str) -> list[str]:
    target = parse_dsn(dsn)
    with psycopg.connect(target.conninfo) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = %s", (target.name,)
            )
        ]


def write_all(dsn: str, *tables: pa.Table, fingerprint: str = "f1", **kwargs) -> PgvectorSink:
    sink = PgvectorSink(dsn, **kwargs)
    sink.open(meta(fingerprint), DIM, overwrite=False)
    for table in tables:
        sink.write(table)
    sink.close()
    return sink


def test_open_sink_gives_the_pgvector_sink_for_a_postgresql_dsn(dsn):
    sink = open_sink(dsn)
    assert isinstance(sink, PgvectorSink) and isinstance(sink, Sink)


def test_rows_round_trip_and_search_is_exact_without_index(dsn):
    vectors = unit_vectors(200)
    ids = [f"d{i}" for i in range(200)]
    write_all(dsn, rows(ids, vectors, text=True))
    assert count(dsn) == 200
    assert not any("USING hnsw" in d for d in indexes(dsn))  # 200 < the default 10,000

    query = unit_vectors(1, seed=7)[0]
    hits = search(dsn, query, k=10)
    expected = np.argsort(-(vectors @ query))[:10]
    assert [h["id"] for h in hits] == [ids[i] for i in expected]
    np.testing.assert_allclose([h["score"] for h in hits], (vectors @ query)[expected], atol=1e-5)
    assert hits[0]["text"] == f"text of {ids[expected[0]]}"
    assert hits[0]["doc_id"] == ids[expected[0]] and hits[0]["char_end"] == 10
    # a stored vector finds itself first, at cosine similarity 1
    self_hit = search(dsn, vectors[42], k=1)[0]
    assert self_hit["id"] == "d42" and self_hit["score"] == pytest.approx(1.0, abs=1e-5)


def test_the_model_meta_is_recorded(dsn):
    write_all(dsn, rows(["a"], unit_vectors(1)))
    stored = read_meta(dsn)
    assert stored == {**meta(), "dim": DIM}
    target = parse_dsn(dsn)
    with psycopg.connect(target.conninfo) as conn:
        comment = conn.execute(
            "SELECT obj_description(%s::regclass, 'pg_class')", (target.name,)
        ).fetchone()[0]
    assert "fingerprint f1" in comment and "test-model" in comment


def test_a_shard_written_twice_is_stored_once(dsn):
    """The resume contract: a job killed after `write` and before its manifest update
    writes the shard again on the next run (a new sink, a new connection)."""
    vectors = unit_vectors(30)
    ids = [f"d{i // 3}#{i % 3}" for i in range(30)]
    write_all(dsn, rows(ids[:20], vectors[:20]))
    # the re-run: shard 1 again (with other vectors: the row is replaced), then shard 2
    newer = unit_vectors(30, seed=1)
    write_all(dsn, rows(ids[10:20], newer[10:20]), rows(ids[20:], vectors[20:]))
    assert count(dsn) == 30
    assert search(dsn, newer[15], k=1)[0]["id"] == ids[15]
    hit = search(dsn, vectors[15], k=30)
    assert {h["id"] for h in hit} == set(ids)
    assert next(h for h in hit if h["id"] == ids[15])["score"] < 0.99
    assert [h["chunk_index"] for h in hit if h["id"] == ids[20]] == [2]


def test_ids_repeated_within_one_table_are_stored_once(dsn):
    write_all(dsn, rows(["x", "y", "x"], unit_vectors(3)))
    assert count(dsn) == 2


def test_another_fingerprint_is_refused_and_overwrite_rebuilds(dsn):
    write_all(dsn, rows(["a", "b"], unit_vectors(2)))
    sink = PgvectorSink(dsn)
    with pytest.raises(SinkMismatchError) as refused:
        sink.open(meta("f2"), DIM, overwrite=False)
    message = str(refused.value)
    assert "fingerprint: stored 'f1', this run 'f2'" in message and "--overwrite" in message
    assert count(dsn) == 2  # nothing touched

    with pytest.raises(SinkMismatchError, match="options"):
        PgvectorSink(dsn).open(meta("f1", normalize=False), DIM, overwrite=False)

    sink = PgvectorSink(dsn)
    sink.open(meta("f2"), DIM, overwrite=True)
    assert count(dsn) == 0
    sink.write(rows(["c"], unit_vectors(1)))
    sink.close()
    assert count(dsn) == 1 and read_meta(dsn)["fingerprint"] == "f2"


def test_another_dimension_is_refused(dsn):
    write_all(dsn, rows(["a"], unit_vectors(1)))
    with pytest.raises(SinkMismatchError, match="dim: stored 16, this run 8"):
        PgvectorSink(dsn).open({**meta(), "dim": 8}, 8, overwrite=False)


def test_a_table_not_written_by_the_sink_is_refused(dsn):
    target = parse_dsn(dsn)
    with psycopg.connect(target.conninfo) as conn:
        conn.execute(f'CREATE TABLE "{target.name}" (id int)')
    with pytest.raises(SinkError, match="was not written by polyglot-embed"):
        PgvectorSink(dsn).open(meta(), DIM, overwrite=False)


def test_hnsw_index_is_built_at_close_once_the_table_is_large_enough(dsn):
    small = with_params(dsn, index_min_rows=300)
    vectors = unit_vectors(400, seed=3)
    ids = [f"d{i}" for i in range(400)]
    write_all(small, rows(ids[:200], vectors[:200]))
    assert not any("USING hnsw" in d for d in indexes(small))
    write_all(small, rows(ids[200:], vectors[200:]))
    (index,) = [d for d in indexes(small) if "USING hnsw" in d]
    assert "vector_cosine_ops" in index

    # the index serves the query (EXPLAIN) and finds what the exact scan finds
    target = parse_dsn(small)
    with psycopg.connect(target.conninfo) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            f"EXPLAIN SELECT id FROM \"{target.name}\" ORDER BY vector <=> '{vectors[0].tolist()}' "
            "LIMIT 10"
        ).fetchall()
    assert any("Index Scan using" in line[0] for line in plan), plan
    queries = unit_vectors(20, seed=9)
    found = search_many(small, queries, k=10)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = np.mean(
        [
            len({h["id"] for h in hits} & {ids[i] for i in row}) / 10
            for hits, row in zip(found, exact)
        ]
    )
    assert recall >= 0.9
    # a resumed run finds the index there and keeps it current
    write_all(small, rows(["late"], vectors[:1] * -1))
    assert search(small, vectors[0] * -1, k=1)[0]["id"] == "late"
    assert len([d for d in indexes(small) if "USING hnsw" in d]) == 1


def test_a_failed_write_keeps_what_was_written(dsn):
    sink = PgvectorSink(dsn)
    sink.open(meta(), DIM, overwrite=False)
    sink.write(rows(["a", "b"], unit_vectors(2)))
    with pytest.raises(ValueError, match="vectors of 8 floats; this table holds 16"):
        sink.write(rows(["c"], unit_vectors(1, dim=8)))
    bad = rows(["d", "e"], unit_vectors(2)).set_column(0, "id", pa.array(["d", None]))
    with pytest.raises(psycopg.errors.NotNullViolation):
        sink.write(bad)
    sink.write(rows(["f"], unit_vectors(1)))  # the sink goes on after a failed shard
    sink.close()
    assert count(dsn) == 3


def test_search_refuses_bad_queries(dsn):
    write_all(dsn, rows(["a"], unit_vectors(1)))
    with pytest.raises(ValueError, match="k=0: expected 1..1000"):
        search(dsn, unit_vectors(1)[0], k=0)
    with pytest.raises(ValueError, match="holds vectors of 16 floats"):
        search(dsn, np.zeros(8, np.float32), k=1)
    with pytest.raises(SinkError, match="no table nowhere written by polyglot-embed"):
        search(with_params(dsn, table="nowhere"), unit_vectors(1)[0], k=1)


def test_an_unreachable_server_is_named_without_its_password(tmp_path):
    dsn = f"postgresql://user:secret@/db?host={tmp_path}"
    with pytest.raises(SinkError) as failed:
        PgvectorSink(dsn).open(meta(), DIM, overwrite=False)
    assert "cannot connect to postgresql://user:***@/db" in str(failed.value)
    assert "secret" not in str(failed.value)


def test_dsn_parameters():
    target = parse_dsn("postgresql://u:pw@h:5433/db?sslmode=disable&table=rag.chunks")
    assert target.table == ("rag", "chunks") and target.name == "rag.chunks"
    assert target.conninfo == "postgresql://u:pw@h:5433/db?sslmode=disable"
    assert target.index_min_rows == 10_000
    assert parse_dsn("postgres://h/db?index_min_rows=5").index_min_rows == 5
    assert parse_dsn("postgres://h/db").table == ("polyglot_chunks",)
    with pytest.raises(ValueError, match="index_min_rows='x'"):
        parse_dsn("postgres://h/db?index_min_rows=x")
    with pytest.raises(ValueError, match="SCHEMA.NAME"):
        parse_dsn("postgres://h/db?table=a.b.c")
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
