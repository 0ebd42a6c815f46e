"""A batch of token ids -> sentence vectors: pad, run the backend, pool, Dense layers.

Normalisation and `dimensions` are per request: the engine applies them with `postprocess`."""

from __future__ import annotations

import numpy as np

from service.backends.base import Backend
from service.engine.model_spec import ModelSpec
from service.engine.pooling import PoolingHead, l2_normalize
from service.engine.tokenizer import TokenizedText


def pad_batch(items: list[TokenizedText], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Right-pad to the longest item: (input_ids, attention_mask, token_type_ids) int64."""
    width = max(item.length for item in items)
    ids = np.full((len(items), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(items), width), dtype=np.int64)
    types = np.zeros((len(items), width), dtype=np.int64)
    for row, item in enumerate(items):
        n = item.length
        ids[row, :n] = item.ids
        mask[row, :n] = 1
        types[row, :n] = item.type_ids
    return ids, mask, types


class SentenceEncoder:
    """The model minus tokenisation: what runs inside the inference thread."""

    def __init__(self, spec: ModelSpec, backend: Backend, pad_id: int) -> None:
        self.spec, self.backend, self.pad_id = spec, backend, pad_id
        self.head = PoolingHead(spec.pooling, spec.dense)

    def embed(self, items: list[TokenizedText]) -> np.ndarray | list[np.ndarray]:
        """float32 [len(items), dimension], before normalisation. When some items ask for
        `token_level` output, a list instead: their rows are the transformer's unpadded
        token embeddings [item.length, hidden] (no pooling, no Dense), the others' rows
        their sentence vectors [dimension]."""
        ids, mask, types = pad_batch(items, self.pad_id)
        if not any(item.token_level for item in items):
            return self.backend.embed(ids, mask, types, self.head)
        tokens = self.backend.forward(ids, mask, types)
        vectors = np.ascontiguousarray(self.head(tokens, mask), dtype=np.float32)
        return [
            np.array(tokens[row, : item.length], dtype=np.float32)  # a copy, not a view
            if item.token_level
            else vectors[row]
            for row, item in enumerate(items)
        ]


def postprocess(vectors: np.ndarray, normalize: bool, dimensions: int | None = None) -> np.ndarray:
    """Truncate to `dimensions` (Matryoshka-style), then L2-normalise if asked."""
    if dimensions is not None:
        # a copy: a column slice is not C-contiguous (orjson cannot serialise it)
        vectors = np.ascontiguousarray(vectors[:, :dimensions])
    return l2_normalize(vectors) if normalize else vectors
