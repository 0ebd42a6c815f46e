"""Choice of ONNX Runtime execution providers: CUDA when available and allowed, else CPU."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class ProviderUnavailableError(RuntimeError):
    """The requested device has no execution provider in this onnxruntime build."""


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def select_providers(device: str, available: list[str] | None = None) -> list[str]:
    """Providers to ask onnxruntime for, in priority order.

    - `auto`: CUDA first when this build offers it, always CPU as the fallback;
    - `cuda`: CUDA required (an error naming the fix when the build lacks it);
    - `cpu`: CPU only.
    """
    available = available_providers() if available is None else available
    if device == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if device == "cuda":
        raise ProviderUnavailableError(
            f"device 'cuda' was asked for, but this onnxruntime offers only {available}: "
            "install the gpu extra (pip install 'polyglot-embed[gpu]') on a host with CUDA, "
            "or use --device auto/cpu"
        )
    return [CPU]


def effective_device(session_providers: list[str], requested: list[str]) -> str:
    """The device a created session really runs on; warns when CUDA silently fell back."""
    if session_providers and session_providers[0] == CUDA:
        return "cuda"
    if CUDA in requested:
        log.warning(
            "CUDAExecutionProvider was requested but the session runs on %s "
            "(CUDA libraries missing or no GPU visible): serving on CPU",
            session_providers,
        )
    return "cpu"
