"""The closed-form projection from the student's pooled space into the teacher's space,
fitted on a random training share of the parallel data and checked on a held-out share.

The held-out share is drawn by English sentence (a sentence and its translations are on
the same side), so the check measures how the map does on sentences it has not seen. The
ridge is chosen on that share from a small grid, all in closed form from one
eigendecomposition of the training Gram matrix (seconds for a 384-dim student). A fit whose
held-out R^2 or translation retrieval accuracy is low is flagged as poor: the parallel data
is too little or too narrow (one genre) for a map that must work on any text.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import numpy as np

from training.metrics import retrieval_accuracy

log = logging.getLogger(__name__)

RIDGE_GRID = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
HELDOUT_SHARE = 0.2
MIN_HELDOUT_R2 = 0.35
MIN_HELDOUT_RETRIEVAL = 50.0  # % of held-out sentences whose nearest teacher vector is right
MAX_RETRIEVAL_CANDIDATES = 1000


class PoorProjectionError(RuntimeError):
    """The held-out check says the projection will not generalise (too little or too
    narrow parallel data); the message says what was measured and how to go on."""


@dataclass
class ProjectionFit:
    """A fitted map y ~ x @ w + b and what the held-out check measured.

    w: [in_dim, out_dim] float32, b: [out_dim] float32. MSEs are per coordinate (the
    sentence-transformers convention, not x100); R^2 is 1 - MSE / variance of the held-out
    targets; retrieval is a percentage over at most 1000 held-out English sentences.
    """

    w: np.ndarray
    b: np.ndarray
    ridge: float
    train_mse: float
    heldout_mse: float
    heldout_r2: float
    heldout_retrieval: float
    n_train: int
    n_heldout: int
    n_available: int = 0  # rows the fit could use; more than n_train + n_heldout when sampled
    heldout_mse_by_ridge: dict[float, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    dev_r2: float | None = None  # on `--dev` pairs, when given: another sample entirely
    dev_retrieval: float | None = None

    @property
    def poor(self) -> bool:
        return bool(self.problems)

    def summary(self) -> dict:
        """JSON-ready figures (no weights) for run.json and the model card."""
        return {
            "ridge": self.ridge,
            "train_mse": round(self.train_mse, 6),
            "heldout_mse": round(self.heldout_mse, 6),
            "heldout_r2": round(self.heldout_r2, 4),
            "heldout_retrieval_percent": round(self.heldout_retrieval, 1),
            "n_train": self.n_train,
            "n_heldout": self.n_heldout,
            "n_available": self.n_available,
            "heldout_mse_by_ridge": {
                str(k): round(v, 6) for k, v in self.heldout_mse_by_ridge.items()
            },
            "dev_r2": None if self.dev_r2 is None else round(self.dev_r2, 4),
            "dev_retrieval_percent": None
            if self.dev_retrieval is None
            else round(self.dev_retrieval, 1),
            "problems": list(self.problems),
        }


def sample_groups(groups: list[str], max_rows: int, seed: int = 42) -> np.ndarray:
    """Sorted row indices of at most `max_rows` rows, made of whole groups (an English
    sentence with all its translations) drawn at random with `seed`: the projection is
    fitted on this sample when the training set is larger (a 384 x 384 map needs thousands
    of rows, not the 92k of a corpus run, whose encoding takes 20 min on a 2-core CPU).
    All rows when there are no more than `max_rows`; ValueError when `max_rows` < 1."""
    if max_rows < 1:
        raise ValueError(f"the projection sample needs at least one row, got {max_rows}")
    if len(groups) <= max_rows:
        return np.arange(len(groups))
    rows_of: dict[str, list[int]] = {}
    for row, group in enumerate(groups):
        rows_of.setdefault(group, []).append(row)
    distinct = sorted(rows_of)
    random.Random(seed).shuffle(distinct)
    chosen: list[int] = []
    for group in distinct:
        if len(chosen) + len(rows_of[group]) <= max_rows:
            chosen.extend(rows_of[group])
        if len(chosen) == max_rows:
            break
    return np.array(sorted(chosen), dtype=np.int64)


def grouped_split(
    groups: list[str], heldout_share: float = HELDOUT_SHARE, seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): a random `heldout_share` of the distinct groups
    (English sentences) is held out with all its rows. At least one group on each side."""
    distinct = sorted(set(groups))
    if len(distinct) < 2:
        raise ValueError("the projection check needs at least two distinct English sentences")
    rng = random.Random(seed)
    n_heldout = min(max(1, round(len(distinct) * heldout_share)), len(distinct) - 1)
    heldout = set(rng.sample(distinct, n_heldout))
    mask = np.array([g in heldout for g in groups])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


class RidgePath:
    """Ridge solutions for many penalties from one eigendecomposition of the centred Gram
    matrix: w(r) = V diag(1 / (s + r)) V^T X^T Y / n, minimising
    mean ||x w + b - y||^2 + r ||w||^2 (the bias is not penalised)."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.x_mean, self.y_mean = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - self.x_mean, y - self.y_mean
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(xc.T @ xc / len(x))
        self.eigenvalues = np.clip(self.eigenvalues, 0.0, None)
        self.projected = self.eigenvectors.T @ (xc.T @ yc / len(x))

    def solve(self, ridge: float) -> tuple[np.ndarray, np.ndarray]:
        """(w [in, out], b [out]) in float64 for penalty `ridge` (> 0)."""
        w = self.eigenvectors @ (self.projected / (self.eigenvalues + ridge)[:, None])
        return w, self.y_mean - self.x_mean @ w


def mse(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((x @ w + b - y) ** 2))


def retrieval_percent(
    predicted: np.ndarray,
    targets: np.ndarray,
    groups: list[str],
    limit: int = MAX_RETRIEVAL_CANDIDATES,
) -> float:
    """Share (%) of rows whose nearest distinct target by cosine is their own group's,
    over at most `limit` groups (the first ones in sorted order: deterministic):
    `training.metrics.retrieval_accuracy` with one candidate per group."""
    order = sorted(set(groups))[:limit]
    index = {g: i for i, g in enumerate(order)}
    first = {}
    for row, g in enumerate(groups):
        if g in index and g not in first:
            first[g] = row
    candidates = targets[[first[g] for g in order]]
    rows = [row for row, g in enumerate(groups) if g in index]
    truth = np.array([index[groups[row]] for row in rows])
    return retrieval_accuracy(predicted[rows], candidates, truth)


def r2_and_retrieval(
    w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray, groups: list[str]
) -> tuple[float, float]:
    """(R^2, retrieval %) of the map (w, b) on rows x -> y (groups: English of each row)."""
    predicted = np.asarray(x, dtype=np.float64) @ w + b
    y = np.asarray(y, dtype=np.float64)
    variance = float(np.mean((y - y.mean(axis=0)) ** 2))
    error = float(np.mean((predicted - y) ** 2))
    r2 = 1.0 - error / variance if variance > 0 else float("-inf")
    return r2, retrieval_percent(predicted, y, groups)


def fit_checked(
    x: np.ndarray,
    y: np.ndarray,
    groups: list[str],
    ridge: float | str = "auto",
    heldout_share: float = HELDOUT_SHARE,
    seed: int = 42,
    min_r2: float = MIN_HELDOUT_R2,
    min_retrieval: float = MIN_HELDOUT_RETRIEVAL,
) -> ProjectionFit:
    """Fit y ~ x @ w + b on a random training share, measure it on the held-out share,
    choose the ridge there ("auto": the grid's best; a number: that ridge), then refit on
    all rows with the chosen ridge. x: [n, in_dim], y: [n, out_dim] (teacher vectors),
    groups: n keys (the English sentence of each row). Never raises for a poor fit:
    `problems` says what is wrong and the caller decides."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    train, heldout = grouped_split(groups, heldout_share, seed)
    path = RidgePath(x[train], y[train])
    ridges = RIDGE_GRID if ridge == "auto" else (float(ridge),)
    by_ridge = {r: mse(x[heldout], y[heldout], *path.solve(r)) for r in ridges}
    chosen = min(by_ridge, key=by_ridge.get)
    w, b = path.solve(chosen)
    heldout_mse = by_ridge[chosen]
    variance = float(np.mean((y[heldout] - y[heldout].mean(axis=0)) ** 2))
    r2 = 1.0 - heldout_mse / variance if variance > 0 else float("-inf")
    held_groups = [groups[i] for i in heldout]
    retrieval = retrieval_percent(x[heldout] @ w + b, y[heldout], held_groups)
    problems = []
    if r2 < min_r2:
        problems.append(f"held-out R^2 {r2:.2f} < {min_r2}")
    if retrieval < min_retrieval:
        problems.append(f"held-out translation retrieval {retrieval:.1f} % < {min_retrieval} %")
    train_mse = mse(x[train], y[train], w, b)
    w_all, b_all = RidgePath(x, y).solve(chosen)
    return ProjectionFit(
        w=w_all.astype(np.float32),
        b=b_all.astype(np.float32),
        ridge=chosen,
        train_mse=train_mse,
        heldout_mse=heldout_mse,
        heldout_r2=r2,
        heldout_retrieval=retrieval,
        n_train=len(train),
        n_heldout=len(heldout),
        n_available=len(x),
        heldout_mse_by_ridge=by_ridge,
        problems=problems,
    )


def check_on_dev(
    fit: ProjectionFit,
    x: np.ndarray,
    y: np.ndarray,
    groups: list[str],
    min_r2: float = MIN_HELDOUT_R2,
    min_retrieval: float = MIN_HELDOUT_RETRIEVAL,
) -> None:
    """Also measure the fit on separate dev pairs (x: student vectors of the translations,
    y: teacher vectors of their English sentences). A held-out share of a narrow sample
    (one genre) looks as narrow as its training share; a dev set drawn elsewhere shows that
    the map fails on other text. Adds to `fit.problems` in place."""
    fit.dev_r2, fit.dev_retrieval = r2_and_retrieval(fit.w, fit.b, x, y, groups)
    if fit.dev_r2 < min_r2:
        fit.problems.append(f"R^2 on the dev pairs {fit.dev_r2:.2f} < {min_r2}")
    if fit.dev_retrieval < min_retrieval:
        fit.problems.append(
            f"translation retrieval on the dev pairs {fit.dev_retrieval:.1f} % < {min_retrieval} %"
        )


def poor_fit_message(fit: ProjectionFit) -> str:
    """The plain explanation a run prints before it stops on a poor projection."""
    return (
        f"the projection into the teacher's space does not generalise: "
        f"{'; '.join(fit.problems)} (fitted on {fit.n_train} rows, checked on "
        f"{fit.n_heldout} held-out rows, ridge {fit.ridge:g}, training MSE "
        f"{fit.train_mse:.5f} vs held-out {fit.heldout_mse:.5f}). There is too little or too "
        "narrow parallel data for the projection: add pairs (e.g. a larger "
        "--max-pairs-per-language, or the corpus of `python -m training.corpus build`), "
        "or pass --allow-poor-projection to train anyway."
    )
