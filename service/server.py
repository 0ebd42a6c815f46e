"""uvicorn with a graceful drain: on SIGTERM/SIGINT the service stops accepting work
(/health answers 503 so load balancers take it out, new embedding requests get 503),
finishes everything it already accepted, then exits 0. A second signal forces the exit."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.config import Settings

log = logging.getLogger(__name__)


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
        if self._draining:  # second signal: stop now
            log.warning("second %s: exiting without waiting", signal.Signals(sig).name)
            self.should_exit = self.force_exit = True
            return
        self._draining = True
        log.info("%s received: draining (grace %.0f s)", signal.Signals(sig).name, self.grace_s)
        self.app.state.draining = True
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain()))

    async def _drain(self) -> None:
        engine = getattr(self.app.state, "engine", None)
        if engine is not None:
            drained = await engine.drain(self.grace_s)
            if not drained:
                log.warning("grace period ended with accepted work unfinished")
        await asyncio.sleep(0.05)  # let the last responses reach their sockets
        self.should_exit = True


def serve(app: FastAPI, settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Run `app` until SIGTERM/SIGINT, then drain. With `sockets` (a front end of
    `--workers N`), serve on the supervisor's listening socket and leave SIGINT to it."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=max(int(settings.graceful_shutdown_s), 1),
    )
    server = DrainingServer(
        config, app, settings.graceful_shutdown_s, supervised=sockets is not None
    )
    server.run(sockets=sockets)
