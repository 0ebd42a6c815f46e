"""The model pipeline and how one is built over a given backend: spec, tokenizer (with the
model's `do_lower_case`), backend, and pooling + Dense (`SentenceEncoder`).

Everything that runs the model builds it through `build_pipeline`: what `python -m service`
serves (`service.engine.pipeline.served_pipeline`, which chooses the ONNX file first), the
variant checks at start-up (service.variants), the export report (training.export_report)
and the benchmarks (`onnx_pipeline`), so what they measure is what the service serves. This
module chooses no file: the choice sits above it (service.variants)."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from service.backends.base import Backend
from service.engine.encoder import SentenceEncoder, postprocess
from service.engine.model_spec import ModelSpec, load_model_spec, resolve_model_path
from service.engine.tokenizer import ModelTokenizer, TokenizedText


class ModelPipeline:
    """The served model without HTTP or batching: texts -> tokenizer -> backend -> pooling
    and Dense (`encoder`, what the inference threads run) -> normalise / dimensions.
    `workers`: how many batches run at once (`service.engine.workers.worker_plan`; the
    backend's threads are that share of the cores)."""

    def __init__(
        self, spec: ModelSpec, tokenizer: ModelTokenizer, backend: Backend, workers: int = 1
    ) -> None:
        self.spec, self.tokenizer, self.backend = spec, tokenizer, backend
        self.encoder = SentenceEncoder(spec, backend, tokenizer.pad_id)
        self.workers = max(1, workers)
        self._pool: ThreadPoolExecutor | None = None  # built on first use

    def submit(self, batch: list[TokenizedText]) -> Future:
        """`encoder.embed(batch)` queued to the pipeline's `workers` inference threads (ONNX
        Runtime sessions take concurrent calls); FIFO, so batches queued behind others keep
        the threads busy while the caller handles earlier results."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="inference")
        return self._pool.submit(self.encoder.embed, batch)

    def embed_batches(self, batches: list[list[TokenizedText]]) -> list:
        """`encoder.embed` of each batch, in order, up to `workers` of them at once.
        Outputs as `SentenceEncoder.embed`."""
        if self.workers == 1 or len(batches) < 2:
            return [self.encoder.embed(batch) for batch in batches]
        return [future.result() for future in [self.submit(batch) for batch in batches]]

    def encode(
        self,
        sentences: list[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        dimensions: int | None = None,
    ) -> np.ndarray:
        """float32 [len(sentences), dimensions or the model's dimension], as the service
        returns them (truncated to the max length; `normalize` None: as the model says),
        in batches of `batch_size` texts in the given order (`workers` batches at once)."""
        batches = [
            self.tokenizer.encode(sentences[start : start + batch_size])
            for start in range(0, len(sentences), batch_size)
        ]
        out = self.embed_batches(batches)
        vectors = np.concatenate(out) if out else np.zeros((0, self.spec.dimension), np.float32)
        normalize = self.spec.normalize if normalize is None else normalize
        return postprocess(vectors, normalize, dimensions)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        self.backend.close()


def load_model(model: str | Path) -> tuple[ModelSpec, ModelTokenizer]:
    """The model's spec and tokenizer (with the model's `do_lower_case`); `model`: a
    sentence-transformers folder or a hub id. Raises ModelFolderError / ValueError for a
    model the service cannot serve."""
    path = resolve_model_path(str(model))
    spec = load_model_spec(path)
    if not spec.include_prompt:
        raise ValueError(f"{path}: pooling with include_prompt=false is not supported")
    lowercase = do_lower_case(spec.transformer_path)
    return spec, ModelTokenizer(spec.transformer_path, spec.max_seq_length, lowercase)


def do_lower_case(transformer_dir: Path) -> bool:
    """The `do_lower_case` of the model's sentence_bert_config.json (False when absent)."""
    config = Path(transformer_dir) / "sentence_bert_config.json"
    return bool(config.exists() and json.loads(config.read_text()).get("do_lower_case"))


def build_pipeline(
    model: str | Path, make_backend: Callable[[ModelSpec], Backend]
) -> ModelPipeline:
    """The served pipeline of `model` over the backend `make_backend(spec)` returns."""
    spec, tokenizer = load_model(model)
    return ModelPipeline(spec, tokenizer, make_backend(spec))


def onnx_pipeline(model_dir: str | Path, onnx_file: Path, device: str = "cpu") -> ModelPipeline:
    """The served pipeline over one given ONNX file of the model (variant checks, the
    export parity report, benchmarks)."""
    from service.backends.onnx import OnnxBackend

    return build_pipeline(model_dir, lambda spec: OnnxBackend(onnx_file, device))
