"""Overload run against a real server process: a burst of 10x the queue capacity.

Records the status mix (only 200 and 429 are acceptable), the 429 share, the server's RSS
before / at peak / after, whether /health stayed 200, and how long until a single request
is served at its pre-burst latency again.

    python -m benchmarks.overload [--capacity 512] [--burst-factor 10] [--inputs 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from benchmarks.compare import free_port, wait_healthy
from benchmarks.load import ResourceSampler
from benchmarks.texts import texts as load_texts
from service.config import Settings

DEFAULT_MAX_BATCH_SIZE = Settings.model_fields["max_batch_size"].default
SETTLE_S = 3.0  # seconds after the burst before the settled RSS is read


async def _probe(client: httpx.AsyncClient, text: str) -> float:
    started = time.perf_counter()
    response = await client.post("/embed", json={"inputs": [text]})
    response.raise_for_status()
    return time.perf_counter() - started


async def burst(url: str, pid: int, capacity: int, factor: int, inputs: int, data=None) -> dict:
    corpus = load_texts("short", data)
    requests = factor * capacity // inputs
    limits = httpx.Limits(max_connections=requests + 8)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        baseline = min([await _probe(client, corpus[0]) for _ in range(5)])
        rss_before = psutil.Process(pid).memory_info().rss
        bodies = [{"inputs": corpus[(i * inputs) % (len(corpus) - inputs):][:inputs]}
                  for i in range(requests)]  # fmt: skip
        health: list[int] = []

        async def watch_health(stop: asyncio.Event) -> None:
            while not stop.is_set():
                health.append((await client.get("/health")).status_code)
                await asyncio.sleep(0.05)

        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_health(stop))
        with ResourceSampler(pid) as sampler:
            started = time.perf_counter()
            responses = await asyncio.gather(
                *(client.post("/embed", json=body) for body in bodies), return_exceptions=True
            )
            burst_seconds = time.perf_counter() - started
            stop.set()
            await watcher
            recovered_at = time.perf_counter()
            while await _probe(client, corpus[1]) > max(2 * baseline, baseline + 0.02):
                await asyncio.sleep(0.01)
            recovery = time.perf_counter() - recovered_at
        rss_after = psutil.Process(pid).memory_info().rss
        await asyncio.sleep(SETTLE_S)  # past the server's quiet hook (EMBED_RELEASE_MEMORY)
        rss_settled = psutil.Process(pid).memory_info().rss
    statuses = Counter(r.status_code if isinstance(r, httpx.Response) else "exception"
                       for r in responses)  # fmt: skip
    return {
        "capacity_inputs": capacity,
        "burst_inputs": requests * inputs,
        "burst_requests": requests,
        "inputs_per_request": inputs,
        "statuses": {str(k): v for k, v in statuses.items()},
        "share_429": round(statuses.get(429, 0) / requests, 3),
        "only_200_and_429": set(statuses) <= {200, 429},
        "burst_seconds": round(burst_seconds, 2),
        "health_checks": len(health),
        "health_always_200": all(s == 200 for s in health),
        "baseline_latency_ms": round(baseline * 1000, 1),
        "recovery_seconds": round(recovery, 3),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_peak_mb": round(sampler.peak_rss / 2**20, 1),
        "rss_after_mb": round(rss_after / 2**20, 1),
        "rss_settled_mb": round(rss_settled / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--capacity", type=int, default=512, help="server's max_queued_inputs")
    p.add_argument("--burst-factor", type=int, default=10)
    p.add_argument("--inputs", type=int, default=8, help="inputs per request")
    p.add_argument("--data")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/overload.json"))
    args = p.parse_args(argv)
    port = free_port()
    command = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
               "--max-queued-inputs", str(args.capacity),
               "--max-batch-size", str(min(args.capacity, DEFAULT_MAX_BATCH_SIZE)),
               "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        result = asyncio.run(burst(url, proc.pid, args.capacity, args.burst_factor, args.inputs,
                                   args.data))  # fmt: skip
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    result["command"] = "python -m benchmarks.overload " + " ".join(argv or sys.argv[1:])
    print(json.dumps(result, indent=2))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
