"""Admission, limits and deadlines against the real server process (`python -m service`):
a burst past max_queue_wait_s, requests too large to ever fit, settings that could never
work, and request_timeout_s bounding the wait but not the work."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.service.conftest import metric_value, server_process

ESTIMATE = "embed_throughput_estimate_tokens_per_second"
LONG_TEXT = "Embedding services batch many requests together to use the model well. " * 30
TOKENS_PER_LONG_TEXT = 256  # LONG_TEXT is longer; the bundled model truncates to 256


def _estimate(url: str) -> float:
    return metric_value(httpx.get(f"{url}/metrics", timeout=10).text, ESTIMATE)


@pytest.fixture(scope="module")
def small_queue_server(cache_dir):
    with server_process(
        cache_dir,
        "--max-queued-inputs", "512", "--max-client-batch-size", "512",
        "--max-queue-wait-s", "0.5", "--request-timeout-s", "3",
    ) as (proc, url):  # fmt: skip
        yield proc, url


def test_burst_past_the_wait_bound_gets_429_with_retry_after_and_no_5xx(small_queue_server):
    _, url = small_queue_server
    assert _estimate(url) > 0  # the start-up calibration set the gauge
    body = {"inputs": [f"burst sentence number {i} about queues" for i in range(32)]}

    def call(_):
        return httpx.post(f"{url}/embed", json=body, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(call, range(48)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            assert "max_queue_wait_s (0.5 s)" in response.json()["error"] or (
                "max_queued_inputs" in response.json()["error"]
            )
        else:
            assert len(response.json()) == 32
    assert httpx.get(f"{url}/health", timeout=10).status_code == 200
    after = httpx.post(f"{url}/embed", json={"inputs": ["after the burst"]}, timeout=30)
    assert after.status_code == 200
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert metric_value(metrics, "embed_rejected_inputs_total") == 32 * statuses.count(429)
    assert metric_value(metrics, "embed_queue_depth") == 0


def test_more_inputs_than_the_queue_holds_is_413_not_429(small_queue_server):
    _, url = small_queue_server
    texts = [f"text {i}" for i in range(600)]
    tei = httpx.post(f"{url}/embed", json={"inputs": texts}, timeout=30)
    openai = httpx.post(f"{url}/v1/embeddings", json={"input": texts}, timeout=30)
    assert tei.status_code == 413 and "512 (max_client_batch_size)" in tei.json()["error"]
    assert openai.status_code == 413 and "512" in openai.json()["error"]["message"]


def test_request_that_cannot_finish_within_the_timeout_is_413_at_once(small_queue_server):
    _, url = small_queue_server
    rate = _estimate(url)
    count = 512  # 512 x 256 tokens: minutes at this machine's throughput, > 3 s anywhere
    if count * TOKENS_PER_LONG_TEXT / rate <= 3:
        pytest.skip(f"this machine embeds {rate:.0f} tokens/s: 512 long texts fit in 3 s")
    response = httpx.post(f"{url}/embed", json={"inputs": [LONG_TEXT] * count}, timeout=30)
    message = response.json()["error"]
    assert response.status_code == 413
    assert "request_timeout_s (3 s)" in message and "split it" in message
    assert "overloaded" not in message and "retry-after" not in response.headers


def test_settings_that_could_never_work_stop_the_start_with_a_clear_message(cache_dir):
    result = subprocess.run(
        [sys.executable, "-m", "service", "--max-queued-inputs", "512", "--port", "1"],
        env={**os.environ, "EMBED_CACHE_DIR": str(cache_dir)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "max_client_batch_size (2048) must not exceed max_queued_inputs (512)" in (result.stderr)
    assert "Traceback" not in result.stderr


def test_timeout_bounds_the_wait_not_the_work(cache_dir):
    """A request already computing when the server stalls past request_timeout_s is
    finished (200, every row); one still queued gets a truthful 503."""
    with server_process(
        cache_dir, "--request-timeout-s", "3", "--max-queue-wait-s", "1",
        "--max-batch-tokens", "65536",
    ) as (proc, url):  # fmt: skip
        rate = _estimate(url)
        count = max(4, min(256, int(rate * 2.0 / TOKENS_PER_LONG_TEXT)))  # ~2 s, one batch
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            working = pool.submit(
                httpx.post, f"{url}/embed", json={"inputs": [LONG_TEXT] * count}, timeout=60
            )
            time.sleep(0.3)  # tokenised and in inference
            waiting = pool.submit(
                httpx.post, f"{url}/embed", json={"inputs": ["queued behind"]}, timeout=60
            )
            time.sleep(0.3)
            proc.send_signal(signal.SIGSTOP)  # the server stalls past request_timeout_s
            time.sleep(3.5)
            proc.send_signal(signal.SIGCONT)
            worked, waited = working.result(), waiting.result()
    assert worked.status_code == 200 and len(worked.json()) == count
    assert waited.status_code == 503
    message = waited.json()["error"]
    assert "waited 3 s in the queue without starting (request_timeout_s)" in message
    assert "overloaded" not in message and int(waited.headers["retry-after"]) >= 1
