"""The embedding engine every route goes through: prompts -> tokenise (on the event loop
up to INLINE_TOKENIZE_CHARS characters, in a worker thread above) -> engine core (batcher
-> raw vectors, per-request timeout and cancellation) -> post-processing. Its lifecycle
state (loading, ready, draining) is `service.lifecycle.Lifecycle`'s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.backends.base import Backend, BackendInfo
from service.config import Settings
from service.engine.core import EngineCore, InprocCore, calibration_texts
from service.engine.encoder import postprocess
from service.engine.errors import NonFiniteVectorError, UnknownPromptError
from service.engine.model_spec import ModelSpec
from service.engine.pipeline import ModelPipeline, load_model, served_pipeline
from service.engine.tokenizer import ModelTokenizer, TokenizedText
from service.metrics import Metrics

__all__ = ["EmbeddingEngine", "Embeddings"]
log = logging.getLogger(__name__)
BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
INLINE_TOKENIZE_CHARS = 2048  # requests up to this size are tokenised on the event loop


def non_finite_rows(vectors: np.ndarray | list[np.ndarray]) -> list[int]:
    """Indices of the rows (or token-level arrays) holding a NaN or an infinity."""
    if isinstance(vectors, np.ndarray):
        return np.flatnonzero(~np.isfinite(vectors).all(axis=1)).tolist()
    return [i for i, item in enumerate(vectors) if not np.isfinite(item).all()]


@dataclass(frozen=True)
class Embeddings:
    # float32 [n, dimensions or the model's dimension], normalised as asked; with
    # token_level, a list of n float32 [tokens_i, hidden] arrays (unpadded, not normalised)
    vectors: np.ndarray | list[np.ndarray]
    token_counts: list[int]


class EmbeddingEngine:
    """The front end every route goes through: prompts, tokenisation and usage counts here,
    the vectors from an engine core (`InprocCore` in this process, or `RemoteCore` in a
    shared inference process)."""

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        tokenizer: ModelTokenizer,
        core: EngineCore,
        metrics: Metrics,
    ) -> None:
        self.settings, self.spec, self.tokenizer, self.core = settings, spec, tokenizer, core
        self.metrics = metrics
        if settings.max_batch_tokens < tokenizer.max_length:
            raise ValueError(
                f"max_batch_tokens ({settings.max_batch_tokens}) must be at least the model's "
                f"max sequence length ({tokenizer.max_length})"
            )
        self.default_prompt_name = settings.default_prompt_name or spec.default_prompt_name
        self._in_flight = 0  # requests inside `embed`
        self._idle = asyncio.Event()
        self._idle.set()

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics, backend: Backend | None = None):
        """Build the served pipeline (`service.engine.pipeline.served_pipeline`: the ONNX
        file is chosen there, above the factory) and an in-process core over it (blocking)."""
        return cls.over(settings, served_pipeline(settings, backend), metrics)

    @classmethod
    def over(cls, settings: Settings, pipeline: ModelPipeline, metrics: Metrics):
        """An engine with an in-process core over an already built `pipeline`."""
        core = InprocCore(settings, pipeline.encoder, metrics, pipeline.workers)
        return cls(settings, pipeline.spec, pipeline.tokenizer, core, metrics)

    @classmethod
    def remote(cls, settings: Settings, metrics: Metrics, address: str):
        """A front end whose vectors come from the engine-core process at `address`."""
        from service.engine.ipc import RemoteCore

        spec, tokenizer = load_model(settings.model_path())
        # a safety net only: the core answers within request_timeout_s of waiting plus the
        # request's own work, which admission keeps within request_timeout_s too
        core = RemoteCore(
            address,
            reply_timeout_s=2 * settings.request_timeout_s + 30,
            # a silent core must not hold requests past their own timeout
            silence_limit_s=min(settings.core_timeout_s, settings.request_timeout_s),
        )
        return cls(settings, spec, tokenizer, core, metrics)

    @property
    def backend_info(self) -> BackendInfo:
        return self.core.backend_info

    @property
    def inference_running(self) -> bool:
        """A batch still runs in this process's inference thread."""
        return self.core.inference_running

    @property
    def model_name(self) -> str:
        """--served-model-name, else the hub id or folder name the model was given by."""
        if self.settings.served_model_name:
            return self.settings.served_model_name
        if self.settings.model is None:
            return BUNDLED_MODEL_NAME
        given = self.settings.model.rstrip("/")
        return given if not Path(given).is_dir() else Path(given).name

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the core and prove the model runs, through this front end (tokenising,
        the core, post-processing); then the core's admission calibration."""
        await self.core.start()
        await self.embed(["warm-up"], truncate=True)
        # and one longer text alone: builds the session a lone passage runs on (ONNX with
        # inference workers) before the first request needs it
        await self.embed(["warm-up " * 30], truncate=True)
        await self.core.calibrate(calibration_texts(self.tokenizer, self.settings))
        log.info(
            "model %s ready: dim %d, max %d tokens, pooling %s, normalize %s, %s",
            self.model_name,
            self.spec.dimension,
            self.tokenizer.max_length,
            "+".join(self.spec.pooling),
            self.spec.normalize,
            self.backend_info,
        )

    async def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` s until every request in `embed` (tokenising, or waiting on
        the core) is answered, then until the core is idle and accepts no more. True if
        everything drained. (New requests are refused before they reach the engine: see
        `service.lifecycle`.)"""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        return await self.core.drain(max(0.0, deadline - time.monotonic()))

    async def abort(self, reason: str) -> int:
        """Fail every request not yet answered with ShuttingDownError(reason) (503)."""
        return await self.core.abort(reason)

    async def stop(self) -> None:
        await self.core.stop()

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
        return self.tokenizer.encode(texts, truncate=truncate, direction=direction, prompt=prompt)

    async def embed(
        self,
        texts: list[str],
        truncate: bool = True,
        direction: str = "right",
        prompt_name: str | None = None,
        token_level: bool = False,
        normalize: bool | None = None,
        dimensions: int | None = None,
    ) -> Embeddings:
        """Vectors for `texts` [len(texts), dimensions or the model's dimension], batched
        with every other request in flight: the first `dimensions` components
        (Matryoshka), L2-normalised when `normalize` (None: as the model's own Normalize
        module says). `token_level`: the transformer's per-token embeddings instead
        (TEI's /embed_all; a list of [tokens_i, hidden], never normalised), same batches.
        Raises the engine's errors (`service.engine.errors`)."""
        prompt = self.prompt_for(prompt_name)
        self._in_flight += 1  # counted from here: `drain` waits for it, tokenising included
        self._idle.clear()
        try:
            if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
                # small requests: a thread hop costs more than tokenising (tens of microseconds)
                tokens = self.tokenize(texts, truncate, direction, prompt)
            else:
                tokens = await run_in_threadpool(self.tokenize, texts, truncate, direction, prompt)
            if token_level:
                tokens = [replace(t, token_level=True) for t in tokens]
            counts = [t.length for t in tokens]
            self.metrics.input_tokens.inc(sum(counts))
            vectors = await self.core.embed_tokens(tokens)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        self.check_finite(vectors)
        if not token_level:
            normalize = self.spec.normalize if normalize is None else normalize
            vectors = postprocess(vectors, normalize, dimensions)
        return Embeddings(vectors, counts)

    def check_finite(self, vectors: np.ndarray | list[np.ndarray]) -> None:
        """Raise NonFiniteVectorError (500, counted in embed_nonfinite_vectors) naming the
        first input whose vector holds a NaN or an infinity."""
        bad = non_finite_rows(vectors)
        if not bad:
            return
        self.metrics.nonfinite_vectors.inc(len(bad))
        log.error(
            "the model returned %d non-finite vectors (first: input %d of a request of %d); "
            "answered 500; served file: %s",
            len(bad), bad[0], len(vectors), self.backend_info.file or self.backend_info.name,
        )  # fmt: skip
        raise NonFiniteVectorError(bad[0], len(bad))

    async def token_strings(
        self, texts: list[str], add_special_tokens: bool = True, prompt_name: str | None = None
    ) -> list[list[dict]]:
        """TEI's /tokenize: every token of each (prompted) text, untruncated."""
        prompt = self.prompt_for(prompt_name)
        texts = [prompt + text for text in texts] if prompt else texts
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            return self.tokenizer.tokens(texts, add_special_tokens)
        return await run_in_threadpool(self.tokenizer.tokens, texts, add_special_tokens)
