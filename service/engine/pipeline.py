"""What `python -m service` serves for its settings: the ONNX file is chosen first
(service.variants: fresh fp32, parity-checked variants, per-token int8 built once), then the
pipeline is built over it by the factory (service.engine.model). `served_pipeline` is the
one public entry point for building exactly that pipeline outside the server (benchmarks,
the corpus-indexing job); the engine takes the pipeline it returns.

Layering (no cycle): pipeline -> variants -> model, pipeline -> model; variants and the
parity checks (service.parity) never import this module."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from service import artifacts
from service.backends.base import Backend
from service.config import Settings
from service.engine.model import (
    ModelPipeline,
    build_pipeline,
    load_model,
    onnx_pipeline,
)
from service.engine.model_spec import ModelSpec
from service.engine.workers import worker_plan
from service.variants import prepare_onnx

__all__ = ["ModelPipeline", "build_pipeline", "load_model", "onnx_pipeline", "served_pipeline"]


def served_pipeline(settings: Settings, backend: Backend | None = None) -> ModelPipeline:
    """The pipeline `python -m service` serves for `settings`: its model, backend, device
    and ONNX file (the same choice as the server's start, exporting / building once into
    `settings.cache_dir` when missing). `backend` replaces the configured one (tests inject
    instrumented backends).

    What was chosen is on `pipeline.backend.info` (service.backends.base.BackendInfo):
    `file` (the ONNX file served; None for torch), `reason` (why that file: /info
    `variant_reason`) and `source_fingerprint` (sha256 hex of the weights the vectors come
    from: /info `source_fingerprint`); `pipeline.workers` batches run at once, each on its
    share of the cores (`service.engine.workers.worker_plan`). Blocking (seconds; minutes
    when an export runs). Raises ModelFolderError / ValueError for a model the service cannot serve,
    variants.OnnxFileError / artifacts.StaleOnnxError for a named file it cannot serve."""
    if backend is not None:
        return build_pipeline(settings.model_path(), lambda spec: backend)
    workers, threads = worker_plan(settings)
    spec, tokenizer = load_model(settings.model_path())
    lone = workers * threads if workers > 1 else 0  # a lone long text: every worker's cores
    backend = configured_backend(
        settings.model_copy(update={"intra_op_threads": threads}), spec, lone_threads=lone
    )
    backend.info = replace(backend.info, inference_workers=workers)
    return ModelPipeline(spec, tokenizer, backend, workers)


def configured_backend(settings: Settings, spec: ModelSpec, lone_threads: int = 0) -> Backend:
    """The configured backend over the model's transformer; ONNX: over the file
    service.variants chooses for the device (exported / built once when missing), with
    `lone_threads` intra-op threads for a single long text while no other batch runs
    (0: none; service.backends.onnx)."""
    if settings.backend == "torch":
        from service.backends.torch import TorchBackend

        backend = TorchBackend(
            str(spec.transformer_path), settings.device, settings.intra_op_threads
        )
        fingerprint = torch_fingerprint(spec.transformer_path)
        backend.info = replace(backend.info, source_fingerprint=fingerprint)
        return backend
    from service.backends.onnx import OnnxBackend
    from service.backends.providers import select_providers

    wants_cuda = select_providers(settings.device)[0] != "CPUExecutionProvider"
    chosen = prepare_onnx(
        spec.path,
        spec.transformer_path,
        settings.cache_dir,
        settings.onnx_file,
        "cuda" if wants_cuda else "cpu",
    )
    backend = OnnxBackend(
        chosen.file,
        settings.device,
        settings.intra_op_threads,
        memory_arena=not settings.release_memory,
        reason=chosen.reason,
        lone_threads=lone_threads,
    )
    backend.info = replace(backend.info, source_fingerprint=chosen.fingerprint)
    return backend


def torch_fingerprint(transformer_dir: Path) -> str | None:
    """The source fingerprint of the weights torch loads (None: no weight file found)."""
    try:
        return artifacts.source_fingerprint(transformer_dir)
    except FileNotFoundError:
        return None
