"""One error type for the whole API, rendered in TEI's shape on TEI routes and in
OpenAI's shape under /v1."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.api.responses import JSONResponse
from service.engine.errors import (
    BatchFailedError,
    EngineCoreGoneError,
    EngineError,
    InternalEngineError,
    NonFiniteVectorError,
    QueueFullError,
    RequestTimeoutError,
    RequestTooLargeError,
    ShuttingDownError,
    TextTooLongError,
    UnknownPromptError,
    UnknownTokenIdError,
)

# TEI's error_type names, and the OpenAI `type` that goes with each status family
TEI_TYPES = {
    400: "Validation",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "Validation",
    408: "Validation",
    413: "Validation",
    415: "Validation",
    422: "Validation",
    424: "Backend",  # TEI: a route this model type does not serve
    429: "Overloaded",
    500: "Backend",
    503: "Unhealthy",
}


class ApiError(Exception):
    """An HTTP error with a message that says what was wrong and, where one applies, the limit."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}


def openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(path: str, error: ApiError) -> dict:
    """The one place that decides the error shape: OpenAI's `{"error": {message, type,
    param, code}}` under /v1/, TEI's `{"error", "error_type"}` everywhere else."""
    if path.startswith("/v1/"):
        return {
            "error": {
                "message": error.message,
                "type": openai_type(error.status),
                "param": error.param,
                "code": error.code,
            }
        }
    return {"error": error.message, "error_type": TEI_TYPES.get(error.status, "Validation")}


def render(request: Request, error: ApiError) -> JSONResponse:
    """`error` as the JSON response of the route `request` went to."""
    body = error_body(request.url.path, error)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _location(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "body"


def validation_message(exc: RequestValidationError) -> tuple[str, str | None, int]:
    """A one-line message naming each bad field, its first parameter and the status."""
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        err = next(e for e in errors if e.get("type") == "json_invalid")
        detail = err.get("ctx", {}).get("error", "invalid JSON")
        return f"request body is not valid JSON: {detail}", None, 400
    parts, first = [], None
    for err in errors[:5]:
        loc = _location(tuple(err.get("loc", ())))
        first = first or loc
        parts.append(f"{loc}: {str(err.get('msg')).removeprefix('Value error, ')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more, first, 422


# every engine error kind: (HTTP status, the request field it names, the API's `code`);
# Retry-After comes from the error's own `retry_after_s`
ENGINE_STATUS: dict[type[EngineError], tuple[int, str | None, str | None]] = {
    QueueFullError: (429, None, "overloaded"),
    RequestTooLargeError: (413, "input", "request_too_large"),
    TextTooLongError: (413, "input", "input_too_long"),
    UnknownPromptError: (422, "prompt_name", "unknown_prompt"),
    RequestTimeoutError: (503, None, "queue_timeout"),
    ShuttingDownError: (503, None, "shutting_down"),
    EngineCoreGoneError: (503, None, "engine_unavailable"),
    UnknownTokenIdError: (422, "ids", None),
    BatchFailedError: (500, None, "inference_failed"),
    NonFiniteVectorError: (500, "input", "non_finite_vector"),
    InternalEngineError: (500, None, "internal_error"),
}


def to_api_error(exc: Exception) -> ApiError:
    """Map an engine error to its HTTP status, the one place that does, in one process and
    behind `--workers` alike (the front end re-raises the core's engine error); anything
    else: 500 naming its type."""
    if isinstance(exc, ApiError):
        return exc
    if not isinstance(exc, EngineError):
        exc = InternalEngineError(type(exc).__name__)
    kind = next(cls for cls in type(exc).__mro__ if cls in ENGINE_STATUS or cls is EngineError)
    status, param, code = ENGINE_STATUS.get(kind, (500, None, "internal_error"))
    if isinstance(exc, NonFiniteVectorError):
        param = f"input[{exc.index}]"  # the input it names
    headers = {} if exc.retry_after_s is None else {"Retry-After": str(exc.retry_after_s)}
    return ApiError(status, str(exc), param=param, code=code, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to HTTP here, in the shape of the route it came from: `ApiError`,
    the engine's errors (`to_api_error`), request validation (422, 400 under /v1/ as
    OpenAI answers) and, last, any other exception (500; the server still logs it)."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(EngineError, _engine_error)
    app.add_exception_handler(Exception, _internal)


# the handlers are `async def`: Starlette runs a plain `def` handler in its thread pool


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    return render(request, exc)  # type: ignore[arg-type]  # registered for ApiError only


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """The router's own errors (an unknown path: 404; a known path with another method:
    405, with its `Allow` header) in the route's error shape, not FastAPI's `detail`."""
    status = exc.status_code  # type: ignore[attr-defined]  # registered for HTTPException
    headers = dict(exc.headers or {})  # type: ignore[attr-defined]
    message = {
        404: f"no route {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}; allowed: "
        f"{headers.get('allow', headers.get('Allow', '?'))}",
    }.get(status, str(exc.detail))  # type: ignore[attr-defined]
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "invalid_request")
    return render(request, ApiError(status, message, code=code, headers=headers))


async def _engine_error(request: Request, exc: Exception) -> JSONResponse:
    return render(request, to_api_error(exc))


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    message, param, status = validation_message(exc)  # type: ignore[arg-type]
    if request.url.path.startswith("/v1/") and status == 422:
        status = 400  # OpenAI answers invalid requests with 400
    return render(request, ApiError(status, message, param=param, code="invalid_request"))


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    return render(request, to_api_error(exc))
