"""Served vectors you can trust: source fingerprints, stale files never served, batch-
invariant int8, and the fastest safe variant by default."""

from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service import artifacts
from service.config import Settings
from service.engine.model import onnx_pipeline
from service.int8 import WEIGHT_LEVELS, quantize_per_token
from service.parity import INVARIANCE_BAR, SAMPLE, batch_invariance, cosine_stats
from service.variants import OnnxFileError, choose_variant, named_variant
from tests.service.conftest import AUTO, SENTENCES, running

FP = "a" * 64
OTHER = "b" * 64


def tiny_onnx(path, fingerprint: str | None):
    """A valid one-node ONNX file, optionally stamped with a source fingerprint."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(
        helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    )
    if fingerprint:
        artifacts.set_fingerprint(model, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def report_row(passed=True, invariance=1.0, speed=None):
    row = {"passed": passed, "batch_invariance": invariance, "min_cosine": 0.995}
    return row if speed is None else {**row, "sentences_per_s_batch32": speed}


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_follows_content_not_paths_or_mtimes(bundled_model, tmp_path):
    copy = shutil.copytree(bundled_model, tmp_path / "copy", ignore=shutil.ignore_patterns("onnx"))
    same = artifacts.source_fingerprint(bundled_model)
    assert artifacts.source_fingerprint(copy) == same  # other path, other mtimes
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one byte of one weight, same size
    weights.write_bytes(bytes(data))
    assert artifacts.source_fingerprint(copy) != same
    (copy / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weight file"):
        artifacts.source_fingerprint(copy)


def test_cache_folder_is_keyed_by_content(tmp_path):
    assert artifacts.cache_dir_for(tmp_path / "m", tmp_path, FP) != artifacts.cache_dir_for(
        tmp_path / "m", tmp_path, OTHER
    )


def test_missing_or_other_fingerprint_is_stale(tmp_path):
    assert artifacts.is_fresh(tiny_onnx(tmp_path / "a.onnx", FP), FP)
    assert not artifacts.is_fresh(tiny_onnx(tmp_path / "b.onnx", OTHER), FP)  # other weights
    assert artifacts.read_fingerprint(tiny_onnx(tmp_path / "c.onnx", None)) is None
    assert not artifacts.is_fresh(tmp_path / "c.onnx", FP)  # older version: no fingerprint
    assert not artifacts.is_fresh(tmp_path / "absent.onnx", FP)
    stamped = tiny_onnx(tmp_path / "d.onnx", FP).read_bytes()
    (tmp_path / "cut.onnx").write_bytes(stamped[: len(stamped) - 5])  # truncated: not trusted
    assert not artifacts.is_fresh(tmp_path / "cut.onnx", FP)


def test_report_rows_of_other_weights_are_dropped(tmp_path):
    artifacts.merge_report(tmp_path, {"model.onnx": {"passed": True}}, OTHER)
    assert artifacts.report_variants(tmp_path, FP) == {}
    artifacts.merge_report(tmp_path, {"x.onnx": {"passed": True}}, FP)
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["variants"]) == {"x.onnx"} and report["source_fingerprint"] == FP


# ---------------------------------------------------------------- choosing


def _folder(tmp_path, files: dict[str, str | None], rows: dict[str, dict]):
    onnx_dir = tmp_path / "model" / "onnx"
    for name, fingerprint in files.items():
        tiny_onnx(onnx_dir / name, fingerprint)
    if rows:
        artifacts.merge_report(onnx_dir, rows, FP)
    return tmp_path / "model", onnx_dir


def test_auto_serves_only_fresh_variants_that_passed_parity_and_invariance(tmp_path):
    int8 = artifacts.PER_TOKEN_INT8_FILE
    model, onnx_dir = _folder(tmp_path, {"model.onnx": FP, int8: FP}, {int8: report_row()})
    chosen = choose_variant(model, onnx_dir, FP, "cpu")
    assert chosen.file.name == int8 and "batch invariance" in chosen.reason
    # failed invariance, failed parity, or stale file: fp32
    for row, stamp in (
        (report_row(invariance=0.98), FP),
        (report_row(False), FP),
        (report_row(), OTHER),
    ):
        model, onnx_dir = _folder(
            tmp_path / str(id(row)), {"model.onnx": FP, int8: stamp}, {int8: row}
        )
        chosen = choose_variant(model, onnx_dir, FP, "cpu")
        assert chosen.file.name == "model.onnx", row
        assert chosen.reason.startswith("fp32")


def test_a_per_token_file_that_failed_its_check_is_not_rebuilt_each_start(tmp_path):
    int8 = artifacts.PER_TOKEN_INT8_FILE
    failed = {**report_row(False), "weight_levels": WEIGHT_LEVELS}  # the current quantiser's
    model, onnx_dir = _folder(tmp_path, {"model.onnx": FP, int8: FP}, {int8: failed})
    chosen = choose_variant(model, onnx_dir, FP, "cpu", cache_root=tmp_path / "cache")
    assert chosen.file.name == "model.onnx" and "failed its check" in chosen.reason
    assert "build failed" not in chosen.reason  # not rebuilt: the tiny graph cannot be


def test_a_failed_file_of_the_8_bit_quantiser_is_rebuilt_once(bundled_model, onnx_file, tmp_path):
    """8-bit weights saturate on CPUs without VNNI (service.int8): a file of that quantiser
    that failed its check here is rebuilt with 7-bit weights, checked and recorded."""
    folder = shutil.copytree(bundled_model, tmp_path / "m", ignore=shutil.ignore_patterns("onnx"))
    onnx_dir = folder / "onnx"
    onnx_dir.mkdir()
    shutil.copy(onnx_file, onnx_dir / "model.onnx")
    fingerprint = artifacts.source_fingerprint(folder)
    int8 = artifacts.PER_TOKEN_INT8_FILE
    quantize_per_token(onnx_dir / "model.onnx", onnx_dir / int8, weight_levels=127)
    artifacts.merge_report(onnx_dir, {int8: report_row(False)}, fingerprint)  # no weight_levels
    chosen = choose_variant(folder, onnx_dir, fingerprint, "cpu", cache_root=tmp_path / "cache")
    row = artifacts.report_variants(onnx_dir, fingerprint)[int8]
    assert row["weight_levels"] == WEIGHT_LEVELS and row["passed"] is True
    assert row["min_cosine"] >= 0.99 and row["batch_invariance"] >= INVARIANCE_BAR
    assert chosen.file == onnx_dir / int8


def test_a_failed_int8_build_serves_fp32(tmp_path, caplog):
    model, onnx_dir = _folder(tmp_path, {"model.onnx": FP}, {})  # no MatMul to quantise
    with caplog.at_level(logging.WARNING):
        chosen = choose_variant(model, onnx_dir, FP, "cpu", cache_root=tmp_path / "cache")
    assert chosen.file.name == "model.onnx" and "build failed" in chosen.reason
    assert "serving fp32" in caplog.text


def test_auto_prefers_the_fastest_measured_variant(tmp_path):
    a, b = artifacts.PER_TOKEN_INT8_FILE, artifacts.STATIC_INT8_FILE
    model, onnx_dir = _folder(
        tmp_path,
        {"model.onnx": FP, a: FP, b: FP},
        {a: report_row(speed=100), b: report_row(speed=200)},
    )
    assert choose_variant(model, onnx_dir, FP, "cpu").file.name == b


def test_named_stale_file_fails_with_the_rebuild_command(tmp_path):
    model, onnx_dir = _folder(tmp_path, {"model.onnx": FP, "model_O2.onnx": None}, {})
    with pytest.raises(artifacts.StaleOnnxError, match="python -m training.export"):
        named_variant(model, onnx_dir, "model_O2.onnx", FP)
    with pytest.raises(OnnxFileError, match="available"):
        named_variant(model, onnx_dir, "model_O3.onnx", FP)


# ---------------------------------------------------------------- batch-invariant int8


@pytest.fixture(scope="module")
def per_token_file(onnx_file, tmp_path_factory):
    return quantize_per_token(
        onnx_file, tmp_path_factory.mktemp("int8") / artifacts.PER_TOKEN_INT8_FILE
    )


def test_per_token_int8_is_batch_invariant_and_close_to_fp32(
    bundled_model, onnx_file, per_token_file
):
    assert artifacts.read_fingerprint(per_token_file) == artifacts.read_fingerprint(onnx_file)
    int8 = onnx_pipeline(bundled_model, per_token_file)
    assert batch_invariance(int8) >= INVARIANCE_BAR
    alone = int8.encode(["hello world"])
    batched = int8.encode(["hello world", SAMPLE[20]], batch_size=2)[:1]
    assert cosine_stats(alone, batched)[1] >= INVARIANCE_BAR
    reference = onnx_pipeline(bundled_model, onnx_file).encode(SAMPLE)
    assert cosine_stats(int8.encode(SAMPLE), reference)[1] >= 0.99


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_the_one_thread_session_gives_a_single_text_the_same_vector(
    kind, onnx_file, per_token_file
):
    """One short text runs on the one-thread session (faster at batch 1); its vector equals
    the one the main session gives it, bit for bit."""
    from service.backends.onnx import SINGLE_THREAD_MAX_TOKENS, OnnxBackend

    file = onnx_file if kind == "fp32" else per_token_file
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    mask, types = np.ones_like(ids), np.zeros_like(ids)
    main = OnnxBackend(file, "cpu", threads=2, single_text_session=False)
    both = OnnxBackend(file, "cpu", threads=2)
    assert both.single_session is None  # built on first use
    expected = main.forward(ids, mask, types)
    np.testing.assert_array_equal(both.forward(ids, mask, types), expected)
    assert both.single_session is not None and main.single_session is None
    assert any("1 intra-op thread" in line for line in both.info.batch_kernels)
    long_ids = np.ones((1, SINGLE_THREAD_MAX_TOKENS + 1), dtype=np.int64)  # main session
    np.testing.assert_array_equal(
        both.forward(long_ids, np.ones_like(long_ids), np.zeros_like(long_ids)),
        main.forward(long_ids, np.ones_like(long_ids), np.zeros_like(long_ids)),
    )
    assert OnnxBackend(file, "cpu", threads=1).info.batch_kernels == (
        "every batch: 1 intra-op thread",
    )


@pytest.mark.parametrize("kind", ["fp32", "per-token int8"])
def test_a_lone_long_text_runs_on_every_core_with_the_same_vector(kind, onnx_file, per_token_file):
    """With inference workers each session has a share of the cores; a single text over
    SINGLE_THREAD_MAX_TOKENS while no other batch runs goes to a session on all of them
    (a lone passage would leave the other cores idle), bit-identical to the worker's."""
    from service.backends.onnx import SINGLE_THREAD_MAX_TOKENS, OnnxBackend

    file = onnx_file if kind == "fp32" else per_token_file
    ids = np.full((1, SINGLE_THREAD_MAX_TOKENS + 30), 7592, dtype=np.int64)
    ids[0, 0], ids[0, -1] = 101, 102
    mask, types = np.ones_like(ids), np.zeros_like(ids)
    worker = OnnxBackend(file, "cpu", threads=1)
    lone = OnnxBackend(file, "cpu", threads=1, lone_threads=2)
    assert worker.info.batch_kernels == ("every batch: 1 intra-op thread",)
    assert "one longer text while no other batch runs: 2 intra-op threads" in (
        lone.info.batch_kernels
    )
    assert lone.lone_session is None  # built on first use
    np.testing.assert_array_equal(lone.forward(ids, mask, types), worker.forward(ids, mask, types))
    assert lone.lone_session is not None and worker.lone_session is None
    two = np.repeat(ids, 2, axis=0)  # a batch of two: the worker's session, as before
    np.testing.assert_array_equal(
        lone.forward(two, np.ones_like(two), np.zeros_like(two)),
        worker.forward(two, np.ones_like(two), np.zeros_like(two)),
    )
    assert OnnxBackend(file, "cpu", threads=2, lone_threads=2).lone_session is None
    assert not any(
        "longer text" in k
        for k in OnnxBackend(file, "cpu", threads=2, lone_threads=2).info.batch_kernels
    )


def test_dynamic_int8_fails_the_invariance_check(bundled_model, onnx_file, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = tmp_path / "model_qint8_dynamic.onnx"
    quantize_dynamic(str(onnx_file), str(target), weight_type=QuantType.QInt8)
    assert batch_invariance(onnx_pipeline(bundled_model, target)) < INVARIANCE_BAR


# ---------------------------------------------------------------- the default, end to end


def test_default_serves_checked_per_token_int8_and_says_why(cache_dir, st_model):
    with running(Settings(_env_file=None, cache_dir=cache_dir, **AUTO)) as client:
        _check_default(client, st_model)


def _check_default(client, st_model):
    info = client.get("/info").json()
    assert info["onnx_file"].endswith(artifacts.PER_TOKEN_INT8_FILE)
    assert info["model_dtype"] == "int8"
    assert "batch invariance" in info["variant_reason"]
    if (os.cpu_count() or 1) > 1:  # two batches at once, each on its share of the cores
        threads = (os.cpu_count() or 1) // 2
        assert info["inference_workers"] == 2
        assert info["batch_kernels"][-1].endswith(
            f": {threads} intra-op thread" + "s" * (threads > 1)
        )
    alone = np.asarray(client.post("/embed", json={"inputs": "hello world"}).json())
    batched = np.asarray(
        client.post("/embed", json={"inputs": ["hello world", SENTENCES[3]]}).json()
    )
    assert cosine_stats(alone, batched[:1])[1] >= INVARIANCE_BAR
    assert cosine_stats(alone, st_model.encode(["hello world"]))[1] >= 0.99


def test_changed_weights_saved_into_the_same_folder_are_served(
    bundled_model, onnx_file, per_token_file, tmp_path, cache_dir, caplog
):
    """An older export (the bundled weights) sits in onnx/; the weights change and are
    saved into the same folder: the stale files are detected and rebuilt, vectors follow."""
    import torch
    from sentence_transformers import SentenceTransformer

    folder = tmp_path / "student"
    old = SentenceTransformer(str(bundled_model), device="cpu")
    old.save(str(folder))
    (folder / "onnx").mkdir()
    shutil.copy(onnx_file, folder / "onnx" / "model.onnx")  # as after a first start
    shutil.copy(per_token_file, folder / "onnx" / artifacts.PER_TOKEN_INT8_FILE)
    artifacts.merge_report(
        folder / "onnx",
        {artifacts.PER_TOKEN_INT8_FILE: report_row()},
        artifacts.source_fingerprint(folder),
    )
    with torch.no_grad():
        layer = old[0].auto_model.encoder.layer[2].intermediate.dense
        layer.weight.mul_(-1.5)
    old.save(str(folder))  # what a second distill run into the same --output does
    expected = old.encode(SENTENCES)
    before = SentenceTransformer(str(bundled_model), device="cpu").encode(SENTENCES)
    assert cosine_stats(expected, before)[1] < 0.98  # the change is visible
    with (
        caplog.at_level(logging.WARNING),
        running(Settings(_env_file=None, cache_dir=cache_dir, model=str(folder), **AUTO)) as client,
    ):
        got = np.asarray(client.post("/embed", json={"inputs": SENTENCES}).json())
        info = client.get("/info").json()
    assert "stale ONNX files" in caplog.text and "model.onnx" in caplog.text
    assert info["onnx_file"] == str(folder / "onnx" / artifacts.PER_TOKEN_INT8_FILE)
    assert cosine_stats(got, expected)[1] >= 0.99
    fresh = artifacts.source_fingerprint(folder)
    assert artifacts.read_fingerprint(folder / "onnx" / "model.onnx") == fresh


def test_prebuild_puts_the_checked_int8_file_inside_the_model_folder(
    bundled_model, onnx_file, tmp_path
):
    from service.variants import prebuild

    folder = shutil.copytree(bundled_model, tmp_path / "image-model")
    (folder / "onnx").mkdir(exist_ok=True)
    shutil.copy(onnx_file, folder / "onnx" / "model.onnx")  # fresh: no second export
    assert prebuild(folder) == folder / "onnx" / artifacts.PER_TOKEN_INT8_FILE
    rows = artifacts.report_variants(folder / "onnx", artifacts.source_fingerprint(folder))
    assert rows[artifacts.PER_TOKEN_INT8_FILE]["passed"] is True


def test_service_never_imports_training():
    """One artefact module (service/artifacts.py) is shared; service/ stands alone."""
    import re
    from pathlib import Path

    import service

    root = Path(service.__file__).parent
    for file in root.rglob("*.py"):
        text = file.read_text()
        assert not re.search(r"^\s*(from|import)\s+training\b", text, re.M), file
