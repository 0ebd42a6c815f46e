"""Pooling of token embeddings into one vector per text, in numpy, matching
sentence-transformers' Pooling module mode for mode."""

from __future__ import annotations

import numpy as np


def _masked_mean(tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    summed = np.einsum("bth,bt->bh", tokens, mask)
    counts = np.clip(mask.sum(axis=1, keepdims=True), 1e-9, None)
    return summed, counts


def pool(tokens: np.ndarray, attention_mask: np.ndarray, modes: tuple[str, ...]) -> np.ndarray:
    """tokens [batch, seq, hidden] and mask [batch, seq] -> [batch, hidden * len(modes)].

    Assumes right padding (the service pads on the right)."""
    mask = attention_mask.astype(tokens.dtype)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(tokens[:, 0])
        elif mode == "mean":
            summed, counts = _masked_mean(tokens, mask)
            parts.append(summed / counts)
        elif mode == "mean_sqrt_len":
            summed, counts = _masked_mean(tokens, mask)
            parts.append(summed / np.sqrt(counts))
        elif mode == "max":
            masked = np.where(mask[..., None] > 0, tokens, np.finfo(tokens.dtype).min)
            parts.append(masked.max(axis=1))
        elif mode == "lasttoken":
            last = np.clip(attention_mask.sum(axis=1) - 1, 0, None).astype(np.int64)
            parts.append(tokens[np.arange(len(tokens)), last])
        elif mode == "weightedmean":
            weights = np.arange(1, tokens.shape[1] + 1, dtype=tokens.dtype)[None, :] * mask
            summed = np.einsum("bth,bt->bh", tokens, weights)
            parts.append(summed / np.clip(weights.sum(axis=1, keepdims=True), 1e-9, None))
        else:
            raise ValueError(f"unsupported pooling mode: {mode}")
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)
