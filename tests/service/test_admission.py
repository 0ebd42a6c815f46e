"""Units: the throughput estimate and the admission rules (fake stats, no clocks), the
settings that could never work, and how the batcher feeds and applies them."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from pydantic import ValidationError

from service.api.errors import to_api_error
from service.config import Settings
from service.engine.admission import (
    AdmissionLimits,
    QueueFullError,
    QueueLoad,
    RequestTooLargeError,
    ThroughputEstimator,
    check_admission,
    retry_after_s,
)
from service.engine.batcher import Batcher, BatchLimits, BatchStats, ShuttingDownError
from service.engine.tokenizer import TokenizedText

# 1000 tokens/s: every figure below is easy to check by hand
LIMITS = AdmissionLimits(max_queued_inputs=100, max_queue_wait_s=2.0, request_timeout_s=10.0)


def estimator(rate: float = 1000.0) -> ThroughputEstimator:
    return ThroughputEstimator(prior_tokens_per_s=rate)


def test_estimator_starts_at_its_prior_and_moves_towards_observations():
    est = ThroughputEstimator(prior_tokens_per_s=1000.0, prior_weight_s=1.0, memory_s=5.0)
    assert est.tokens_per_s == pytest.approx(1000.0)
    est.observe(4000, 1.0)  # a batch at 4000 tokens/s
    assert 1000.0 < est.tokens_per_s < 4000.0
    for _ in range(100):  # 100 busy seconds at 4000 tokens/s: the prior is forgotten
        est.observe(4000, 1.0)
    assert est.tokens_per_s == pytest.approx(4000.0, rel=1e-6)
    assert est.observations == 101


def test_estimator_weights_by_busy_time_not_by_batch_count():
    est = ThroughputEstimator(prior_tokens_per_s=4000.0, prior_weight_s=1.0, memory_s=5.0)
    for _ in range(10):  # ten tiny batches of 10 ms at half the rate barely move it
        est.observe(20, 0.01)
    assert est.tokens_per_s > 3600.0


def test_estimator_ignores_empty_observations_and_can_be_reset():
    est = estimator(1000.0)
    est.observe(0, 1.0)
    est.observe(100, 0.0)
    assert est.tokens_per_s == pytest.approx(1000.0) and est.observations == 0
    est.reset(2500.0)
    assert est.tokens_per_s == pytest.approx(2500.0)
    assert est.seconds_for(5000) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        est.reset(0.0)


def test_retry_after_is_whole_seconds_at_least_one():
    assert retry_after_s(0.0) == 1 and retry_after_s(0.2) == 1
    assert retry_after_s(1.01) == 2 and retry_after_s(3.0) == 3


def test_request_on_an_empty_queue_is_admitted_even_past_the_wait_bound():
    # 5000 tokens = 5 s of work > max_queue_wait_s (2 s) but < request_timeout_s (10 s)
    check_admission(QueueLoad(0, 0), 50, 5000, estimator(), LIMITS)


def test_wait_bound_rejects_with_retry_after_from_the_estimate():
    queue = QueueLoad(inputs=10, tokens=1500)  # 1.5 s of work queued
    check_admission(queue, 1, 400, estimator(), LIMITS)  # 1.9 s <= 2 s: admitted
    with pytest.raises(QueueFullError) as info:
        check_admission(queue, 1, 1100, estimator(), LIMITS)  # 2.6 s > 2 s
    assert info.value.limit == "max_queue_wait_s"
    assert info.value.retry_after_s == 2  # the queued 1.5 s, rounded up
    assert "max_queue_wait_s (2 s)" in str(info.value)
    with pytest.raises(QueueFullError) as info:
        check_admission(QueueLoad(10, 6200), 1, 100, estimator(), LIMITS)
    assert info.value.retry_after_s == 7  # ceil(6.2)
    with pytest.raises(QueueFullError) as info:  # own 5 s alone exceeds the bound
        check_admission(QueueLoad(1, 300), 1, 5000, estimator(), LIMITS)
    assert info.value.retry_after_s == 1


def test_slower_estimate_turns_the_same_queue_away():
    queue = QueueLoad(inputs=10, tokens=1500)
    check_admission(queue, 1, 100, estimator(1000.0), LIMITS)
    with pytest.raises(QueueFullError):
        check_admission(queue, 1, 100, estimator(500.0), LIMITS)


def test_count_limit_stays_as_a_memory_guard():
    fast = estimator(1e9)  # the wait bound never triggers
    check_admission(QueueLoad(90, 90), 10, 10, fast, LIMITS)
    with pytest.raises(QueueFullError) as info:
        check_admission(QueueLoad(95, 95), 10, 10, fast, LIMITS)
    assert info.value.limit == "max_queued_inputs" and info.value.retry_after_s >= 1
    assert "capacity 100 (max_queued_inputs)" in str(info.value)


def test_more_inputs_than_the_queue_holds_is_413_naming_the_limit():
    with pytest.raises(RequestTooLargeError) as info:
        check_admission(QueueLoad(0, 0), 101, 101, estimator(1e9), LIMITS)
    assert info.value.limit == "max_queued_inputs"
    assert "101 inputs" in str(info.value) and "(100, max_queued_inputs)" in str(info.value)
    error = to_api_error(info.value)
    assert error.status == 413 and "Retry-After" not in error.headers


def test_work_beyond_request_timeout_even_when_idle_is_413_saying_how_to_split():
    # 40 inputs x 500 tokens = 20 s at 1000 tokens/s > request_timeout_s (10 s)
    with pytest.raises(RequestTooLargeError) as info:
        check_admission(QueueLoad(0, 0), 40, 20_000, estimator(), LIMITS)
    message = str(info.value)
    assert info.value.limit == "request_timeout_s"
    assert "about 20 s" in message and "request_timeout_s (10 s)" in message
    assert "at most about 20 such inputs" in message
    assert "overloaded" not in message


def test_429_maps_to_retry_after_header():
    error = to_api_error(QueueFullError("busy", 7, "max_queue_wait_s"))
    assert error.status == 429 and error.headers == {"Retry-After": "7"}


def test_settings_refuse_limits_that_could_never_work():
    with pytest.raises(ValidationError, match=r"max_client_batch_size \(2048\) must not exceed"):
        Settings(_env_file=None, max_queued_inputs=512)
    with pytest.raises(ValidationError, match="max_queue_wait_s .* less than request_timeout_s"):
        Settings(_env_file=None, request_timeout_s=3, max_queue_wait_s=5)
    ok = Settings(_env_file=None, max_queued_inputs=512, max_client_batch_size=512)
    assert ok.max_queue_wait_s < ok.request_timeout_s


# ---------------------------------------------------------------- batcher wiring


def _text(n: int) -> TokenizedText:
    return TokenizedText(list(range(n)), [0] * n, n)


class GatedEmbed:
    """An embed_fn that blocks until released: lets a test hold a batch in inference."""

    def __init__(self) -> None:
        import threading

        self.release, self.entered = threading.Event(), threading.Event()

    def __call__(self, texts):
        self.entered.set()
        self.release.wait(10)
        return np.ones((len(texts), 4), dtype=np.float32)


async def test_batcher_applies_the_wait_bound_and_learns_only_from_saturated_batches():
    stats: list[BatchStats] = []
    est = estimator(1000.0)
    batcher = Batcher(
        lambda texts: np.ones((len(texts), 4), dtype=np.float32),
        BatchLimits(
            max_batch_tokens=100, max_batch_size=4, max_wait_s=0.0, max_queued_inputs=1000
        ),  # fmt: skip
        on_batch=stats.append,
        admission=AdmissionLimits(1000, max_queue_wait_s=0.05, request_timeout_s=1.0),
        estimator=est,
    )
    # not started: the queue only fills. 40 tokens = 0.04 s at the prior: admitted
    first = batcher.submit([_text(10)] * 4)
    assert batcher.queued_tokens == 40 and batcher.queued_seconds() == pytest.approx(0.04)
    with pytest.raises(QueueFullError) as info:
        batcher.submit([_text(10)] * 2)  # 0.06 s > 0.05 s
    assert info.value.limit == "max_queue_wait_s"
    second = batcher.submit([_text(1)])  # 0.041 s: admitted; cancelled: never started
    batcher.cancel(second)
    batcher.submit([_text(5)])
    batcher.start()
    await first.future
    await asyncio.sleep(0.05)
    assert first.started and not second.started
    # the first window (4 texts, more waiting) was saturated; the second (5 of the
    # 100-token budget, nothing behind) was not
    assert [s.saturated for s in stats] == [True, False]
    assert est.observations == 1 and all(s.busy_seconds > 0 for s in stats)
    await batcher.stop()


async def test_abort_answers_queued_and_running_requests_with_the_reason():
    embed = GatedEmbed()
    batcher = Batcher(embed, BatchLimits(100, 2, 0.0, 100))
    batcher.start()
    running = batcher.submit([_text(3)] * 2)
    await asyncio.to_thread(embed.entered.wait, 5)
    queued = batcher.submit([_text(3)] * 3)
    assert batcher.inference_running and batcher.queue_depth == 3
    failed = await batcher.abort("grace period over")
    assert failed == 2 and batcher.queue_depth == 0
    for request in (running, queued):
        with pytest.raises(ShuttingDownError, match="grace period over"):
            await request.future
    assert await batcher.drain(0.01)  # nothing left to wait for
    with pytest.raises(ShuttingDownError):
        batcher.submit([_text(3)])
    embed.release.set()
    await batcher.stop()
    assert not math.isnan(batcher.estimator.tokens_per_s)
