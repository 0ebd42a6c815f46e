"""Admission by expected wait: a moving estimate of the engine's throughput, and the rules
that turn a request away before it joins the queue.

Units: work is counted in *tokens* (the real token counts the batcher queues, padding
not included). The estimate is the queue's *drain rate*: tokens completed per second of
wall-clock time while work was waiting, gaps between batches included, so the padding,
per-batch overhead and whatever else competes for the CPU (HTTP parsing, tokenising and
answering a burst of requests) are folded into it. It is the more conservative of a slow
moving average and the rate of the last few batches, so it drops within a batch or two
when the server slows down and rises only as the average follows. The batcher feeds it the
batches of saturated windows (a busy server's rate), and any other batch that drained
faster than the estimate (proof that it is too low: otherwise an estimate lowered by one
stalled batch would stay low while its own 429s kept the queue too short to saturate).

Order of the checks (each names its limit):

1. more inputs than the queue can ever hold (`max_queued_inputs`) -> 413;
2. more work than the server can do within `request_timeout_s` even when idle -> 413,
   with the number of inputs that would fit (judged at the moving average, not at the
   last batches' rate, which a stall or a burst's contention can lower for a while);
3. the queue holds `max_queued_inputs` inputs already (memory guard) -> 429;
4. the work ahead of it (the rest of the batch now running plus everything queued) and
   the request itself would take longer than `max_queue_wait_s` -> 429. A request that
   finds the queue empty is always admitted (it starts with the next batch; rule 2 already
   bounds its own work), so a request bigger than `max_queue_wait_s` but within rule 2 is
   served when the server is free instead of being turned away forever.

After admission (`late_requests`): when a finished batch lowers the estimate, a request
still queued whose predicted start is now more than `max_queue_wait_s` after its admission
is turned away with the same 429 at once, instead of waiting past the bound it was
admitted under. The request at the head of the queue is never turned away (it starts next).

`Retry-After` is the time the work ahead takes at the estimated throughput (whole
seconds, at least 1): by then this server has room again even if every client turned away
in the same burst retries at once.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass

from service.engine.errors import QueueFullError, RequestTooLargeError

# Used until the engine's start-up calibration batch replaces it: a deliberately low
# figure (a small CPU with a small model does several times this), so that a server that
# has not measured itself yet errs towards 429s rather than towards long waits.
DEFAULT_PRIOR_TOKENS_PER_S = 2000.0
PRIOR_WEIGHT_S = 1.0  # the prior counts like this many seconds of measured busy time
MEMORY_S = 5.0  # busy seconds after which an observation's weight has fallen to 1/e
RECENT_BATCHES = 2  # the recent rate is over the last this many batches...
RECENT_MIN_S = 0.5  # ...or more, until they cover at least this many busy seconds
RECENT_MAX = 64  # observations kept for the recent rate at most


def retry_after_s(seconds: float) -> int:
    """`Retry-After` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


class ThroughputEstimator:
    """The queue's drain rate in tokens per busy second: the smaller of a moving average
    and the rate of the most recent batches.

    Each observation is (tokens completed, busy seconds), busy seconds being the wall time
    since the previous batch ended or, if later, since its work was ready: inference plus
    every gap in which the worker waited for the CPU or the event loop.

    The average decays the history by exp(-seconds / memory_s) before adding each
    observation, so it forgets in *busy time*, not wall time: an idle hour does not erase
    it, and five seconds of saturated batches mostly replace it. It is
    sum(weighted tokens) / sum(weighted seconds): long batches count for more than short
    ones, as they should for a rate. The recent rate is sum(tokens) / sum(seconds) over the
    last `recent_batches` observations and at least `recent_min_s` busy seconds (so a few
    tiny batches are not mistaken for a trend); the estimate is min(average, recent), so a
    slowdown counts from the next batch on, and a speed-up only as the average follows.
    """

    def __init__(
        self,
        prior_tokens_per_s: float = DEFAULT_PRIOR_TOKENS_PER_S,
        prior_weight_s: float = PRIOR_WEIGHT_S,
        memory_s: float = MEMORY_S,
        recent_batches: int = RECENT_BATCHES,
        recent_min_s: float = RECENT_MIN_S,
    ) -> None:
        if prior_tokens_per_s <= 0 or prior_weight_s <= 0 or memory_s <= 0:
            raise ValueError("prior rate, prior weight and memory must be positive")
        if recent_batches < 1 or recent_min_s < 0:
            raise ValueError("recent_batches must be >= 1 and recent_min_s >= 0")
        self.memory_s = memory_s
        self.recent_batches, self.recent_min_s = recent_batches, recent_min_s
        self._tokens = prior_tokens_per_s * prior_weight_s
        self._seconds = prior_weight_s
        self._recent: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=max(RECENT_MAX, recent_batches)
        )
        self.observations = 0

    @property
    def average_tokens_per_s(self) -> float:
        """The moving average alone (prior included)."""
        return self._tokens / self._seconds

    @property
    def recent_tokens_per_s(self) -> float | None:
        """The rate of the last batches, or None before the first observation: the last
        `recent_batches` observations, extended back until they cover `recent_min_s`; where
        all of them cover less, the missing time counts at the average's rate (so one
        short batch moves it only by its share of `recent_min_s`)."""
        if not self._recent:
            return None
        tokens, seconds = 0.0, 0.0
        for count, (batch_tokens, batch_s) in enumerate(reversed(self._recent), 1):
            tokens, seconds = tokens + batch_tokens, seconds + batch_s
            if count >= self.recent_batches and seconds >= self.recent_min_s:
                break
        if seconds < self.recent_min_s:
            tokens += self.average_tokens_per_s * (self.recent_min_s - seconds)
            seconds = self.recent_min_s
        return tokens / seconds

    @property
    def tokens_per_s(self) -> float:
        """The estimate admission uses: min(average, recent rate)."""
        recent = self.recent_tokens_per_s
        average = self.average_tokens_per_s
        return average if recent is None else min(average, recent)

    def reset(self, tokens_per_s: float, weight_s: float = PRIOR_WEIGHT_S) -> None:
        """Replace the history with a measured prior (the start-up calibration)."""
        if tokens_per_s <= 0 or weight_s <= 0:
            raise ValueError("tokens_per_s and weight_s must be positive")
        self._tokens, self._seconds = tokens_per_s * weight_s, weight_s
        self._recent.clear()

    def observe(self, tokens: int, seconds: float) -> None:
        """One busy period: `tokens` real tokens completed in `seconds` of wall time."""
        if tokens <= 0 or seconds <= 0:
            return
        decay = math.exp(-seconds / self.memory_s)
        self._tokens = self._tokens * decay + tokens
        self._seconds = self._seconds * decay + seconds
        self._recent.append((tokens, seconds))
        self.observations += 1

    def seconds_for(self, tokens: int) -> float:
        """Estimated busy seconds to embed `tokens` tokens."""
        return tokens / self.tokens_per_s


@dataclass(frozen=True)
class AdmissionLimits:
    max_queued_inputs: int
    max_queue_wait_s: float = math.inf
    request_timeout_s: float = math.inf


@dataclass(frozen=True)
class QueueLoad:
    """The work ahead of a request that arrives now.

    inputs, tokens: what waits in the queue (not yet in a batch);
    running_tokens: real tokens of the batches taken from the queue and not finished yet;
    running_elapsed_s: seconds the batch now running has been running.
    """

    inputs: int
    tokens: int
    running_tokens: int = 0
    running_elapsed_s: float = 0.0

    def seconds_ahead(self, tokens_per_s: float) -> float:
        """Estimated seconds until all of this work is done, at `tokens_per_s`."""
        running_s = max(0.0, self.running_tokens / tokens_per_s - self.running_elapsed_s)
        return running_s + self.tokens / tokens_per_s


def check_admission(
    queue: QueueLoad,
    inputs: int,
    tokens: int,
    estimator: ThroughputEstimator,
    limits: AdmissionLimits,
) -> None:
    """Raise RequestTooLargeError (413) or QueueFullError (429) if a request of `inputs`
    texts and `tokens` tokens must not join `queue`; return None to admit it."""
    if inputs > limits.max_queued_inputs:
        raise RequestTooLargeError(
            f"{inputs} inputs in one request, more than the queue can ever hold "
            f"({limits.max_queued_inputs}, max_queued_inputs); split the request",
            "max_queued_inputs",
        )
    # "even when idle": the moving average, not the last batches (a stall or a burst's
    # contention must not make an ordinary request look impossible)
    idle_rate = estimator.average_tokens_per_s
    idle_s = tokens / idle_rate
    if idle_s > limits.request_timeout_s:
        fitting = max(1, math.floor(inputs * limits.request_timeout_s / idle_s))
        raise RequestTooLargeError(
            f"this request ({inputs} inputs, {tokens} tokens) needs about {idle_s:.0f} s of "
            f"inference at this server's throughput ({idle_rate:.0f} tokens/s) even when "
            f"idle, more than request_timeout_s ({limits.request_timeout_s:g} s); split it "
            f"into requests of at most about {fitting} such inputs",
            "request_timeout_s",
        )
    rate = estimator.tokens_per_s
    own_s = tokens / rate
    ahead_s = queue.seconds_ahead(rate)
    if queue.inputs + inputs > limits.max_queued_inputs:
        raise QueueFullError(
            f"queue full: {queue.inputs} inputs queued, {inputs} more asked, capacity "
            f"{limits.max_queued_inputs} (max_queued_inputs); retry later or elsewhere",
            retry_after_s(ahead_s),
            "max_queued_inputs",
        )
    if queue.inputs and ahead_s + own_s > limits.max_queue_wait_s:
        raise QueueFullError(
            f"server busy: the work ahead ({queue.inputs} inputs queued and the batch "
            f"running) needs about {ahead_s:.1f} s at {rate:.0f} tokens/s, and this request "
            f"{own_s:.1f} s more, past max_queue_wait_s ({limits.max_queue_wait_s:g} s); "
            "retry later or elsewhere",
            retry_after_s(ahead_s),
            "max_queue_wait_s",
        )


@dataclass(frozen=True)
class Waiting:
    """A request admitted and not started: its queued tokens and when it was admitted
    (seconds on the batcher's clock)."""

    request: object
    tokens: int
    admitted_at: float


def late_requests(
    waiting: Iterable[Waiting],
    ahead_s: float,
    now: float,
    tokens_per_s: float,
    max_queue_wait_s: float,
) -> list[tuple[Waiting, float]]:
    """The admitted requests to turn away now, with the seconds of work ahead of each.

    `waiting` is in queue order; `ahead_s` is the estimated rest of the batches already
    taken from the queue. A request is late when its predicted start,
    now + the work ahead of it, is more than `max_queue_wait_s` after its admission. The
    first request never is (it starts next), and a late request's tokens do not count
    ahead of the ones behind it (they move up)."""
    late: list[tuple[Waiting, float]] = []
    for position, item in enumerate(waiting):
        if position and now + ahead_s - item.admitted_at > max_queue_wait_s:
            late.append((item, ahead_s))
            continue
        ahead_s += item.tokens / tokens_per_s
    return late
