"""OpenAI-compatible routes: POST /v1/embeddings, GET /v1/models[/{model}] (errors in
OpenAI's shape)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, Request

from service.api.deps import engine_of, require_serving
from service.api.errors import ApiError
from service.api.responses import JSONResponse
from service.api.schemas import (
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIError,
    OpenAIModel,
    OpenAIModelList,
    as_list,
    check_dimensions,
    error_responses,
    validate_inputs,
)
from service.engine.engine import EmbeddingEngine

router = APIRouter(tags=["OpenAI"], dependencies=[Depends(require_serving)])


def encode_base64(vector: np.ndarray) -> str:
    """Little-endian float32 bytes, base64 — what OpenAI's `encoding_format=base64` sends."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


@router.post(
    "/v1/embeddings",
    response_model=OpenAIEmbeddingResponse,
    responses=error_responses(OpenAIError),
)
async def create_embeddings(body: OpenAIEmbeddingRequest, request: Request):
    """Embeddings in OpenAI's response shape; `dimensions` truncates then re-normalises."""
    engine = engine_of(request)
    settings = engine.settings
    texts = validate_inputs(
        as_list(body.input), settings.max_client_batch_size, settings.max_input_chars, "input"
    )
    check_dimensions(body.dimensions, engine.spec.dimension, status=400)
    # OpenAI re-normalises shortened vectors; otherwise the model's own normalisation
    normalize = True if body.dimensions is not None else None
    result = await engine.embed(texts, normalize=normalize, dimensions=body.dimensions)
    vectors = result.vectors
    if body.encoding_format == "base64":  # null and "float": floats
        data = [
            {"object": "embedding", "index": i, "embedding": encode_base64(v)}
            for i, v in enumerate(vectors)
        ]
    else:
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    tokens = sum(result.token_counts)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": engine.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


OWNER = "polyglot-embed"


def served_model(engine: EmbeddingEngine) -> OpenAIModel:
    """The one model this process serves, as OpenAI describes a model."""
    return OpenAIModel(
        id=engine.model_name, created=int(engine.spec.path.stat().st_mtime), owned_by=OWNER
    )


@router.get("/v1/models", response_model=OpenAIModelList, responses=error_responses(OpenAIError))
async def list_models(request: Request):
    """OpenAI's model list: the served model (its `--served-model-name`, else its id)."""
    engine = engine_of(request)
    return OpenAIModelList(data=[served_model(engine)])


@router.get(
    "/v1/models/{model:path}", response_model=OpenAIModel, responses=error_responses(OpenAIError)
)
async def retrieve_model(model: str, request: Request):
    """The served model by its id; 404 for any other id."""
    engine = engine_of(request)
    served = served_model(engine)
    if model != served.id:
        raise ApiError(
            404,
            f"The model '{model}' does not exist: this server serves '{served.id}'",
            param="model",
            code="model_not_found",
        )
    return served
