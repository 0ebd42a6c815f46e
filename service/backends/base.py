"""The one interface every inference backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from service.engine.pooling import PoolingHead


@dataclass(frozen=True)
class BackendInfo:
    name: str  # "onnx" or "torch"
    device: str  # "cpu" or "cuda"
    provider: str  # e.g. "CPUExecutionProvider", "torch-cpu"
    dtype: str  # "float32", "float16", "int8"
    file: str | None = None  # the ONNX file served
    reason: str | None = None  # why this file/variant is served (/info variant_reason)
    # sha256 hex of the weights served (service.artifacts.source_fingerprint)
    source_fingerprint: str | None = None
    # what serves which batches (/info batch_kernels), e.g. a one-thread session for one text
    batch_kernels: tuple[str, ...] = ()
    # batches computed at once, each on its own thread(s) (set by the pipeline:
    # service.engine.workers; /info inference_workers)
    inference_workers: int = 1


class Backend(ABC):
    """Runs the transformer: padded token ids in, token embeddings (`forward`) or pooled
    sentence vectors (`embed`) out."""

    info: BackendInfo

    @abstractmethod
    def forward(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray
    ) -> np.ndarray:
        """int64 [batch, seq] arrays -> float32 token embeddings [batch, seq, hidden]."""

    def embed(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray,
        head: PoolingHead,
    ) -> np.ndarray:
        """int64 [batch, seq] arrays -> float32 sentence vectors [batch, dim] (pooling and
        Dense applied, not normalised). This default runs `forward` and pools on the host in
        numpy; a backend whose model lives on an accelerator overrides it to pool there and
        copy only [batch, dim] back (as TEI's backends return pooled embeddings)."""
        tokens = self.forward(input_ids, attention_mask, token_type_ids)
        return np.ascontiguousarray(head(tokens, attention_mask), dtype=np.float32)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model (tests and shutdown)."""
