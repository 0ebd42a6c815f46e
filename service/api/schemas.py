"""Request and response models: TEI's shapes for /embed and /similarity, OpenAI's for
/v1/embeddings. Limits that depend on settings are checked in `validate_inputs`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.api.errors import ApiError

Direction = Literal["Right", "Left", "right", "left"]


def _check_texts(value):
    texts = [value] if isinstance(value, str) else value
    if isinstance(texts, list):
        if not texts:
            raise ValueError("must not be an empty list")
        for index, text in enumerate(texts):
            if isinstance(text, str) and not text.strip():
                where = "the input" if isinstance(value, str) else f"item {index}"
                raise ValueError(f"{where} is empty or whitespace only")
    return value


class EmbedRequest(BaseModel):
    """TEI `POST /embed`."""

    model_config = ConfigDict(extra="forbid")
    inputs: str | list[str] = Field(description="a text or a list of texts")
    normalize: bool | None = Field(None, description="L2-normalise (default: the model's own)")
    truncate: bool = Field(True, description="cut inputs over the model's max length")
    truncation_direction: Direction = "Right"
    dimensions: Annotated[int, Field(ge=1)] | None = Field(
        None, description="keep the first N dimensions (then re-normalise)"
    )
    prompt_name: str | None = Field(None, description="one of the model's prompts, e.g. query")

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value):
        return _check_texts(value)


class SimilarityInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_sentence: str
    sentences: list[str] = Field(min_length=1)

    @field_validator("source_sentence")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the source sentence is empty or whitespace only")
        return value

    @field_validator("sentences")
    @classmethod
    def _sentences(cls, value):
        return _check_texts(value)


class SimilarityRequest(BaseModel):
    """TEI `POST /similarity`."""

    model_config = ConfigDict(extra="forbid")
    inputs: SimilarityInputs
    truncate: bool = True
    truncation_direction: Direction = "Right"
    prompt_name: str | None = None


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI `POST /v1/embeddings`."""

    model_config = ConfigDict(extra="forbid")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="a text or a list of texts (token-id arrays are not supported)"
    )
    model: str | None = Field(None, description="accepted and echoed as the served model")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _input(cls, value):
        return _check_texts(value)


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


class TEIError(BaseModel):
    """TEI's error body."""

    error: str
    error_type: str


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error body."""

    error: OpenAIErrorDetail


ERROR_STATUSES = {
    400: "body is not valid JSON, or (on /v1) an invalid field",
    401: "API key missing",
    403: "API key wrong",
    413: "body, input count or input length over its limit",
    415: "content type is not JSON",
    422: "invalid field",
    429: "queue full: retry after Retry-After seconds",
    500: "inference failed for this request's batch",
    503: "loading, draining, or request timeout",
}


def error_responses(model: type[BaseModel]) -> dict[int, dict]:
    """OpenAPI `responses` for every error status a route can answer."""
    return {
        status: {"model": model, "description": text} for status, text in ERROR_STATUSES.items()
    }


class HealthResponse(BaseModel):
    status: Literal["ok", "loading", "draining"]


class InfoResponse(BaseModel):
    model_id: str
    model_path: str
    model_dtype: str
    dimension: int
    max_input_length: int
    pooling: str
    normalize: bool
    prompts: dict[str, str]
    default_prompt_name: str | None
    backend: str
    device: str
    provider: str
    onnx_file: str | None
    variant_reason: str | None = None  # why this ONNX file is served (service.variants)
    max_batch_tokens: int
    max_batch_size: int
    max_client_batch_size: int
    max_queued_inputs: int
    max_wait_ms: float
    version: str


def as_list(value: str | list) -> list:
    return [value] if isinstance(value, str) else list(value)


def validate_inputs(texts: list, max_inputs: int, max_chars: int, field: str) -> list[str]:
    """Settings-dependent limits: inputs per request and characters per input."""
    if texts and not isinstance(texts[0], str):
        raise ApiError(
            400,
            f"{field}: token-id arrays are not supported by this server; send the text itself",
            param=field,
            code="unsupported_input",
        )
    if len(texts) > max_inputs:
        raise ApiError(
            413,
            f"{field}: {len(texts)} inputs in one request, more than the limit of "
            f"{max_inputs} (max_client_batch_size); split the request",
            param=field,
            code="too_many_inputs",
        )
    for index, text in enumerate(texts):
        if len(text) > max_chars:
            raise ApiError(
                413,
                f"{field}[{index}]: {len(text)} characters, more than the limit of "
                f"{max_chars} (max_input_chars)",
                param=field,
                code="input_too_long",
            )
    return texts


def check_dimensions(dimensions: int | None, model_dimension: int, status: int = 422) -> None:
    if dimensions is not None and dimensions > model_dimension:
        raise ApiError(
            status,
            f"dimensions must be between 1 and {model_dimension} (the model's dimension), "
            f"got {dimensions}",
            param="dimensions",
            code="invalid_dimensions",
        )
