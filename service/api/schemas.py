"""Request and response models: TEI's shapes (router/src/http/types.rs) for /embed,
/similarity, /embed_all, /tokenize and /decode; OpenAI's for /v1/embeddings and /v1/models.
Every optional field accepts null as "use the default", as both peers do; booleans are
JSON true/false only (serde's rule in TEI: "yes" or 1 is a 422, not true). Limits that
depend on settings are checked in `validate_inputs`."""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    field_validator,
    model_validator,
)

from service.api.errors import ApiError

Direction = Literal["Right", "Left", "right", "left"]


# Characters that show nothing: control (Cc: NUL, ...), format (Cf: BOM, zero-width space
# and joiners, ...) and separators (Z*). A text made only of these (and whitespace) is empty.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
BLANK = "empty or whitespace only (control, BOM and zero-width characters count as whitespace)"


def is_blank(text: str) -> bool:
    """True when `text` has no visible character (stops at the first one)."""
    return all(ch.isspace() or unicodedata.category(ch) in INVISIBLE_CATEGORIES for ch in text)


def _check_texts(value):
    texts = [value] if isinstance(value, str) else value
    if isinstance(texts, list):
        if not texts:
            raise ValueError("must not be an empty list")
        for index, text in enumerate(texts):
            if isinstance(text, str) and is_blank(text):
                where = "the input" if isinstance(value, str) else f"item {index}"
                raise ValueError(f"{where} is {BLANK}")
    return value


class TextsRequest(BaseModel):
    """The fields TEI's embedding routes share: texts, truncation and prompt."""

    model_config = ConfigDict(extra="forbid")
    inputs: str | list[str] = Field(description="a text or a list of texts")
    truncate: StrictBool | None = Field(
        None, description="cut inputs over the model's max length (null: true)"
    )
    truncation_direction: Direction | None = Field(None, description="null: Right")
    prompt_name: str | None = Field(None, description="one of the model's prompts, e.g. query")

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value):
        return _check_texts(value)


class EmbedRequest(TextsRequest):
    """TEI `POST /embed` (and `POST /`, TEI's alias for it on an embedding model)."""

    normalize: StrictBool | None = Field(
        None, description="L2-normalise (default: the model's own)"
    )
    dimensions: Annotated[int, Field(ge=1)] | None = Field(
        None, description="keep the first N dimensions (then re-normalise)"
    )


class EmbedAllRequest(TextsRequest):
    """TEI `POST /embed_all`: one vector per token, no pooling, no normalisation."""


class SimilarityInputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_sentence: str
    sentences: list[str] = Field(min_length=1)

    @field_validator("source_sentence")
    @classmethod
    def _source(cls, value: str) -> str:
        if is_blank(value):
            raise ValueError(f"the source sentence is {BLANK}")
        return value

    @field_validator("sentences")
    @classmethod
    def _sentences(cls, value):
        return _check_texts(value)


class SimilarityParameters(BaseModel):
    """TEI's `parameters` of `/similarity` (what huggingface_hub's InferenceClient sends)."""

    model_config = ConfigDict(extra="forbid")
    truncate: StrictBool | None = None
    truncation_direction: Direction | None = None
    prompt_name: str | None = None


class SimilarityRequest(BaseModel):
    """TEI `POST /similarity`: options in `parameters` (TEI's shape) or, as this server
    also accepts, at the top level; set in both places they must agree."""

    model_config = ConfigDict(extra="forbid")
    inputs: SimilarityInputs
    parameters: SimilarityParameters | None = None
    truncate: StrictBool | None = None
    truncation_direction: Direction | None = None
    prompt_name: str | None = None

    @model_validator(mode="after")
    def _merge_parameters(self):
        if self.parameters is None:
            return self
        for name in ("truncate", "truncation_direction", "prompt_name"):
            top, nested = getattr(self, name), getattr(self.parameters, name)
            if nested is None:
                continue
            if top is not None and top != nested:
                raise ValueError(
                    f"{name} is {json.dumps(top)} at the top level and {json.dumps(nested)} "
                    f"in parameters.{name}; set it in one place"
                )
            setattr(self, name, nested)
        return self


class TokenizeRequest(BaseModel):
    """TEI `POST /tokenize`."""

    model_config = ConfigDict(extra="forbid")
    inputs: str | list[str] = Field(description="a text or a list of texts")
    add_special_tokens: StrictBool | None = Field(None, description="null: true")
    prompt_name: str | None = Field(None, description="one of the model's prompts, e.g. query")

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value):
        return _check_texts(value)


class SimpleToken(BaseModel):
    """TEI's token: `start`/`stop` are UTF-8 byte offsets into the (prompted) input, null
    for special tokens, whose `text` is the token itself."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


def _is_token_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_ids(value) -> list[list[int]]:
    """A list of token ids, or a list of such lists -> always a list of lists."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of token ids or a list of such lists")
    if all(_is_token_id(v) for v in value):
        return [value]
    for index, ids in enumerate(value):
        if not isinstance(ids, list) or not ids or not all(_is_token_id(v) for v in ids):
            raise ValueError(
                f"item {index} is not a non-empty list of token ids (integers >= 0); send "
                "one list of ids or a list of such lists"
            )
    return value


TokenIds = list[int] | list[list[int]]


class DecodeRequest(BaseModel):
    """TEI `POST /decode`."""

    model_config = ConfigDict(extra="forbid")
    ids: Annotated[list[list[int]], PlainValidator(_check_ids, json_schema_input_type=TokenIds)]
    skip_special_tokens: StrictBool | None = Field(None, description="null: true")


TOKEN_IDS_REFUSED = (
    "token-id arrays are not supported by this server: send the text itself (LangChain's "
    "OpenAIEmbeddings sends token ids unless created with check_embedding_ctx_length=False)"
)


def _json_type(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if value is None:
        return "null"
    return "an object" if isinstance(value, dict) else "a list"


def _is_token_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_token_id(v) for v in value)


def _check_openai_input(value) -> str | list[str]:
    """A text or a list of texts; every other shape refused with what to send instead."""
    if isinstance(value, str):
        return _check_texts(value)
    if not isinstance(value, list):
        raise ValueError(f"must be a string or a list of strings, got {_json_type(value)}")
    if _is_token_array(value):
        raise ValueError(TOKEN_IDS_REFUSED)
    for index, item in enumerate(value):
        if _is_token_array(item):
            raise ValueError(f"item {index}: {TOKEN_IDS_REFUSED}")
        if not isinstance(item, str):
            raise ValueError(
                f"item {index} is {_json_type(item)}; send a string or a list of strings"
            )
    return _check_texts(value)


OpenAIInput = str | list[str] | list[int] | list[list[int]]


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI `POST /v1/embeddings`."""

    model_config = ConfigDict(extra="forbid")
    input: Annotated[
        str | list[str],
        PlainValidator(_check_openai_input, json_schema_input_type=OpenAIInput),
    ] = Field(description="a text or a list of texts (token-id arrays are refused with 400)")
    model: str | None = Field(None, description="accepted and echoed as the served model")
    encoding_format: Literal["float", "base64"] | None = Field(None, description="null: float")
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None


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


class OpenAIModel(BaseModel):
    """OpenAI's model object."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time (s): the model folder's modification time")
    owned_by: str


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


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
    404: "no such model (GET /v1/models/{model})",
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
    status: Literal["ok", "loading", "draining", "unavailable"]


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
    source_fingerprint: str | None = None  # sha256 of the weights served (service.artifacts)
    batch_kernels: list[str] = []  # what serves which batches (service.backends.onnx)
    inference_workers: int = 1  # batches computed at once (service.engine.workers)
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
