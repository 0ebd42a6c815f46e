"""ONNX export of the bundled model to every CPU variant, parity report, serving the choice."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sentence_transformers import SentenceTransformer

from service.config import Settings
from tests.service.conftest import running
from training.export import (
    GpuRequiredError,
    convert_fp16,
    cpu_quantization_arch,
    export_variants,
    main,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, bundled_model):
    folder = tmp_path_factory.mktemp("export") / "minilm"
    shutil.copytree(bundled_model, folder)
    files = export_variants(
        folder, optimize=["O1", "O2", "O3"], quantize=[cpu_quantization_arch()], speed_seconds=0.3
    )
    return folder, files


def test_every_variant_is_written_with_sentence_transformers_names(exported):
    folder, files = exported
    names = {f.name for f in files}
    assert {"model.onnx", "model_O1.onnx", "model_O2.onnx", "model_O3.onnx"} <= names
    assert any("int8_" in n for n in names)
    for file in files:
        assert file.parent == folder / "onnx" and file.exists()


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


def test_report_holds_the_parity_bars(exported):
    folder, files = exported
    report = json.loads((folder / "onnx" / "report.json").read_text())["variants"]
    for name in ("model.onnx", "model_O1.onnx", "model_O2.onnx", "model_O3.onnx"):
        assert report[name]["passed"] is True
        assert report[name]["min_cosine"] >= 0.9999
    int8 = next(f.name for f in files if "int8_" in f.name)
    assert report[int8]["mean_cosine"] >= 0.99
    assert report[int8]["passed"] is True
    assert report[int8]["size_mb"] < report["model.onnx"]["size_mb"] / 3
    for row in (report[int8], report["model.onnx"], report["torch"]):
        assert row["sentences_per_s_batch1"] > 0 and row["sentences_per_s_batch32"] > 0


def test_service_serves_the_chosen_variant(exported, cache_dir):
    folder, files = exported
    int8 = next(f.name for f in files if "int8_" in f.name)
    with running(Settings(_env_file=None, cache_dir=cache_dir, model=str(folder))) as client:
        assert client.get("/info").json()["onnx_file"].endswith(int8)
        assert client.get("/info").json()["model_dtype"] == "int8"
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
