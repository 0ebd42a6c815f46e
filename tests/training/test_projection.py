"""The projection's held-out check and ridge choice, on synthetic vectors (issue 17, 1b)."""

from __future__ import annotations

import numpy as np
import pytest

from training.projection import (
    RidgePath,
    check_on_dev,
    fit_checked,
    grouped_split,
    mse,
    poor_fit_message,
    sample_groups,
)


def _linear_data(rng, n, d_in=32, d_out=16, noise=0.05, centre=None, spread=1.0):
    """Inputs around `centre` with `spread`, targets a fixed linear map plus noise."""
    w_true = np.random.default_rng(0).normal(size=(d_in, d_out)) / np.sqrt(d_in)
    centre = np.zeros(d_in) if centre is None else centre
    x = centre + spread * rng.normal(size=(n, d_in))
    y = x @ w_true + noise * rng.normal(size=(n, d_out))
    return x, y


def test_broad_data_fits_and_is_not_flagged():
    rng = np.random.default_rng(1)
    x, y = _linear_data(rng, 600)
    fit = fit_checked(x, y, [str(i) for i in range(len(x))])
    assert not fit.poor, fit.problems
    assert fit.heldout_r2 > 0.9 and fit.heldout_retrieval > 90
    assert fit.w.shape == (32, 16) and fit.b.shape == (16,)


def test_map_fitted_on_a_narrow_cluster_is_flagged():
    """Inputs that barely vary (one genre): the noise swamps the signal, the training MSE
    looks fine, and only the held-out share shows the map does not generalise."""
    rng = np.random.default_rng(2)
    x, y = _linear_data(rng, 120, centre=np.full(32, 3.0), spread=0.02, noise=0.05)
    fit = fit_checked(x, y, [str(i) for i in range(len(x))], ridge=1e-6)
    assert fit.poor
    assert any("R^2" in p for p in fit.problems)
    assert fit.train_mse < fit.heldout_mse
    message = poor_fit_message(fit)
    assert "too little or too narrow parallel data" in message
    assert "--allow-poor-projection" in message


def test_chosen_ridge_beats_a_fixed_one_on_new_data():
    """Few noisy pairs in many dimensions: the ridge chosen on the held-out share predicts
    unseen pairs better than the old fixed 1e-4."""
    rng = np.random.default_rng(3)
    x, y = _linear_data(rng, 80, d_in=64, noise=0.5)
    x_new, y_new = _linear_data(rng, 2000, d_in=64, noise=0.5)
    groups = [str(i) for i in range(len(x))]
    chosen = fit_checked(x, y, groups)
    fixed = fit_checked(x, y, groups, ridge=1e-4)
    assert chosen.ridge != 1e-4 and fixed.ridge == 1e-4
    assert mse(x_new, y_new, chosen.w, chosen.b) < 0.9 * mse(x_new, y_new, fixed.w, fixed.b)
    assert chosen.heldout_mse < fixed.heldout_mse


def test_ridge_path_matches_a_direct_solve():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(50, 8)), rng.normal(size=(50, 3))
    w, b = RidgePath(x, y).solve(0.3)
    xc, yc = x - x.mean(0), y - y.mean(0)
    direct = np.linalg.solve(xc.T @ xc / 50 + 0.3 * np.eye(8), xc.T @ yc / 50)
    np.testing.assert_allclose(w, direct, atol=1e-10)
    np.testing.assert_allclose(b, y.mean(0) - x.mean(0) @ direct, atol=1e-10)


def test_split_keeps_a_sentence_and_its_translations_together():
    groups = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
    train, heldout = grouped_split(groups, 0.4, seed=0)
    assert len(heldout) == 4 and sorted([*train, *heldout]) == list(range(10))
    assert not {groups[i] for i in train} & {groups[i] for i in heldout}
    with pytest.raises(ValueError, match="two distinct"):
        grouped_split(["a", "a"])


def test_one_genre_passes_its_own_held_out_share_but_fails_on_dev_pairs():
    """Training inputs that vary in few directions (one genre, e.g. image captions): the
    held-out share of the same sample looks fine; separate dev pairs show the failure."""
    rng = np.random.default_rng(5)
    w_true = rng.normal(size=(32, 16)) / np.sqrt(32)
    x = np.zeros((400, 32))
    x[:, :8] = rng.normal(size=(400, 8))
    y = x @ w_true + 0.02 * rng.normal(size=(400, 16))
    fit = fit_checked(x, y, [str(i) for i in range(400)])
    assert not fit.poor and fit.heldout_r2 > 0.9
    x_dev = rng.normal(size=(300, 32))
    y_dev = x_dev @ w_true
    check_on_dev(fit, x_dev, y_dev, [str(i) for i in range(300)])
    assert fit.poor and fit.dev_r2 < 0.35
    assert any("dev pairs" in p for p in fit.problems)
    assert fit.summary()["dev_r2"] == round(fit.dev_r2, 4)


def test_projection_sample_is_whole_groups_seeded_and_capped():
    """`--projection-max-samples`: at most N rows, every English sentence with all its
    translations or none, the same draw for the same seed, every row when there are fewer."""
    groups = [f"en{i // 3}" for i in range(300)]  # 100 sentences, three rows each
    rows = sample_groups(groups, 50, seed=7)
    assert 0 < len(rows) <= 50 and len(rows) % 3 == 0
    picked = {groups[i] for i in rows}
    assert sorted(rows) == [i for i, g in enumerate(groups) if g in picked]
    assert np.array_equal(rows, sample_groups(groups, 50, seed=7))
    assert not np.array_equal(rows, sample_groups(groups, 50, seed=8))
    assert np.array_equal(sample_groups(groups, 300), np.arange(300))
    with pytest.raises(ValueError, match="at least one row"):
        sample_groups(groups, 0)
