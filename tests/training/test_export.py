"""ONNX export of the bundled model to every CPU variant, parity report, serving the choice."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sentence_transformers import SentenceTransformer

from service import artifacts
from service.config import Settings
from tests.service.conftest import running
from training.export import (
    PER_TOKEN,
    GpuRequiredError,
    convert_fp16,
    cpu_quantization_arch,
    export_variants,
    fresh_fp32,
    main,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, bundled_model):
    folder = tmp_path_factory.mktemp("export") / "minilm"
    shutil.copytree(bundled_model, folder)
    files = export_variants(
        folder,
        optimize=["O1", "O2", "O3"],
        quantize=[PER_TOKEN, cpu_quantization_arch()],
        speed_seconds=0.3,
    )
    return folder, files


def test_every_variant_is_written_with_sentence_transformers_names(exported):
    folder, files = exported
    names = {f.name for f in files}
    assert {"model.onnx", "model_O1.onnx", "model_O2.onnx", "model_O3.onnx"} <= names
    assert artifacts.PER_TOKEN_INT8_FILE in names and any("int8_avx" in n for n in names)
    fingerprint = artifacts.source_fingerprint(folder)
    for file in files:
        assert file.parent == folder / "onnx" and file.exists()
        assert artifacts.read_fingerprint(file) == fingerprint


def test_each_variant_loads_in_onnxruntime_and_sentence_transformers(exported, st_model):
    folder, files = exported
    reference = st_model.encode(["Der Hund spielt im Garten.", "A man plays the guitar."])
    for file in files:
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        assert {i.name for i in session.get_inputs()} >= {"input_ids", "attention_mask"}
        model = SentenceTransformer(
            str(folder),
            backend="onnx",
            device="cpu",
            model_kwargs={"file_name": f"onnx/{file.name}"},
        )
        got = model.encode(["Der Hund spielt im Garten.", "A man plays the guitar."])
        assert np.min(np.sum(got * reference, axis=1)) > 0.95, file.name


def test_report_holds_the_parity_and_invariance_checks(exported):
    folder, files = exported
    report = json.loads((folder / "onnx" / "report.json").read_text())
    assert report["source_fingerprint"] == artifacts.source_fingerprint(folder)
    report = report["variants"]
    for name in ("model.onnx", "model_O1.onnx", "model_O2.onnx", "model_O3.onnx"):
        assert report[name]["passed"] is True
        assert report[name]["min_cosine"] >= 0.9999
        assert report[name]["batch_invariance"] >= 0.99999
    per_token = report[artifacts.PER_TOKEN_INT8_FILE]
    assert per_token["min_cosine"] >= 0.99 and per_token["batch_invariance"] >= 0.99999
    assert per_token["passed"] is True
    dynamic = report[next(f.name for f in files if "int8_avx" in f.name)]
    assert dynamic["batch_invariance"] < 0.99999 and dynamic["passed"] is False
    assert dynamic["size_mb"] < report["model.onnx"]["size_mb"] / 3
    for row in (per_token, report["model.onnx"], report["torch"]):
        assert row["sentences_per_s_batch1"] > 0 and row["sentences_per_s_batch32"] > 0


def test_service_serves_the_chosen_variant(exported, cache_dir):
    folder, files = exported
    auto = Settings(_env_file=None, cache_dir=cache_dir, model=str(folder), onnx_file="auto")
    with running(auto) as client:
        info = client.get("/info").json()
    assert info["onnx_file"] == str(folder / "onnx" / artifacts.PER_TOKEN_INT8_FILE)
    assert info["model_dtype"] == "int8" and "invariance" in info["variant_reason"]
    named = Settings(
        _env_file=None, cache_dir=cache_dir, model=str(folder), onnx_file="model_O2.onnx"
    )
    with running(named) as client:
        assert client.get("/info").json()["onnx_file"].endswith("model_O2.onnx")
        assert client.post("/embed", json={"inputs": "ok"}).status_code == 200


def test_gpu_only_variants_fail_first_with_a_clear_message(tmp_path, bundled_model, capsys):
    folder = tmp_path / "m"
    shutil.copytree(bundled_model, folder)
    if ort.get_device() == "GPU":
        pytest.skip("a GPU is present")
    with pytest.raises(GpuRequiredError, match="targets CUDA"):
        export_variants(folder, fp16=True)
    with pytest.raises(GpuRequiredError, match="O4"):
        export_variants(folder, optimize=["O4"])
    assert not (folder / "onnx").exists()  # failed before doing any work
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(folder), "--fp16"])
    assert exit_info.value.code == 2
    assert "no usable CUDA device" in capsys.readouterr().err


def test_fp16_conversion_code_path(exported, tmp_path):
    folder, _ = exported
    target = convert_fp16(folder / "onnx" / "model.onnx", tmp_path / "model_fp16.onnx")
    graph = onnx.load(str(target)).graph
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert target.stat().st_size < (folder / "onnx" / "model.onnx").stat().st_size * 0.6


def _fake_model(folder):
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder, artifacts.source_fingerprint(folder)


def test_export_rebuilds_a_stale_fp32(tmp_path, monkeypatch):
    from tests.service.test_variants import tiny_onnx

    folder, fingerprint = _fake_model(tmp_path / "m")
    rebuilt = []
    monkeypatch.setattr(
        "service.artifacts.export_transformer_fp32",
        lambda transformer, target, fingerprint: rebuilt.append(target),
    )
    tiny_onnx(folder / "onnx" / "model.onnx", None)  # an older version: no fingerprint
    fresh_fp32(folder, fingerprint)
    tiny_onnx(folder / "onnx" / "model.onnx", "0" * 64)  # other weights
    fresh_fp32(folder, fingerprint)
    assert rebuilt == [folder / "onnx", folder / "onnx"]
    tiny_onnx(folder / "onnx" / "model.onnx", fingerprint)
    assert fresh_fp32(folder, fingerprint) == folder / "onnx" / "model.onnx"
    assert len(rebuilt) == 2


def test_export_never_exits_0_when_fp32_failed(tmp_path, monkeypatch):
    folder, fingerprint = _fake_model(tmp_path / "m")
    fp32 = folder / "onnx" / "model.onnx"

    def fake_export(model, *args):
        fp32.parent.mkdir(exist_ok=True)
        artifacts.merge_report(fp32.parent, {"model.onnx": {"passed": False}}, fingerprint)
        return [fp32]

    monkeypatch.setattr("training.export.export_variants", fake_export)
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(folder)])
    assert exit_info.value.code == 1
