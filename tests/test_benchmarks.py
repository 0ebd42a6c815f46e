"""Smoke runs of the benchmark code (seconds, no thresholds), so it cannot rot."""

from __future__ import annotations

import asyncio
import sys

import pytest

from benchmarks.compare import run_contender
from benchmarks.load import body_for, run_load
from benchmarks.texts import passages
from tests.service.conftest import server_process


def test_load_generator_against_the_service(cache_dir):
    with server_process(cache_dir) as (proc, url):
        result = asyncio.run(run_load(url, "/embed", concurrency=4, inputs=2, requests=40,
                                      duration=10, server_pid=proc.pid))  # fmt: skip
        openai = asyncio.run(run_load(url, "/v1/embeddings", concurrency=2, inputs=1,
                                      requests=10, duration=10))  # fmt: skip
    assert result.ok == 40 and result.errors == 0 and result.sentences_per_s > 0
    assert result.p50_ms <= result.p99_ms
    assert result.server_peak_rss_mb > 50 and result.server_cpu_percent is not None
    assert openai.ok == 10


def test_naive_baseline_runs_under_the_same_generator(bundled_model):
    command = [sys.executable, "-m", "benchmarks.baselines.naive_server", "--model",
               str(bundled_model), "--port", "{port}"]  # fmt: skip
    rows = run_contender("naive", command, "/embed", [(2, 1, "short")], 2.0, None)
    assert "error" not in rows[0], rows[0]
    assert rows[0]["ok"] > 0


def test_load_refuses_non_loopback_targets():
    with pytest.raises(ValueError, match="loopback"):
        asyncio.run(run_load("http://10.0.0.1:8000", requests=1, duration=1))


def test_request_bodies_and_passages():
    assert body_for("/embed", ["a"]) == {"inputs": ["a"]}
    assert body_for("/embeddings", ["a"])["input"] == ["a"]
    long = passages(["one two three four five"] * 100, words=50)
    assert all(len(p.split()) >= 50 for p in long)


def test_overload_benchmark_smoke(tmp_path):
    from benchmarks.overload import main

    out = tmp_path / "overload.json"
    main(["--capacity", "32", "--burst-factor", "10", "--inputs", "4", "--output", str(out)])
    result = __import__("json").loads(out.read_text())
    assert result["only_200_and_429"] and result["health_always_200"]
    assert result["statuses"].get("429", 0) > 0


def test_gpu_benchmark_runs_on_cpu_with_random_weights(tmp_path):
    """The GPU serving benchmark's code path, on the CPU: random weights from the bundled
    model's config, a real server, the load grid and the in-process ceiling."""
    from benchmarks.gpu import main, markdown

    out = tmp_path / "gpu.json"
    main(["--random-weights", "--quick", "--duration", "1", "--device", "cpu",
          "--output", str(out)])  # fmt: skip
    report = __import__("json").loads(out.read_text())
    assert report["random_weights"] is True
    rows = report["rows"]
    assert [r["concurrency"] for r in rows] == [1, 8, 4]
    assert all(r["ok"] > 0 and r["errors"] == 0 for r in rows)
    assert all(r["ceiling_sentences_per_s"] > 0 for r in rows)
    assert all(r["gpu_util_mean"] is None for r in rows)  # no GPU here: not measured
    assert "not measured" in markdown(rows)


def test_random_weights_copy_keeps_architecture_and_tokenizer(bundled_model, tmp_path):
    import json

    from safetensors.numpy import load_file

    from benchmarks.gpu import random_weights_copy

    copy = random_weights_copy(bundled_model, tmp_path / "random")
    original = load_file(str(bundled_model / "model.safetensors"))
    replaced = load_file(str(copy / "model.safetensors"))
    assert not (copy / "onnx").exists()
    assert (copy / "tokenizer.json").read_bytes() == (bundled_model / "tokenizer.json").read_bytes()
    assert json.loads((copy / "modules.json").read_text()) == json.loads(
        (bundled_model / "modules.json").read_text()
    )
    name = "encoder.layer.0.attention.self.query.weight"
    key = name if name in replaced else next(k for k in replaced if k.endswith(name))
    assert replaced[key].shape == original[next(k for k in original if k.endswith(name))].shape
    assert not (replaced[key] == original[next(k for k in original if k.endswith(name))]).all()


def test_workers_benchmark_commands(tmp_path):
    """Every server of ours serves the same fp32 file; the baseline runs from its tree."""
    from benchmarks.workers import contenders

    commands = contenders(tmp_path / "model", [1, 2], tmp_path / "before")
    assert list(commands) == ["baseline", "workers-1", "workers-2", "default", "naive"]
    for name in ("workers-1", "workers-2", "default"):
        assert "--onnx-file" in commands[name] and "model.onnx" in commands[name]
    assert commands["workers-2"][-2:] == ["--workers", "2"]
    assert commands["baseline"][:2] == ["bash", "-c"]
    assert f"cd {tmp_path / 'before'}" in commands["baseline"][2]
    assert "--max-queue-wait-s" not in commands["baseline"][2]


def test_asgi_overhead_times_the_app_without_the_model(cache_dir):
    from benchmarks.asgi_overhead import measure

    for route in ("/embed", "/v1/embeddings"):
        figures = asyncio.run(measure(route, requests=20, repeats=2, cache_dir=str(cache_dir)))
        assert len(figures) == 2 and all(f > 0 for f in figures)


def test_pyspy_summary_shares_of_a_raw_profile(tmp_path):
    from benchmarks.pyspy_summary import read_samples, summarise

    raw = tmp_path / "prof.txt"
    loop = "Runner.run (asyncio/runners.py:118);RequestResponseCycle.run_asgi (uvicorn/x.py:4)"
    raw.write_text(
        f"{loop};ModelTokenizer.encode (service/engine/tokenizer.py:70) 1\n"
        "Thread.run (threading.py:1);Session.run (onnxruntime/capi/x.py:220) 3\n"
    )
    stacks = read_samples(raw)
    assert stacks[1] == (["Thread.run (threading.py)", "Session.run (onnxruntime/capi/x.py)"], 3)
    text = summarise(stacks, top=5)
    assert "total samples 4" in text
    assert " 75.0%  inference thread: ONNX Runtime Session.run" in text
    assert " 25.0%          tokenising" in text
    assert " 25.0%    ASGI stack: uvicorn -> middlewares -> route" in text


def test_onnx_pooling_variants_give_the_served_vectors(bundled_model, cache_dir, tmp_path):
    import numpy as np

    from benchmarks.onnx_pooling import feeds_for, pooled_graph, session, variants
    from service.artifacts import source_fingerprint
    from service.engine.pipeline import onnx_pipeline
    from service.variants import fresh_fp32_dir

    fingerprint = source_fingerprint(bundled_model)
    onnx_file = fresh_fp32_dir(bundled_model, bundled_model, cache_dir, fingerprint) / "model.onnx"

    pipeline = onnx_pipeline(bundled_model, onnx_file)
    host = session(onnx_file)
    graph = session(pooled_graph(onnx_file, tmp_path / "pooled.onnx"))
    feeds = feeds_for(pipeline, ["short", "a somewhat longer text that pads the first one"])
    runs = variants(host, graph, pipeline.encoder.head, feeds, pipeline.spec.hidden_size)
    served = pipeline.encode(["short", "a somewhat longer text that pads the first one"])
    for run in runs.values():
        vectors = run()
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        np.testing.assert_allclose(vectors, served, atol=1e-5)


def _tiny_stsb(folder, rows: int = 24):
    """A 2-language stsb-multi-mt train split (aligned en/de CSV rows) under `folder`."""
    stsb = folder / "stsb-multi-mt"
    stsb.mkdir(parents=True)
    en = [f"A man plays instrument number {i}.,A person plays music {i}.,3.0" for i in range(rows)]
    de = [f"Ein Mann spielt Instrument {i}.,Eine Person macht Musik {i}.,3.0" for i in range(rows)]
    (stsb / "stsb-en-train.csv").write_text("\n".join(en) + "\n", encoding="utf-8")
    (stsb / "stsb-de-train.csv").write_text("\n".join(de) + "\n", encoding="utf-8")
    return folder


def test_weightless_copy_keeps_config_and_tokenizer_only(bundled_model, tmp_path):
    from benchmarks.gpu import weightless_copy

    skeleton = weightless_copy(bundled_model, tmp_path / "skeleton")
    assert not list(skeleton.rglob("*.safetensors")) and not (skeleton / "onnx").exists()
    for name in ("config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"):
        assert (skeleton / name).read_bytes() == (bundled_model / name).read_bytes()


def test_train_speed_random_weights_needs_no_weight_files(bundled_model, tmp_path):
    """What a GPU host is sent for issue 17's trainer figure: teacher and e5-style student
    folders holding config + tokenizer only, rebuilt with random weights, trained a few
    steps on the plain loop and the trainer's new input path."""
    import json

    from benchmarks.gpu import weightless_copy
    from benchmarks.train_speed import main

    skeleton = weightless_copy(bundled_model, tmp_path / "skeleton")
    out = tmp_path / "train_speed.json"
    main(["--data", str(_tiny_stsb(tmp_path / "data")), "--pairs", "16", "--steps", "2",
          "--warmup", "0", "--batch-size", "4", "--max-seq-length", "32",
          "--paths", "plain,new", "--student", "e5", "--student-dir", str(skeleton),
          "--teacher", str(skeleton), "--random-weights", "--output", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["random_weights"] is True and report["samples"] == 32  # de->en, en->en
    assert report["student_dir"] == report["teacher"] == str(skeleton)
    assert all(report["paths"][p]["sentences_per_s"] > 0 for p in ("plain", "new"))
    assert not list(skeleton.rglob("*.safetensors"))  # the source folder is left as it was


def test_device_scripts_are_valid_bash():
    """The one-command GPU run (benchmarks/device_h200.sh) and its preparation parse."""
    import shutil
    import subprocess
    from pathlib import Path

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    for script in ("device_h200.sh", "device_prepare.sh"):
        path = Path(__file__).parents[1] / "benchmarks" / script
        result = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_device_wheels_are_pinned_as_in_the_lock():
    """Every wheel carried to the GPU host is the version requirements.lock pins, once."""
    import re
    from pathlib import Path

    def normalise(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    def pins(path: Path) -> list[tuple[str, str]]:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        return [
            (normalise(name), version)
            for name, version in (line.split("==") for line in lines if line)
        ]

    root = Path(__file__).parents[1]
    lock = dict(pins(root / "requirements.lock"))
    wheels = pins(root / "benchmarks" / "device_wheels.txt")
    assert len(wheels) == len({name for name, _ in wheels}), "a package listed twice"
    assert {"fastapi", "uvicorn", "pydantic-settings", "orjson", "pyzmq"} <= dict(wheels).keys()
    for name, version in wheels:
        assert lock.get(name) == version, f"{name}=={version}, lock: {lock.get(name)}"


def test_compare_summary_ratios_and_grid():
    """The interleaved comparison's table: means over rounds per point and contender, the
    ratio to infinity-emb and the service's share of the in-process pipeline ceiling."""
    from benchmarks.compare import markdown, parse_grid, summary

    point = {"concurrency": 32, "inputs_per_request": 8, "length": "short"}
    rows = (
        [
            {
                **point,
                "contender": "ours-default",
                "sentences_per_s": 300.0,
                "p50_ms": 400.0,
                "p99_ms": 800.0,
                "server_cpu_percent": 190.0,
                "round": r,
            }  # fmt: skip
            for r in (1, 2)
        ]
        + [
            {
                **point,
                "contender": "infinity",
                "sentences_per_s": s,
                "p50_ms": 500.0,
                "p99_ms": 900.0,
                "server_cpu_percent": 195.0,
                "round": r,
            }  # fmt: skip
            for r, s in ((1, 200.0), (2, 300.0))
        ]
        + [
            {**point, "contender": "pipeline-ceiling", "sentences_per_s": 400.0, "round": 1},
            {**point, "contender": "naive", "error": "RuntimeError: exited"},
        ]
    )
    table = {r["contender"]: r for r in summary(rows)}
    assert set(table) == {"ours-default", "infinity", "pipeline-ceiling"}
    assert table["infinity"]["sentences_per_s"] == 250.0
    assert table["infinity"]["per_round"] == [200.0, 300.0]
    assert table["ours-default"]["ratio_to_reference"] == 1.2
    assert table["ours-default"]["share_of_ceiling"] == 0.75
    assert table["pipeline-ceiling"]["ratio_to_reference"] is None
    text = markdown(summary(rows))
    row = "| 32 x 8 short | ours-default | 300.0 (300, 300) | 400.0 | 800.0 | 190.0 | 1.2 | 0.75 |"
    assert row in text
    assert parse_grid("32x8:short,8x8:passage") == [(32, 8, "short"), (8, 8, "passage")]
    with pytest.raises(ValueError, match="CLIENTSxINPUTS"):
        parse_grid("32:short")


def test_compare_histogram_delta_padding_and_busy_share():
    from benchmarks.compare import histogram_delta

    before = {"1.0": 2, "+Inf": 2, "sum": 2, "count": 2, "padded_tokens": 20,
              "input_tokens": 20, "inference_seconds": 1.0}  # fmt: skip
    after = {"1.0": 2, "+Inf": 4, "sum": 66, "count": 4, "padded_tokens": 1220,
             "input_tokens": 1020, "inference_seconds": 4.0}  # fmt: skip
    delta = histogram_delta(before, after, seconds=4.0)
    assert delta["batches"] == 2 and delta["mean_batch_size"] == 32
    assert delta["padding_ratio"] == 1.2 and delta["inference_busy_share"] == 0.75
    assert delta["batch_size_buckets"] == {"1.0": 0, "+Inf": 2}
    assert histogram_delta({}, {}) == {}


def test_bulk_speed_children_time_the_pipeline_and_the_job(cache_dir, monkeypatch):
    from benchmarks.bulk_speed import child, corpus

    monkeypatch.setenv("EMBED_CACHE_DIR", str(cache_dir))
    assert len(corpus("short", 40)) == 40
    for contender in ("pipeline", "job", "job-2proc"):
        row = child(contender, "short", 40, 8)
        assert row["texts"] == 40 and row["texts_per_s"] > 0, row
        assert contender == "pipeline" or row["command_wall_s"] >= row["seconds"]


def test_spread_order_prefixes_cover_the_whole_range():
    """The ceiling's chunk order: a permutation whose every prefix spreads over the range,
    so a short run of length-sorted batches sees long texts as well as short ones."""
    from benchmarks.compare import spread_order

    for n in (1, 2, 5, 32, 33):
        assert sorted(spread_order(n)) == list(range(n))
    order = spread_order(32)
    assert sorted(order[:4]) == [0, 8, 16, 24]
    for k in (8, 16, 24):  # each prefix's mean index is near the range's middle
        assert abs(sum(order[:k]) / k - 15.5) <= 32 / k


def test_pipeline_ceiling_runs_every_started_batch_to_its_end(
    bundled_model, cache_dir, monkeypatch
):
    """The in-process ceiling on the served pipeline: it stops queueing at the deadline,
    counts every started batch to its end, and reports the real tokens of the texts it
    measured."""
    from benchmarks.compare import PipelineCeiling

    monkeypatch.setenv("EMBED_CACHE_DIR", str(cache_dir))
    ceiling = PipelineCeiling(bundled_model, batch_size=8)
    try:
        row = ceiling.measure((4, 2, "short"), 0.3, None)
    finally:
        ceiling.close()
    assert row["batch"] == 8 and row["sentences_per_s"] > 0
    assert 5 < row["tokens_per_text"] < 64  # short texts, special tokens included
