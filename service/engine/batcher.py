"""Cross-request dynamic batching.

Requests put their tokenised texts in one bounded queue. A single worker task takes a
FIFO window of queued texts, sorts it by length and cuts it where the padding saved is
worth one more inference call (`plan_batches`), within the padded-token budget and the size
cap; a window closes early when the oldest text has waited `max_wait`. Inference runs in
`workers` dedicated threads, off the event loop (`service.engine.workers`: on a small CPU
two batches at once on one core each beat one batch on both). Every batch of a window is
handed to them at once, so they run back to back without waiting for the event loop in
between, and the next window is taken as soon as a thread has nothing left to start (while
the other still computes), split in two when it would leave a thread idle. Every request
gets its own vectors back in its own order; a failing batch fails only the requests that had
texts in it."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from service.engine.admission import (
    AdmissionLimits,
    QueueLoad,
    ThroughputEstimator,
    Waiting,
    check_admission,
    late_requests,
    retry_after_s,
)
from service.engine.errors import BatchFailedError, QueueFullError, ShuttingDownError
from service.engine.tokenizer import TokenizedText

__all__ = ["Batcher", "BatchLimits", "BatchStats", "QueueFullError", "ShuttingDownError"]

log = logging.getLogger(__name__)


@dataclass
class PendingRequest:
    size: int
    future: asyncio.Future
    results: list[np.ndarray | None] = field(default_factory=list)
    remaining: int = 0
    started: bool = False  # some of its texts went into a batch: it will be finished
    admitted_at: float = 0.0  # on the batcher's clock

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
    seconds: float  # inference call only
    busy_seconds: float = 0.0  # since the previous batch ended or its work arrived, if later
    saturated: bool = False  # from a backlogged or large window: shows busy throughput


# What one more inference call costs beyond its padded tokens, in padded tokens (the
# backend's per-call overhead): `plan_batches` cuts a sorted window where the padding saved
# exceeds it. Measured with `python -m benchmarks.kernels --window 256` (windows of 256
# shuffled short texts, fp32 and per-token int8): 4, 16 and 64 all beat one sorted batch by
# 2.5-4x, 16 was best for int8 and within 3 % of the best for fp32 (docs/benchmarks.md,
# "Multi-input requests").
# On the quiet VM the kernels alone preferred 128 (windows of 256 short texts: 376.6 / 422.8 /
# 432.8 sentences/s at 16 / 64 / 128), but the server did not: 16 against 128, interleaved
# (`benchmarks.compare --baseline`, docs/data/issue26-overhead-ab-2026-12-07.json) served
# 244 / 194 sentences/s at 16 x 1, 292 / 280 at 64 x 1, 380 / 346 at 32 x 8, passages equal.
BATCH_OVERHEAD_TOKENS = 16


def plan_batches(
    items: list[WorkItem], limits: BatchLimits, overhead_tokens: int = BATCH_OVERHEAD_TOKENS
) -> list[list[WorkItem]]:
    """Sort by length and cut into contiguous batches with size <= max_batch_size and
    longest * size <= max_batch_tokens (every single text fits: max_seq_length is checked
    against the budget at start-up), choosing the cuts that minimise the padded tokens
    computed plus `overhead_tokens` per batch (an exact dynamic programme over the sorted
    lengths, O(len(items) * max_batch_size) in numpy). A window of 256 short texts (5-46
    tokens) padded as one sorted batch computes 2.2x its real tokens; cut this way, 1.02x."""
    ordered = sorted(items, key=lambda it: it.text.length)
    if len(ordered) <= 1:
        return [ordered] if ordered else []
    lengths = np.fromiter((it.text.length for it in ordered), np.int64, len(ordered))
    capped = len(ordered) > limits.max_batch_size or (
        len(ordered) * int(lengths[-1]) > limits.max_batch_tokens
    )
    # Where a batch may end: after any text when a cap can bind; else only after the last
    # text of each length (a cut inside a run of equal lengths moves to its end at no cost),
    # which keeps the programme small: a few dozen distinct lengths, not hundreds of texts.
    changes = np.flatnonzero(lengths[1:] != lengths[:-1]) + 1
    ends = np.arange(1, len(ordered) + 1) if capped else np.append(changes, len(ordered))
    points = np.concatenate(([0], ends))  # batch boundaries, as text offsets
    best = np.zeros(len(points))  # best[j]: cost of the texts before points[j]
    start_of = np.zeros(len(points), dtype=np.int64)  # index into points
    for j in range(1, len(points)):
        end = int(points[j])
        width = int(lengths[end - 1])  # the longest of any batch ending here
        most = max(1, min(limits.max_batch_size, limits.max_batch_tokens // width))
        first = int(np.searchsorted(points, end - most))  # the earliest start allowed
        starts = points[first:j]
        totals = best[first:j] + overhead_tokens + width * (end - starts)
        pick = int(np.argmin(totals))  # ties: the earliest start, the larger batch
        best[j], start_of[j] = totals[pick], first + pick
    batches: list[list[WorkItem]] = []
    j = len(points) - 1
    while j > 0:
        batches.append(ordered[int(points[start_of[j]]) : int(points[j])])
        j = int(start_of[j])
    return batches[::-1]


def spread(batches: list[list[WorkItem]], threads: int) -> list[list[WorkItem]]:
    """`batches` with the one of most padded tokens halved (sorted halves) until there are
    `threads` (the inference threads with nothing to start) or none has two texts: a lone
    window must not leave a thread idle while one thread computes it all."""
    batches = list(batches)
    while 0 < len(batches) < threads:
        i = max(range(len(batches)), key=lambda k: _padded(batches[k]))
        if len(batches[i]) < 2:
            break
        half = len(batches[i]) // 2
        batches[i : i + 1] = [batches[i][:half], batches[i][half:]]
    return batches


def _padded(batch: list[WorkItem]) -> int:
    return len(batch) * max(it.text.length for it in batch)


class InferenceResult(NamedTuple):
    """One batch back from the inference thread: the items computed (its texts whose
    requests still waited), their vectors, and when inference started and ended."""

    items: list[WorkItem]
    vectors: np.ndarray | list[np.ndarray]
    started: float
    ended: float


def gather(results: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """One request's outputs in its own order: sentence vectors stacked [n, dimension];
    per-token outputs ([length_i, hidden], lengths differ) kept as a list."""
    return np.stack(results) if results[0].ndim == 1 else list(results)


class Batcher:
    """The queue, the worker task and the inference threads (`workers`, default 1)."""

    def __init__(
        self,
        embed_fn: Callable[[list[TokenizedText]], np.ndarray],
        limits: BatchLimits,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
        on_quiet: Callable[[], None] | None = None,
        quiet_after_s: float = 1.0,
        admission: AdmissionLimits | None = None,
        estimator: ThroughputEstimator | None = None,
        clock: Callable[[], float] = time.monotonic,
        workers: int = 1,
    ) -> None:
        self.embed_fn, self.limits, self.clock = embed_fn, limits, clock
        self.workers = max(1, workers)
        self.admission = admission or AdmissionLimits(limits.max_queued_inputs)
        self.estimator = estimator or ThroughputEstimator()
        # called once on the event loop when no work has arrived for quiet_after_s
        self.on_quiet, self.quiet_after_s = on_quiet, quiet_after_s
        self._quiet_timer: asyncio.TimerHandle | None = None
        self.on_batch = on_batch or (lambda stats: None)
        self.on_failure = on_failure or (lambda exc: None)
        self.on_queue_depth = on_queue_depth or (lambda depth: None)
        self._queue: collections.deque[WorkItem] = collections.deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="inference")
        self._task: asyncio.Task | None = None
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()
        self._queued_tokens = 0
        self._rounds: dict[asyncio.Task, list[WorkItem]] = {}  # windows being computed
        self._unfinished = 0  # batches handed to the inference threads, not finished
        self._thread_free = asyncio.Event()
        self._calls: dict[int, float] = {}  # inference thread -> when its call started
        self._calls_lock = threading.Lock()
        self._last_batch_end = 0.0
        self._unobserved_tokens = 0  # finished at the same instant as the batch before
        self._running_tokens = 0  # taken from the queue, not finished

    # -------------------------------------------------------------- admission

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def queued_tokens(self) -> int:
        return self._queued_tokens

    @property
    def inference_running(self) -> bool:
        """True while an inference thread is inside embed_fn (also after an abort)."""
        return bool(self._calls)

    @property
    def _busy(self) -> bool:
        return bool(self._rounds)

    def load(self) -> QueueLoad:
        """The work ahead of a request arriving now: the queue and the unfinished rest of
        the batches taken from it (running since the oldest call now inside embed_fn)."""
        with self._calls_lock:
            started = min(self._calls.values(), default=None)
        running_s = self.clock() - started if self._running_tokens and started else 0.0
        return QueueLoad(len(self._queue), self._queued_tokens, self._running_tokens, running_s)

    def queued_seconds(self) -> float:
        """Estimated seconds until everything queued or running now is done."""
        return self.load().seconds_ahead(self.estimator.tokens_per_s)

    def submit(self, texts: list[TokenizedText]) -> PendingRequest:
        """Queue a request's texts. Raises ShuttingDownError (503), and from
        `check_admission` RequestTooLargeError (413) or QueueFullError (429)."""
        if not self._accepting:
            raise ShuttingDownError("server is shutting down; send the request elsewhere")
        check_admission(
            self.load(),
            len(texts),
            sum(t.length for t in texts),
            self.estimator,
            self.admission,
        )
        now = self.clock()
        request = PendingRequest(
            len(texts), asyncio.get_running_loop().create_future(), admitted_at=now
        )
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

    def turn_away_late(self) -> int:
        """Fail with QueueFullError (429, limit max_queue_wait_s) every queued request that
        has not started and, at the current estimate, would start more than
        `max_queue_wait_s` after its admission (see `admission.late_requests`). Called after
        each batch, when the estimate may have dropped. Returns the inputs turned away."""
        limit = self.admission.max_queue_wait_s
        if not self._queue or not math.isfinite(limit):
            return 0
        rate = self.estimator.tokens_per_s
        load = self.load()
        ahead_s = replace(load, inputs=0, tokens=0).seconds_ahead(rate)  # the running rest
        waiting: dict[int, Waiting] = {}
        for item in self._queue:
            request = item.request
            if request.finished:
                continue
            if request.started:  # its rest is at the head of the queue: it goes first
                ahead_s += item.text.length / rate
                continue
            known = waiting.get(id(request))
            tokens = item.text.length + (known.tokens if known else 0)
            waiting[id(request)] = Waiting(request, tokens, request.admitted_at)
        now = self.clock()
        late = late_requests(waiting.values(), ahead_s, now, rate, limit)
        inputs = 0
        for item, ahead in late:
            request: PendingRequest = item.request  # type: ignore[assignment]
            inputs += request.size
            request.future.set_exception(
                QueueFullError(
                    f"server busy: admitted {now - request.admitted_at:.1f} s ago, this "
                    f"request would start in about {ahead:.1f} s at the measured "
                    f"{rate:.0f} tokens/s, past max_queue_wait_s ({limit:g} s); turned away "
                    "before it started; retry later or elsewhere",
                    retry_after_s(ahead),
                    "max_queue_wait_s",
                )
            )
        if late:
            self._queue = collections.deque(it for it in self._queue if not it.request.finished)
            self._queued_tokens = sum(it.text.length for it in self._queue)
            self.on_queue_depth(len(self._queue))
            log.info("turned away %d late requests (%d inputs)", len(late), inputs)
        return inputs

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

    async def abort(self, reason: str) -> int:
        """Stop now: the worker stops taking batches and every request not yet answered
        (queued or in the batch being computed) fails with ShuttingDownError(reason).
        A batch already inside the inference thread runs to its end there, unanswered.
        Returns the number of requests failed."""
        self._accepting = False
        self._cancel_quiet_timer()
        unanswered = self._in_flight_and_queued()  # before the rounds forget their windows
        for task in [self._task, *self._rounds]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        failed = 0
        for request in unanswered:
            if not request.finished:
                request.future.set_exception(ShuttingDownError(reason))
                failed += 1
        self._queue.clear()
        self._queued_tokens = 0
        self._running_tokens = 0
        self._rounds.clear()
        self.on_queue_depth(0)
        self._idle.set()
        return failed

    async def stop(self) -> None:
        await self.abort("server stopped before this request was served")
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _in_flight_and_queued(self) -> list[PendingRequest]:
        seen: dict[int, PendingRequest] = {}
        in_flight = [item for window in self._rounds.values() for item in window]
        for item in [*in_flight, *self._queue]:
            if not item.request.finished:
                seen.setdefault(id(item.request), item.request)
        return list(seen.values())

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

    def _window(self) -> tuple[list[WorkItem], bool]:
        """Pop a FIFO window: at most max_batch_tokens real tokens (or one text) and
        max_batch_size texts, skipping texts of requests already answered. Marks its
        requests started. Also returns whether the window is *saturated*: work was left
        behind, or it is large (max_batch_size texts or half the token budget), so its
        batches measure the throughput the server has when busy."""
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
            item.request.started = True
            self._queued_tokens -= item.text.length
            tokens += item.text.length
        self.on_queue_depth(len(self._queue))
        saturated = (
            bool(self._queue)
            or len(window) >= self.limits.max_batch_size
            or 2 * tokens >= self.limits.max_batch_tokens
        )
        return window, saturated

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
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                break

    async def _wait_for_a_thread(self) -> None:
        """Until an inference thread has no batch to start."""
        while self._unfinished >= self.workers:
            self._thread_free.clear()
            await self._thread_free.wait()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_work()
            await self._wait_for_a_thread()
            window, saturated = self._window()
            if not window:  # every queued text's request was answered meanwhile
                self._update_idle()
                continue
            self._running_tokens += sum(it.text.length for it in window)
            batches = spread(plan_batches(window, self.limits), self.workers - self._unfinished)
            self._unfinished += len(batches)
            task = loop.create_task(self._compute(batches, saturated), name="batcher-round")
            self._rounds[task] = window
            task.add_done_callback(self._round_done)

    def _round_done(self, task: asyncio.Task) -> None:
        self._rounds.pop(task, None)
        self._update_idle()

    async def _compute(self, batches: list[list[WorkItem]], saturated: bool) -> None:
        """Hand a window's batches to the inference threads at once and each one's vectors
        to their requests as it finishes."""
        loop = asyncio.get_running_loop()
        # work was ready from its oldest text's arrival (or the previous batch's end)
        ready_at = min(it.enqueued for batch in batches for it in batch)
        futures = [
            loop.run_in_executor(self._executor, self._embed_in_thread, batch) for batch in batches
        ]
        try:
            await asyncio.gather(
                *(
                    self._finish_batch(batch, future, saturated, ready_at)
                    for batch, future in zip(batches, futures)
                )
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the worker must outlive any bug in one round
            log.exception("batcher round failed")
        finally:
            for future in futures:  # not started yet (abort): never runs
                future.cancel()

    def _embed_in_thread(self, batch: list[WorkItem]) -> InferenceResult | None:
        """Run a batch's texts whose requests still wait (None when none does: all were
        cancelled while it was queued for this thread). Runs in an inference thread."""
        live = [it for it in batch if not it.request.finished]
        if not live:
            return None
        thread = threading.get_ident()
        started = self.clock()
        with self._calls_lock:
            self._calls[thread] = started
        try:
            vectors = self.embed_fn([it.text for it in live])
            return InferenceResult(live, vectors, started, self.clock())
        finally:
            with self._calls_lock:
                del self._calls[thread]

    async def _finish_batch(
        self,
        batch: list[WorkItem],
        future: asyncio.Future,
        saturated: bool,
        ready_at: float,
    ) -> None:
        """Wait for one submitted batch and hand its vectors to their requests (or fail
        them with BatchFailedError)."""
        taken = sum(it.text.length for it in batch)
        try:
            result = await future
        except Exception as exc:  # noqa: BLE001 - any backend failure fails this batch only
            log.exception("inference failed for a batch of %d inputs", len(batch))
            self.on_failure(exc)
            error = BatchFailedError(f"inference failed: {type(exc).__name__}: {exc}")
            for item in batch:
                if not item.request.finished:
                    item.request.future.set_exception(error)
            return
        finally:
            self._running_tokens -= taken
            self._unfinished -= 1
            self._thread_free.set()
        if result is None:
            return
        batch, vectors, started, ended = result
        texts = [it.text for it in batch]
        # busy time includes the gap since the previous batch (result hand-out, the event
        # loop's other work): under load that gap is part of what each batch costs. With
        # several threads it is the time since any batch ended: the queue's drain rate
        busy = ended - max(self._last_batch_end, ready_at)
        self._last_batch_end = max(self._last_batch_end, ended)
        stats = BatchStats(
            len(texts),
            max(t.length for t in texts) * len(texts),
            sum(t.length for t in texts),
            ended - started,
            busy,
            saturated,
        )
        self._observe(stats, saturated)
        self.turn_away_late()
        self.on_batch(stats)
        for item, vector in zip(batch, vectors):
            request = item.request
            if request.finished:
                continue
            request.results[item.index] = vector
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(gather(request.results))

    def _observe(self, stats: BatchStats, saturated: bool) -> None:
        """Feed a finished batch to the drain-rate estimate (see below)."""
        tokens = stats.real_tokens + self._unobserved_tokens
        if stats.busy_seconds <= 0:  # ended with (or before) another thread's batch
            self._unobserved_tokens = tokens  # counted with the next one
            return
        self._unobserved_tokens = 0
        busy = stats.busy_seconds
        if saturated or tokens > busy * self.estimator.tokens_per_s:
            # a batch from a short queue runs slower per token than a busy server's (the
            # per-call overhead, the max_wait pause counted as busy), so only saturated
            # batches measure the drain rate; but one that still beats the estimate proves
            # it too low. Without this an estimate lowered by a stall stayed there: the 429s
            # it causes keep the queue short, so no saturated batch came to correct it
            self.estimator.observe(tokens, busy)
