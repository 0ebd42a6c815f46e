"""Weight-space interpolation of two students (training.interpolate)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from training.interpolate import interpolate, interpolate_state, main


def test_state_is_mixed_per_weight_and_checked():
    a = {"w": torch.zeros(2, 2), "ids": torch.arange(3)}
    b = {"w": torch.ones(2, 2) * 4, "ids": torch.arange(3)}
    mixed = interpolate_state(a, b, 0.25)
    assert torch.equal(mixed["w"], torch.ones(2, 2)) and torch.equal(mixed["ids"], a["ids"])
    assert torch.equal(interpolate_state(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_state(a, b, 1.0)["w"], b["w"])
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        interpolate_state(a, b, 1.5)
    with pytest.raises(ValueError, match="in one model only"):
        interpolate_state(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ValueError, match=r"w: shape \(2, 2\) vs \(3,\)"):
        interpolate_state(a, {**b, "w": torch.ones(3)}, 0.5)
    with pytest.raises(ValueError, match="non-float weights differ"):
        interpolate_state(a, {**b, "ids": torch.arange(1, 4)}, 0.5)


def test_interpolated_folder_loads_and_lies_between(bundled_model, tmp_path):
    """b = a with every float weight scaled: alpha 0 encodes as a, alpha 1 as b, and the
    record names the sources."""
    a = SentenceTransformer(str(bundled_model), device="cpu")
    with torch.no_grad():
        for weight in a.parameters():
            weight.mul_(0.9)
    b_dir = tmp_path / "b"
    a.save(str(b_dir))
    texts = ["a cat sits on the mat", "stock prices fell today"]
    original = SentenceTransformer(str(bundled_model), device="cpu").encode(texts)
    scaled = SentenceTransformer(str(b_dir), device="cpu").encode(texts)
    for alpha, expected in ((0.0, original), (1.0, scaled)):
        out = interpolate(str(bundled_model), str(b_dir), alpha, tmp_path / f"mix{alpha}")
        got = SentenceTransformer(str(out), device="cpu").encode(texts)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    record = json.loads((tmp_path / "mix1.0" / "interpolation.json").read_text())
    assert record == {"model_a": str(bundled_model), "model_b": str(b_dir), "alpha": 1.0}


def test_cli_rejects_a_bad_alpha_with_a_usage_error(bundled_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "--model-a",
                str(bundled_model),
                "--model-b",
                str(bundled_model),
                "--alpha",
                "2",
                "--output",
                str(tmp_path / "x"),
            ]
        )
    assert stop.value.code == 2
    assert "alpha must be in [0, 1], got 2.0" in capsys.readouterr().err
