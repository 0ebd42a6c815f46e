"""The local job end to end: shards, metadata, manifest, summary, chunking, truncation,
bad input, duplicate ids, resume after SIGKILL, refusing to mix models or options."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.bulk.batch import EmbedOptions
from service.bulk.job import DuplicateIdError, JobConfig, format_summary, run_embed
from service.bulk.output import META_KEY, ManifestMismatchError, read_manifest, read_output
from service.config import Settings
from service.engine.pipeline import served_pipeline
from tests.bulk.conftest import cli, cli_env, corpus, write_jsonl


@pytest.fixture(scope="module")
def pipeline(cache_dir):
    pipe = served_pipeline(Settings(_env_file=None, cache_dir=cache_dir, onnx_file="model.onnx"))
    yield pipe
    pipe.close()


def _vectors(table: pa.Table) -> np.ndarray:
    return np.asarray(table.column("vector").to_pylist(), dtype=np.float32)


def test_job_writes_shards_with_metadata_manifest_and_summary(tmp_path, make_config, pipeline):
    rows = corpus(60)
    path = tmp_path / "c.jsonl"
    lines = [json.dumps(r) for r in rows[:30]] + ["{broken", json.dumps({"id": "e", "text": " "})]
    path.write_text("\n".join(lines + [json.dumps(r) for r in rows[30:]]) + "\n")
    config = make_config([path], id_field="id", shard_rows=16,
                         options=EmbedOptions(batch_size=8, include_text=True))  # fmt: skip
    summary = run_embed(config)
    assert summary["documents"] == 60 and summary["chunks"] == 60
    assert summary["skipped_empty"] == 1 and summary["skipped_malformed"] == 1
    assert summary["problems"][0].startswith(f"{path}:31: ")
    assert summary["truncated"] == 0 and summary["tokens"] > 60 * 5
    assert summary["chunks_per_s"] > 0 and summary["output"] == str(config.output.resolve())
    manifest = read_manifest(config.output)
    assert manifest["complete"] and len(manifest["shards"]) == 4  # 16 rows or more each
    assert sum(s["rows"] for s in manifest["shards"]) == 60
    meta = manifest["meta"]
    assert meta["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["variant"] == "model.onnx" and len(meta["fingerprint"]) == 64
    assert meta["options"]["normalize"] is True and meta["dim"] == 384
    first = pq.ParquetFile(config.output / manifest["shards"][0]["file"])
    assert json.loads(first.schema_arrow.metadata[META_KEY]) == meta
    assert first.schema_arrow.field("vector").type == pa.list_(pa.float32(), 384)
    table = read_output(config.output)
    assert table.column_names == ["id", "doc_id", "chunk_index", "char_start", "char_end",
                                  "text", "vector"]  # fmt: skip
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    assert table.column("text").to_pylist() == [r["text"] for r in rows]
    assert table.column("char_end").to_pylist() == [len(r["text"]) for r in rows]
    # the served pipeline's own vectors for the same texts, in input order
    expected = pipeline.encode([r["text"] for r in rows], batch_size=8)
    np.testing.assert_allclose(_vectors(table), expected, atol=2e-6)
    again = run_embed(config)  # the same command once more: says so, writes nothing
    assert again["already_complete"] and again["chunks"] == 60
    assert format_summary(again).startswith("already complete: nothing embedded")
    assert read_manifest(config.output)["shards"] == manifest["shards"]


def test_chunking_and_truncation_are_recorded(tmp_path, make_config, pipeline):
    long_text = " ".join(f"Sentence {i} is about topic {i % 7} in some detail." for i in range(80))
    rows = [{"id": "long", "text": long_text}, {"id": "short", "text": "Just one line."}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    summary = run_embed(make_config([path], id_field="id"))
    assert summary["truncated"] == 1 and summary["chunks"] == 2
    chunked = make_config([path], id_field="id", output=tmp_path / "chunked",
                          options=EmbedOptions(chunk_tokens=64, chunk_overlap=16,
                                               include_text=True))  # fmt: skip
    summary = run_embed(chunked)
    table = read_output(chunked.output)
    ids = table.column("id").to_pylist()
    assert summary["truncated"] == 0 and summary["documents"] == 2 and len(ids) > 6
    assert ids[0] == "long#0" and ids[-1] == "short#0"
    for row in table.select(["doc_id", "char_start", "char_end", "text"]).to_pylist():
        source = long_text if row["doc_id"] == "long" else rows[1]["text"]
        assert source[row["char_start"] : row["char_end"]] == row["text"]
    np.testing.assert_allclose(
        _vectors(table), pipeline.encode(table.column("text").to_pylist()), atol=2e-6
    )
    with pytest.raises(ValueError, match="exceeds the model's maximum of 256 tokens"):
        run_embed(make_config([path], output=tmp_path / "x",
                              options=EmbedOptions(chunk_tokens=300)))  # fmt: skip


def test_dimensions_normalize_and_prompts_follow_the_server(tmp_path, make_config, pipeline):
    path = write_jsonl(tmp_path / "c.jsonl", corpus(10))
    config = make_config([path], options=EmbedOptions(dimensions=64, normalize=False))
    run_embed(config)
    vectors = _vectors(read_output(config.output))
    texts = [r["text"] for r in corpus(10)]
    np.testing.assert_allclose(
        vectors, pipeline.encode(texts, normalize=False, dimensions=64), atol=2e-6
    )
    with pytest.raises(ValueError, match="prompt_name 'passage' is not one of this model's"):
        run_embed(make_config([path], output=tmp_path / "p",
                              options=EmbedOptions(prompt_name="passage")))  # fmt: skip
    with pytest.raises(ValueError, match="--dimensions 999: must be between 1 and"):
        run_embed(make_config([path], output=tmp_path / "d", options=EmbedOptions(dimensions=999)))


def test_duplicate_ids_stop_the_run_naming_them_and_keep_what_came_before(tmp_path, make_config):
    rows = corpus(40)
    rows.append({"id": "doc-0003", "text": "the same id again"})
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    config = make_config([path], id_field="id", shard_rows=16)
    with pytest.raises(DuplicateIdError, match=rf"{path}:41: duplicate id 'doc-0003'"):
        run_embed(config)
    kept = read_output(config.output)
    assert kept.column("id").to_pylist() == [r["id"] for r in rows[:40]]
    assert not read_manifest(config.output)["complete"]


def test_a_run_of_other_options_is_refused_or_rebuilt_with_overwrite(tmp_path, make_config):
    path = write_jsonl(tmp_path / "c.jsonl", corpus(12))
    run_embed(make_config([path]))
    with pytest.raises(ManifestMismatchError, match=r"dim: stored 384, this run 32.*--overwrite"):
        run_embed(make_config([path], options=EmbedOptions(dimensions=32)))
    with pytest.raises(ManifestMismatchError) as refused:  # names what differs, not both dicts
        run_embed(make_config([path], options=EmbedOptions(chunk_tokens=64)))
    assert "options.chunk_tokens: stored None, this run 64" in str(refused.value)
    assert "prompt_name" not in str(refused.value)
    out = tmp_path / "out"
    summary = run_embed(make_config([path], overwrite=True, options=EmbedOptions(dimensions=32)))
    assert summary["chunks"] == 12 and read_manifest(out)["meta"]["dim"] == 32
    assert len(read_output(out).column("vector")[0]) == 32


def test_an_output_without_a_shard_starts_anew_for_other_inputs(tmp_path, make_config):
    """Nothing to mix: a finished run that wrote no shard (every text empty) does not stop a
    run of other inputs or options in the same folder."""
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"id": "a", "text": " "}])
    first = run_embed(make_config([empty]))
    assert first["chunks"] == 0 and read_manifest(tmp_path / "out")["shards"] == []
    good = write_jsonl(tmp_path / "c.jsonl", corpus(12))
    summary = run_embed(make_config([good], options=EmbedOptions(dimensions=32)))
    assert summary["chunks"] == 12 and not summary.get("already_complete")
    assert len(read_output(tmp_path / "out").column("vector")[0]) == 32


def test_the_cli_refuses_another_model_with_a_clear_message(tmp_path, cache_dir, job_settings):
    """A manifest whose fingerprint differs from the model's: exit 1, saying so."""
    path = write_jsonl(tmp_path / "c.jsonl", corpus(6))
    out = tmp_path / "out"
    run_embed(JobConfig(inputs=[str(path)], output=out, progress=False, settings=job_settings))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["meta"]["fingerprint"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = cli("embed", str(path), "--output", str(out), "--no-progress", cache_dir=cache_dir,
                 check=False)  # fmt: skip
    assert result.returncode == 1
    assert "holds vectors of another run (fingerprint: stored '0000" in result.stderr
    assert "refusing to mix them" in result.stderr and "--overwrite" in result.stderr


def test_killed_with_sigkill_mid_run_the_rerun_has_every_row_exactly_once(tmp_path, cache_dir):
    rows = corpus(240)
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "service.bulk", "embed", str(path), "--output", str(out),
            "--id-field", "id", "--shard-rows", "16", "--batch-size", "4",
            "--sink", f"lancedb:{tmp_path / 'db'}", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(args, env=cli_env(cache_dir), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        manifest = read_manifest(out) if (out / "manifest.json").exists() else None
        if manifest and len(manifest["shards"]) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before it could be killed: " + proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = read_manifest(out)
    assert 3 <= len(killed["shards"]) < 15 and not killed["complete"]
    result = subprocess.run(args, env=cli_env(cache_dir), capture_output=True, text=True,
                            timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["summary"]["resumed_after_shards"] >= 3
    resumed = manifest["summary"]["resumed_after_shards"]
    assert f"resumed    after {resumed} complete shard(s) of an earlier run" in result.stdout
    assert manifest["summary"]["documents"] == 240 and manifest["summary"]["chunks"] == 240
    ids = read_output(out).column("id").to_pylist()
    assert ids == [r["id"] for r in rows]  # every row exactly once, in input order
    assert sorted(p.name for p in out.glob("*.parquet")) == [s["file"] for s in manifest["shards"]]
    import lancedb  # the sink too: a shard written again after the kill is stored once

    sunk = lancedb.connect(str(tmp_path / "db")).open_table("chunks").to_arrow()
    assert sorted(sunk.column("id").to_pylist()) == sorted(ids)
    # a third run of the same command has nothing left to do
    again = subprocess.run(args, env=cli_env(cache_dir), capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0 and read_output(out).num_rows == 240


def test_cli_progress_and_summary_and_no_ray_or_lancedb_without_asking(tmp_path, cache_dir):
    path = write_jsonl(tmp_path / "c.jsonl", corpus(20))
    out = tmp_path / "out"
    code = (
        "import sys; from service.bulk.__main__ import main; "
        f"code = main(['embed', {str(path)!r}, '--output', {str(out)!r}]); "
        "print('IMPORTED', sorted(m for m in ('ray', 'lancedb') if m in sys.modules)); "
        "sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(cache_dir),
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "IMPORTED []" in result.stdout  # the local job needs neither Ray nor LanceDB
    assert "embed: 100%" in result.stderr and "chunks_per_s=" in result.stderr  # tqdm bar
    for line in ("documents  20", "chunks     20", "truncated  0", "skipped    0 empty, 0 "
                 "malformed", "wall time", "chunks/s", f"output     {out}"):  # fmt: skip
        assert line in result.stdout, line  # the summary on stdout, the bar on stderr
    bad = cli("embed", str(tmp_path / "missing.jsonl"), "--output", str(out), cache_dir=cache_dir,
              check=False)  # fmt: skip
    assert bad.returncode == 2 and "missing.jsonl: no such file or folder" in bad.stderr


def test_batches_run_sorted_by_length_and_come_back_in_order(tmp_path, cache_dir):
    """Inside a window the pipeline sees batches of non-increasing padded width (less
    padding than input order), and the vectors come back in input order."""
    from service.bulk.batch import FIRST_WINDOW_BATCHES, BatchEmbedder
    from tests.service.conftest import RecordingBackend

    embedder = BatchEmbedder(
        Settings(_env_file=None, cache_dir=cache_dir, onnx_file="model.onnx"),
        EmbedOptions(batch_size=4, inference_workers=1),  # one batch at a time: in order
    )
    recording = RecordingBackend(embedder.pipeline.backend)
    embedder.pipeline.encoder.backend = recording
    rng = np.random.default_rng(0)
    texts = [" ".join(["word"] * int(n)) for n in rng.integers(1, 60, size=40)]
    vectors, tokens, truncated = embedder.embed_texts(texts)
    widths = [shape[1] for shape in recording.shapes]
    assert len(widths) == 10
    # two sort windows: FIRST_WINDOW_BATCHES batches (the 16 first texts), then the rest
    for window in (widths[:FIRST_WINDOW_BATCHES], widths[FIRST_WINDOW_BATCHES:]):
        assert window == sorted(window, reverse=True)
    unsorted = sum(4 * max(tokens[i : i + 4]) for i in range(0, 40, 4))
    assert sum(4 * w for w in widths) < unsorted
    np.testing.assert_allclose(vectors, embedder.pipeline.encode(texts, batch_size=1), atol=2e-6)
    assert not truncated.any() and list(tokens) == [
        t.length for t in embedder.pipeline.tokenizer.encode(texts)
    ]
    embedder.close()


def test_a_run_starts_on_a_short_window_then_sorts_whole_windows():
    """The inference threads start after FIRST_WINDOW_BATCHES batches are read, not a
    whole sort window; no window is above the cap (a shard's rows)."""
    from itertools import islice

    from service.bulk.batch import FIRST_WINDOW_BATCHES, SORT_WINDOW_BATCHES, window_sizes

    assert list(islice(window_sizes(32), 3)) == [
        32 * FIRST_WINDOW_BATCHES, 32 * SORT_WINDOW_BATCHES, 32 * SORT_WINDOW_BATCHES,
    ]  # fmt: skip
    assert list(islice(window_sizes(32, cap=100), 2)) == [100, 100]


@pytest.mark.parametrize("onnx_file", ["model.onnx", "auto"])  # auto: the per-token int8
def test_batches_at_once_give_the_same_vectors(onnx_file, cache_dir):
    """--inference-workers 2 (two batches at once on one ONNX Runtime thread each) gives
    the vectors one worker on every core gives, bit for bit, in input order."""
    from service.bulk.batch import BatchEmbedder

    settings = Settings(_env_file=None, cache_dir=cache_dir, onnx_file=onnx_file)
    texts = [" ".join(["word"] * (i % 37 + 1)) + f" {i}" for i in range(70)]
    one = BatchEmbedder(settings, EmbedOptions(batch_size=8, inference_workers=1))
    two = BatchEmbedder(settings, EmbedOptions(batch_size=8, inference_workers=2))
    assert two.workers == 2 == two.pipeline.backend.info.inference_workers
    expected, got = one.embed_texts(texts), two.embed_texts(texts)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert one.meta()["options"] == two.meta()["options"]  # a resume may change it
    one.close()
    two.close()
    with pytest.raises(ValueError, match="--inference-workers -1"):
        BatchEmbedder(settings, EmbedOptions(inference_workers=-1))


def test_stream_queues_a_window_before_collecting_the_one_before_and_keeps_them_on_failure(
    cache_dir,
):
    """`BatchEmbedder.stream` takes window k+1 (and queues its batches) before it hands out
    window k, so the inference threads never wait for the caller; a failure of the source
    comes after every window read before it, embedded."""
    from service.bulk.batch import BatchEmbedder

    embedder = BatchEmbedder(
        Settings(_env_file=None, cache_dir=cache_dir, onnx_file="model.onnx"),
        EmbedOptions(batch_size=4, inference_workers=1),
    )
    texts = [[f"window {w}, text {i}" for i in range(6)] for w in range(3)]
    queued, submit = [], embedder.pipeline.submit
    embedder.pipeline.submit = lambda batch: queued.append(len(batch)) or submit(batch)
    asked = []

    def windows():
        for w, part in enumerate(texts):
            asked.append(len(queued))  # batches queued when window w is asked for
            yield w, embedder.tokenize(part)
        raise ValueError("bad line")

    out = []
    with pytest.raises(ValueError, match="bad line"):
        for key, (vectors, _, _) in embedder.stream(windows()):
            out.append(key)
            np.testing.assert_allclose(vectors, embedder.pipeline.encode(texts[key]), atol=2e-6)
    assert out == [0, 1, 2] and asked == [0, 2, 4] and queued == [4, 2] * 3
    embedder.close()
