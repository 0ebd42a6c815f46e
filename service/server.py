"""uvicorn with a graceful drain: on SIGTERM/SIGINT the service stops accepting work
(/health answers 503 so load balancers take it out, new embedding requests get 503),
finishes what it already accepted within `graceful_shutdown_s`, answers whatever is still
unfinished then with a JSON 503 (the route's error shape, Retry-After), and exits 0 within
`graceful_shutdown_s + SHUTDOWN_MARGIN_S`. A second signal forces the exit. A front end
of `--workers N` also exits, at once, when the supervisor reports the engine core dead
(CORE_GONE_SIGNAL), after answering every request waiting on it with 503."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.config import Settings
from service.lifecycle import FORCED_REASON, Lifecycle

log = logging.getLogger(__name__)
CORE_GONE_SIGNAL = signal.SIGUSR2  # supervisor -> front ends: the engine core died
FLUSH_S = 0.1  # after the drain: time for the last responses to reach their sockets
CLOSE_S = 3  # uvicorn's wait for open connections once the drain is over
SHUTDOWN_MARGIN_S = 5  # exit happens within graceful_shutdown_s + this (FLUSH_S + CLOSE_S + stop)


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, app: FastAPI, grace_s: float, supervised: bool = False
    ) -> None:
        super().__init__(config)
        self.app, self.grace_s = app, grace_s
        # A front end of `--workers N`: Ctrl-C (SIGINT to the whole process group) and
        # repeated SIGTERMs (e.g. systemd signalling every process) are the supervisor's to
        # act on; it alone forces an exit, after the grace.
        self.supervised = supervised
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.supervised and (sig == signal.SIGINT or self._draining):
            return
        if self._draining:  # second signal: answer what is unfinished with 503, stop now
            log.warning("second %s: exiting without waiting", signal.Signals(sig).name)
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(lambda: loop.create_task(self._force_exit()))
            return
        self._draining = True
        log.info("%s received: draining (grace %.0f s)", signal.Signals(sig).name, self.grace_s)
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain()))

    @property
    def lifecycle(self) -> Lifecycle:
        return self.app.state.lifecycle

    async def _force_exit(self) -> None:
        """Every request not yet answered gets a JSON 503 in its route's shape (instead of
        being cut off with a plain-text 500), then the server exits."""
        await self.lifecycle.abort(FORCED_REASON)
        await asyncio.sleep(FLUSH_S)
        self.should_exit = self.force_exit = True

    async def _drain(self) -> None:
        await self.lifecycle.shutdown(self.grace_s)
        await asyncio.sleep(FLUSH_S)
        self.should_exit = True

    def handle_core_gone(self, sig: int, frame: FrameType | None) -> None:
        """CORE_GONE_SIGNAL from the supervisor: the engine-core process died."""
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._core_gone()))

    async def _core_gone(self) -> None:
        """Answer every request waiting on the dead core with 503 now (its work is lost),
        refuse new ones, and exit: the supervisor exits too and the orchestrator restarts
        the service."""
        self._draining = True
        failed = await self.lifecycle.core_lost("the engine-core process exited")
        log.error("engine core gone: %d waiting requests answered 503; exiting", failed)
        await asyncio.sleep(FLUSH_S)
        self.should_exit = True


def serve(app: FastAPI, settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Run `app` until SIGTERM/SIGINT, then drain. With `sockets` (a front end of
    `--workers N`), serve on the supervisor's listening socket and leave signals to it."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=CLOSE_S,
        limit_concurrency=settings.limit_concurrency or None,
    )
    server = DrainingServer(
        config, app, settings.graceful_shutdown_s, supervised=sockets is not None
    )
    if server.supervised:
        signal.signal(CORE_GONE_SIGNAL, server.handle_core_gone)
    server.run(sockets=sockets)
    engine = getattr(app.state, "engine", None)
    if engine is not None and engine.inference_running:
        # a batch cut off by the grace period still runs in the inference thread, which
        # the interpreter would join at exit: leave without waiting for it
        log.warning("exiting with an abandoned batch still in the inference thread")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
