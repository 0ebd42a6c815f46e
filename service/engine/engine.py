"""The embedding engine every route goes through: prompts -> tokenise (off the event
loop) -> batcher -> raw vectors, with per-request timeout and cancellation."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.backends.base import Backend
from service.config import Settings
from service.engine.admission import (
    AdmissionLimits,
    QueueFullError,
    ThroughputEstimator,
    retry_after_s,
)
from service.engine.batcher import Batcher, BatchLimits, BatchStats, PendingRequest
from service.engine.encoder import SentenceEncoder
from service.engine.memory import release_heap
from service.engine.model_spec import ModelSpec, load_model_spec, resolve_model_path
from service.engine.tokenizer import ModelTokenizer, TokenizedText
from service.metrics import Metrics

log = logging.getLogger(__name__)
BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
INLINE_TOKENIZE_CHARS = 2048  # requests up to this size are tokenised on the event loop
# start-up throughput measurement: one batch of short texts (their per-text overhead makes
# them the slowest per token), within the batch limits
CALIBRATION_TEXT_TOKENS = 16
CALIBRATION_MAX_TEXTS = 64
# The prior is this share of the idle calibration: in a burst, HTTP parsing, tokenising and
# answering compete with inference for the CPU, and the first requests of a burst are
# admitted before any busy batch has been measured (docs/benchmarks.md, "Admission by
# expected wait").
CALIBRATION_HEADROOM = 0.5


class RequestTimeoutError(RuntimeError):
    """The request waited `request_timeout_s` in the queue without starting (503)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class UnknownPromptError(ValueError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"prompt_name '{name}' is not one of this model's prompts: {known or 'none defined'}"
        )


@dataclass(frozen=True)
class Embeddings:
    # float32 [n, dimension], not yet normalised; with token_level, a list of n
    # float32 [tokens_i, hidden] arrays (the transformer's output, unpadded)
    vectors: np.ndarray | list[np.ndarray]
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
            admission=AdmissionLimits(
                settings.max_queued_inputs, settings.max_queue_wait_s, settings.request_timeout_s
            ),
            estimator=ThroughputEstimator(),
        )
        metrics.throughput_estimate.set(self.batcher.estimator.tokens_per_s)
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
        self.metrics.throughput_estimate.set(self.batcher.estimator.tokens_per_s)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the batcher and prove the model runs (health turns 200 after this)."""
        self.batcher.start()
        await self.embed(["warm-up"], truncate=True)
        await self.calibrate()
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

    async def calibrate(self) -> float:
        """Measure throughput (tokens/s) on one batch of synthetic short texts and make
        CALIBRATION_HEADROOM of it the admission estimate's prior, so the first burst is
        judged by this machine's speed. The batch stays within the batch limits."""
        length = min(CALIBRATION_TEXT_TOKENS, self.tokenizer.max_length)
        count = max(
            1,
            min(
                CALIBRATION_MAX_TEXTS,
                self.settings.max_batch_size,
                self.settings.max_batch_tokens // length,
            ),
        )
        text = self.tokenizer.encode(["calibration " * length], truncate=True)[0]
        texts = [text] * count
        started = time.monotonic()
        await self.batcher.submit(texts).future
        seconds = max(time.monotonic() - started, 1e-6)
        measured = text.length * count / seconds
        prior = measured * CALIBRATION_HEADROOM
        self.batcher.estimator.reset(prior)
        self.metrics.throughput_estimate.set(prior)
        log.info("calibration: %d x %d tokens in %.3f s = %.0f tokens/s; admission prior %.0f",
                 count, text.length, seconds, measured, prior)  # fmt: skip
        return prior

    async def drain(self, timeout: float) -> bool:
        self.ready = False
        return await self.batcher.drain(timeout)

    async def abort(self, reason: str) -> int:
        """Fail every request not yet answered with ShuttingDownError(reason) (503)."""
        self.ready = False
        return await self.batcher.abort(reason)

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
        token_level: bool = False,
    ) -> Embeddings:
        """Raw vectors for `texts`, batched with every other request in flight;
        `token_level`: per-token embeddings instead (TEI's /embed_all), same batches."""
        prompt = self.prompt_for(prompt_name)
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            # small requests: a thread hop costs more than tokenising (tens of microseconds)
            tokens = self.tokenize(texts, truncate, direction, prompt)
        else:
            tokens = await run_in_threadpool(self.tokenize, texts, truncate, direction, prompt)
        if token_level:
            tokens = [replace(t, token_level=True) for t in tokens]
        counts = [t.length for t in tokens]
        self.metrics.input_tokens.inc(sum(counts))
        try:
            request = self.batcher.submit(tokens)
        except QueueFullError:
            self.metrics.rejected.inc(len(tokens))
            raise
        try:
            vectors = await self._wait(request)
        except asyncio.CancelledError:
            self.batcher.cancel(request)  # client went away: free its queue slots
            raise
        return Embeddings(vectors, counts)

    async def _wait(self, request: PendingRequest) -> np.ndarray:
        """The request's vectors. `request_timeout_s` bounds the wait before its first
        text enters a batch; once started, the request is finished whatever it takes
        (admission already refused work that could not be done within the timeout)."""
        timeout = self.settings.request_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout)
        except asyncio.TimeoutError:
            if request.started:
                return await asyncio.shield(request.future)
            self.batcher.cancel(request)
            self.metrics.timeouts.inc()
            ahead = self.batcher.queue_depth
            raise RequestTimeoutError(
                f"request waited {timeout:g} s in the queue without starting "
                f"(request_timeout_s) and was dropped; the queue drained slower than its "
                f"estimate, {ahead} inputs still wait; retry later or elsewhere",
                retry_after_s(self.batcher.queued_seconds()),
            ) from None

    async def token_strings(
        self, texts: list[str], add_special_tokens: bool = True, prompt_name: str | None = None
    ) -> list[list[dict]]:
        """TEI's /tokenize: every token of each (prompted) text, untruncated."""
        prompt = self.prompt_for(prompt_name)
        texts = [prompt + text for text in texts] if prompt else texts
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            return self.tokenizer.tokens(texts, add_special_tokens)
        return await run_in_threadpool(self.tokenizer.tokens, texts, add_special_tokens)


def _do_lower_case(transformer_dir: Path) -> bool:
    import json

    config = transformer_dir / "sentence_bert_config.json"
    return bool(config.exists() and json.loads(config.read_text()).get("do_lower_case"))
