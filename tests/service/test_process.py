"""The real server process: `python -m service`, SIGTERM with requests in flight."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import httpx
import pytest

from tests.service.conftest import server_process


@pytest.fixture
def server(cache_dir):
    with server_process(
        cache_dir, EMBED_GRACEFUL_SHUTDOWN_S="60", EMBED_REQUEST_TIMEOUT_S="120"
    ) as (
        proc,
        url,
    ):
        yield proc, url


def test_sigterm_drains_accepted_requests_then_exits_zero(server):
    proc, url = server
    texts = ["a fairly long sentence about embeddings and retrieval systems " * 6] * 64

    def call():
        return httpx.post(f"{url}/embed", json={"inputs": texts}, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(call) for _ in range(6)]
        time.sleep(0.5)  # all six are accepted and queued or running
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            during = httpx.get(f"{url}/health", timeout=5).status_code
            refused = httpx.post(f"{url}/embed", json={"inputs": "late"}, timeout=5).status_code
        except httpx.ConnectError:
            during = refused = None  # already drained and closed
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200] * 6
    assert all(len(r.json()) == 64 for r in results)
    assert during in (503, None) and refused in (503, None)
    assert proc.wait(timeout=60) == 0
    output = proc.stdout.read()
    assert "draining" in output
