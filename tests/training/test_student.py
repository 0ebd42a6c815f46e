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


def _fits_with_and_without_cached_ids(bundled_model, tmp_path, texts, groups, **fit_args):
    """(fit from the texts, fit from the cached token ids, the second fit's student, dense
    layer and token ids): a 1-layer student of the bundled model fitted to its teacher."""
    from training.input_pipeline import cached_token_ids, distinct_texts

    targets = SentenceTransformer(str(bundled_model), device="cpu").encode(texts)
    fits = []
    for use_tokens in (False, True):
        student = SentenceTransformer(str(bundled_model), device="cpu")
        reduce_layers(student, 1)
        dense = insert_projection(student, 384)
        tokens = cached_token_ids(student, distinct_texts(texts), tmp_path) if use_tokens else None
        fits.append(
            fit_projection(student, dense, texts, targets, groups, tokens=tokens, **fit_args)
        )
    return (*fits, student, dense, tokens)


WORDS = ["cats", "dogs", "cars", "rain", "music", "bread", "stocks", "trees"]


def test_projection_fit_from_cached_token_ids_is_unchanged(bundled_model, tmp_path):
    """Fitting from the cached token ids (each distinct text encoded once, duplicates
    mapped back) gives the map fitting from the texts gives."""
    texts = [f"sentence {i} about {w}" + " and more" * (i % 5) for i, w in enumerate(WORDS * 6)]
    texts += texts[:8]  # duplicates, as when a translation equals another sample's text
    plain, cached, student, dense, tokens = _fits_with_and_without_cached_ids(
        bundled_model, tmp_path, texts, texts, ridge=1e-2
    )
    np.testing.assert_allclose(cached.w, plain.w, atol=1e-4)
    np.testing.assert_allclose(cached.b, plain.b, atol=1e-4)
    assert cached.heldout_mse == pytest.approx(plain.heldout_mse, rel=1e-4)
    targets = np.zeros((5, 384), dtype=np.float32)
    with pytest.raises(ValueError, match="token id rows"):
        fit_projection(student, dense, texts[:5], targets, texts[:5], tokens=tokens)


def test_projection_fit_on_a_sample_reads_the_samples_cached_ids(bundled_model, tmp_path):
    """`max_samples`: the fit sees a seeded sample of whole sentences, and fitting it from
    the full run's cached token ids gives the map fitting it from the texts gives."""
    texts = [f"sentence {i} about {w}" + " and more" * (i % 5) for i, w in enumerate(WORDS * 8)]
    groups = [f"english {i // 2}" for i in range(len(texts))]  # two rows per sentence
    plain, cached, *_ = _fits_with_and_without_cached_ids(
        bundled_model, tmp_path, texts, groups, ridge=1e-2, max_samples=41
    )
    assert plain.n_train + plain.n_heldout == 40 and plain.n_available == len(texts)
    assert plain.summary()["n_available"] == len(texts)
    np.testing.assert_allclose(cached.w, plain.w, atol=1e-4)
    assert cached.heldout_mse == pytest.approx(plain.heldout_mse, rel=1e-4)
