"""ONNX Runtime backend: runs one ONNX file on CUDA or CPU (the file is chosen before the
backend is built: service.variants)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from service.artifacts import dtype_of
from service.backends.base import Backend, BackendInfo
from service.backends.providers import effective_device, select_providers

log = logging.getLogger(__name__)


class OnnxBackend(Backend):
    """An onnxruntime InferenceSession over the transformer graph."""

    def __init__(
        self,
        file: Path,
        device: str = "auto",
        threads: int = 0,
        memory_arena: bool = True,
        reason: str | None = None,
    ) -> None:
        import onnxruntime as ort

        requested = select_providers(device)
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
        self.session = ort.InferenceSession(str(file), options, providers=requested)
        actual = self.session.get_providers()
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_name = self.session.get_outputs()[0].name
        self.info = BackendInfo(
            name="onnx",
            device=effective_device(actual, requested),
            provider=actual[0],
            dtype=dtype_of(file.name),
            file=str(file),
            reason=reason,
        )
        log.info("ONNX Runtime %s on %s (%s)", file.name, actual[0], sys.platform)

    def forward(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = token_type_ids
        (hidden,) = self.session.run([self.output_name], feeds)
        return np.asarray(hidden, dtype=np.float32)

    def close(self) -> None:
        self.session = None
