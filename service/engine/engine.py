"""The embedding engine every route goes through: prompts -> tokenise (off the event
loop) -> batcher -> raw vectors, with per-request timeout and cancellation."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.backends.base import Backend
from service.config import Settings
from service.engine.batcher import Batcher, BatchLimits, BatchStats, QueueFullError
from service.engine.encoder import SentenceEncoder
from service.engine.memory import release_heap
from service.engine.model_spec import ModelSpec, load_model_spec, resolve_model_path
from service.engine.tokenizer import ModelTokenizer, TokenizedText
from service.metrics import Metrics

log = logging.getLogger(__name__)
BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
INLINE_TOKENIZE_CHARS = 2048  # requests up to this size are tokenised on the event loop


class RequestTimeoutError(RuntimeError):
    """The request was not answered within the configured timeout (503)."""


class UnknownPromptError(ValueError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"prompt_name '{name}' is not one of this model's prompts: {known or 'none defined'}"
        )


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # float32 [n, dimension], not yet normalised
    token_counts: list[int]


def create_backend(settings: Settings, spec: ModelSpec) -> Backend:
    """The configured backend over the model's transformer."""
    if settings.backend == "torch":
        from service.backends.torch import TorchBackend

        return TorchBackend(str(spec.transformer_path), settings.device, settings.intra_op_threads)
    from service.backends.onnx import OnnxBackend
    from service.backends.providers import select_providers
    from service.variants import prepare_onnx

    wants_cuda = select_providers(settings.device)[0] != "CPUExecutionProvider"
    chosen = prepare_onnx(
        spec.path,
        spec.transformer_path,
        settings.cache_dir,
        settings.onnx_file,
        "cuda" if wants_cuda else "cpu",
    )
    return OnnxBackend(
        chosen.file,
        settings.device,
        settings.intra_op_threads,
        memory_arena=not settings.release_memory,
        reason=chosen.reason,
    )


class EmbeddingEngine:
    """Owns the tokenizer, the encoder and the batcher of one served model."""

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        tokenizer: ModelTokenizer,
        encoder: SentenceEncoder,
        metrics: Metrics,
    ) -> None:
        self.settings, self.spec, self.tokenizer, self.encoder = settings, spec, tokenizer, encoder
        self.metrics = metrics
        if settings.max_batch_tokens < tokenizer.max_length:
            raise ValueError(
                f"max_batch_tokens ({settings.max_batch_tokens}) must be at least the model's "
                f"max sequence length ({tokenizer.max_length})"
            )
        self.batcher = Batcher(
            encoder.embed,
            BatchLimits(
                settings.max_batch_tokens,
                settings.max_batch_size,
                settings.max_wait_ms / 1000.0,
                settings.max_queued_inputs,
            ),
            on_batch=self._record_batch,
            on_failure=lambda exc: metrics.batch_failures.inc(),
            on_queue_depth=metrics.queue_depth.set,
            on_quiet=release_heap if settings.release_memory else None,
        )
        self.default_prompt_name = settings.default_prompt_name or spec.default_prompt_name
        self.ready = False

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics, backend: Backend | None = None):
        """Read the model folder and build tokenizer, backend and encoder (blocking)."""
        path = resolve_model_path(settings.model_path())
        spec = load_model_spec(path)
        if not spec.include_prompt:
            raise ValueError(f"{path}: pooling with include_prompt=false is not supported")
        lowercase = _do_lower_case(spec.transformer_path)
        tokenizer = ModelTokenizer(spec.transformer_path, spec.max_seq_length, lowercase)
        backend = backend or create_backend(settings, spec)
        return cls(
            settings, spec, tokenizer, SentenceEncoder(spec, backend, tokenizer.pad_id), metrics
        )

    @property
    def backend(self) -> Backend:
        return self.encoder.backend

    @property
    def model_name(self) -> str:
        """--served-model-name, else the hub id or folder name the model was given by."""
        if self.settings.served_model_name:
            return self.settings.served_model_name
        if self.settings.model is None:
            return BUNDLED_MODEL_NAME
        given = self.settings.model.rstrip("/")
        return given if not Path(given).is_dir() else Path(given).name

    def _record_batch(self, stats: BatchStats) -> None:
        self.metrics.batch_size.observe(stats.size)
        self.metrics.batch_tokens.observe(stats.padded_tokens)
        self.metrics.inference_seconds.observe(stats.seconds)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the batcher and prove the model runs (health turns 200 after this)."""
        self.batcher.start()
        await self.embed(["warm-up"], truncate=True)
        self.ready = True
        log.info(
            "model %s ready: dim %d, max %d tokens, pooling %s, normalize %s, %s",
            self.model_name,
            self.spec.dimension,
            self.tokenizer.max_length,
            "+".join(self.spec.pooling),
            self.spec.normalize,
            self.backend.info,
        )

    async def drain(self, timeout: float) -> bool:
        self.ready = False
        return await self.batcher.drain(timeout)

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()
        self.backend.close()

    # ------------------------------------------------------------ requests

    def prompt_for(self, prompt_name: str | None) -> str:
        name = prompt_name or self.default_prompt_name
        if name is None:
            return ""
        if name not in self.spec.prompts:
            raise UnknownPromptError(name, sorted(self.spec.prompts))
        return self.spec.prompts[name]

    def tokenize(
        self, texts: list[str], truncate: bool, direction: str = "right", prompt: str = ""
    ) -> list[TokenizedText]:
        if prompt:
            texts = [prompt + text for text in texts]
        return self.tokenizer.encode(texts, truncate=truncate, direction=direction)

    async def embed(
        self,
        texts: list[str],
        truncate: bool = True,
        direction: str = "right",
        prompt_name: str | None = None,
    ) -> Embeddings:
        """Raw vectors for `texts`, batched with every other request in flight."""
        prompt = self.prompt_for(prompt_name)
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            # small requests: a thread hop costs more than tokenising (tens of microseconds)
            tokens = self.tokenize(texts, truncate, direction, prompt)
        else:
            tokens = await run_in_threadpool(self.tokenize, texts, truncate, direction, prompt)
        counts = [t.length for t in tokens]
        self.metrics.input_tokens.inc(sum(counts))
        try:
            request = self.batcher.submit(tokens)
        except QueueFullError:
            self.metrics.rejected.inc(len(tokens))
            raise
        try:
            vectors = await asyncio.wait_for(
                asyncio.shield(request.future), self.settings.request_timeout_s
            )
        except asyncio.TimeoutError:
            self.batcher.cancel(request)
            self.metrics.timeouts.inc()
            raise RequestTimeoutError(
                f"request not answered within {self.settings.request_timeout_s:g} s "
                "(request_timeout_s); the server is overloaded, retry later"
            ) from None
        except asyncio.CancelledError:
            self.batcher.cancel(request)  # client went away: free its queue slots
            raise
        return Embeddings(vectors, counts)


def _do_lower_case(transformer_dir: Path) -> bool:
    import json

    config = transformer_dir / "sentence_bert_config.json"
    return bool(config.exists() and json.loads(config.read_text()).get("do_lower_case"))
