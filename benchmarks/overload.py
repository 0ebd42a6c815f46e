"""Overload run against a real server process: a burst of 10x what the server admits.

What the server admits is the smaller of its count guard (`max_queued_inputs`, when
`--capacity` is given) and what its wait bound lets in: `max_queue_wait_s` of work at the
server's own throughput estimate (`embed_throughput_estimate_tokens_per_second`), in
inputs of the size sent (tokens per input measured from `embed_input_tokens_total`).

Records the status mix (only 200 and 429 are acceptable), the 429 share and their
Retry-After values, the latency of the accepted requests against the target
(p99 <= max_queue_wait_s + one batch's mean service time during the burst), the server's
RSS before / at peak / after, whether /health stayed 200, and how long until a single
request is served at its pre-burst latency again.

    python -m benchmarks.overload [--capacity N] [--max-queue-wait-s S] [--burst-factor 10]
        [--inputs 8] [--length short|passage] [--bursts 1] [--client httpx|raw]

With --bursts 2 the second burst meets the estimate the first one taught the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import orjson
import psutil
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.compare import free_port, wait_healthy
from benchmarks.load import RawHTTPClient, ResourceSampler
from benchmarks.texts import texts as load_texts
from service.config import Settings

DEFAULTS = Settings.model_fields
DEFAULT_MAX_BATCH_SIZE = DEFAULTS["max_batch_size"].default
DEFAULT_CLIENT_BATCH = DEFAULTS["max_client_batch_size"].default
DEFAULT_QUEUE_WAIT_S = DEFAULTS["max_queue_wait_s"].default
SETTLE_S = 3.0  # seconds after the burst before the settled RSS is read
ESTIMATE = "embed_throughput_estimate_tokens_per_second"


def metric(text: str, name: str) -> float:
    """A sample's value from Prometheus text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    return 0.0


async def _metrics(client: httpx.AsyncClient) -> str:
    return (await client.get("/metrics")).text


async def _probe(client: httpx.AsyncClient, text: str) -> float:
    started = time.perf_counter()
    response = await client.post("/embed", json={"inputs": [text]})
    response.raise_for_status()
    return time.perf_counter() - started


async def _timed(client: httpx.AsyncClient, body: dict) -> tuple[int | str, float, str | None]:
    started = time.perf_counter()
    try:
        response = await client.post("/embed", json=body)
    except httpx.HTTPError as exc:
        return type(exc).__name__, time.perf_counter() - started, None
    return response.status_code, time.perf_counter() - started, response.headers.get("retry-after")


async def _timed_raw(url: str, payload: bytes) -> tuple[int | str, float, str | None]:
    """The same with the minimal client of benchmarks.load (its own connection, body
    serialised beforehand): far less client CPU on the cores the server uses."""
    client = RawHTTPClient(url)
    started = time.perf_counter()
    try:
        status = await client.post("/embed", payload)
    except (OSError, asyncio.IncompleteReadError) as exc:
        return type(exc).__name__, time.perf_counter() - started, None
    finally:
        await client.close()
    return status, time.perf_counter() - started, client.retry_after


async def burst(
    url: str,
    pid: int,
    capacity: int | None,
    queue_wait_s: float,
    factor: int,
    inputs: int,
    length: str = "short",
    data=None,
    client_kind: str = "httpx",
) -> dict:
    corpus = load_texts(length, data)
    span = max(len(corpus) - inputs, 1)

    def body(i: int) -> dict:
        return {"inputs": corpus[(i * inputs) % span :][:inputs]}

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits()) as client:
        baseline = min([await _probe(client, corpus[0]) for _ in range(5)])
        before = await _metrics(client)
        for i in range(4):  # tokens per input of these bodies, as the server counts them
            (await client.post("/embed", json=body(i))).raise_for_status()
        warm = await _metrics(client)
        tokens_per_input = (
            metric(warm, "embed_input_tokens_total") - metric(before, "embed_input_tokens_total")
        ) / (4 * inputs)
        rate = metric(warm, ESTIMATE)
        admitted = rate * queue_wait_s / tokens_per_input
        if capacity:
            admitted = min(admitted, capacity)
        requests = max(2, math.ceil(factor * admitted / inputs))
        limits = httpx.Limits(max_connections=requests + 8)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        rss_before = psutil.Process(pid).memory_info().rss
        health: list[int | str] = []

        async def watch_health(stop: asyncio.Event) -> None:
            # its own connection: a pooled one the server closed after a burst response
            # (keep-alive timeout) would read as a failed check
            async with httpx.AsyncClient(base_url=url, timeout=120) as own:
                while not stop.is_set():
                    try:
                        health.append((await own.get("/health")).status_code)
                    except httpx.HTTPError as exc:
                        health.append(type(exc).__name__)
                    await asyncio.sleep(0.05)

        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_health(stop))
        with ResourceSampler(pid) as sampler:
            if client_kind == "raw":
                payloads = [orjson.dumps(body(i)) for i in range(requests)]
                calls = [_timed_raw(url, payload) for payload in payloads]
            else:
                calls = [_timed(client, body(i)) for i in range(requests)]
            started = time.perf_counter()
            results = await asyncio.gather(*calls)
            burst_seconds = time.perf_counter() - started
            stop.set()
            await watcher
            after = await _metrics(client)
            recovered_at = time.perf_counter()
            while await _probe(client, corpus[1]) > max(2 * baseline, baseline + 0.02):
                await asyncio.sleep(0.01)
            recovery = time.perf_counter() - recovered_at
        rss_after = psutil.Process(pid).memory_info().rss
        await asyncio.sleep(SETTLE_S)  # past the server's quiet hook (EMBED_RELEASE_MEMORY)
        rss_settled = psutil.Process(pid).memory_info().rss
    statuses = Counter(status for status, _, _ in results)
    accepted = np.array([seconds for status, seconds, _ in results if status == 200])
    retry_after = [int(h) for status, _, h in results if status == 429 and h and h.isdigit()]
    batches = metric(after, "embed_inference_duration_seconds_count") - metric(
        warm, "embed_inference_duration_seconds_count"
    )
    batch_s = (
        metric(after, "embed_inference_duration_seconds_sum")
        - metric(warm, "embed_inference_duration_seconds_sum")
    ) / max(batches, 1)
    p99 = float(np.percentile(accepted, 99)) if accepted.size else None
    bound = queue_wait_s + batch_s
    return {
        "max_queue_wait_s": queue_wait_s,
        "capacity_inputs": capacity,
        "throughput_estimate_tokens_per_s": round(rate),
        "tokens_per_input": round(tokens_per_input, 1),
        "admitted_inputs_estimate": round(admitted),
        "burst_inputs": requests * inputs,
        "burst_requests": requests,
        "inputs_per_request": inputs,
        "client": client_kind,
        "statuses": {str(k): v for k, v in statuses.items()},
        "share_429": round(statuses.get(429, 0) / requests, 3),
        "only_200_and_429": set(statuses) <= {200, 429},
        "count_5xx": sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500),
        "retry_after_on_every_429": len(retry_after) == statuses.get(429, 0),
        "turned_away_after_admission_inputs": int(
            metric(after, "embed_turned_away_inputs_total")
            - metric(warm, "embed_turned_away_inputs_total")
        ),
        "throughput_estimate_after_tokens_per_s": round(metric(after, ESTIMATE)),
        "retry_after_s_min_median_max": [
            min(retry_after),
            int(np.median(retry_after)),
            max(retry_after),
        ]
        if retry_after
        else None,
        "accepted_latency_p50_s": round(float(np.percentile(accepted, 50)), 3)
        if accepted.size
        else None,
        "accepted_latency_p99_s": round(p99, 3) if p99 is not None else None,
        "accepted_latency_max_s": round(float(accepted.max()), 3) if accepted.size else None,
        "batches_in_burst": int(batches),
        "batch_service_s_mean": round(batch_s, 3),
        "p99_bound_s": round(bound, 3),
        "p99_within_bound": p99 is not None and p99 <= bound,
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


def combine(runs: list[dict]) -> dict:
    """Several bursts against one server: each run's figures, and the overall verdicts."""
    statuses: Counter = Counter()
    for run in runs:
        statuses.update(run["statuses"])
    return {
        "bursts": runs,
        "statuses": dict(statuses),
        "only_200_and_429": all(run["only_200_and_429"] for run in runs),
        "health_always_200": all(run["health_always_200"] for run in runs),
        "p99_within_bound": [run["p99_within_bound"] for run in runs],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--capacity", type=int, help="server's max_queued_inputs (default: its own)")
    p.add_argument("--max-queue-wait-s", type=float, default=DEFAULT_QUEUE_WAIT_S)
    p.add_argument("--burst-factor", type=int, default=10)
    p.add_argument("--bursts", type=int, default=1, help="bursts in a row, same server")
    p.add_argument("--inputs", type=int, default=8, help="inputs per request")
    p.add_argument("--length", choices=["short", "passage"], default="short")
    p.add_argument("--data")
    p.add_argument(
        "--client",
        choices=["httpx", "raw"],
        default="httpx",
        help="burst client (raw: benchmarks.load's minimal client, little CPU of its own)",
    )
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/overload.json"))
    args = p.parse_args(argv)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "service",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-queue-wait-s",
        str(args.max_queue_wait_s),
        "--log-level",
        "warning",
    ]
    if args.capacity:
        command += [
            "--max-queued-inputs",
            str(args.capacity),
            "--max-batch-size",
            str(min(args.capacity, DEFAULT_MAX_BATCH_SIZE)),
            "--max-client-batch-size",
            str(min(args.capacity, DEFAULT_CLIENT_BATCH)),
        ]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        runs = [
            asyncio.run(
                burst(
                    url,
                    proc.pid,
                    args.capacity,
                    args.max_queue_wait_s,
                    args.burst_factor,
                    args.inputs,
                    args.length,
                    args.data,
                    args.client,
                )
            )
            for _ in range(args.bursts)
        ]
        result = runs[0] if len(runs) == 1 else combine(runs)
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
