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
    QueueLoad,
    ThroughputEstimator,
    Waiting,
    check_admission,
    late_requests,
    retry_after_s,
)
from service.engine.batcher import Batcher, BatchLimits, BatchStats
from service.engine.errors import QueueFullError, RequestTooLargeError, ShuttingDownError
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
    assert est.average_tokens_per_s > 3600.0
    # the recent rate covers at least recent_min_s (0.5 s): the 0.1 s observed at 2000
    # tokens/s, the other 0.4 s at the average
    recent = (200 + est.average_tokens_per_s * 0.4) / 0.5
    assert est.recent_tokens_per_s == pytest.approx(recent)
    assert est.tokens_per_s == pytest.approx(recent) and recent > 3200.0


def test_estimator_drops_within_one_batch_and_rises_only_with_the_average():
    est = ThroughputEstimator(prior_tokens_per_s=4000.0, prior_weight_s=1.0, memory_s=5.0)
    assert est.recent_tokens_per_s is None
    est.observe(1400, 0.7)  # one batch drained at 2000 tokens/s (contention)
    assert est.tokens_per_s == pytest.approx(2000.0)  # at once, not after the average
    assert est.average_tokens_per_s > 3000.0
    est.observe(2800, 0.7)  # the next two at 4000 tokens/s: the slow batch drops out...
    est.observe(2800, 0.7)
    assert est.recent_tokens_per_s == pytest.approx(4000.0)
    # ...and the estimate is the average, still below 4000 after the slow batch
    assert est.tokens_per_s == pytest.approx(est.average_tokens_per_s)
    assert est.tokens_per_s < 4000.0
    est.reset(3000.0)  # calibration replaces the history, the recent batches too
    assert est.recent_tokens_per_s is None and est.tokens_per_s == pytest.approx(3000.0)


def test_estimator_recent_window_spans_two_batches_and_half_a_second():
    est = ThroughputEstimator(prior_tokens_per_s=1000.0, recent_batches=2, recent_min_s=0.5)
    est.observe(300, 0.3)  # 1000/s
    est.observe(600, 0.3)  # 2000/s
    est.observe(900, 0.3)  # 3000/s: the last two cover 0.6 s -> (600 + 900) / 0.6
    assert est.recent_tokens_per_s == pytest.approx(2500.0)
    est.observe(40, 0.01)
    est.observe(40, 0.01)  # two tiny batches: reaches back to 0.5 s and more
    assert est.recent_tokens_per_s == pytest.approx((80 + 900 + 600) / 0.62)
    with pytest.raises(ValueError):
        ThroughputEstimator(recent_batches=0)


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


def test_work_ahead_includes_the_rest_of_the_running_batch():
    # 800 tokens running for 0.3 s at 1000 tokens/s: 0.5 s left; 1000 queued: 1 s more
    queue = QueueLoad(inputs=10, tokens=1000, running_tokens=800, running_elapsed_s=0.3)
    assert queue.seconds_ahead(1000.0) == pytest.approx(1.5)
    # a batch running longer than estimated counts as finishing now, never negative
    assert QueueLoad(0, 0, 800, 5.0).seconds_ahead(1000.0) == 0.0
    check_admission(queue, 1, 500, estimator(), LIMITS)  # 1.5 + 0.5 = 2 s: admitted
    with pytest.raises(QueueFullError) as info:  # 1.5 + 0.6 s: the running rest counts
        check_admission(queue, 1, 600, estimator(), LIMITS)
    assert info.value.retry_after_s == 2  # ceil(1.5): the work ahead, running rest included
    check_admission(QueueLoad(10, 1000), 1, 600, estimator(), LIMITS)  # without it: 1.6 s
    # an empty queue still admits, whatever runs (the request starts with the next batch)
    check_admission(QueueLoad(0, 0, 10_000, 0.0), 1, 600, estimator(), LIMITS)


def test_late_requests_are_those_that_would_start_past_the_bound_after_admission():
    # at 1000 tokens/s, now = 10 s, bound 2 s; 0.5 s of the running batch left
    waiting = [
        Waiting("head", 1000, admitted_at=7.0),  # waited 3 s already, but starts next
        Waiting("a", 500, admitted_at=9.0),  # starts at 11.5: 2.5 s after admission
        Waiting("b", 200, admitted_at=9.9),  # a is gone: starts at 11.5, 1.6 s after
        Waiting("c", 300, admitted_at=9.5),  # starts at 11.7: 2.2 s after
    ]
    late = late_requests(waiting, 0.5, 10.0, 1000.0, 2.0)
    assert [(item.request, ahead) for item, ahead in late] == [
        ("a", pytest.approx(1.5)),
        ("c", pytest.approx(1.7)),
    ]
    assert late_requests(waiting, 0.5, 10.0, 1e9, 2.0) == []  # fast enough: nobody
    assert late_requests(waiting[:1], 60.0, 10.0, 1.0, 2.0) == []  # the head never


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


def test_a_stall_lowers_the_wait_estimate_but_never_makes_a_request_413():
    est = ThroughputEstimator(prior_tokens_per_s=1000.0, prior_weight_s=1.0, memory_s=5.0)
    est.observe(5, 1.0)  # one batch of 5 tokens stalled for 1 s: recent rate 5 tokens/s
    assert est.tokens_per_s == pytest.approx(5.0) and est.average_tokens_per_s > 400.0
    # 500 tokens: 100 s at the recent rate, ~1 s at the average: not "too large" (413)...
    check_admission(QueueLoad(0, 0), 5, 500, est, LIMITS)
    with pytest.raises(QueueFullError):  # ...but the wait bound uses the recent rate
        check_admission(QueueLoad(1, 5), 5, 500, est, LIMITS)


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


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ClockedEmbed:
    """An embed_fn whose inference takes `per_token_s` per token on a FakeClock."""

    def __init__(self, clock: FakeClock, per_token_s: float) -> None:
        self.clock, self.per_token_s = clock, per_token_s

    def __call__(self, texts):
        self.clock.now += sum(t.length for t in texts) * self.per_token_s
        return np.ones((len(texts), 4), dtype=np.float32)


class GatedEmbed:
    """An embed_fn that blocks until released: lets a test hold a batch in inference."""

    def __init__(self) -> None:
        import threading

        self.release, self.entered = threading.Event(), threading.Event()

    def __call__(self, texts):
        self.entered.set()
        self.release.wait(10)
        return np.ones((len(texts), 4), dtype=np.float32)


async def test_batcher_applies_the_wait_bound_and_learns_from_saturated_batches():
    clock = FakeClock()
    stats: list[BatchStats] = []
    est = estimator(1000.0)
    batcher = Batcher(
        ClockedEmbed(clock, 1 / 500.0),  # 500 tokens/s of inference
        BatchLimits(
            max_batch_tokens=100, max_batch_size=4, max_wait_s=0.0, max_queued_inputs=1000
        ),  # fmt: skip
        on_batch=stats.append,
        admission=AdmissionLimits(1000, max_queue_wait_s=0.05, request_timeout_s=1.0),
        estimator=est,
        clock=clock,
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
    # the first window (4 texts, more waiting) was saturated and measured 500 tokens/s;
    # the second (5 of the 100-token budget, nothing behind) was not, and ran no faster
    # than the estimate: it taught nothing
    assert [s.saturated for s in stats] == [True, False]
    assert est.observations == 1 and all(s.busy_seconds > 0 for s in stats)
    await batcher.stop()


async def test_an_estimate_lowered_by_a_stall_recovers_without_a_saturated_batch():
    """The 8 x 8 passages case: one stalled batch lowered the estimate, the 429s that
    followed kept the queue short, and no saturated batch came to correct it."""
    clock, est = FakeClock(), estimator(1000.0)
    embed = ClockedEmbed(clock, 0.004)  # 250 tokens/s: the stall
    batcher = Batcher(
        embed,
        BatchLimits(
            max_batch_tokens=500, max_batch_size=100, max_wait_s=0.0, max_queued_inputs=1000
        ),  # fmt: skip
        admission=AdmissionLimits(1000, max_queue_wait_s=2.0, request_timeout_s=10.0),
        estimator=est,
        clock=clock,
    )
    # at 250 tokens/s, 400 tokens queued and 400 more take 3.2 s: past the 2 s bound
    assert est.tokens_per_s == 1000.0
    batcher.start()
    await batcher.submit([_text(250)] * 2).future  # the first window left work behind
    assert est.observations == 1 and est.tokens_per_s == pytest.approx(250.0)
    ahead = batcher.submit([_text(200)] * 2)
    with pytest.raises(QueueFullError):
        batcher.submit([_text(200)] * 2)
    await ahead.future
    embed.per_token_s = 0.001  # the stall is over: 1000 tokens/s again
    for _ in range(5):  # one short request at a time: never a saturated window
        await batcher.submit([_text(200)]).future
    assert est.tokens_per_s > 2 * 250  # rising towards the average (memory_s)
    ahead = batcher.submit([_text(200)] * 2)
    behind = batcher.submit([_text(200)] * 2)  # 800 tokens at >600 tokens/s: admitted
    await asyncio.gather(ahead.future, behind.future)
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


async def test_batcher_turns_away_queued_requests_when_the_drain_rate_drops():
    clock, est = FakeClock(), estimator(1000.0)
    batcher = Batcher(
        lambda texts: np.ones((len(texts), 4), dtype=np.float32),
        BatchLimits(1000, 100, 0.0, 1000),
        admission=AdmissionLimits(1000, max_queue_wait_s=2.0, request_timeout_s=10.0),
        estimator=est,
        clock=clock,
    )
    # not started: four requests of 450 tokens, each admitted at 1000 tokens/s (the last
    # one: 1.35 s queued + 0.45 s own = 1.8 s <= 2 s)
    requests = [batcher.submit([_text(45)] * 10) for _ in range(4)]
    assert batcher.queue_depth == 40 and batcher.turn_away_late() == 0
    clock.now += 0.5
    est.observe(500, 1.0)  # a batch drained at 500 tokens/s: the estimate halves at once
    assert est.tokens_per_s == pytest.approx(500.0)
    # at 500 tokens/s each request is 0.9 s: the second starts at 100.5 + 0.9 = 101.4
    # (1.4 s after admission, kept); the third at 102.3 (2.3 s: late), and so the fourth
    assert batcher.turn_away_late() == 20
    assert not requests[0].finished and not requests[1].finished
    for request in requests[2:]:
        with pytest.raises(QueueFullError) as info:
            await request.future
        assert info.value.limit == "max_queue_wait_s" and info.value.retry_after_s == 2
        assert "turned away before it started" in str(info.value)
    assert batcher.queue_depth == 20 and batcher.queued_tokens == 900
    # and admission applies the same rate: 1.8 s queued + 0.9 s own > 2 s
    with pytest.raises(QueueFullError):
        batcher.submit([_text(45)] * 10)
    await batcher.stop()
    for request in requests[:2]:
        with pytest.raises(ShuttingDownError):
            await request.future


async def test_running_batch_counts_ahead_of_a_new_request():
    embed = GatedEmbed()
    batcher = Batcher(
        embed,
        BatchLimits(1000, 100, 0.0, 1000),
        admission=AdmissionLimits(1000, max_queue_wait_s=2.0, request_timeout_s=10.0),
        estimator=estimator(1000.0),
    )
    batcher.start()
    running = batcher.submit([_text(100)] * 10)  # 1000 tokens = 1 s at the estimate
    await asyncio.to_thread(embed.entered.wait, 5)
    load = batcher.load()
    assert load.inputs == 0 and load.running_tokens == 1000
    assert 0.0 < batcher.queued_seconds() <= 1.0
    queued = batcher.submit([_text(100)] * 5)  # empty queue: admitted behind the batch
    with pytest.raises(QueueFullError):  # ~1 s running + 0.5 s queued + 0.6 s > 2 s
        batcher.submit([_text(100)] * 6)
    embed.release.set()
    await running.future
    await queued.future
    assert batcher.load().running_tokens == 0
    await batcher.stop()


async def test_queued_requests_are_turned_away_with_429_when_a_batch_drains_slowly(
    cache_dir, recording_backend
):
    """Through the app: a stalled batch lowers the measured drain rate, and the requests
    queued behind the next one, now past max_queue_wait_s since admission, get 429 at once
    (counted in both metrics); the one at the head of the queue is served."""
    from tests.service.conftest import async_running, metric_value

    settings = Settings(_env_file=None, cache_dir=cache_dir, max_queue_wait_s=1.0,
                        max_batch_size=1, max_wait_ms=0)  # fmt: skip
    async with async_running(settings, recording_backend) as client:
        batcher = client.app.state.engine.core.batcher
        recording_backend.gate.clear()
        recording_backend.entered.clear()
        first = asyncio.create_task(client.post("/embed", json={"inputs": ["first"]}))
        await asyncio.to_thread(recording_backend.entered.wait, 10)
        queued = [
            asyncio.create_task(client.post("/embed", json={"inputs": [f"queued {i}"]}))
            for i in range(3)
        ]
        while batcher.queue_depth < 3:  # all three admitted at the start-up estimate
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.1)  # the batch stalls past max_queue_wait_s
        recording_backend.gate.set()
        responses = await asyncio.gather(first, *queued)
        after = await client.post("/embed", json={"inputs": ["after"]})
        metrics = (await client.get("/metrics")).text
    assert [r.status_code for r in responses] == [200, 200, 429, 429]
    for response in responses[2:]:
        assert int(response.headers["retry-after"]) >= 1
        message = response.json()["error"]
        assert "turned away before it started" in message
        assert "max_queue_wait_s (1 s)" in message
    assert after.status_code == 200
    assert metric_value(metrics, "embed_turned_away_inputs_total") == 2
    assert metric_value(metrics, "embed_rejected_inputs_total") == 2
    assert metric_value(metrics, "embed_queue_depth") == 0
