"""Student surgery: layer reduction, frozen embeddings, least-squares projection."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from training.student import (
    evenly_spaced,
    fit_linear_map,
    fit_projection,
    freeze_embeddings,
    insert_projection,
    reduce_layers,
    transformer_layers,
)


def test_evenly_spaced_layers():
    assert evenly_spaced(12, 6) == [0, 2, 4, 7, 9, 11]
    assert evenly_spaced(24, 8) == [0, 3, 7, 10, 13, 16, 20, 23]
    assert evenly_spaced(6, 1) == [0]
    with pytest.raises(ValueError, match="between 1 and 6"):
        evenly_spaced(6, 7)


def test_reduce_layers_keeps_the_requested_ones(bundled_model):
    model = SentenceTransformer(str(bundled_model), device="cpu")
    original = list(transformer_layers(model))
    kept = reduce_layers(model, 3)
    assert kept == [0, 2, 5]
    now = list(transformer_layers(model))
    assert [id(layer) for layer in now] == [id(original[i]) for i in kept]
    assert model[0].auto_model.config.num_hidden_layers == 3
    assert model.encode(["still works"]).shape == (1, 384)


def test_freeze_embeddings(bundled_model):
    model = SentenceTransformer(str(bundled_model), device="cpu")
    frozen = freeze_embeddings(model)
    assert frozen == 30522 * 384
    assert not model[0].auto_model.get_input_embeddings().weight.requires_grad


def test_fit_linear_map_recovers_a_known_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 16))
    w_true, b_true = rng.normal(size=(16, 8)), rng.normal(size=8)
    y = x @ w_true + b_true
    w, b = fit_linear_map(x, y, ridge=1e-8)
    np.testing.assert_allclose(w, w_true, atol=1e-4)
    np.testing.assert_allclose(b, b_true, atol=1e-4)


def test_projection_lowers_the_starting_mse(bundled_model):
    """A 2-layer student of a different space: the fitted projection beats a random one."""
    teacher = SentenceTransformer(str(bundled_model), device="cpu")
    student = SentenceTransformer(str(bundled_model), device="cpu")
    reduce_layers(student, 1)
    texts = [
        f"sentence number {i} about {w}"
        for i, w in enumerate(
            ["cats", "dogs", "cars", "rain", "music", "bread", "stocks", "trees"] * 8
        )
    ]
    targets = teacher.encode(texts)
    dense = insert_projection(student, 384)
    before = np.mean((student.encode(texts) - targets) ** 2)
    fit = fit_projection(student, dense, texts, targets, texts, ridge=1e-2)
    assert fit.ridge == 1e-2 and fit.n_heldout > 0
    after = np.mean((student.encode(texts) - targets) ** 2)
    assert after < before / 2
    assert [type(m).__name__ for m in student] == ["Transformer", "Pooling", "Dense", "Normalize"]
