"""TEI-compatible routes: /embed (and `POST /`), /similarity, /embed_all, /tokenize,
/decode; and /rerank, /predict, /embed_sparse answering 424 as TEI does for an embedding
model."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from service.api.deps import engine_of, require_api_key, require_serving
from service.api.errors import ApiError
from service.api.responses import JSONResponse
from service.api.schemas import (
    DecodeRequest,
    EmbedAllRequest,
    EmbedRequest,
    SimilarityRequest,
    SimpleToken,
    TEIError,
    TextsRequest,
    TokenizeRequest,
    as_list,
    check_dimensions,
    error_responses,
    validate_inputs,
)
from service.engine.engine import EmbeddingEngine, Embeddings

router = APIRouter(tags=["TEI"], dependencies=[Depends(require_serving)])
# the routes TEI answers 424 for an embedding model: the key is checked, not the model
other_model_types = APIRouter(tags=["TEI"], dependencies=[Depends(require_api_key)])
ERRORS = error_responses(TEIError)


async def embed_texts(
    engine: EmbeddingEngine,
    texts: list[str],
    body: TextsRequest | SimilarityRequest,
    **options,
) -> Embeddings:
    """The engine's vectors with `body`'s truncation and prompt (null: truncate, from the
    right); `options`: token_level, normalize, dimensions. The engine's errors are mapped
    to HTTP by the app's handlers (service.api.errors)."""
    truncate = True if body.truncate is None else body.truncate
    direction = (body.truncation_direction or "right").lower()
    return await engine.embed(texts, truncate, direction, body.prompt_name, **options)


def request_texts(engine: EmbeddingEngine, inputs: str | list[str]) -> list[str]:
    settings = engine.settings
    return validate_inputs(
        as_list(inputs), settings.max_client_batch_size, settings.max_input_chars, "inputs"
    )


@router.post("/embed", response_model=list[list[float]], responses=ERRORS)
async def embed(body: EmbedRequest, request: Request):
    """Embed one text or a list of texts: `[[float, ...], ...]`, one row per input."""
    engine = engine_of(request)
    texts = request_texts(engine, body.inputs)
    check_dimensions(body.dimensions, engine.spec.dimension)
    result = await embed_texts(
        engine, texts, body, normalize=body.normalize, dimensions=body.dimensions
    )
    return JSONResponse(result.vectors)


# TEI serves `POST /` as /embed for an embedding model; huggingface_hub's InferenceClient
# posts feature_extraction there when given the server's base URL.
router.add_api_route(
    "/",
    embed,
    methods=["POST"],
    response_model=list[list[float]],
    responses=ERRORS,
    summary="Embed (TEI's alias of /embed)",
)


@router.post("/embed_all", response_model=list[list[list[float]]], responses=ERRORS)
async def embed_all(body: EmbedAllRequest, request: Request):
    """Per-token embeddings, no pooling and no normalisation: `[[[float, ...], ...], ...]`,
    per input one row per token (special tokens included, after truncation)."""
    engine = engine_of(request)
    texts = request_texts(engine, body.inputs)
    result = await embed_texts(engine, texts, body, token_level=True)
    return JSONResponse(result.vectors)


@router.post("/similarity", response_model=list[float], responses=ERRORS)
async def similarity(body: SimilarityRequest, request: Request):
    """Cosine similarity of `source_sentence` to each of `sentences`: `[float, ...]`."""
    engine = engine_of(request)
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
        engine, [body.inputs.source_sentence, *sentences], body, normalize=True
    )
    vectors = result.vectors
    scores = vectors[1:] @ vectors[0]
    return JSONResponse(np.asarray(scores, dtype=np.float32))


@router.post("/tokenize", response_model=list[list[SimpleToken]], responses=ERRORS)
async def tokenize(body: TokenizeRequest, request: Request):
    """The model's tokens of each input, untruncated: per input `[{id, text, special,
    start, stop}, ...]` (`start`/`stop`: UTF-8 byte offsets; null for special tokens)."""
    engine = engine_of(request)
    texts = request_texts(engine, body.inputs)
    add_special = True if body.add_special_tokens is None else body.add_special_tokens
    tokens = await engine.token_strings(texts, add_special, body.prompt_name)
    return JSONResponse(tokens)


@router.post("/decode", response_model=list[str], responses=ERRORS)
async def decode(body: DecodeRequest, request: Request):
    """Token ids back to text: one string per list of ids."""
    engine = engine_of(request)
    limit = engine.settings.max_client_batch_size
    if len(body.ids) > limit:
        raise ApiError(
            413,
            f"ids: {len(body.ids)} sequences in one request, more than the limit of {limit} "
            "(max_client_batch_size); split the request",
            param="ids",
        )
    skip = True if body.skip_special_tokens is None else body.skip_special_tokens
    texts = await run_in_threadpool(engine.tokenizer.decode, body.ids, skip)
    return JSONResponse(texts)


# route -> (TEI's message for an embedding model, what the route needs, what to use here)
NOT_THIS_MODEL = {
    "/rerank": (
        "model is not a re-ranker model",
        "a re-ranker (sequence-classification) model",
        "to score texts against a query with this model, use POST /similarity",
    ),
    "/predict": (
        "model is not a classifier model",
        "a sequence-classification model",
        "for embeddings use POST /embed",
    ),
    "/embed_sparse": (
        "model is not an embedding model with SPLADE pooling",
        "a sparse (SPLADE) model",
        "for dense vectors use POST /embed",
    ),
}


def _not_this_model(path: str):
    tei_message, needs, instead = NOT_THIS_MODEL[path]

    async def refuse():
        raise ApiError(
            424,
            f"{tei_message}: this server serves a dense embedding model and {path} needs "
            f"{needs}; {instead}",
        )

    refuse.__doc__ = f"Always 424 here, as TEI answers {path} for an embedding model."
    return refuse


for _path in NOT_THIS_MODEL:
    other_model_types.add_api_route(
        _path,
        _not_this_model(_path),
        methods=["POST"],
        status_code=424,
        responses={424: {"model": TEIError, "description": "this model is an embedding model"}},
        summary=f"{_path} (not available: embedding model)",
    )
