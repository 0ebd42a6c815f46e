"""Cross-request batching, overload (429), failures, timeouts and cancellation."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from service.config import Settings
from service.engine.batcher import Batcher, BatchLimits, WorkItem, plan_batches
from service.engine.tokenizer import TokenizedText
from tests.service.conftest import async_running, metric_value


def _item(length: int) -> WorkItem:
    return WorkItem(
        TokenizedText([1] * length, [0] * length, length), request=None, index=0, enqueued=0.0
    )


def test_plan_batches_respects_token_budget_and_size_cap():
    rng = random.Random(0)
    items = [_item(rng.randint(1, 128)) for _ in range(500)]
    limits = BatchLimits(
        max_batch_tokens=1024, max_batch_size=32, max_wait_s=0, max_queued_inputs=10_000
    )
    batches = plan_batches(items, limits)
    assert sum(len(b) for b in batches) == 500
    for batch in batches:
        lengths = [it.text.length for it in batch]
        assert len(batch) <= 32
        assert max(lengths) * len(batch) <= 1024
        assert lengths == sorted(lengths)


def test_plan_batches_single_text_at_budget():
    limits = BatchLimits(256, 8, 0, 100)
    assert [len(b) for b in plan_batches([_item(256), _item(256)], limits)] == [1, 1]


async def test_concurrent_requests_get_their_own_vectors_in_order(
    cache_dir, st_model, recording_backend
):
    rng = random.Random(1)
    words = "the a dog cat runs sleeps garden house blue red quickly über café 日本".split()
    requests = [
        [" ".join(rng.choices(words, k=rng.randint(1, 60))) for _ in range(rng.randint(1, 6))]
        for _ in range(40)
    ]
    # admission is not under test: a wait bound no machine reaches here (a loaded CPU drains
    # 512-token batches slowly enough that the default 5 s turned some requests away)
    settings = Settings(_env_file=None, cache_dir=cache_dir, max_batch_tokens=512, max_wait_ms=20,
                        max_queue_wait_s=50)  # fmt: skip
    async with async_running(settings, recording_backend) as client:
        responses = await asyncio.gather(
            *(client.post("/embed", json={"inputs": texts}) for texts in requests)
        )
        metrics = (await client.get("/metrics")).text
    for texts, response in zip(requests, responses):
        assert response.status_code == 200
        got = np.asarray(response.json())
        expected = st_model.encode(texts)
        assert got.shape == expected.shape
        assert np.min(np.sum(got * expected, axis=1)) >= 0.9999
    shapes = recording_backend.shapes[1:]  # [0] is the warm-up
    assert all(rows * width <= 512 for rows, width in shapes)
    assert max(rows for rows, _ in shapes) > 6  # texts of different requests shared a batch
    assert metric_value(metrics, "embed_batch_size_count") == len(recording_backend.shapes)


async def test_full_queue_answers_429_with_retry_after(cache_dir, recording_backend):
    settings = Settings(_env_file=None, cache_dir=cache_dir, max_queued_inputs=4,
                        max_client_batch_size=4, max_batch_size=2, max_wait_ms=0)  # fmt: skip
    async with async_running(settings, recording_backend) as client:
        recording_backend.gate.clear()  # inference blocks: the queue fills up
        recording_backend.entered.clear()
        first = asyncio.create_task(client.post("/embed", json={"inputs": ["a", "b"]}))
        await asyncio.to_thread(recording_backend.entered.wait, 5)
        second = asyncio.create_task(client.post("/embed", json={"inputs": ["c", "d", "e"]}))
        await asyncio.sleep(0.2)
        over = await client.post("/embed", json={"inputs": ["f", "g"]})
        over_openai = await client.post("/v1/embeddings", json={"input": ["f", "g"]})
        recording_backend.gate.set()
        done = await asyncio.gather(first, second)
        depth = metric_value((await client.get("/metrics")).text, "embed_queue_depth")
    assert over.status_code == 429 and over.headers["retry-after"] == "1"
    assert "capacity 4" in over.json()["error"] and over.json()["error_type"] == "Overloaded"
    assert over_openai.status_code == 429
    assert over_openai.json()["error"]["type"] == "rate_limit_error"
    assert [r.status_code for r in done] == [200, 200]  # nothing accepted was lost
    assert depth == 0


async def test_failing_batch_fails_only_its_requests(cache_dir, recording_backend, st_model):
    poison = st_model.tokenizer.convert_tokens_to_ids("poison")
    recording_backend.fail_on_token = poison
    settings = Settings(_env_file=None, cache_dir=cache_dir, max_wait_ms=0)
    async with async_running(settings, recording_backend) as client:
        bad = await client.post("/embed", json={"inputs": ["this has poison in it"]})
        bad_openai = await client.post("/v1/embeddings", json={"input": "poison"})
        good = await client.post("/embed", json={"inputs": ["this is fine"]})
        metrics = (await client.get("/metrics")).text
        health = await client.get("/health")
    assert bad.status_code == 500
    assert "injected inference failure" in bad.json()["error"]
    assert bad.json()["error_type"] == "Backend"
    assert bad_openai.status_code == 500 and bad_openai.json()["error"]["type"] == "server_error"
    assert good.status_code == 200
    assert metric_value(metrics, "embed_batch_failures_total") == 2
    assert health.status_code == 200


async def test_request_timeout_bounds_waiting_not_working(cache_dir, recording_backend):
    """The request already in inference outlives request_timeout_s and is answered 200;
    the two still queued after request_timeout_s get a truthful 503 and leave the queue."""
    settings = Settings(_env_file=None, cache_dir=cache_dir, request_timeout_s=0.3,
                        max_queue_wait_s=0.2, max_batch_size=1, max_wait_ms=0)  # fmt: skip
    async with async_running(settings, recording_backend) as client:
        recording_backend.gate.clear()
        pending = [
            asyncio.create_task(client.post("/embed", json={"inputs": [f"text {i}"]}))
            for i in range(3)
        ]
        await asyncio.sleep(1.0)  # well past request_timeout_s; the first is still running
        depth = client.app.state.engine.core.batcher.queue_depth
        recording_backend.gate.set()
        responses = await asyncio.gather(*pending)
        after = await client.post("/embed", json={"inputs": ["back to normal"]})
    assert sorted(r.status_code for r in responses) == [200, 503, 503]
    timed_out = [r for r in responses if r.status_code == 503]
    message = timed_out[0].json()["error"]
    assert "waited 0.3 s in the queue without starting" in message
    assert "overloaded" not in message
    assert int(timed_out[0].headers["retry-after"]) >= 1
    assert depth == 0
    assert after.status_code == 200


async def test_cancelled_request_leaves_no_queued_inputs(cache_dir, recording_backend):
    settings = Settings(_env_file=None, cache_dir=cache_dir, max_batch_size=1, max_wait_ms=0)
    async with async_running(settings, recording_backend) as client:
        engine = client.app.state.engine
        recording_backend.gate.clear()
        recording_backend.entered.clear()
        task = asyncio.create_task(engine.embed(["one", "two", "three", "four"]))
        await asyncio.to_thread(recording_backend.entered.wait, 5)
        assert engine.core.batcher.queue_depth == 3
        task.cancel()  # what a client disconnect does to the handler
        with pytest.raises(asyncio.CancelledError):
            await task
        assert engine.core.batcher.queue_depth == 0
        recording_backend.gate.set()
        ok = await client.post("/embed", json={"inputs": ["next"]})
    assert ok.status_code == 200


async def test_quiet_hook_runs_once_after_the_work_stops():
    """`on_quiet` (the release_memory trim) fires once the queue has been empty for
    quiet_after_s, not between requests that keep coming."""
    calls = []
    limits = BatchLimits(max_batch_tokens=1024, max_batch_size=8, max_wait_s=0.0,
                         max_queued_inputs=64)  # fmt: skip
    batcher = Batcher(
        lambda texts: np.ones((len(texts), 4), dtype=np.float32),
        limits,
        on_quiet=lambda: calls.append(1),
        quiet_after_s=0.3,
    )
    batcher.start()
    text = TokenizedText([1, 2, 3], [1, 1, 1], 3)
    for _ in range(5):  # requests closer together than quiet_after_s
        await batcher.submit([text]).future
        await asyncio.sleep(0.05)
    assert calls == []
    await asyncio.sleep(0.6)
    assert calls == [1]
    await batcher.submit([text]).future
    await asyncio.sleep(0.6)
    assert calls == [1, 1]
    await batcher.stop()


def _padded(batches) -> int:
    return sum(max(it.text.length for it in b) * len(b) for b in batches)


def test_plan_batches_cuts_a_wide_window_where_padding_costs_more_than_a_call():
    """256 short texts of two lengths: one batch would pad the short ones to the long
    ones (8 x the real tokens of the short half); two length groups pad nothing."""
    items = [_item(5) for _ in range(128)] + [_item(40) for _ in range(128)]
    limits = BatchLimits(max_batch_tokens=16384, max_batch_size=256, max_wait_s=0,
                         max_queued_inputs=10_000)  # fmt: skip
    batches = plan_batches(items, limits)
    assert [len(b) for b in batches] == [128, 128]
    assert _padded(batches) == 128 * 5 + 128 * 40
    same = plan_batches([_item(12) for _ in range(200)], limits)
    assert [len(b) for b in same] == [200]  # nothing to save: one call


def test_plan_batches_never_pads_more_than_one_sorted_batch():
    rng = random.Random(2)
    limits = BatchLimits(max_batch_tokens=16384, max_batch_size=256, max_wait_s=0,
                         max_queued_inputs=10_000)  # fmt: skip
    for size in (2, 8, 64, 256):
        items = [_item(rng.randint(5, 46)) for _ in range(size)]
        batches = plan_batches(items, limits)
        assert sorted(it.text.length for b in batches for it in b) == sorted(
            it.text.length for it in items
        )
        one = max(it.text.length for it in items) * size
        assert _padded(batches) + 16 * len(batches) <= one + 16


async def test_batches_of_a_window_run_back_to_back_while_the_event_loop_is_busy():
    """Every batch of a window is handed to the inference thread at once: it goes on to the
    next batch while the event loop is blocked (parsing, serialising), and each request
    still gets its own vectors."""
    import threading
    import time

    entered = threading.Event()
    calls: list[tuple[int, float]] = []

    def embed(texts):
        calls.append((len(texts), time.monotonic()))
        entered.set()
        time.sleep(0.05)
        return np.asarray([[t.length, 0.0] for t in texts], dtype=np.float32)

    limits = BatchLimits(max_batch_tokens=16384, max_batch_size=256, max_wait_s=0.05,
                         max_queued_inputs=10_000)  # fmt: skip
    batcher = Batcher(embed, limits)
    batcher.start()
    short = [TokenizedText([1] * 4, [0] * 4, 4) for _ in range(64)]
    long = [TokenizedText([1] * 60, [0] * 60, 60) for _ in range(64)]
    first, second = batcher.submit(short), batcher.submit(long)
    await asyncio.to_thread(entered.wait, 5)
    time.sleep(0.3)  # the event loop is blocked: no batcher code runs meanwhile
    unblocked = time.monotonic()
    assert len(calls) == 2 and calls[1][1] < unblocked  # the second batch already ran
    assert [n for n, _ in calls] == [64, 64]
    assert (await first.future)[:, 0].tolist() == [4] * 64
    assert (await second.future)[:, 0].tolist() == [60] * 64
    await batcher.stop()


async def test_abort_drops_the_batches_of_a_window_not_yet_started():
    """abort() fails every request of the window; the batch inside the inference thread runs
    to its end there, and the window's later batches, already handed to the thread, never
    run."""
    import threading

    from service.engine.batcher import ShuttingDownError

    gate, entered = threading.Event(), threading.Event()
    calls: list[int] = []

    def embed(texts):
        calls.append(len(texts))
        entered.set()
        gate.wait(5)
        return np.zeros((len(texts), 2), dtype=np.float32)

    limits = BatchLimits(max_batch_tokens=16384, max_batch_size=256, max_wait_s=0.05,
                         max_queued_inputs=10_000)  # fmt: skip
    batcher = Batcher(embed, limits)
    batcher.start()
    short = batcher.submit([TokenizedText([1] * 4, [0] * 4, 4) for _ in range(32)])
    long = batcher.submit([TokenizedText([1] * 60, [0] * 60, 60) for _ in range(32)])
    await asyncio.to_thread(entered.wait, 5)
    assert await batcher.abort("stopping") == 2
    gate.set()
    await asyncio.sleep(0.3)  # time for a wrongly kept batch to reach the thread
    assert calls == [32]
    for request in (short, long):
        with pytest.raises(ShuttingDownError):
            await request.future
    await batcher.stop()


def test_plan_batches_is_the_cheapest_cut():
    """Against an exhaustive O(n^2) search over every cut of the sorted window (padded
    tokens + the per-call overhead), with and without caps that bind."""

    def cheapest(lengths, overhead, limits):
        lengths, best = sorted(lengths), [0.0] + [float("inf")] * len(lengths)
        for end in range(1, len(lengths) + 1):
            for start in range(end):
                size, width = end - start, lengths[end - 1]
                if size <= limits.max_batch_size and size * width <= limits.max_batch_tokens:
                    best[end] = min(best[end], best[start] + overhead + width * size)
        return best[-1]

    rng = random.Random(5)
    for case in range(200):
        lengths = [rng.randint(1, rng.choice([5, 20, 60])) for _ in range(rng.randint(2, 40))]
        overhead = rng.choice([0, 4, 16, 64])
        limits = BatchLimits(rng.choice([60, 200, 10**6]), rng.choice([3, 10, 1000]), 0, 10**6)
        batches = plan_batches([_item(n) for n in lengths], limits, overhead)
        cost = sum(overhead + max(it.text.length for it in b) * len(b) for b in batches)
        assert cost == cheapest(lengths, overhead, limits), (case, lengths, overhead)
        assert all(len(b) <= limits.max_batch_size for b in batches)
        assert all(max(it.text.length for it in b) * len(b) <= limits.max_batch_tokens
                   for b in batches)  # fmt: skip


def test_spread_halves_the_widest_batch_until_every_idle_thread_has_one():
    from service.engine.batcher import spread

    one = [[_item(n) for n in (3, 4, 5, 6, 7, 8)]]
    halves = spread(one, 2)
    assert [[it.text.length for it in b] for b in halves] == [[3, 4, 5], [6, 7, 8]]
    assert spread(one, 1) == one  # one thread: the plan as it is
    assert len(spread([[_item(4)]], 2)) == 1  # one text cannot be split
    # the batch of most padded tokens is the one halved: 2 x 50 > 4 x 10
    wide, narrow = [_item(50), _item(50)], [_item(10)] * 4
    assert [len(b) for b in spread([narrow, wide], 3)] == [4, 1, 1]


async def test_two_inference_threads_compute_two_batches_at_once_and_answer_each_request():
    """With workers=2 a lone window is split so both threads compute at once, and a request
    arriving while one thread still computes goes to the other thread without waiting for
    the first batch; abort fails everything unanswered."""
    import threading

    from service.engine.batcher import ShuttingDownError

    gate = threading.Event()
    inside, lock, most = [], threading.Lock(), [0]

    def embed(texts):
        with lock:
            inside.append(len(texts))
            most[0] = max(most[0], len(inside))
        gate.wait(5)
        with lock:
            inside.remove(len(texts))
        return np.asarray([[t.length, 0.0] for t in texts], dtype=np.float32)

    limits = BatchLimits(16384, 256, 0.0, 10_000)
    batcher = Batcher(embed, limits, workers=2)
    batcher.start()
    texts = [TokenizedText([1] * n, [0] * n, n) for n in (4, 4, 5, 5)]
    first = batcher.submit(texts)  # one window, planned as one batch, split in two
    for _ in range(100):
        if len(inside) == 2:
            break
        await asyncio.sleep(0.02)
    assert sorted(inside) == [2, 2] and batcher.inference_running
    gate.set()
    assert (await first.future)[:, 0].tolist() == [4, 4, 5, 5]  # its own order
    gate.clear()
    # a long request holds one thread; a later one is computed on the other meanwhile
    slow = batcher.submit([TokenizedText([1] * 9, [0] * 9, 9)])
    for _ in range(100):
        if inside:
            break
        await asyncio.sleep(0.02)
    quick = batcher.submit([TokenizedText([1] * 3, [0] * 3, 3)])
    for _ in range(100):
        if len(inside) == 2:
            break
        await asyncio.sleep(0.02)
    assert sorted(inside) == [1, 1]
    queued = batcher.submit([TokenizedText([1] * 2, [0] * 2, 2)])  # no thread free: queued
    await asyncio.sleep(0.1)
    assert batcher.queue_depth == 1
    assert await batcher.abort("stopping") == 3
    gate.set()
    for request in (slow, quick, queued):
        with pytest.raises(ShuttingDownError):
            await request.future
    assert most[0] == 2
    await batcher.stop()
