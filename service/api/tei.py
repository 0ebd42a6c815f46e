"""TEI-compatible routes: POST /embed and POST /similarity."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends

from service.api.deps import get_engine, require_api_key
from service.api.errors import to_api_error
from service.api.responses import JSONResponse
from service.api.schemas import (
    EmbedRequest,
    SimilarityRequest,
    TEIError,
    as_list,
    check_dimensions,
    error_responses,
    validate_inputs,
)
from service.engine.encoder import postprocess
from service.engine.engine import EmbeddingEngine

router = APIRouter(tags=["TEI"], dependencies=[Depends(require_api_key)])
ERRORS = error_responses(TEIError)


async def embed_texts(
    engine: EmbeddingEngine,
    texts: list[str],
    truncate: bool,
    direction: str,
    prompt_name: str | None,
):
    try:
        return await engine.embed(texts, truncate, direction.lower(), prompt_name)
    except Exception as exc:  # mapped to a clear HTTP error
        raise to_api_error(exc) from exc


@router.post("/embed", response_model=list[list[float]], responses=ERRORS)
async def embed(body: EmbedRequest, engine: EmbeddingEngine = Depends(get_engine)):
    """Embed one text or a list of texts: `[[float, ...], ...]`, one row per input."""
    settings = engine.settings
    texts = validate_inputs(
        as_list(body.inputs), settings.max_client_batch_size, settings.max_input_chars, "inputs"
    )
    check_dimensions(body.dimensions, engine.spec.dimension)
    result = await embed_texts(
        engine, texts, body.truncate, body.truncation_direction, body.prompt_name
    )
    normalize = engine.spec.normalize if body.normalize is None else body.normalize
    return JSONResponse(postprocess(result.vectors, normalize, body.dimensions))


@router.post("/similarity", response_model=list[float], responses=ERRORS)
async def similarity(body: SimilarityRequest, engine: EmbeddingEngine = Depends(get_engine)):
    """Cosine similarity of `source_sentence` to each of `sentences`: `[float, ...]`."""
    settings = engine.settings
    sentences = validate_inputs(
        body.inputs.sentences,
        settings.max_client_batch_size - 1,
        settings.max_input_chars,
        "inputs.sentences",
    )
    validate_inputs(
        [body.inputs.source_sentence], 1, settings.max_input_chars, "inputs.source_sentence"
    )
    result = await embed_texts(
        engine,
        [body.inputs.source_sentence, *sentences],
        body.truncate,
        body.truncation_direction,
        body.prompt_name,
    )
    vectors = postprocess(result.vectors, normalize=True)
    scores = vectors[1:] @ vectors[0]
    return JSONResponse(np.asarray(scores, dtype=np.float32))
