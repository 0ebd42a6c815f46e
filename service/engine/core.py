"""The engine core: where token ids become vectors. One core per device owns the batcher,
the encoder and the backend.

Front ends (`EmbeddingEngine`) reach it in one of two ways, as vLLM's engine-core clients
do: `InprocCore` runs it in the same process (one process, the small-CPU default);
`service.engine.ipc.RemoteCore` talks over ZeroMQ to a core in its own process that
several HTTP/tokenising processes share (`--workers N`)."""

from __future__ import annotations

import asyncio
from typing import Protocol

import numpy as np

from service.backends.base import BackendInfo
from service.config import Settings
from service.engine.batcher import Batcher, BatchLimits, BatchStats, QueueFullError
from service.engine.encoder import SentenceEncoder
from service.engine.memory import release_heap
from service.engine.tokenizer import TokenizedText
from service.metrics import Metrics


class RequestTimeoutError(RuntimeError):
    """The request was not answered within the configured timeout (503)."""


class EngineCore(Protocol):
    """What a front end needs from the core, in or out of process."""

    backend_info: BackendInfo

    async def start(self) -> None: ...

    async def embed_tokens(self, tokens: list[TokenizedText]) -> np.ndarray:
        """Tokenised texts -> float32 [len(tokens), dimension] vectors (not normalised)."""
        ...

    async def drain(self, timeout: float) -> bool: ...

    async def stop(self) -> None: ...


class InprocCore:
    """The batcher and encoder in this process: requests are queued, batched across every
    request in flight, and answered within `request_timeout_s`."""

    def __init__(self, settings: Settings, encoder: SentenceEncoder, metrics: Metrics) -> None:
        self.settings, self.encoder, self.metrics = settings, encoder, metrics
        self.batcher = Batcher(
            encoder.embed,
            BatchLimits(
                settings.max_batch_tokens,
                settings.max_batch_size,
                settings.max_wait_ms / 1000.0,
                settings.max_queued_inputs,
            ),
            on_batch=self._record_batch,
            on_failure=lambda exc: metrics.batch_failures.inc(),
            on_queue_depth=metrics.queue_depth.set,
            on_quiet=release_heap if settings.release_memory else None,
        )

    @property
    def backend_info(self) -> BackendInfo:
        return self.encoder.backend.info

    def _record_batch(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.size)
        self.metrics.batch_tokens.observe(stats.padded_tokens)
        self.metrics.inference_seconds.observe(stats.seconds)

    async def start(self) -> None:
        self.batcher.start()

    async def embed_tokens(self, tokens: list[TokenizedText]) -> np.ndarray:
        """Queue, batch, and wait (at most `request_timeout_s`). Raises QueueFullError,
        ShuttingDownError, BatchFailedError or RequestTimeoutError; a cancelled caller
        frees its queue slots."""
        try:
            request = self.batcher.submit(tokens)
        except QueueFullError:
            self.metrics.rejected.inc(len(tokens))
            raise
        try:
            return await asyncio.wait_for(
                asyncio.shield(request.future), self.settings.request_timeout_s
            )
        except asyncio.TimeoutError:
            self.batcher.cancel(request)
            self.metrics.timeouts.inc()
            raise RequestTimeoutError(
                f"request not answered within {self.settings.request_timeout_s:g} s "
                "(request_timeout_s); the server is overloaded, retry later"
            ) from None
        except asyncio.CancelledError:
            self.batcher.cancel(request)  # client went away: free its queue slots
            raise

    async def drain(self, timeout: float) -> bool:
        return await self.batcher.drain(timeout)

    async def stop(self) -> None:
        await self.batcher.stop()
        self.encoder.backend.close()
