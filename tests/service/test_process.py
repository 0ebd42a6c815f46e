"""The real server process: `python -m service`, SIGTERM with requests in flight."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import httpx
import pytest

from service.server import SHUTDOWN_MARGIN_S
from tests.service.conftest import metric_value, server_process

ESTIMATE = "embed_throughput_estimate_tokens_per_second"


@pytest.fixture
def server(cache_dir):
    with server_process(
        cache_dir,
        EMBED_GRACEFUL_SHUTDOWN_S="60",
        EMBED_REQUEST_TIMEOUT_S="120",
        EMBED_MAX_QUEUE_WAIT_S="100",  # admit all six whatever this machine's speed
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
        time.sleep(1.5)  # all six are tokenised and accepted: queued or running
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            during = httpx.get(f"{url}/health", timeout=5).status_code
            refused = httpx.post(f"{url}/embed", json={"inputs": "late"}, timeout=5).status_code
        except httpx.ConnectError:
            during = refused = None  # already drained and closed
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200] * 6, [r.text[:300] for r in results]
    assert all(len(r.json()) == 64 for r in results)
    assert during in (503, None) and refused in (503, None)
    assert proc.wait(timeout=60) == 0
    output = proc.stdout.read()
    assert "draining" in output


def test_work_past_the_grace_period_gets_json_503_and_the_exit_is_bounded(cache_dir):
    """With work that outlasts graceful_shutdown_s, the cut-off requests get a JSON 503 in
    their route's shape with Retry-After, and the process exits within the grace plus
    SHUTDOWN_MARGIN_S."""
    grace = 2.0
    long_text = "Embedding services batch many requests together to use the model well. " * 30
    with server_process(
        cache_dir, "--graceful-shutdown-s", str(grace), "--max-batch-tokens", "65536"
    ) as (proc, url):
        rate = metric_value(httpx.get(f"{url}/metrics", timeout=10).text, ESTIMATE)
        count = min(256, int(rate * 8 / 256))  # ~8 s of work at the estimate, one batch
        if count * 256 / rate < 3 * grace:
            pytest.skip(f"{rate:.0f} tokens/s: 256 long texts finish within the grace")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            tei = pool.submit(
                httpx.post, f"{url}/embed", json={"inputs": [long_text] * count}, timeout=60
            )
            time.sleep(0.5)  # in inference
            openai = pool.submit(
                httpx.post, f"{url}/v1/embeddings", json={"input": ["queued"]}, timeout=60
            )
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            tei_response, openai_response = tei.result(), openai.result()
            code = proc.wait(timeout=grace + SHUTDOWN_MARGIN_S + 30)
            exit_s = time.monotonic() - signalled
    assert tei_response.status_code == 503
    assert tei_response.headers["content-type"] == "application/json"
    assert tei_response.json()["error_type"] == "Unhealthy"
    assert "grace period (graceful_shutdown_s = 2 s)" in tei_response.json()["error"]
    assert int(tei_response.headers["retry-after"]) >= 1
    assert openai_response.status_code == 503
    assert openai_response.json()["error"]["type"] == "server_error"
    assert openai_response.json()["error"]["code"] == "shutting_down"
    assert int(openai_response.headers["retry-after"]) >= 1
    assert code == 0
    assert exit_s <= grace + SHUTDOWN_MARGIN_S


def test_second_signal_answers_unfinished_work_with_json_503(cache_dir):
    """A second SIGTERM stops at once, but a request still in inference gets a JSON 503
    in its route's shape (not a plain-text 500 from a cancelled task)."""
    long_text = "Embedding services batch many requests together to use the model well. " * 30
    with server_process(
        cache_dir, "--graceful-shutdown-s", "60", "--max-batch-tokens", "65536",
        EMBED_MAX_QUEUE_WAIT_S="100", EMBED_REQUEST_TIMEOUT_S="120",
    ) as (proc, url):  # fmt: skip
        rate = metric_value(httpx.get(f"{url}/metrics", timeout=10).text, ESTIMATE)
        count = min(256, int(rate * 8 / 256))  # ~8 s of work at the estimate, one batch
        if count * 256 / rate < 3:
            pytest.skip(f"{rate:.0f} tokens/s: the request finishes before the signals")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            tei = pool.submit(
                httpx.post, f"{url}/embed", json={"inputs": [long_text] * count}, timeout=60
            )
            time.sleep(0.8)  # in inference
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            response = tei.result()
            proc.wait(timeout=30)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error_type"] == "Unhealthy"
    assert "second shutdown signal" in response.json()["error"]
