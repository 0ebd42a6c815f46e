"""ONNX Runtime backend: picks the model's ONNX variant (exporting fp32 once when the
folder has none) and runs it on CUDA or CPU."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np

from service.backends.base import Backend, BackendInfo
from service.backends.providers import effective_device, select_providers

log = logging.getLogger(__name__)
FP32_FILE = "model.onnx"
REPORT_FILE = "report.json"


class OnnxFileError(ValueError):
    """The asked-for ONNX file does not exist or failed its parity check."""


def folder_is_writable(folder: Path) -> bool:
    """Writable, and not an installed package (site-packages is treated as read-only)."""
    resolved = str(folder.resolve())
    if "site-packages" in resolved or "dist-packages" in resolved:
        return False
    return os.access(folder, os.W_OK)


def export_cache_dir(model_dir: Path, cache_root: Path) -> Path:
    """A cache folder keyed by the model folder's path and weights' mtimes."""
    stamp = [str(model_dir.resolve())]
    for weights in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        stamp.append(f"{weights.name}:{weights.stat().st_size}:{int(weights.stat().st_mtime)}")
    key = hashlib.sha256("|".join(stamp).encode()).hexdigest()[:16]
    return cache_root / "onnx" / f"{model_dir.name}-{key}"


def onnx_dirs(model_dir: Path, cache_root: Path) -> list[Path]:
    """Where ONNX files for this model may live: its own onnx/, then the export cache."""
    return [model_dir / "onnx", export_cache_dir(model_dir, cache_root)]


def ensure_onnx_export(model_dir: Path, transformer_dir: Path, cache_root: Path) -> Path:
    """The folder holding this model's ONNX files, exporting fp32 with optimum the first
    time (into the model's onnx/ when writable, else the cache)."""
    for folder in onnx_dirs(model_dir, cache_root):
        if (folder / FP32_FILE).exists() or any(folder.glob("*.onnx")):
            return folder
    target = (
        model_dir / "onnx"
        if folder_is_writable(model_dir)
        else export_cache_dir(model_dir, cache_root)
    )
    log.info("no ONNX file for %s: exporting once with optimum into %s", model_dir, target)
    from training.export import export_fp32

    export_fp32(transformer_dir, target)
    return target


def parity_report(onnx_dir: Path) -> dict:
    path = onnx_dir / REPORT_FILE
    try:
        return json.loads(path.read_text()).get("variants", {}) if path.exists() else {}
    except (json.JSONDecodeError, AttributeError):
        log.warning("ignoring unreadable %s", path)
        return {}


def choose_onnx_file(onnx_dir: Path, requested: str, device: str) -> Path:
    """`requested` names a file in `onnx_dir`, or `auto`: fp16/O4 on CUDA, int8 on CPU,
    each only when its parity check passed in report.json; fp32 otherwise."""
    files = {p.name: p for p in onnx_dir.glob("*.onnx")}
    report = parity_report(onnx_dir)
    if requested != "auto":
        if requested not in files:
            raise OnnxFileError(
                f"ONNX file '{requested}' not found in {onnx_dir}; available: {sorted(files)}"
            )
        if report.get(requested, {}).get("passed") is False:
            log.warning("serving %s although it failed its parity check", requested)
        return files[requested]

    def passed(name: str) -> bool:
        return name in files and report.get(name, {}).get("passed") is True

    if device == "cuda":
        preferred = ["model_fp16.onnx", "model_O4.onnx"]
    else:
        from training.export import cpu_quantization_arch

        arch = cpu_quantization_arch()
        preferred = [f"model_qint8_{arch}.onnx", f"model_quint8_{arch}.onnx"] + sorted(
            n for n in files if n.startswith(("model_qint8_", "model_quint8_"))
        )
    for name in preferred:
        if passed(name):
            return files[name]
    if FP32_FILE in files:
        return files[FP32_FILE]
    raise OnnxFileError(f"no {FP32_FILE} in {onnx_dir} (found {sorted(files)})")


def dtype_of(file: Path) -> str:
    if "int8" in file.name or "quantized" in file.name:
        return "int8"
    if "fp16" in file.name or "O4" in file.name:
        return "float16"
    return "float32"


class OnnxBackend(Backend):
    """An onnxruntime InferenceSession over the transformer graph."""

    def __init__(
        self, file: Path, device: str = "auto", threads: int = 0, memory_arena: bool = True
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
            dtype=dtype_of(file),
            file=str(file),
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
