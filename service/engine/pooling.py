"""Pooling of token embeddings into one vector per text, matching sentence-transformers'
Pooling module mode for mode.

One definition serves every backend: the functions are written against the Python array
API (`array_api_compat`), so the same code pools numpy arrays on the host (ONNX Runtime on
CPU) and torch tensors where the model runs (the torch backend on CUDA: no
[batch, seq, hidden] copy to the host)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from array_api_compat import array_namespace, device

EPS = 1e-9


@dataclass(frozen=True)
class PoolingHead:
    """What turns token embeddings into a sentence vector: sentence-transformers' Pooling
    module (`modes`) followed by its Dense modules (`dense`, callables [batch, in] ->
    [batch, out], e.g. `model_spec.DenseLayer`). Normalisation is per request, not here."""

    modes: tuple[str, ...]
    dense: tuple[Any, ...] = ()

    def __call__(self, tokens, attention_mask):
        """tokens [batch, seq, hidden], mask [batch, seq] -> [batch, dim], same library."""
        vectors = pool(tokens, attention_mask, self.modes)
        for layer in self.dense:
            vectors = layer(vectors)
        return vectors

    def to(self, convert: Callable[[Any], Any]) -> PoolingHead:
        """The same head with the Dense weights converted (e.g. to tensors on a device)."""
        return PoolingHead(self.modes, tuple(layer.to(convert) for layer in self.dense))


def _masked_sum(xp, tokens, weights):
    """sum_t weights[b, t] * tokens[b, t, :] -> [batch, hidden]; weights [batch, seq]. A
    batched matmul: no [batch, seq, hidden] temporary."""
    return xp.matmul(weights[:, None, :], tokens)[:, 0, :]


def pool(tokens, attention_mask, modes: tuple[str, ...]):
    """tokens [batch, seq, hidden] and mask [batch, seq] -> [batch, hidden * len(modes)],
    same array library and dtype as `tokens` (numpy or torch; accumulate in float32 by
    passing float32 tokens). Modes are concatenated in order, as sentence-transformers does.

    Assumes right padding (the service pads on the right). Raises ValueError for an unknown
    mode."""
    xp = array_namespace(tokens, attention_mask)
    mask = xp.astype(attention_mask, tokens.dtype)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(tokens[:, 0, :])
        elif mode in ("mean", "mean_sqrt_len"):
            counts = xp.clip(xp.sum(mask, axis=1, keepdims=True), min=EPS)
            summed = _masked_sum(xp, tokens, mask)
            parts.append(summed / (counts if mode == "mean" else xp.sqrt(counts)))
        elif mode == "max":
            floor = xp.full_like(tokens, xp.finfo(tokens.dtype).min)
            parts.append(xp.max(xp.where(mask[:, :, None] > 0, tokens, floor), axis=1))
        elif mode == "lasttoken":
            last = xp.clip(xp.astype(xp.sum(attention_mask, axis=1) - 1, xp.int64), min=0)
            rows = xp.arange(tokens.shape[0], device=device(tokens))
            parts.append(tokens[rows, last])
        elif mode == "weightedmean":
            positions = xp.arange(1, tokens.shape[1] + 1, dtype=tokens.dtype, device=device(tokens))
            weights = positions[None, :] * mask
            total = xp.clip(xp.sum(weights, axis=1, keepdims=True), min=EPS)
            parts.append(_masked_sum(xp, tokens, weights) / total)
        else:
            raise ValueError(f"unsupported pooling mode: {mode}")
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=1)


def l2_normalize(vectors):
    """Rows scaled to unit L2 norm ([n, dim] -> [n, dim]; zero rows stay zero)."""
    xp = array_namespace(vectors)
    norms = xp.sqrt(xp.sum(vectors * vectors, axis=1, keepdims=True))
    return vectors / xp.clip(norms, min=1e-12)
