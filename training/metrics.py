"""The training metrics, each implemented once: used by the evaluators that run during
training (`training.evaluators`), by the evaluation afterwards (`training.scores`), by
the export report (`training.export_report`) and by the projection's held-out check
(`training.projection`).

Units: STS Spearman and retrieval accuracy x 100 (percent), MSE x 100 (as
sentence-transformers' `MSEEvaluator` reports it). Inputs are float arrays [n, dim] of
sentence vectors; rows are unit-normalised with the service's `l2_normalize` (one
row-normalisation for the whole code base).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

from service.engine.pooling import l2_normalize

__all__ = [
    "cosine_rows",
    "l2_normalize",
    "mse_x100",
    "retrieval_accuracy",
    "spearman_x100",
    "sts_spearman",
]


def spearman_x100(predicted: np.ndarray, gold: np.ndarray) -> float:
    """Spearman rank correlation x100 (the STS convention) of two [n] arrays."""
    rho = spearmanr(np.asarray(predicted), np.asarray(gold)).statistic
    return float(rho * 100.0)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of a[i] with b[i] for every row i: [n, dim] x2 -> [n]."""
    return np.sum(l2_normalize(np.asarray(a)) * l2_normalize(np.asarray(b)), axis=1)


def sts_spearman(first: np.ndarray, second: np.ndarray, gold: np.ndarray) -> float:
    """STS: Spearman x100 of cosine(first[i], second[i]) against the gold scores [n]."""
    return spearman_x100(cosine_rows(first, second), gold)


def retrieval_accuracy(
    queries: np.ndarray, candidates: np.ndarray, gold: np.ndarray | None = None
) -> float:
    """Share (x100) of queries (n, d) whose nearest candidate (m, d) by cosine is the right
    one: candidate `gold[i]` for query i (n indices), or the aligned row i without `gold`."""
    q, c = l2_normalize(np.asarray(queries)), l2_normalize(np.asarray(candidates))
    best = np.argmax(q @ c.T, axis=1)
    target = np.arange(len(q)) if gold is None else np.asarray(gold)
    return float(np.mean(best == target) * 100.0)


def mse_x100(predicted: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error x100 over every coordinate, as sentence-transformers'
    MSEEvaluator reports it."""
    return float(np.mean((np.asarray(predicted) - np.asarray(target)) ** 2) * 100.0)
