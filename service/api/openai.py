"""OpenAI-compatible route: POST /v1/embeddings (errors in OpenAI's shape)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends

from service.api.deps import get_engine, require_api_key
from service.api.errors import to_api_error
from service.api.responses import JSONResponse
from service.api.schemas import (
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIError,
    as_list,
    check_dimensions,
    error_responses,
    validate_inputs,
)
from service.engine.encoder import postprocess
from service.engine.engine import EmbeddingEngine

router = APIRouter(tags=["OpenAI"], dependencies=[Depends(require_api_key)])


def encode_base64(vector: np.ndarray) -> str:
    """Little-endian float32 bytes, base64 — what OpenAI's `encoding_format=base64` sends."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


@router.post(
    "/v1/embeddings",
    response_model=OpenAIEmbeddingResponse,
    responses=error_responses(OpenAIError),
)
async def create_embeddings(
    body: OpenAIEmbeddingRequest, engine: EmbeddingEngine = Depends(get_engine)
):
    """Embeddings in OpenAI's response shape; `dimensions` truncates then re-normalises."""
    settings = engine.settings
    texts = validate_inputs(
        as_list(body.input), settings.max_client_batch_size, settings.max_input_chars, "input"
    )
    check_dimensions(body.dimensions, engine.spec.dimension, status=400)
    try:
        result = await engine.embed(texts)
    except Exception as exc:
        raise to_api_error(exc) from exc
    normalize = engine.spec.normalize or body.dimensions is not None
    vectors = postprocess(result.vectors, normalize, body.dimensions)
    if body.encoding_format == "base64":
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
