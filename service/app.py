"""create_app(settings): routes, middleware, and a lifespan that loads the model (or, as
a front end of `--workers N`, the tokenizer and a client of the engine-core process),
starts the engine with a warm-up request, and on exit shuts it down through the app's
`Lifecycle` (the same drain the server ran already on SIGTERM)."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import __version__
from service.api import openai as openai_routes
from service.api import ops, tei
from service.api.errors import install_error_handlers
from service.api.middleware import (
    BodyGuardMiddleware,
    CancelOnDisconnectMiddleware,
    MetricsMiddleware,
)
from service.api.responses import JSONResponse
from service.backends.base import Backend
from service.config import Settings
from service.engine.engine import EmbeddingEngine
from service.engine.pipeline import ModelPipeline
from service.lifecycle import Lifecycle
from service.metrics import Metrics

ROUTES = {
    "/",
    "/embed",
    "/embed_all",
    "/similarity",
    "/tokenize",
    "/decode",
    "/rerank",
    "/predict",
    "/embed_sparse",
    "/v1/embeddings",
    "/v1/models",
    "/health",
    "/info",
    "/metrics",
}


def create_app(
    settings: Settings | None = None,
    backend: Backend | None = None,
    core_address: str | None = None,
    pipeline: ModelPipeline | None = None,
) -> FastAPI:
    """The ASGI app. `backend` replaces the configured one (tests inject faulty backends);
    `pipeline`: an already built served pipeline (`python -m service` builds it before the
    server starts, so a model-file problem ends the start with one line); with
    `core_address` the app is a front end of the engine-core process there (`--workers N`)
    and loads only the tokenizer."""
    settings = settings or Settings()
    metrics = Metrics()
    lifecycle = Lifecycle()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if core_address is not None:
            engine = EmbeddingEngine.remote(settings, metrics, core_address)
        elif pipeline is not None:
            engine = EmbeddingEngine.over(settings, pipeline, metrics)
        else:
            engine = await asyncio.to_thread(EmbeddingEngine.load, settings, metrics, backend)
        app.state.engine = engine
        await engine.start()
        lifecycle.serving(engine)
        info = engine.backend_info
        metrics.model_info.info(
            {
                "model": engine.model_name,
                "backend": info.name,
                "device": info.device,
                "provider": info.provider,
                "dtype": info.dtype,
                "dimension": str(engine.spec.dimension),
                "version": __version__,
            }
        )
        try:
            yield
        finally:
            # under `python -m service` the server drained already (service/server.py)
            # and this returns at once; it drains on other ASGI hosts and in tests
            await lifecycle.shutdown(settings.graceful_shutdown_s)
            await lifecycle.stop()

    app = FastAPI(
        title="polyglot-embed",
        version=__version__,
        description="Batched multilingual sentence embeddings, TEI- and OpenAI-compatible.",
        lifespan=lifespan,
        default_response_class=JSONResponse,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.api_keys = settings.api_keys()
    app.state.engine = None  # the running engine, for the routes (`deps.engine_of`)
    app.state.lifecycle = lifecycle
    install_error_handlers(app)
    app.include_router(tei.router)
    app.include_router(tei.other_model_types)
    app.include_router(openai_routes.router)
    app.include_router(ops.router)
    app.add_middleware(CancelOnDisconnectMiddleware)  # innermost: after the body guard read
    app.add_middleware(
        BodyGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=ROUTES)
    return app
