"""`--engine ray` on real local Ray clusters: one node (the CLI starts it) and two nodes
(`ray.cluster_utils.Cluster`): the output equals the local engine's row for row."""

from __future__ import annotations

import os

import numpy as np
import pytest

from service.bulk.batch import EmbedOptions
from service.bulk.job import run_embed
from service.bulk.output import read_manifest, read_output
from tests.bulk.conftest import cli, corpus, write_jsonl, write_parquet

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
OPTIONS = EmbedOptions(batch_size=1, include_text=True)  # Ray batches of 64 documents


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Parquet and JSONL (with an empty text) and a folder of text files."""
    root = tmp_path_factory.mktemp("ray-inputs")
    rows = corpus(100)
    rows[7]["text"] = "   "
    write_parquet(root / "a.parquet", rows[:50])
    write_jsonl(root / "b.jsonl", rows[50:])
    (root / "docs").mkdir()
    for i in range(5):
        (root / "docs" / f"f{i}.md").write_text(f"# File {i}\n\nIt has some words, {i}.")
    return root


@pytest.fixture(scope="module")
def local_output(inputs, tmp_path_factory, job_settings):
    """The local engine's rows for the same inputs (the reference)."""
    from service.bulk.job import JobConfig

    out = tmp_path_factory.mktemp("local") / "out"
    config = JobConfig(inputs=[str(inputs / "a.parquet"), str(inputs / "b.jsonl")], output=out,
                       id_field="id", options=OPTIONS, shard_rows=24,
                       settings=dict(job_settings), progress=False)  # fmt: skip
    run_embed(config)
    return read_output(out)


def _assert_same_rows(got, expected):
    for column in ("id", "doc_id", "chunk_index", "char_start", "char_end", "text"):
        assert got.column(column).to_pylist() == expected.column(column).to_pylist(), column
    np.testing.assert_allclose(
        np.asarray(got.column("vector").to_pylist()),
        np.asarray(expected.column("vector").to_pylist()),
        atol=1e-5, rtol=0,
    )  # fmt: skip


def test_the_cli_starts_a_local_ray_cluster(inputs, local_output, tmp_path, cache_dir):
    """No --ray-address: the job starts (and stops) its own single-node cluster. (Runs
    before the two-node cluster below starts: two clusters at once overload 2 cores.)"""
    out = tmp_path / "out"
    result = cli("embed", str(inputs / "a.parquet"), str(inputs / "b.jsonl"), "--output",
                 str(out), "--id-field", "id", "--engine", "ray", "--batch-size", "1",
                 "--include-text", "--shard-rows", "24", "--no-progress",
                 cache_dir=cache_dir)  # fmt: skip
    assert "chunks     99" in result.stdout
    _assert_same_rows(read_output(out), local_output)


@pytest.fixture(scope="module")
def two_nodes():
    """A head and a worker node (2 logical CPUs each) on this machine, this process
    connected to it."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "object_store_memory": 150 * 2**20})  # fmt: skip
    cluster.add_node(num_cpus=2, object_store_memory=150 * 2**20)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)  # the job runs on this connection
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_node_cluster_output_equals_the_local_engine_row_for_row(
    inputs, local_output, two_nodes, tmp_path, make_config
):
    config = make_config([inputs / "a.parquet", inputs / "b.jsonl"], id_field="id",
                         engine="ray", ray_address=two_nodes.address, options=OPTIONS,
                         shard_rows=24, sink=f"lancedb:{tmp_path / 'db'}")  # fmt: skip
    ray.shutdown()  # the job itself joins the cluster at --ray-address (and leaves it)
    try:
        summary = run_embed(config)
        assert not ray.is_initialized()
    finally:
        ray.init(address=two_nodes.address, log_to_driver=False)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    assert summary["engine"] == "ray" and summary["nodes"] >= 1
    assert summary["documents"] == 99 and summary["skipped_empty"] == 1
    got = read_output(config.output)
    _assert_same_rows(got, local_output)
    manifest = read_manifest(config.output)
    assert manifest["complete"] and all(s["rows"] >= 24 for s in manifest["shards"][:-1])
    import lancedb

    assert lancedb.connect(str(tmp_path / "db")).open_table("chunks").count_rows() == 99


def test_ray_reads_a_folder_of_text_files_and_needs_an_id_field_for_rows(
    inputs, two_nodes, tmp_path, make_config
):
    config = make_config([inputs / "docs"], engine="ray", options=OPTIONS)
    run_embed(config)
    local = make_config([inputs / "docs"], output=tmp_path / "local", options=OPTIONS)
    run_embed(local)
    _assert_same_rows(read_output(config.output), read_output(local.output))
    assert read_output(config.output).column("id").to_pylist()[0] == "f0.md"
    with pytest.raises(ValueError, match="--engine ray needs --id-field"):
        run_embed(make_config([inputs / "b.jsonl"], engine="ray", output=tmp_path / "x"))
