"""ASGI middleware: request metrics, a guard that refuses oversized, non-JSON, absurdly
nested or too slowly sent bodies before FastAPI parses them, and the cancellation of a
request whose client hung up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import ApiError, error_body
from service.metrics import Metrics

MAX_JSON_DEPTH = 32
# while a body is incomplete, how often a stalled read checks whether the server is draining
DRAIN_POLL_S = 0.5


async def _send_json(send: Send, status: int, body: dict, path: str, close: bool = False) -> None:
    """Answer `body` ({"error": message, "code": ...}) in the shape of the route at `path`;
    `close`: ask the server to close the connection after it (a body left unread)."""
    error = ApiError(status, body["error"], code=body["code"])
    data = orjson.dumps(error_body(path, error))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def json_problem(body: bytes, exc: Exception) -> str:
    """What is wrong with a body orjson refused: for bytes that are not UTF-8, the first
    bad byte and its offset (orjson's own message then points at char 0)."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        byte = body[bad.start]
        return (
            f"it is not UTF-8: byte 0x{byte:02x} at byte offset {bad.start} ({bad.reason}); "
            "send the JSON encoded as UTF-8"
        )
    return str(exc)


def json_depth(value) -> int:
    """Nesting depth of a parsed JSON value, iteratively (no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            stack.extend(
                (child, depth + 1) for child in children if isinstance(child, (list, dict))
            )
    return deepest


def _draining(scope: Scope) -> bool:
    """Whether the app serving `scope` is shutting down (Starlette puts itself in scope)."""
    app = scope.get("app")
    lifecycle = getattr(app.state, "lifecycle", None) if app is not None else None
    return lifecycle is not None and lifecycle.draining


class BodyGuardMiddleware:
    """413 past `max_body_bytes` (by Content-Length or while streaming), 415 for a
    non-JSON content type, 400 for JSON nested deeper than MAX_JSON_DEPTH, 408 for a body
    not complete within `body_timeout_s` of the request's start (a stalled or slowloris
    client), and 503 for a body still incomplete when the server starts draining (so a
    shutdown never has to cancel stalled reads). 408 and 503 close the connection."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float = 60.0) -> None:
        self.app, self.max_body_bytes, self.body_timeout_s = app, max_body_bytes, body_timeout_s

    async def _receive(
        self, receive: Receive, send: Send, scope: Scope, deadline: float
    ) -> Message | None:
        """The next message, or None when the read was answered with 408 or 503."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(min(deadline, loop.time() + DRAIN_POLL_S)):
                    return await receive()
            except TimeoutError:
                if _draining(scope):
                    error = {
                        "error": "the server is shutting down and this request's body was not "
                        "complete; retry, another replica will serve it",
                        "code": "shutting_down",
                    }
                    await _send_json(send, 503, error, scope["path"], close=True)
                    return None
                if loop.time() >= deadline:
                    error = {
                        "error": f"the request body was not complete within "
                        f"{self.body_timeout_s:g} s (body_timeout_s); the connection is closed",
                        "code": "body_timeout",
                    }
                    await _send_json(send, 408, error, scope["path"], close=True)
                    return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope["headers"])
        limit = self.max_body_bytes
        content_type = headers.get(b"content-type", b"application/json").decode("latin-1")
        if "json" not in content_type.lower():
            await _send_json(
                send,
                415,
                {
                    "error": f"content-type must be application/json, got '{content_type}'",
                    "code": "unsupported_media_type",
                },
                path,
            )
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(
                send,
                413,
                {
                    "error": f"request body of {int(declared)} bytes exceeds "
                    f"the limit of {limit} bytes (max_body_bytes)",
                    "code": "body_too_large",
                },
                path,
            )
            return
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout_s
        while True:
            message = await self._receive(receive, send, scope, deadline)
            if message is None or message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(
                    send,
                    413,
                    {
                        "error": f"request body exceeds the limit of {limit} "
                        "bytes (max_body_bytes)",
                        "code": "body_too_large",
                    },
                    path,
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            try:
                parsed = orjson.loads(body)
                # a body with no more brackets than the limit cannot nest deeper: no walk
                brackets = body.count(b"[") + body.count(b"{")
                depth = json_depth(parsed) if brackets > MAX_JSON_DEPTH else 0
            except orjson.JSONDecodeError as exc:
                error = {"error": f"request body is not valid JSON: {json_problem(body, exc)}"}
                await _send_json(send, 400, {**error, "code": "invalid_json"}, path)
                return
            if depth > MAX_JSON_DEPTH:
                await _send_json(
                    send,
                    400,
                    {
                        "error": f"JSON nested {depth} levels deep; the limit is {MAX_JSON_DEPTH}",
                        "code": "invalid_json",
                    },
                    path,
                )
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class MetricsMiddleware:
    """Counts requests by route and status and times them by route."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes
        # the labelled children, looked up once: prometheus-client validates labels on
        # every `.labels()` call, which showed in the per-request profile
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}

    def _record(self, route: str, status: int, seconds: float) -> None:
        key = (route, str(status))
        counter = self._counted.get(key)
        if counter is None:
            counter = self._counted[key] = self.metrics.requests.labels(*key)
        timer = self._timed.get(route)
        if timer is None:
            timer = self._timed[route] = self.metrics.request_seconds.labels(route)
        counter.inc()
        timer.observe(seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in self.routes else "other"
        status = 500
        started = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self._record(route, status, time.perf_counter() - started)


CLIENT_CLOSED = 499  # nginx's "client closed request": the status metrics record for it


class CancelOnDisconnectMiddleware:
    """Cancel a request whose client hung up before its answer started.

    Starlette does not watch the connection while a route awaits its result, so without
    this a departed client's texts stayed queued and were computed for nobody. Once the
    app has read the whole body, a watcher waits for the server's `http.disconnect`; if it
    comes before the response starts, the route's task is cancelled, which reaches the
    engine (in-process queue, or the engine core via the IPC's "cancel"). The response
    the client can no longer read is recorded with status CLIENT_CLOSED (499)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        watcher: asyncio.Task | None = None
        disconnect: asyncio.Future = asyncio.get_running_loop().create_future()
        started = cancelled = False

        async def watch() -> None:
            nonlocal cancelled
            message = await receive()
            if not disconnect.done():
                disconnect.set_result(message)
            if message["type"] == "http.disconnect" and not started:
                cancelled = True
                task.cancel()

        async def watched_receive() -> Message:
            nonlocal watcher
            if watcher is not None:  # the body was read: only a disconnect can follow
                return await asyncio.shield(disconnect)
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                watcher = asyncio.get_running_loop().create_task(watch())
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, watched_receive, tracked_send)
        except asyncio.CancelledError:
            if not cancelled:
                raise
            task.uncancel()
            # nobody reads this answer (the server drops it); the metrics see 499
            await send({"type": "http.response.start", "status": CLIENT_CLOSED, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
