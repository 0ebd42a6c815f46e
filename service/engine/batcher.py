"""Cross-request dynamic batching.

Requests put their tokenised texts in one bounded queue. A single worker task takes a
FIFO window of queued texts, sorts it by length (less padding) and cuts it into batches
that respect the padded-token budget and the size cap; a batch closes early when the
oldest text has waited `max_wait`. Inference runs in a dedicated thread, off the event
loop. Every request gets its own vectors back in its own order; a failing batch fails
only the requests that had texts in it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service.engine.tokenizer import TokenizedText

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """More inputs than the queue holds: the client should retry later (429)."""

    def __init__(self, queued: int, asked: int, capacity: int) -> None:
        self.queued, self.asked, self.capacity = queued, asked, capacity
        super().__init__(
            f"server overloaded: {queued} inputs queued, {asked} more asked, capacity "
            f"{capacity}; retry later"
        )


class ShuttingDownError(RuntimeError):
    """The server is draining and accepts no new work (503)."""


class BatchFailedError(RuntimeError):
    """Inference failed for a batch holding this request's texts (500)."""


@dataclass
class PendingRequest:
    size: int
    future: asyncio.Future
    results: list[np.ndarray | None] = field(default_factory=list)
    remaining: int = 0

    def __post_init__(self) -> None:
        self.results = [None] * self.size
        self.remaining = self.size

    @property
    def finished(self) -> bool:
        return self.future.done()


@dataclass
class WorkItem:
    text: TokenizedText
    request: PendingRequest
    index: int
    enqueued: float


@dataclass(frozen=True)
class BatchLimits:
    max_batch_tokens: int
    max_batch_size: int
    max_wait_s: float
    max_queued_inputs: int


@dataclass(frozen=True)
class BatchStats:
    size: int
    padded_tokens: int
    real_tokens: int
    seconds: float


def plan_batches(items: list[WorkItem], limits: BatchLimits) -> list[list[WorkItem]]:
    """Sort by length and cut into batches with size <= max_batch_size and
    longest * size <= max_batch_tokens (every single text fits: max_seq_length is
    checked against the budget at start-up)."""
    batches: list[list[WorkItem]] = []
    current: list[WorkItem] = []
    for item in sorted(items, key=lambda it: it.text.length):
        longest = max(item.text.length, current[-1].text.length if current else 0)
        if current and (
            len(current) + 1 > limits.max_batch_size
            or longest * (len(current) + 1) > limits.max_batch_tokens
        ):
            batches.append(current)
            current = []
        current.append(item)
    if current:
        batches.append(current)
    return batches


def gather(results: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """One request's outputs in its own order: sentence vectors stacked [n, dimension];
    per-token outputs ([length_i, hidden], lengths differ) kept as a list."""
    return np.stack(results) if results[0].ndim == 1 else list(results)


class Batcher:
    """The queue, the worker task and the inference thread."""

    def __init__(
        self,
        embed_fn: Callable[[list[TokenizedText]], np.ndarray],
        limits: BatchLimits,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        on_quiet: Callable[[], None] | None = None,
        quiet_after_s: float = 1.0,
    ) -> None:
        self.embed_fn, self.limits = embed_fn, limits
        # called once on the event loop when no work has arrived for quiet_after_s
        self.on_quiet, self.quiet_after_s = on_quiet, quiet_after_s
        self._quiet_timer: asyncio.TimerHandle | None = None
        self.on_batch = on_batch or (lambda stats: None)
        self.on_failure = on_failure or (lambda exc: None)
        self.on_queue_depth = on_queue_depth or (lambda depth: None)
        self._queue: collections.deque[WorkItem] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task | None = None
        self._accepting = True
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._queued_tokens = 0

    # -------------------------------------------------------------- admission

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def submit(self, texts: list[TokenizedText]) -> PendingRequest:
        """Queue a request's texts; raises QueueFullError or ShuttingDownError."""
        if not self._accepting:
            raise ShuttingDownError("server is shutting down; send the request elsewhere")
        if len(self._queue) + len(texts) > self.limits.max_queued_inputs:
            raise QueueFullError(len(self._queue), len(texts), self.limits.max_queued_inputs)
        request = PendingRequest(len(texts), asyncio.get_running_loop().create_future())
        now = time.monotonic()
        self._queue.extend(WorkItem(t, request, i, now) for i, t in enumerate(texts))
        self._queued_tokens += sum(t.length for t in texts)
        self._idle.clear()
        self._cancel_quiet_timer()
        self.on_queue_depth(len(self._queue))
        self._wakeup.set()
        return request

    def cancel(self, request: PendingRequest) -> None:
        """Drop a request's queued texts (client gone or timed out); frees their slots."""
        if not request.future.done():
            request.future.cancel()
        before = len(self._queue)
        self._queue = collections.deque(it for it in self._queue if it.request is not request)
        self._queued_tokens = sum(it.text.length for it in self._queue)
        if len(self._queue) != before:
            self.on_queue_depth(len(self._queue))
        self._update_idle()

    # -------------------------------------------------------------- worker

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def drain(self, timeout: float) -> bool:
        """Stop accepting; wait until everything accepted is answered. True if drained."""
        self._accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self) -> None:
        self._accepting = False
        self._cancel_quiet_timer()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for item in self._queue:
            if not item.request.finished:
                item.request.future.set_exception(ShuttingDownError("server stopped"))
        self._queue.clear()
        self._queued_tokens = 0
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _update_idle(self) -> None:
        if not self._queue and not self._busy:
            self._idle.set()
            if self.on_quiet is not None and self._quiet_timer is None:
                loop = asyncio.get_running_loop()
                self._quiet_timer = loop.call_later(self.quiet_after_s, self._quiet)

    def _cancel_quiet_timer(self) -> None:
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None

    def _quiet(self) -> None:
        self._quiet_timer = None
        if not self._queue and not self._busy:
            self.on_quiet()

    def _window(self) -> list[WorkItem]:
        """Pop a FIFO window: at most max_batch_tokens real tokens (or one text) and
        max_batch_size texts, skipping texts of requests already answered."""
        window: list[WorkItem] = []
        tokens = 0
        while self._queue and len(window) < self.limits.max_batch_size:
            item = self._queue[0]
            if item.request.finished:
                self._queue.popleft()
                self._queued_tokens -= item.text.length
                continue
            if window and tokens + item.text.length > self.limits.max_batch_tokens:
                break
            window.append(self._queue.popleft())
            self._queued_tokens -= item.text.length
            tokens += item.text.length
        self.on_queue_depth(len(self._queue))
        return window

    def _window_is_full(self) -> bool:
        if len(self._queue) >= self.limits.max_batch_size:
            return True
        return self._queued_tokens >= self.limits.max_batch_tokens

    async def _wait_for_work(self) -> None:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        # give concurrent requests up to max_wait (from the oldest text's arrival) to join
        deadline = self._queue[0].enqueued + self.limits.max_wait_s
        while not self._window_is_full():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_work()
            self._busy = True
            try:
                for batch in plan_batches(self._window(), self.limits):
                    live = [it for it in batch if not it.request.finished]
                    if live:
                        await self._run_batch(loop, live)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the worker must outlive any bug in one round
                log.exception("batcher round failed")
            finally:
                self._busy = False
                self._update_idle()

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[WorkItem]) -> None:
        texts = [it.text for it in batch]
        started = time.perf_counter()
        try:
            vectors = await loop.run_in_executor(self._executor, self.embed_fn, texts)
        except Exception as exc:  # noqa: BLE001 - any backend failure fails this batch only
            log.exception("inference failed for a batch of %d inputs", len(batch))
            self.on_failure(exc)
            error = BatchFailedError(f"inference failed: {type(exc).__name__}: {exc}")
            for item in batch:
                if not item.request.finished:
                    item.request.future.set_exception(error)
            return
        longest = max(t.length for t in texts)
        self.on_batch(
            BatchStats(
                len(texts),
                longest * len(texts),
                sum(t.length for t in texts),
                time.perf_counter() - started,
            )
        )
        for item, vector in zip(batch, vectors):
            request = item.request
            if request.finished:
                continue
            request.results[item.index] = vector
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(gather(request.results))
