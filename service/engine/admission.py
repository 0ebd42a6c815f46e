"""Admission by expected wait: a moving estimate of the engine's throughput, and the rules
that turn a request away before it joins the queue.

Units: work is counted in *tokens* (the real token counts the batcher queues, padding
not included: the estimate measures tokens per second of busy time, so the padding and
per-batch overhead of the current traffic are folded into it).

Order of the checks (each names its limit):

1. more inputs than the queue can ever hold (`max_queued_inputs`) -> 413;
2. more work than the server can do within `request_timeout_s` even when idle -> 413,
   with the number of inputs that would fit;
3. the queue holds `max_queued_inputs` inputs already (memory guard) -> 429;
4. the work queued ahead plus this request would take longer than `max_queue_wait_s`
   -> 429. A request that finds the queue empty is always admitted (it starts at once;
   rule 2 already bounds its own work), so a request bigger than `max_queue_wait_s` but
   within rule 2 is served when the server is free instead of being turned away forever.

`Retry-After` is the time the work queued now takes at the estimated throughput (whole
seconds, at least 1): by then this server has room again even if every client turned away
in the same burst retries at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Used until the engine's start-up calibration batch replaces it: a deliberately low
# figure (a small CPU with a small model does several times this), so that a server that
# has not measured itself yet errs towards 429s rather than towards long waits.
DEFAULT_PRIOR_TOKENS_PER_S = 2000.0
PRIOR_WEIGHT_S = 1.0  # the prior counts like this many seconds of measured busy time
MEMORY_S = 5.0  # busy seconds after which an observation's weight has fallen to 1/e


def retry_after_s(seconds: float) -> int:
    """`Retry-After` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


class ThroughputEstimator:
    """Exponentially weighted tokens per busy second.

    Each observation (tokens, seconds) decays the history by exp(-seconds / memory_s)
    before adding itself, so the estimate forgets in *busy time*, not wall time: an idle
    hour does not erase it, and five seconds of saturated batches mostly replace it.
    The estimate is sum(weighted tokens) / sum(weighted seconds): long batches count for
    more than short ones, as they should for a rate.
    """

    def __init__(
        self,
        prior_tokens_per_s: float = DEFAULT_PRIOR_TOKENS_PER_S,
        prior_weight_s: float = PRIOR_WEIGHT_S,
        memory_s: float = MEMORY_S,
    ) -> None:
        if prior_tokens_per_s <= 0 or prior_weight_s <= 0 or memory_s <= 0:
            raise ValueError("prior rate, prior weight and memory must be positive")
        self.memory_s = memory_s
        self._tokens = prior_tokens_per_s * prior_weight_s
        self._seconds = prior_weight_s
        self.observations = 0

    @property
    def tokens_per_s(self) -> float:
        return self._tokens / self._seconds

    def reset(self, tokens_per_s: float, weight_s: float = PRIOR_WEIGHT_S) -> None:
        """Replace the history with a measured prior (the start-up calibration)."""
        if tokens_per_s <= 0 or weight_s <= 0:
            raise ValueError("tokens_per_s and weight_s must be positive")
        self._tokens, self._seconds = tokens_per_s * weight_s, weight_s

    def observe(self, tokens: int, seconds: float) -> None:
        """One busy period: `tokens` real tokens embedded in `seconds` of wall time."""
        if tokens <= 0 or seconds <= 0:
            return
        decay = math.exp(-seconds / self.memory_s)
        self._tokens = self._tokens * decay + tokens
        self._seconds = self._seconds * decay + seconds
        self.observations += 1

    def seconds_for(self, tokens: int) -> float:
        """Estimated busy seconds to embed `tokens` tokens."""
        return tokens / self.tokens_per_s


@dataclass(frozen=True)
class AdmissionLimits:
    max_queued_inputs: int
    max_queue_wait_s: float = math.inf
    request_timeout_s: float = math.inf


class RequestTooLargeError(ValueError):
    """The request could never be served as sent: split it (413)."""

    def __init__(self, message: str, limit: str) -> None:
        self.limit = limit
        super().__init__(message)


class QueueFullError(RuntimeError):
    """The server is busy: the client should retry after `retry_after_s` or elsewhere (429)."""

    def __init__(self, message: str, retry_after_s: int, limit: str) -> None:
        self.retry_after_s, self.limit = retry_after_s, limit
        super().__init__(message)


@dataclass(frozen=True)
class QueueLoad:
    """What waits in the queue (not yet in a batch) when a request arrives."""

    inputs: int
    tokens: int


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
    rate = estimator.tokens_per_s
    own_s = tokens / rate
    if own_s > limits.request_timeout_s:
        fitting = max(1, math.floor(inputs * limits.request_timeout_s / own_s))
        raise RequestTooLargeError(
            f"this request ({inputs} inputs, {tokens} tokens) needs about {own_s:.0f} s of "
            f"inference at this server's throughput ({rate:.0f} tokens/s) even when idle, "
            f"more than request_timeout_s ({limits.request_timeout_s:g} s); split it into "
            f"requests of at most about {fitting} such inputs",
            "request_timeout_s",
        )
    queued_s = queue.tokens / rate
    if queue.inputs + inputs > limits.max_queued_inputs:
        raise QueueFullError(
            f"queue full: {queue.inputs} inputs queued, {inputs} more asked, capacity "
            f"{limits.max_queued_inputs} (max_queued_inputs); retry later or elsewhere",
            retry_after_s(queued_s),
            "max_queued_inputs",
        )
    if queue.inputs and queued_s + own_s > limits.max_queue_wait_s:
        raise QueueFullError(
            f"server busy: the {queue.inputs} inputs queued ahead need about {queued_s:.1f} s "
            f"at {rate:.0f} tokens/s, and this request {own_s:.1f} s more, past "
            f"max_queue_wait_s ({limits.max_queue_wait_s:g} s); retry later or elsewhere",
            retry_after_s(queued_s),
            "max_queue_wait_s",
        )
