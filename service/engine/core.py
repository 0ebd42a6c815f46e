"""The engine core: where token ids become vectors. One core per device owns the batcher,
the encoder and the backend.

Front ends (`EmbeddingEngine`) reach it in one of two ways, as vLLM's engine-core clients
do: `InprocCore` runs it in the same process (one process, the small-CPU default);
`service.engine.ipc.RemoteCore` talks over ZeroMQ to a core in its own process that
several HTTP/tokenising processes share (`--workers N`)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import numpy as np

from service.backends.base import BackendInfo
from service.config import Settings
from service.engine.admission import AdmissionLimits, ThroughputEstimator, retry_after_s
from service.engine.batcher import Batcher, BatchLimits, BatchStats, PendingRequest
from service.engine.encoder import SentenceEncoder
from service.engine.errors import QueueFullError, RequestTimeoutError
from service.engine.memory import release_heap
from service.engine.tokenizer import ModelTokenizer, TokenizedText
from service.metrics import Metrics

log = logging.getLogger(__name__)


# The admission prior is this share of the idle start-up calibration: in a burst, HTTP
# parsing, tokenising and answering compete with inference for the CPU, and the first
# requests of a burst are admitted before any busy batch has been measured
# (docs/benchmarks.md, "Overload").
CALIBRATION_HEADROOM = 0.5
# start-up throughput measurement: one batch of short texts (their per-text overhead makes
# them the slowest per token), within the batch limits
CALIBRATION_TEXT_TOKENS = 16
CALIBRATION_MAX_TEXTS = 64


def calibration_texts(tokenizer: ModelTokenizer, settings: Settings) -> list[TokenizedText]:
    """One batch of synthetic short texts, within the batch limits, for the core's
    start-up throughput measurement (`InprocCore.calibrate`)."""
    length = min(CALIBRATION_TEXT_TOKENS, tokenizer.max_length)
    count = min(CALIBRATION_MAX_TEXTS, settings.max_batch_size, settings.max_batch_tokens // length)
    text = tokenizer.encode(["calibration " * length], truncate=True)[0]
    return [text] * max(1, count)


class EngineCore(Protocol):
    """What a front end needs from the core, in or out of process."""

    backend_info: BackendInfo
    inference_running: bool  # a batch runs in this process's inference thread

    @property
    def unresponsive_s(self) -> float | None:
        """Seconds the core has not answered past its bound (hung or gone), else None."""
        ...

    def unavailable_message(self) -> str:
        """Why the core counts as unavailable (the 503's message), while it does."""
        ...

    async def start(self) -> None: ...

    async def calibrate(self, texts: list[TokenizedText]) -> float | None:
        """Measure throughput on `texts` for admission; None where the core calibrates
        itself (another process)."""
        ...

    async def embed_tokens(self, tokens: list[TokenizedText]) -> np.ndarray | list[np.ndarray]:
        """Tokenised texts -> float32 [len(tokens), dimension] vectors (not normalised);
        token-level texts: a list of float32 [length_i, hidden] per-token rows. Raises the
        engine's errors (`service.engine.errors`)."""
        ...

    async def drain(self, timeout: float) -> bool: ...

    async def abort(self, reason: str) -> int:
        """Fail every request not yet answered with ShuttingDownError(reason) (503)."""
        ...

    async def lost(self, cause: str) -> int:
        """The core's process died (`cause`): fail what waits on it now. The number failed."""
        ...

    async def stop(self) -> None: ...


class InprocCore:
    """The batcher and encoder in this process: requests are queued, batched across every
    request in flight, and answered within `request_timeout_s`."""

    def __init__(
        self, settings: Settings, encoder: SentenceEncoder, metrics: Metrics, workers: int = 1
    ) -> None:
        """`workers`: inference threads, batches computed at once (the pipeline's)."""
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
            admission=AdmissionLimits(
                settings.max_queued_inputs, settings.max_queue_wait_s, settings.request_timeout_s
            ),
            estimator=ThroughputEstimator(),
            workers=workers,
        )
        metrics.throughput_estimate.set(self.batcher.estimator.tokens_per_s)

    @property
    def backend_info(self) -> BackendInfo:
        return self.encoder.backend.info

    @property
    def inference_running(self) -> bool:
        return self.batcher.inference_running

    @property
    def unresponsive_s(self) -> None:
        """Always None: this core runs on the caller's own event loop."""
        return None

    def unavailable_message(self) -> str:
        return "the engine is unavailable"  # never: `unresponsive_s` is always None

    def _record_batch(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.size)
        self.metrics.batch_tokens.observe(stats.padded_tokens)
        self.metrics.inference_seconds.observe(stats.seconds)
        self.metrics.throughput_estimate.set(self.batcher.estimator.tokens_per_s)

    async def start(self) -> None:
        self.batcher.start()

    async def calibrate(self, texts: list[TokenizedText]) -> float:
        """Measure throughput (tokens/s) on one batch of `texts` and make
        CALIBRATION_HEADROOM of it the admission estimate's prior, so the first burst is
        judged by this machine's speed."""
        started = time.monotonic()
        await self.batcher.submit(texts).future
        seconds = max(time.monotonic() - started, 1e-6)
        measured = sum(t.length for t in texts) / seconds
        prior = measured * CALIBRATION_HEADROOM
        self.batcher.estimator.reset(prior)
        self.metrics.throughput_estimate.set(prior)
        log.info("calibration: %d x %d tokens in %.3f s = %.0f tokens/s; admission prior %.0f",
                 len(texts), texts[0].length, seconds, measured, prior)  # fmt: skip
        return prior

    async def embed_tokens(self, tokens: list[TokenizedText]) -> np.ndarray | list[np.ndarray]:
        """Admit, queue, batch, and wait (vectors as `EngineCore.embed_tokens` says).
        Raises QueueFullError or RequestTooLargeError at admission; QueueFullError also
        when the request is turned away before it started because the measured drain rate
        dropped; ShuttingDownError, BatchFailedError, or RequestTimeoutError when the
        request waited `request_timeout_s` without starting. A cancelled caller frees its
        queue slots."""
        try:
            request = self.batcher.submit(tokens)
        except QueueFullError:
            self.metrics.rejected.inc(len(tokens))
            raise
        try:
            return await self._wait(request)
        except QueueFullError:  # admitted, then turned away before it started
            self.metrics.rejected.inc(len(tokens))
            self.metrics.turned_away.inc(len(tokens))
            raise
        except asyncio.CancelledError:
            self.batcher.cancel(request)  # client went away: free its queue slots
            raise

    async def _wait(self, request: PendingRequest) -> np.ndarray | list[np.ndarray]:
        """The request's vectors. `request_timeout_s` bounds the wait before its first
        text enters a batch; once started, the request is finished whatever it takes
        (admission already refused work that could not be done within the timeout)."""
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout)
        except asyncio.TimeoutError:
            if request.started:
                return await asyncio.shield(request.future)
            self.batcher.cancel(request)
            self.metrics.timeouts.inc()
            ahead = self.batcher.queue_depth
            raise RequestTimeoutError(
                f"request waited {timeout:g} s in the queue without starting "
                f"(request_timeout_s) and was dropped; the queue drained slower than its "
                f"estimate, {ahead} inputs still wait; retry later or elsewhere",
                retry_after_s(self.batcher.queued_seconds()),
            ) from None

    async def drain(self, timeout: float) -> bool:
        return await self.batcher.drain(timeout)

    async def abort(self, reason: str) -> int:
        return await self.batcher.abort(reason)

    async def lost(self, cause: str) -> int:
        """This core runs in the caller's process, which cannot outlive it: a plain abort."""
        return await self.batcher.abort(cause)

    async def stop(self) -> None:
        await self.batcher.stop()
        self.encoder.backend.close()
