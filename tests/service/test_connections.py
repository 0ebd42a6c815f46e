"""Slow and stalled clients on a real server, with real sockets (issue 25): a body that
never completes is answered 408 and its connection closed after `body_timeout_s`; open
connections are bounded (`limit_concurrency`); a shutdown with stalled connections open is
quiet and bounded."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

from tests.service.conftest import server_process

STALLED = (
    b"POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n" + b'{"inputs": '
)


def stall(url: str, count: int) -> list[socket.socket]:
    """`count` connections that send headers and part of the body, then nothing."""
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        sock = socket.create_connection((host, int(port)), timeout=30)
        sock.sendall(STALLED)
        sockets.append(sock)
    return sockets


def answer(sock: socket.socket) -> tuple[bytes, bool]:
    """(what the server sent, whether it closed the connection after it)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, True


def test_stalled_bodies_get_408_and_connections_are_bounded(cache_dir):
    flags = ("--body-timeout-s", "3", "--limit-concurrency", "20")
    with server_process(cache_dir, *flags) as (proc, url):
        stalled = stall(url, 10)
        time.sleep(0.5)
        assert httpx.post(f"{url}/embed", json={"inputs": "hi"}).status_code == 200
        stalled += stall(url, 12)  # 22 connections: past limit_concurrency
        time.sleep(0.5)
        assert httpx.post(f"{url}/embed", json={"inputs": "hi"}).status_code == 503
        started = time.monotonic()
        replies = [answer(sock) for sock in stalled]  # EOF after the reply: closed
        waited = time.monotonic() - started
        for data, closed in replies[:10]:
            assert data.startswith(b"HTTP/1.1 408"), data[:200]
            assert b"body_timeout_s" in data and closed
        # past the limit, uvicorn answers 503 at once and closes
        statuses = [data.split(b" ")[1] for data, _ in replies[10:]]
        assert set(statuses) <= {b"408", b"503"} and b"503" in statuses, statuses
        assert waited < 3 + 5
        assert httpx.post(f"{url}/embed", json={"inputs": "hi"}).status_code == 200
        for sock in stalled:
            sock.close()


def test_shutdown_with_stalled_connections_is_quiet(cache_dir):
    with server_process(cache_dir, "--graceful-shutdown-s", "5") as (proc, url):
        stalled = stall(url, 100)
        time.sleep(1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
        took = time.monotonic() - started
    assert proc.returncode == 0, output[-3000:]
    assert took < 5 + 5
    assert "Traceback" not in output and "CancelledError" not in output, output[-3000:]
    assert len(output.splitlines()) < 60, output[-3000:]
    replies = [answer(sock)[0] for sock in stalled]
    assert all(r == b"" or r.startswith(b"HTTP/1.1 503") for r in replies)
    assert sum(r.startswith(b"HTTP/1.1 503") for r in replies) >= 90
    for sock in stalled:
        sock.close()


@pytest.mark.parametrize("flag", ["--body-timeout-s", "--limit-concurrency"])
def test_the_limits_are_settings(flag):
    from service.__main__ import load_settings

    settings = load_settings([flag, "7"])
    assert settings.body_timeout_s == 7 or settings.limit_concurrency == 7
