"""ONNX Runtime backend: runs one ONNX file on CUDA or CPU (the file is chosen before the
backend is built: service.variants)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path

import numpy as np

from service.artifacts import dtype_of
from service.backends.base import Backend, BackendInfo
from service.backends.providers import effective_device, select_providers

log = logging.getLogger(__name__)


# One text of at most this many tokens runs on a second session of the same file with one
# intra-op thread: at batch 1 the threads' synchronisation costs more than a second core
# gives. Measured on the 2-core VM (`python -m benchmarks.kernels --backends
# onnx-int8,onnx-int8-1t --batches 1`, quiet, docs/benchmarks.md): short texts (5-46 tokens)
# 314 against 265 sentences/s on one thread (1.19x); ~128-token passages 34.9 against 38.5
# (0.91x); batches of 2 equal, of 8 and more two threads win.
SINGLE_THREAD_MAX_TOKENS = 64


def _session_options(threads: int, memory_arena: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # The CPU arena keeps the peak of a burst for the life of the process; without it
    # freed activations go back to the heap, which `release_memory` then trims.
    options.enable_cpu_mem_arena = memory_arena
    # Idle ORT worker threads must not spin: on a small CPU they steal the cores the
    # event loop needs to parse requests and serialise responses.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxBackend(Backend):
    """An onnxruntime InferenceSession over the transformer graph; on a CPU with more than
    one core also a one-thread session of the same file for single short texts
    (SINGLE_THREAD_MAX_TOKENS); and, where the session has a share of the cores
    (`lone_threads`: inference workers, service.engine.workers), a session on all of them
    for a single longer text while no other batch runs (a lone passage would otherwise
    leave the other cores idle). All run the same kernels on the same weights, so a text's
    vector does not depend on which one ran it (the variant's batch-invariance check
    encodes probes alone and in batches through this backend)."""

    def __init__(
        self,
        file: Path,
        device: str = "auto",
        threads: int = 0,
        memory_arena: bool = True,
        reason: str | None = None,
        single_text_session: bool = True,
        lone_threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        requested = select_providers(device)
        self.session = ort.InferenceSession(
            str(file), _session_options(threads, memory_arena), providers=requested
        )
        actual = self.session.get_providers()
        cores = threads or os.cpu_count() or 1
        # built on the first single short text (the server's warm-up request), so a bulk
        # job, which rarely has one, does not hold a second copy of the model
        self._single_options = (
            _session_options(1, memory_arena)
            if single_text_session and actual[0] == "CPUExecutionProvider" and cores > 1
            else None
        )
        self.single_session = None
        # built on the first single long text alone (the server's warm-up sends one)
        self._lone_options = (
            _session_options(lone_threads, memory_arena)
            if actual[0] == "CPUExecutionProvider" and lone_threads > max(threads, 1)
            else None
        )
        self.lone_session = None
        self._running, self._running_lock = 0, threading.Lock()
        self._build_lock = threading.Lock()  # the extra sessions are built once
        self._file = file
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_name = self.session.get_outputs()[0].name
        self.info = BackendInfo(
            name="onnx",
            device=effective_device(actual, requested),
            provider=actual[0],
            dtype=dtype_of(file.name),
            file=str(file),
            reason=reason,
            batch_kernels=self._batch_kernels(threads, lone_threads),
        )
        log.info("ONNX Runtime %s on %s (%s)", file.name, actual[0], sys.platform)

    def _batch_kernels(self, threads: int, lone_threads: int) -> tuple[str, ...]:
        """What serves which batches, for /info."""
        many = (
            f"{threads} intra-op thread{'s' if threads > 1 else ''}"
            if threads
            else "ONNX Runtime's default threads (one per core)"
        )
        kernels = []
        if self._single_options is not None:
            kernels.append(f"one text of <= {SINGLE_THREAD_MAX_TOKENS} tokens: 1 intra-op thread")
        if self._lone_options is not None:
            kernels.append(f"one longer text while no other batch runs: {lone_threads} "
                           "intra-op threads")  # fmt: skip
        return (*kernels, f"every {'other ' if kernels else ''}batch: {many}")

    def forward(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = token_type_ids
        one = input_ids.shape[0] == 1
        short = input_ids.shape[1] <= SINGLE_THREAD_MAX_TOKENS
        with self._running_lock:
            alone = self._running == 0
            self._running += 1
        try:
            session = self.session
            if one and short and self._single_options is not None:
                session = self._extra_session("single_session", self._single_options)
            elif one and not short and alone and self._lone_options is not None:
                session = self._extra_session("lone_session", self._lone_options)
            (hidden,) = session.run([self.output_name], feeds)
        finally:
            with self._running_lock:
                self._running -= 1
        return np.asarray(hidden, dtype=np.float32)

    def _extra_session(self, name: str, options):
        """The CPU session `name` (`single_session` or `lone_session`) over the same file,
        built on first use, under a lock: the inference workers may ask at once."""
        session = getattr(self, name)
        if session is None:
            with self._build_lock:
                session = getattr(self, name)
                if session is None:
                    import onnxruntime as ort

                    session = ort.InferenceSession(
                        str(self._file), options, providers=["CPUExecutionProvider"]
                    )
                    setattr(self, name, session)
        return session

    def close(self) -> None:
        self.session = self.single_session = self.lone_session = None
