"""Async load generator for embedding servers (loopback only), bounded in requests and time.

    python -m benchmarks.load --url http://127.0.0.1:8000 --concurrency 64 --inputs 1 \
        --length short --requests 2000 --duration 30 [--server-pid PID] [--json out.json]

Reports sentences/s, requests/s, latency p50/p95/p99, error and 429 counts, and (with
--server-pid) the server's CPU use and peak RSS."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import httpx
import numpy as np
import orjson

from benchmarks.texts import texts as load_texts

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class LoadResult:
    route: str
    client: str
    concurrency: int
    inputs_per_request: int
    length: str
    requests: int
    ok: int
    errors: int
    rejected_429: int
    seconds: float
    requests_per_s: float
    sentences_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu_percent: float | None = None
    server_peak_rss_mb: float | None = None


class ResourceSampler:
    """Samples a process's CPU and RSS (children included) in a background thread."""

    def __init__(self, pid: int | None, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.peak_rss = 0
        self.cpu_start = self.cpu_end = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _processes(self):
        import psutil

        proc = psutil.Process(self.pid)
        return [proc, *proc.children(recursive=True)]

    def _cpu(self) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in self._processes())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_rss = max(
                    self.peak_rss, sum(p.memory_info().rss for p in self._processes())
                )
            except Exception:  # noqa: BLE001 - the process may be gone
                return
            self._stop.wait(self.interval)

    def __enter__(self):
        if self.pid:
            self.cpu_start, self.started = self._cpu(), time.perf_counter()
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.pid:
            self.cpu_end, self.ended = self._cpu(), time.perf_counter()
            self._stop.set()
            self._thread.join()

    def cpu_percent(self) -> float | None:
        if not self.pid:
            return None
        return 100.0 * (self.cpu_end - self.cpu_start) / max(self.ended - self.started, 1e-9)


def body_for(route: str, batch: list[str]) -> dict:
    """TEI's body for /embed and /similarity, OpenAI's for any other route (/v1/embeddings,
    infinity-emb's /embeddings)."""
    if route not in ("/embed", "/similarity"):
        return {"input": batch, "model": "bench"}
    if route == "/similarity":
        return {"inputs": {"source_sentence": batch[0], "sentences": batch}}
    return {"inputs": batch}


class RawHTTPClient:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: one connection per worker,
    bodies pre-serialised, responses read by Content-Length and not parsed. On a 2-core
    machine httpx's own CPU cost caps what can be measured at high concurrency; this keeps
    the client's share small so the server is what is measured."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.retry_after: str | None = None  # the last response's Retry-After header

    async def post(self, route: str, payload: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = (f"POST {route} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(payload)}\r\n\r\n").encode()  # fmt: skip
        self.writer.write(head + payload)
        status_line = await self.reader.readline()
        length, closing, self.retry_after = 0, False, None
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                closing = True
            elif name.lower() == "retry-after":
                self.retry_after = value.strip()
        await self.reader.readexactly(length)
        if closing:
            await self.close()
        return int(status_line.split()[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def run_load(
    url: str,
    route: str = "/embed",
    concurrency: int = 16,
    inputs: int = 1,
    length: str = "short",
    requests: int = 1000,
    duration: float = 30.0,
    server_pid: int | None = None,
    data: str | None = None,
    timeout: float = 60.0,
    client_kind: str = "httpx",
) -> LoadResult:
    """Fire at most `requests` requests (or until `duration` s) from `concurrency` workers."""
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"load tests target loopback only, not {host}")
    corpus = load_texts(length, data)
    # a fixed shuffle: a short run (a slow server) sees the corpus's mix of lengths, not
    # only its first sentences, and every contender gets the same requests in the same order
    random.Random(0).shuffle(corpus)
    corpus = corpus * -(-inputs // max(len(corpus), 1))  # at least one request's worth
    batches = itertools.cycle(
        [corpus[i : i + inputs] for i in range(0, len(corpus) - inputs + 1, inputs)]
    )
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "429": 0, "sent": 0}
    deadline = float("inf")  # set after the warm-up request
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        raw = RawHTTPClient(url) if client_kind == "raw" else None
        while counts["sent"] < requests and time.perf_counter() < deadline:
            counts["sent"] += 1
            body = body_for(route, next(batches))
            started = time.perf_counter()
            try:
                if raw is not None:
                    status = await asyncio.wait_for(raw.post(route, orjson.dumps(body)), timeout)
                else:
                    status = (await client.post(route, json=body)).status_code
            except (httpx.HTTPError, OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                status = 0
                if raw is not None:
                    await raw.close()
            latencies.append(time.perf_counter() - started)
            if status == 200:
                counts["ok"] += 1
            elif status == 429:
                counts["429"] += 1
            else:
                counts["errors"] += 1
        if raw is not None:
            await raw.close()

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        await client.post(route, json=body_for(route, corpus[:inputs]))  # warm-up
        with ResourceSampler(server_pid) as sampler:
            started = time.perf_counter()
            deadline = started + duration
            await asyncio.gather(*(worker(client) for _ in range(concurrency)))
            seconds = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return LoadResult(
        route=route,
        client=client_kind,
        concurrency=concurrency,
        inputs_per_request=inputs,
        length=length,
        requests=counts["sent"],
        ok=counts["ok"],
        errors=counts["errors"],
        rejected_429=counts["429"],
        seconds=round(seconds, 2),
        requests_per_s=round(counts["ok"] / seconds, 1),
        sentences_per_s=round(counts["ok"] * inputs / seconds, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 1),
        p95_ms=round(float(np.percentile(ms, 95)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1),
        server_cpu_percent=None if not server_pid else round(sampler.cpu_percent(), 1),
        server_peak_rss_mb=None if not server_pid else round(sampler.peak_rss / 2**20, 1),
    )


def add_client_argument(parser: argparse.ArgumentParser, default: str) -> None:
    """The `--client` flag shared by the load benchmarks."""
    parser.add_argument(
        "--client",
        choices=["httpx", "raw"],
        default=default,
        help="load client (raw: a minimal keep-alive client with little CPU cost of its own; "
        "httpx: the library)",
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--route", default="/embed", help="/embed, /similarity, /v1/embeddings, ...")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--inputs", type=int, default=1, help="texts per request")
    p.add_argument("--length", choices=["short", "passage"], default="short")
    p.add_argument("--requests", type=int, default=1000, help="stop after this many requests")
    p.add_argument("--duration", type=float, default=30.0, help="stop after this many seconds")
    p.add_argument("--server-pid", type=int, help="measure this process's CPU and peak RSS")
    p.add_argument("--data", help="shared data folder (default: $POLYGLOT_DATA or ../shared/data)")
    p.add_argument("--json", help="write the result here")
    add_client_argument(p, default="httpx")
    args = p.parse_args(argv)
    result = asyncio.run(
        run_load(args.url, args.route, args.concurrency, args.inputs, args.length, args.requests,
                 args.duration, args.server_pid, args.data, client_kind=args.client)
    )  # fmt: skip
    print(json.dumps(asdict(result), indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(asdict(result), handle, indent=2)


if __name__ == "__main__":
    main()
