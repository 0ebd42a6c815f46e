"""Operations routes: /health, /info and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service import __version__
from service.api.deps import check_api_key
from service.api.errors import ApiError
from service.api.responses import JSONResponse
from service.api.schemas import HealthResponse, InfoResponse, TEIError

router = APIRouter(tags=["operations"])


def _guard(request: Request) -> None:
    if request.app.state.settings.protect_ops:
        check_api_key(request)


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={
        503: {
            "description": "loading, draining, or engine core unavailable",
            "model": HealthResponse,
        }
    },
)
async def health(request: Request):
    """200 once the model loaded and a warm-up inference passed; 503 before ("loading"),
    while draining ("draining"), and, behind `--workers N`, while the engine-core process
    has not answered within `core_timeout_s` ("unavailable")."""
    _guard(request)
    status = request.app.state.lifecycle.health()
    if status != "ok":
        return JSONResponse({"status": status}, status_code=503)
    return {"status": "ok"}


@router.get(
    "/info",
    response_model=InfoResponse,
    responses={503: {"description": "loading", "model": TEIError}},
)
async def info(request: Request):
    """The served model, backend and batching limits."""
    _guard(request)
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise ApiError(503, "model is loading")
    spec, settings, backend = engine.spec, engine.settings, engine.backend_info
    return InfoResponse(
        model_id=engine.model_name,
        model_path=str(spec.path),
        model_dtype=backend.dtype,
        dimension=spec.dimension,
        max_input_length=engine.tokenizer.max_length,
        pooling="+".join(spec.pooling),
        normalize=spec.normalize,
        prompts=spec.prompts,
        default_prompt_name=engine.default_prompt_name,
        backend=backend.name,
        device=backend.device,
        provider=backend.provider,
        onnx_file=backend.file,
        variant_reason=backend.reason,
        source_fingerprint=backend.source_fingerprint,
        batch_kernels=list(backend.batch_kernels),
        inference_workers=backend.inference_workers,
        max_batch_tokens=settings.max_batch_tokens,
        max_batch_size=settings.max_batch_size,
        max_client_batch_size=settings.max_client_batch_size,
        max_queued_inputs=settings.max_queued_inputs,
        max_wait_ms=settings.max_wait_ms,
        version=__version__,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
    },
)
async def metrics(request: Request):
    """Prometheus text exposition of every `embed_*` metric."""
    _guard(request)
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
