"""Service fixtures: settings, apps with real or instrumented backends, clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.artifacts import source_fingerprint
from service.backends.base import Backend
from service.backends.onnx import OnnxBackend
from service.config import Settings
from service.variants import fresh_fp32_dir

# Service tests serve fp32 (`model.onnx`, equal to the torch model's vectors within 1e-4) so
# they can compare with SentenceTransformer.encode exactly; what `auto` serves by default (the
# per-token int8 file) is tested in test_variants.py, which asks for onnx_file="auto".
os.environ.setdefault("EMBED_ONNX_FILE", "model.onnx")
AUTO = {"onnx_file": "auto"}

SENTENCES = [
    "A man is playing a guitar.",
    "Der Hund spielt im Garten.",
    "short",
    "The quick brown fox jumps over the lazy dog while the cat watches from the window. " * 12,
    "Un avión está despegando.",
    "北京是中国的首都。",
    "emoji 🙂🚀 and symbols ∑∫",
]


@pytest.fixture(scope="session")
def onnx_file(bundled_model, cache_dir) -> Path:
    fingerprint = source_fingerprint(bundled_model)
    return fresh_fp32_dir(bundled_model, bundled_model, cache_dir, fingerprint) / "model.onnx"


@pytest.fixture
def settings(cache_dir) -> Settings:
    return Settings(_env_file=None, cache_dir=cache_dir, max_wait_ms=5)


@contextmanager
def running(settings: Settings, backend: Backend | None = None):
    """A TestClient with the app's lifespan (model loaded, batcher running)."""
    with TestClient(create_app(settings, backend)) as client:
        yield client


@asynccontextmanager
async def async_running(settings: Settings, backend: Backend | None = None):
    """An httpx AsyncClient on the app in this event loop, for concurrency tests."""
    app = create_app(settings, backend)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app
            yield client


@pytest.fixture(scope="module")
def client(cache_dir):
    with running(Settings(_env_file=None, cache_dir=cache_dir, max_wait_ms=5)) as c:
        yield c


class RecordingBackend(Backend):
    """Wraps a real backend: records batch shapes, can be gated or made to fail."""

    def __init__(self, inner: Backend, fail_on_token: int | None = None) -> None:
        self.inner, self.info = inner, inner.info
        self.shapes: list[tuple[int, int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_on_token = fail_on_token
        self.entered = threading.Event()

    def forward(self, input_ids, attention_mask, token_type_ids):
        self.entered.set()
        self.gate.wait(timeout=30)
        self.shapes.append(tuple(input_ids.shape))
        if self.fail_on_token is not None and np.any(input_ids == self.fail_on_token):
            raise RuntimeError("injected inference failure")
        return self.inner.forward(input_ids, attention_mask, token_type_ids)


@pytest.fixture
def recording_backend(onnx_file) -> RecordingBackend:
    return RecordingBackend(OnnxBackend(onnx_file, "cpu"))


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's value from Prometheus text output (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(
                sample.labels.get(k) == v for k, v in (labels or {}).items()
            ):
                return sample.value
    return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, poll_s: float = 0.3) -> None:
    """Return once `url`/health answers 200; kill the server and fail the test (with the
    end of its output) when it exits first or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("server did not become healthy: " + proc.communicate()[0][-3000:])
        time.sleep(poll_s)


@contextmanager
def server_process(cache_dir, *flags: str, **env: str):
    """`python -m service` on a free loopback port; yields (process, base URL)."""
    port = free_port()
    environment = {**os.environ, "EMBED_CACHE_DIR": str(cache_dir), **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), *flags],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url, 120)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
