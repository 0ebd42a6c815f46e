"""`--workers N`: N HTTP/tokenising processes in front of one inference process.

    supervisor (this module, the process you start)
      ├── engine core   loads the model once; batcher + backend (`service.engine.ipc`)
      └── front end x N uvicorn on one shared listening socket; validation, tokenising,
                        JSON; vectors from the core over ZeroMQ (`ipc://`)

Start-up: the core loads and warms up the model, then the front ends start. Children exit
when the supervisor is gone. Metrics: every
process writes prometheus-client's multiprocess files (`PROMETHEUS_MULTIPROC_DIR`, a fresh
temporary folder), and `/metrics` in any front end aggregates all of them. Shutdown
(SIGTERM or SIGINT): each front end drains as a single process does (health 503, new
requests 503, accepted requests finished, what outlasts the grace answered 503), then the
core stops; the supervisor exits within `graceful_shutdown_s` + `SHUTDOWN_MARGIN_S`, 0 when
everything drained. If any child dies, the
others are stopped and the supervisor exits 1 (the orchestrator restarts the pod).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

from service.config import Settings
from service.server import CORE_GONE_SIGNAL, SHUTDOWN_MARGIN_S

log = logging.getLogger(__name__)
CORE_STOP_SIGNAL = signal.SIGUSR1  # supervisor -> core: the front ends are gone, stop
CORE_STOP_S = 2.0  # the core's share of SHUTDOWN_MARGIN_S, once the front ends are gone
MAX_AUTO_WORKERS = 8
WATCH_S = 0.2  # how often the supervisor checks its children


def uses_cuda(settings: Settings) -> bool:
    """Whether the configured backend will run on a CUDA device."""
    if settings.device == "cpu":
        return False
    if settings.backend == "torch":
        import torch

        return torch.cuda.is_available()
    from service.backends.providers import select_providers

    try:
        return select_providers(settings.device)[0] != "CPUExecutionProvider"
    except Exception:  # noqa: BLE001 - the backend reports the provider problem itself
        return False


def resolve_workers(settings: Settings, cpu_count: int | None = None) -> int:
    """`workers` as configured, or for 0 (auto): 1 when the model runs on the CPU (the
    model needs every core; measured fastest on a 2-core host), else half the cores, 2 to
    8, so the front ends can feed an accelerator."""
    if settings.workers:
        return settings.workers
    if not uses_cuda(settings):
        return 1
    cores = cpu_count or os.cpu_count() or 2
    return max(2, min(MAX_AUTO_WORKERS, cores // 2))


def _configure_logging(settings: Settings, role: str) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {role}[%(process)d] %(name)s: %(message)s",
    )


def describe_exit(code: int | None) -> str:
    """A child's exit code in words: "killed by SIGKILL", "exited with 3"."""
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


def exit_with_parent(interval_s: float = 1.0) -> None:
    """A child must not outlive a supervisor that was killed (SIGKILL leaves no chance to
    stop it): a daemon thread exits the process once the parent is gone."""

    def watch() -> None:
        parent = multiprocessing.parent_process()
        while parent is None or parent.is_alive():
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_core(settings: Settings, address: str, ready) -> None:
    """Engine-core process: load the model, answer front ends until the supervisor sends
    CORE_STOP_SIGNAL (after the front ends drained), then finish what is queued. SIGINT and
    SIGTERM are the supervisor's: the core must outlive the front ends' drain. (A signal,
    not a shared lock: a core killed mid-wait must not leave the supervisor blocked.)"""
    _configure_logging(settings, "core")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    exit_with_parent()
    from service.artifacts import ArtefactError

    try:
        asyncio.run(_core_main(settings, address, ready))
    except ArtefactError as exc:  # one line naming the file, not a traceback
        log.error("cannot start: %s", exc)
        logging.shutdown()
        os._exit(3)
    # Everything the core owns is closed by now; interpreter teardown (torch, ONNX Runtime
    # and module finalisers) took seconds on a busy 2-core host, past CORE_STOP_S.
    logging.shutdown()
    os._exit(0)


async def _core_main(settings: Settings, address: str, ready) -> None:
    from service.engine.core import InprocCore, calibration_texts
    from service.engine.ipc import CoreServer
    from service.engine.pipeline import served_pipeline
    from service.metrics import Metrics

    pipeline = await asyncio.to_thread(served_pipeline, settings)
    core = InprocCore(settings, pipeline.encoder, Metrics(), pipeline.workers)
    server = CoreServer(core, address)
    server.bind()
    serving = asyncio.get_running_loop().create_task(server.serve())
    await core.start()
    # warm-up (the first inference allocates), then the admission calibration
    await core.embed_tokens(pipeline.tokenizer.encode(["warm-up"], truncate=True))
    await core.calibrate(calibration_texts(pipeline.tokenizer, settings))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(CORE_STOP_SIGNAL, stop.set)
    ready.set()
    log.info("engine core ready on %s (%s)", address, core.backend_info)
    await stop.wait()
    # the front ends drained (or aborted) already: nothing the core holds is awaited now
    if not await core.drain(CORE_STOP_S / 2):
        await core.abort("server stopped")
    serving.cancel()
    await core.stop()
    server.close()
    log.info("engine core stopped")


def run_frontend(settings: Settings, address: str, listener: socket.socket) -> None:
    """Front-end process: the HTTP app on the shared socket, vectors from the core."""
    _configure_logging(settings, "frontend")
    exit_with_parent()
    from service.app import create_app
    from service.server import serve

    app = create_app(settings, core_address=address)
    serve(app, settings, sockets=[listener])


def bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((settings.host, settings.port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


class Supervisor:
    """Starts the core and the front ends, watches them, and stops them in order."""

    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings, self.workers = settings, workers
        self.context = multiprocessing.get_context("spawn")
        self.workdir = Path(tempfile.mkdtemp(prefix="polyglot-embed-"))
        self.address = f"ipc://{self.workdir / 'core.sock'}"
        self.core: multiprocessing.Process | None = None
        self.frontends: list[multiprocessing.Process] = []
        self.stopping = False

    def run(self) -> int:
        metrics_dir = self.workdir / "metrics"
        metrics_dir.mkdir()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # inherited by children
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        try:
            if not self._start_core():
                return 1
            listener = bind(self.settings)
            for index in range(self.workers):
                process = self.context.Process(
                    target=run_frontend,
                    args=(self.settings, self.address, listener),
                    name=f"frontend-{index}",
                )
                process.start()
                self.frontends.append(process)
            listener.close()
            where = (self.settings.host, self.settings.port, self.workers)
            log.info("serving on %s:%d with %d front ends", *where)
            dead = self._watch()
            if dead is not None and dead is self.core:
                return self._core_lost()
            return self._shutdown() or int(dead is not None)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _on_signal(self, signum: int, frame) -> None:
        if self.stopping:
            log.warning("second %s: stopping now", signal.Signals(signum).name)
            for process in [*self.frontends, self.core]:
                if process is not None and process.is_alive():
                    process.kill()
            return
        log.info("%s received: draining the front ends", signal.Signals(signum).name)
        self.stopping = True

    def _start_core(self) -> bool:
        ready = self.context.Event()
        self.core = self.context.Process(
            target=run_core,
            args=(self.settings, self.address, ready),
            name="engine-core",
        )
        self.core.start()
        while not ready.wait(0.2):
            if not self.core.is_alive() or self.stopping:
                log.error("engine core did not start (exit code %s)", self.core.exitcode)
                self._stop(self.core, 0)
                return False
        return True

    def _watch(self) -> multiprocessing.Process | None:
        """Until a stop signal (None) or a child's death (that child)."""
        while not self.stopping:
            for process in [self.core, *self.frontends]:
                if not process.is_alive():
                    log.error("%s %s: stopping", process.name, describe_exit(process.exitcode))
                    return process
            time.sleep(WATCH_S)
        return None

    def _core_lost(self) -> int:
        """The engine core died: its queued and running work is lost. Each front end
        answers what waits on the core with 503 at once and exits (no grace: nothing
        can finish); then this process exits 1 so the orchestrator restarts the service,
        model load included (a clean start rather than a core restarted in place
        beside front ends that may share its fault)."""
        deadline = time.monotonic() + SHUTDOWN_MARGIN_S
        for process in self.frontends:
            if process.is_alive():
                os.kill(process.pid, CORE_GONE_SIGNAL)
        for process in self.frontends:
            self._stop(process, deadline - time.monotonic())
        self._stop(self.core, 0)
        log.error("exiting 1 after the engine core's death, for the orchestrator to restart")
        return 1

    def _shutdown(self) -> int:
        """Front ends drain within the grace, then the core stops. 0 when all exited 0."""
        budget = self.settings.graceful_shutdown_s + SHUTDOWN_MARGIN_S - CORE_STOP_S
        deadline = time.monotonic() + budget
        for process in self.frontends:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        codes = [self._stop(p, deadline - time.monotonic()) for p in self.frontends]
        if self.core is not None and self.core.is_alive():
            os.kill(self.core.pid, CORE_STOP_SIGNAL)
        codes.append(self._stop(self.core, CORE_STOP_S))
        return 0 if all(code == 0 for code in codes) else 1

    def _stop(self, process: multiprocessing.Process, timeout: float) -> int | None:
        from prometheus_client import multiprocess

        process.join(max(timeout, 0.1))
        if process.is_alive():
            log.warning("%s did not stop in time: killing it", process.name)
            process.kill()
            process.join()
        multiprocess.mark_process_dead(process.pid)
        return process.exitcode


def serve_workers(settings: Settings, workers: int) -> int:
    """Run the multi-process server until stopped; the process exit code."""
    return Supervisor(settings, workers).run()
