"""A burst of 10x the queue capacity: only 200s and 429s, bounded memory, health stays
up, and throughput recovers right after. (The long version: benchmarks/overload.py.)"""

from __future__ import annotations

import asyncio
import time

import psutil

from service.config import Settings
from tests.service.conftest import async_running, metric_value

CAPACITY = 64


async def test_burst_of_ten_times_capacity(cache_dir):
    settings = Settings(_env_file=None, cache_dir=cache_dir, max_queued_inputs=CAPACITY,
                        max_client_batch_size=CAPACITY, max_batch_size=16,
                        max_wait_ms=2)  # fmt: skip
    async with async_running(settings) as client:
        await client.post("/embed", json={"inputs": ["warm up"] * 16})
        rss_before = psutil.Process().memory_info().rss
        burst = [client.post("/embed", json={"inputs": [f"burst text {i} {j}" for j in range(4)]})
                 for i in range(10 * CAPACITY // 4)]  # fmt: skip
        health = [client.get("/health") for _ in range(5)]
        responses = await asyncio.gather(*burst, *health)
        statuses = [r.status_code for r in responses[: len(burst)]]
        health_statuses = [r.status_code for r in responses[len(burst) :]]
        started = time.perf_counter()
        after = await client.post("/embed", json={"inputs": ["right after the burst"]})
        recovery = time.perf_counter() - started
        metrics = (await client.get("/metrics")).text
        depth = client.app.state.engine.core.batcher.queue_depth
        rss_growth_mb = (psutil.Process().memory_info().rss - rss_before) / 2**20
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= CAPACITY // 4 and statuses.count(429) > 0
    assert health_statuses == [200] * 5
    assert after.status_code == 200 and recovery < 5
    assert depth == 0 and metric_value(metrics, "embed_queue_depth") == 0
    assert metric_value(metrics, "embed_rejected_inputs_total") == 4 * statuses.count(429)
    assert rss_growth_mb < 150
