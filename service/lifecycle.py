"""The server's one lifecycle state and the one shutdown both entry points call.

    loading --engine started--> ready --shutdown(grace)--> draining --stop()--> stopped

`/health` and every route's readiness check read `Lifecycle.health()`; `service.server`
(on SIGTERM) and the app's lifespan (on any other ASGI host, and in tests) both call
`Lifecycle.shutdown(grace_s)`: the second call waits for the first instead of draining
again. Behind `--workers N` the state also says whether the engine-core process still
answers (`EngineCore.unresponsive_s`): a core silent for longer than its bound makes
`/health` 503 ("unavailable") until it answers again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.engine.engine import EmbeddingEngine

log = logging.getLogger(__name__)

FORCED_REASON = (
    "the server was told to stop at once (a second shutdown signal) before this request "
    "finished; retry, another replica will serve it"
)


def shutdown_reason(grace_s: float) -> str:
    """The 503 message of a request cut off by shutdown."""
    return (
        f"the server is shutting down and its grace period (graceful_shutdown_s = {grace_s:g} "
        "s) ended before this request finished; retry, another replica will serve it"
    )


class Phase(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


class Lifecycle:
    """Owns the phase and the engine once it runs. Not thread-safe: used from the event
    loop (signal handlers schedule onto it)."""

    def __init__(self) -> None:
        self.phase = Phase.LOADING
        self.engine: EmbeddingEngine | None = None
        self._shutdown: asyncio.Task | None = None

    def serving(self, engine: EmbeddingEngine) -> None:
        """The engine started (model loaded, warm-up passed): ready, unless a shutdown
        began while it loaded."""
        self.engine = engine
        if self.phase is Phase.LOADING:
            self.phase = Phase.READY

    @property
    def draining(self) -> bool:
        """Whether shutdown began (draining or stopped)."""
        return self.phase in (Phase.DRAINING, Phase.STOPPED)

    def health(self) -> str:
        """The health status: "ok", "loading", "draining" (also once stopped), or "unavailable"
        (the engine core has not answered within its bound)."""
        if self.phase is Phase.READY and self.engine is not None:
            return "ok" if self.engine.core.unresponsive_s is None else "unavailable"
        return "loading" if self.phase is Phase.LOADING else "draining"

    async def shutdown(self, grace_s: float) -> int:
        """Stop taking work (health 503, new requests 503), finish what was accepted
        within `grace_s` seconds, then answer what is still unfinished with 503
        (`shutdown_reason`). Idempotent: a later call waits for the first. Returns the
        number of requests cut off."""
        if self.phase is not Phase.STOPPED:
            self.phase = Phase.DRAINING
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_task(self._drain(grace_s))
        return await asyncio.shield(self._shutdown)

    async def _drain(self, grace_s: float) -> int:
        if self.engine is None:
            return 0
        if await self.engine.drain(grace_s):
            return 0
        failed = await self.engine.abort(shutdown_reason(grace_s))
        log.warning("grace period of %g s ended: %d unfinished requests answered 503",
                    grace_s, failed)  # fmt: skip
        return failed

    async def abort(self, reason: str) -> int:
        """Answer every unfinished request with 503 (`reason`) now (a second signal)."""
        if self.phase is not Phase.STOPPED:
            self.phase = Phase.DRAINING
        return 0 if self.engine is None else await self.engine.abort(reason)

    async def core_lost(self, cause: str) -> int:
        """The engine-core process died (`--workers N`): every request waiting on it is
        answered 503 now, later ones at once; health turns "unavailable"."""
        return 0 if self.engine is None else await self.engine.core.lost(cause)

    async def stop(self) -> None:
        """After shutdown: release the engine (core, backend, sockets)."""
        self.phase = Phase.STOPPED
        if self.engine is not None:
            await self.engine.stop()
