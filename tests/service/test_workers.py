"""`--workers N`: N front-end processes and one engine core. Real processes for the
server-level behaviour; the ZeroMQ protocol in-process with a stand-in core."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest

from service.api.errors import to_api_error
from service.backends.base import BackendInfo
from service.config import Settings
from service.engine.errors import QueueFullError
from service.engine.ipc import CoreServer, RemoteCore
from service.engine.tokenizer import TokenizedText
from service.supervisor import resolve_workers
from tests.service.conftest import SENTENCES, metric_value, server_process


@pytest.fixture(scope="module")
def workers_server(cache_dir):
    with server_process(cache_dir, "--workers", "2", EMBED_GRACEFUL_SHUTDOWN_S="30") as server:
        yield server


def test_two_front_ends_serve_the_same_vectors_as_sentence_transformers(workers_server, st_model):
    _, url = workers_server
    expected = st_model.encode(SENTENCES)

    def call(i: int) -> np.ndarray:
        body = {"inputs": SENTENCES[i % 3 :] + SENTENCES[: i % 3]}
        response = httpx.post(f"{url}/embed", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return np.roll(np.asarray(response.json()), i % 3, axis=0)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(16)))
    for got in results:
        cos = np.sum(got * expected, axis=1)
        assert cos.min() >= 0.9999


def test_metrics_aggregate_every_process(workers_server):
    """Requests land on either front end and batches run in the core: /metrics from any
    one process counts them all."""
    _, url = workers_server
    before = httpx.get(f"{url}/metrics").text
    for _ in range(12):
        with httpx.Client() as client:  # a new connection each: the kernel spreads them
            assert client.post(f"{url}/embed", json={"inputs": ["count me"]}).status_code == 200
    after = httpx.get(f"{url}/metrics").text
    route = {"route": "/embed", "status": "200"}
    requests = metric_value(after, "embed_requests_total", route) - metric_value(
        before, "embed_requests_total", route
    )
    batches = metric_value(after, "embed_batch_size_count") - metric_value(
        before, "embed_batch_size_count"
    )
    assert requests == 12
    assert batches == 12  # counted by the core process
    assert 'embed_model_info{backend="onnx"' in after


def test_errors_from_the_core_keep_each_route_shape(workers_server):
    _, url = workers_server
    tei = httpx.post(f"{url}/embed", json={"inputs": "x", "prompt_name": "nope"})
    assert tei.status_code == 422 and "error_type" in tei.json()
    oai = httpx.post(f"{url}/v1/embeddings", json={"input": ["x"], "dimensions": 9999})
    assert oai.status_code == 400 and oai.json()["error"]["type"] == "invalid_request_error"


def test_token_level_routes_through_the_core(workers_server):
    """/embed_all's per-token rows cross the process boundary unpadded, in order."""
    _, url = workers_server
    texts = ["a short one", "a somewhat longer sentence with more tokens in it"]
    tokens = httpx.post(f"{url}/tokenize", json={"inputs": texts}).json()
    rows = httpx.post(f"{url}/embed_all", json={"inputs": texts}).json()
    pooled = np.asarray(
        httpx.post(f"{url}/embed", json={"inputs": texts, "normalize": False}).json()
    )
    assert [len(r) for r in rows] == [len(t) for t in tokens]
    for row, vector in zip(rows, pooled):
        np.testing.assert_allclose(np.mean(row, axis=0), vector, atol=1e-4)


def test_sigterm_drains_every_front_end_then_exits_zero(cache_dir):
    texts = ["a fairly long sentence about embeddings and retrieval systems " * 6] * 64
    limits = {"EMBED_MAX_QUEUE_WAIT_S": "100", "EMBED_REQUEST_TIMEOUT_S": "120"}
    with server_process(cache_dir, "--workers", "2", EMBED_GRACEFUL_SHUTDOWN_S="60", **limits) as (
        proc,
        url,
    ):

        def call():
            with httpx.Client() as client:
                return client.post(f"{url}/embed", json={"inputs": texts}, timeout=120)

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(call) for _ in range(6)]
            time.sleep(0.5)  # accepted by the front ends, queued or running in the core
            proc.send_signal(signal.SIGTERM)
            results = [f.result() for f in futures]
        assert [r.status_code for r in results] == [200] * 6
        assert proc.wait(timeout=60) == 0
        output = proc.stdout.read()
    assert output.count("draining") >= 2  # the supervisor and each front end


def test_auto_workers_one_on_cpu_several_with_cuda(monkeypatch):
    import service.supervisor as supervisor

    assert resolve_workers(Settings(_env_file=None, device="cpu")) == 1
    assert resolve_workers(Settings(_env_file=None, workers=3)) == 3
    monkeypatch.setattr(supervisor, "uses_cuda", lambda settings: True)
    assert resolve_workers(Settings(_env_file=None), cpu_count=16) == 8
    assert resolve_workers(Settings(_env_file=None), cpu_count=64) == 8
    assert resolve_workers(Settings(_env_file=None), cpu_count=2) == 2


class StandInCore:
    """An engine core that answers from a table, fails on demand, or never answers."""

    backend_info = BackendInfo("onnx", "cpu", "CPUExecutionProvider", "float32", "model.onnx")

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def embed_tokens(self, tokens: list[TokenizedText]) -> np.ndarray:
        first = tokens[0].ids[0]
        if first == 429:
            raise QueueFullError("busy", len(tokens), "max_queued_inputs")
        if first == 0:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if tokens[0].token_level:
            return [np.full((len(t.ids), 2), t.ids[0], np.float32) for t in tokens]
        return np.array([[t.ids[0], len(t.ids), sum(t.type_ids)] for t in tokens], np.float32)


async def test_ipc_round_trip_errors_and_cancellation(tmp_path):
    core = StandInCore()
    server = CoreServer(core, f"ipc://{tmp_path / 'core.sock'}")
    server.bind()
    serving = asyncio.get_running_loop().create_task(server.serve())
    remote = RemoteCore(server.address)
    try:
        await remote.start()
        assert remote.backend_info == core.backend_info
        tokens = [TokenizedText([7, 8, 9], [0, 1, 1], 3), TokenizedText([5], [0], 1)]
        vectors = await remote.embed_tokens(tokens)
        assert vectors.tolist() == [[7, 3, 2], [5, 1, 0]]
        per_token = await remote.embed_tokens([replace(t, token_level=True) for t in tokens])
        assert [rows.tolist() for rows in per_token] == [[[7, 7]] * 3, [[5, 5]]]
        with pytest.raises(QueueFullError) as raised:  # the core's own error, re-raised
            await remote.embed_tokens([TokenizedText([429], [0], 1)])
        error = to_api_error(raised.value)
        assert error.status == 429 and "Retry-After" in error.headers
        hanging = asyncio.ensure_future(remote.embed_tokens([TokenizedText([0], [0], 1)]))
        await asyncio.sleep(0.2)
        hanging.cancel()  # the client went away: the core drops the work
        await asyncio.wait_for(core.cancelled.wait(), 5)
        assert await remote.drain(1)
    finally:
        await remote.stop()
        serving.cancel()
        server.close()


def test_second_signal_stops_every_process_at_once(cache_dir):
    """A second SIGTERM during the drain kills the core and the front ends and the
    supervisor exits (non-zero) instead of waiting for the grace."""
    with server_process(cache_dir, "--workers", "2", EMBED_GRACEFUL_SHUTDOWN_S="60") as (
        proc,
        url,
    ):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) != 0
        output = proc.stdout.read()
    assert "second SIGTERM" in output
