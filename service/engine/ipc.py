"""The engine core in its own process, reached over ZeroMQ (the API-server / engine-core
split vLLM uses), so that several HTTP/tokenising processes feed one inference engine that
batches across all of them.

Wire format (ZeroMQ DEALER in each front end -> ROUTER in the core, on an `ipc://` socket):

    request  [msgpack {"op": "embed", "id": n, "ids": [[int]], "types": [[int]] | null,
                       "token_level": bool}]
             [msgpack {"op": "hello", "id": n}]      -> backend info, once at start
             [msgpack {"op": "cancel", "id": n}]     -> the client went away; no reply
             [msgpack {"op": "ping", "id": n}]       -> {"id": n, "ok": true}: heartbeat
    reply    [msgpack {"id": n, "ok": true, "rows": r, "dim": d, "lengths": [int] | null}]
             [float32 r*d bytes, C order; token-level: rows of all texts, split by lengths]
             [msgpack {"id": n, "ok": false, "error": {"kind", "message", "fields"}}]

Liveness: each front end pings the core every `silence_limit_s / PINGS_PER_LIMIT` seconds;
any message from the core counts as a sign of life. A core silent for longer than
`silence_limit_s` (hung, stopped, or overloaded past reason) makes the front end fail
every request waiting on it with `EngineCoreGoneError` (telling the core to drop them),
report itself unavailable (`/health` 503) and log it, until the core answers again. A core
that died is reported by the supervisor (`RemoteCore.lost`), which fails what waits at once.

Token ids travel as msgpack integer lists (packed in C, no pickling of Python objects);
vectors travel as one raw float32 frame. An engine error travels as its kind and fields
(`service.engine.errors.to_wire`) and the front end re-raises the same engine exception
(`from_wire`), which the app maps to HTTP as it does in one process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict

import msgpack
import numpy as np
import zmq
import zmq.asyncio

from service.backends.base import BackendInfo
from service.engine.core import InprocCore
from service.engine.errors import (
    EngineCoreGoneError,
    EngineError,
    ShuttingDownError,
    from_wire,
    to_wire,
)
from service.engine.tokenizer import TokenizedText

log = logging.getLogger(__name__)
PINGS_PER_LIMIT = 5  # heartbeats per silence limit (at most one a second)
SETTLE_S = 0.05  # before declaring the core silent: let replies already received be read


def pack_tokens(request_id: int, tokens: list[TokenizedText]) -> bytes:
    types = [t.type_ids for t in tokens]
    return msgpack.packb(
        {
            "op": "embed",
            "id": request_id,
            "ids": [t.ids for t in tokens],
            "types": types if any(any(row) for row in types) else None,
            "token_level": any(t.token_level for t in tokens),  # one request: all or none
        }
    )


def unpack_tokens(message: dict) -> list[TokenizedText]:
    types = message["types"] or [[0] * len(ids) for ids in message["ids"]]
    level = message["token_level"]
    return [TokenizedText(ids, t, len(ids), level) for ids, t in zip(message["ids"], types)]


def pack_result(request_id: int, result: np.ndarray | list[np.ndarray]) -> tuple[dict, bytes]:
    """Sentence vectors [rows, dim], or per-token rows (a list of [length_i, hidden]) sent
    as one [sum of lengths, hidden] block with the lengths in the header."""
    lengths = None
    if isinstance(result, list):
        lengths = [len(rows) for rows in result]
        result = np.concatenate(result)
    block = np.ascontiguousarray(result, dtype=np.float32)
    header = {"id": request_id, "ok": True, "rows": block.shape[0], "dim": block.shape[1]}
    return {**header, "lengths": lengths}, memoryview(block).cast("B")


def unpack_result(header: dict, body: bytes) -> np.ndarray | list[np.ndarray]:
    block = np.frombuffer(body, dtype=np.float32).reshape(header["rows"], header["dim"])
    if header.get("lengths") is None:
        return block
    return np.split(block, np.cumsum(header["lengths"])[:-1])


class RemoteCore:
    """Front-end side: an `EngineCore` whose work is done by the core process at
    `address`. Replies are matched to requests by id on one DEALER socket per process."""

    def __init__(
        self,
        address: str,
        reply_timeout_s: float = 120.0,
        hello_timeout_s: float = 600.0,
        silence_limit_s: float = 5.0,
    ) -> None:
        self.address, self.hello_timeout_s = address, hello_timeout_s
        self.reply_timeout_s = reply_timeout_s  # a safety net: the core answers its own timeouts
        self.silence_limit_s = silence_limit_s
        self.backend_info = BackendInfo("remote", "unknown", "unknown", "unknown")
        self.inference_running = False  # inference runs in the core process
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._context: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._last_heard = time.monotonic()
        self._silent = False  # past the silence limit (logged, waiting requests failed)
        self._lost: str | None = None  # the core process is gone: why

    @property
    def unresponsive_s(self) -> float | None:
        """Seconds since the core last answered, once that is past `silence_limit_s` or
        the core is gone; None while it answers."""
        silent_s = time.monotonic() - self._last_heard
        if self._lost is not None or silent_s > self.silence_limit_s:
            return silent_s
        return None

    async def start(self) -> None:
        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(self.address)
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="core-replies")
        header, _ = await asyncio.wait_for(self._call({"op": "hello"}), self.hello_timeout_s)
        info = header["info"]  # JSON: the tuple came as a list
        self.backend_info = BackendInfo(
            **{**info, "batch_kernels": tuple(info.get("batch_kernels", ()))}
        )
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._beat(), name="core-heartbeat"
        )

    async def _beat(self) -> None:
        """Ping the core and watch for silence past `silence_limit_s` (see the module)."""
        interval = min(1.0, self.silence_limit_s / PINGS_PER_LIMIT)
        while True:
            with contextlib.suppress(zmq.ZMQError):
                await self._socket.send(
                    msgpack.packb({"op": "ping", "id": next(self._ids)}), flags=zmq.NOBLOCK
                )
            await asyncio.sleep(interval)
            if self.unresponsive_s is not None:
                # replies that arrived while this loop was busy are read first
                await asyncio.sleep(SETTLE_S)
            silent_s = self.unresponsive_s
            if silent_s is not None and not self._silent and self._lost is None:
                self._silent = True
                failed = await self._fail_pending(self._core_gone)
                log.error(
                    "engine core at %s has not answered for %.1f s (core_timeout_s %g): "
                    "reporting unavailable; %d waiting requests answered 503",
                    self.address, silent_s, self.silence_limit_s, failed,
                )  # fmt: skip

    async def lost(self, cause: str) -> int:
        """The core process is gone (`cause`, from the supervisor): fail every waiting
        request with EngineCoreGoneError now and every later one at once. Returns the
        number failed."""
        self._lost = cause
        return await self._fail_pending(self._core_gone)

    def unavailable_message(self) -> str:
        """Why requests get 503 while the core is gone or silent (EngineCoreGoneError)."""
        if self._lost is not None:
            return f"the inference process stopped ({self._lost}); retry on another replica"
        silent_s = time.monotonic() - self._last_heard
        return (
            f"the inference process has not answered for {silent_s:.0f} s (core_timeout_s = "
            f"{self.silence_limit_s:g}; hung or overloaded); retry on another replica"
        )

    def _core_gone(self) -> EngineCoreGoneError:
        return EngineCoreGoneError(self.unavailable_message())

    async def _fail_pending(self, error: Callable[[], EngineError]) -> int:
        """Fail every request waiting on the core with a fresh `error()` and tell the core
        (if it still reads) to drop them. The number of requests failed."""
        waiting = [(i, f) for i, f in self._pending.items() if not f.done()]
        for request_id, future in waiting:
            future.set_exception(error())
            with contextlib.suppress(zmq.ZMQError):
                await self._socket.send(
                    msgpack.packb({"op": "cancel", "id": request_id}), flags=zmq.NOBLOCK
                )
        return len(waiting)

    async def _call(self, message: dict) -> tuple[dict, bytes | None]:
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._idle.clear()
        payload = (
            pack_tokens(request_id, message["tokens"])
            if message["op"] == "embed"
            else msgpack.packb({**message, "id": request_id})
        )
        try:
            await self._socket.send(payload)
            return await future
        except asyncio.CancelledError:
            if future.cancelled():  # the client went away: the core drops the queued texts
                with contextlib.suppress(zmq.ZMQError):
                    await self._socket.send(msgpack.packb({"op": "cancel", "id": request_id}))
            raise
        finally:
            self._pending.pop(request_id, None)
            if not self._pending:
                self._idle.set()

    async def _read(self) -> None:
        while True:
            frames = await self._socket.recv_multipart()
            self._last_heard = time.monotonic()
            if self._silent:
                self._silent = False
                log.warning("engine core at %s answers again: available", self.address)
            header = msgpack.unpackb(frames[0])
            future = self._pending.get(header["id"])
            if future is not None and not future.done():
                future.set_result((header, frames[1] if len(frames) > 1 else None))

    async def embed_tokens(self, tokens: list[TokenizedText]) -> np.ndarray | list[np.ndarray]:
        """Vectors from the core: float32 [len(tokens), dim] (token-level requests: a list
        of [length_i, hidden]). Raises the core's engine error (`service.engine.errors`),
        re-created from its kind and fields; EngineCoreGoneError when the core is gone,
        silent past its limit, or no reply came within `reply_timeout_s`."""
        if self.unresponsive_s is not None:
            raise EngineCoreGoneError(self.unavailable_message())
        try:
            header, body = await asyncio.wait_for(
                self._call({"op": "embed", "tokens": tokens}), self.reply_timeout_s
            )
        except asyncio.TimeoutError:
            raise EngineCoreGoneError(
                f"the inference process did not answer within {self.reply_timeout_s:g} s; "
                "retry on another replica"
            ) from None
        if not header["ok"]:
            raise from_wire(header["error"])
        return unpack_result(header, body)

    async def calibrate(self, texts: list[TokenizedText]) -> None:
        """Nothing to do: the core process calibrated itself when it started."""
        return None

    async def abort(self, reason: str) -> int:
        """Answer every request still waiting on the core with ShuttingDownError(reason)
        (503) and tell the core to drop them. The number of requests aborted."""
        return await self._fail_pending(lambda: ShuttingDownError(reason))

    async def drain(self, timeout: float) -> bool:
        """Wait until every request this process sent is answered. True if drained."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self) -> None:
        for task in (self._heartbeat, self._reader):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for future in self._pending.values():
            if not future.done():
                future.set_exception(EngineCoreGoneError("front end stopped"))
        if self._socket is not None:
            self._socket.close(linger=0)
            self._context.term()


class CoreServer:
    """Core side: answers every front end's requests from one `InprocCore`."""

    def __init__(self, core: InprocCore, address: str) -> None:
        self.core, self.address = core, address
        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._tasks: dict[tuple[bytes, int], asyncio.Task] = {}
        self._send_lock = asyncio.Lock()

    def bind(self) -> None:
        self._socket.bind(self.address)

    async def serve(self) -> None:
        """Receive until cancelled; each embed request is its own task."""
        loop = asyncio.get_running_loop()
        while True:
            identity, payload = await self._socket.recv_multipart()
            message = msgpack.unpackb(payload)
            key = (identity, message["id"])
            if message["op"] == "cancel":
                task = self._tasks.pop(key, None)
                if task is not None:
                    task.cancel()
            elif message["op"] == "ping":
                await self._send(identity, {"id": message["id"], "ok": True})
            elif message["op"] == "hello":
                info = asdict(self.core.backend_info)
                await self._send(identity, {"id": message["id"], "ok": True, "info": info})
            elif message["op"] == "embed":
                task = loop.create_task(self._embed(identity, message))
                self._tasks[key] = task
                task.add_done_callback(lambda _, key=key: self._tasks.pop(key, None))

    async def _embed(self, identity: bytes, message: dict) -> None:
        try:
            vectors = await self.core.embed_tokens(unpack_tokens(message))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is answered, never dropped
            if not isinstance(exc, EngineError):  # a bug: its traceback stays in this log
                log.exception("unexpected error in the engine core", exc_info=exc)
            error = {"id": message["id"], "ok": False, "error": to_wire(exc)}
            await self._send(identity, error)
            return
        await self._send(identity, *pack_result(message["id"], vectors))

    async def _send(self, identity: bytes, header: dict, body=None) -> None:
        frames = [identity, msgpack.packb(header)] + ([body] if body is not None else [])
        async with self._send_lock:
            await self._socket.send_multipart(frames, copy=body is None)

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()
