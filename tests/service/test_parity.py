"""Service vectors equal SentenceTransformer.encode on the same model, for both backends,
for a CLS-pooled unnormalised model and for a model with a Dense projection."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from service.config import Settings
from tests.service.conftest import SENTENCES, running


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_default_model_matches_sentence_transformers(backend, st_model, cache_dir):
    expected = st_model.encode(SENTENCES, convert_to_numpy=True)
    settings = Settings(_env_file=None, cache_dir=cache_dir, backend=backend)
    with running(settings) as client:
        got = np.asarray(client.post("/embed", json={"inputs": SENTENCES}).json())
    assert got.shape == expected.shape
    assert cosines(got, expected).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def _copy_model(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("onnx"))
    return dst


def test_cls_unnormalised_model_matches_exactly(bundled_model, tmp_path, cache_dir):
    """A CLS-pooled, dot-product model (like multi-qa-mpnet-base-dot-v1): no Normalize."""
    from sentence_transformers import SentenceTransformer

    folder = _copy_model(bundled_model, tmp_path / "cls-dot")
    pooling = json.loads((folder / "1_Pooling/config.json").read_text())
    pooling.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    (folder / "1_Pooling/config.json").write_text(json.dumps(pooling))
    modules = [
        m
        for m in json.loads((folder / "modules.json").read_text())
        if not m["type"].endswith("Normalize")
    ]
    (folder / "modules.json").write_text(json.dumps(modules))

    expected = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES)
    assert not np.allclose(np.linalg.norm(expected, axis=1), 1.0)  # really unnormalised
    for backend in ("onnx", "torch"):
        settings = Settings(_env_file=None, cache_dir=cache_dir, model=str(folder), backend=backend)
        with running(settings) as client:
            got = np.asarray(client.post("/embed", json={"inputs": SENTENCES}).json())
            info = client.get("/info").json()
        assert info["pooling"] == "cls" and info["normalize"] is False
        assert cosines(got, expected).min() >= 0.9999
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)


def test_dense_projection_model_matches(bundled_model, tmp_path, cache_dir):
    """A distilled student has Pooling -> Dense -> Normalize; the service applies the Dense."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    base = SentenceTransformer(str(bundled_model), device="cpu")
    torch.manual_seed(0)
    dense = models.Dense(384, 128, bias=True, activation_function=torch.nn.Tanh())
    model = SentenceTransformer(modules=[base[0], base[1], dense, models.Normalize()], device="cpu")
    folder = tmp_path / "dense"
    model.save(str(folder))
    expected = model.encode(SENTENCES)
    settings = Settings(_env_file=None, cache_dir=cache_dir, model=str(folder))
    with running(settings) as client:
        got = np.asarray(client.post("/embed", json={"inputs": SENTENCES}).json())
        assert client.get("/info").json()["dimension"] == 128
    assert cosines(got, expected).min() >= 0.9999


def test_onnx_export_is_cached_outside_read_only_folder(bundled_model, cache_dir, onnx_file):
    assert onnx_file.exists()
    assert cache_dir in onnx_file.parents
    assert not (bundled_model / "onnx").exists()  # site-packages left untouched


def test_writable_folder_gets_its_own_onnx_export(bundled_model, tmp_path, cache_dir):
    folder = _copy_model(bundled_model, tmp_path / "writable")
    with running(Settings(_env_file=None, cache_dir=cache_dir, model=str(folder))) as client:
        assert client.get("/info").json()["onnx_file"] == str(folder / "onnx" / "model.onnx")
    assert (folder / "onnx" / "model.onnx").exists()
