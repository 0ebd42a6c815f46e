"""Every error the engine raises, in one place, with its kind and its fields.

The engine knows nothing of HTTP: each error has a `kind` (a stable name, also the API's
error `code`) and the fields a client needs (`retry_after_s`, whole seconds, where a retry
helps; the limit or the input it names). The API layer (api/errors.py) maps kinds to HTTP
statuses, once, for both process modes.

Under `--workers N` an error raised in the engine-core process crosses the IPC as
`to_wire(error)` = {"kind", "message", "fields"} and `from_wire` re-raises the same class
with the same message and fields in the front end, so a full queue is a `QueueFullError`
in one process and behind `--workers` alike. An exception that is not an `EngineError`
(a bug) crosses as `InternalEngineError` naming its type.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BatchFailedError",
    "EngineCoreGoneError",
    "EngineError",
    "InternalEngineError",
    "NonFiniteVectorError",
    "QueueFullError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "ShuttingDownError",
    "TextTooLongError",
    "UnknownPromptError",
    "UnknownTokenIdError",
    "from_wire",
    "to_wire",
]


class EngineError(Exception):
    """Base of the engine's errors. `kind`: the stable name of the failure; `field_names`:
    the attributes that travel with it (JSON/msgpack-able values); `retry_after_s`: whole
    seconds after which a retry may succeed, None where a retry does not help."""

    kind: ClassVar[str] = "engine_error"
    field_names: ClassVar[tuple[str, ...]] = ()
    retry_after_s: int | None = None

    @property
    def message(self) -> str:
        return str(self)

    def fields(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.field_names}


class RequestTooLargeError(EngineError, ValueError):
    """The request could never be served as sent: split it. `limit`: the setting it
    exceeds (max_queued_inputs or request_timeout_s)."""

    kind = "request_too_large"
    field_names = ("limit",)

    def __init__(self, message: str, limit: str) -> None:
        self.limit = limit
        super().__init__(message)


class QueueFullError(EngineError, RuntimeError):
    """The server is busy: retry after `retry_after_s` or elsewhere. `limit`: the setting
    that turned it away (max_queued_inputs or max_queue_wait_s)."""

    kind = "overloaded"
    field_names = ("retry_after_s", "limit")

    def __init__(self, message: str, retry_after_s: int, limit: str) -> None:
        self.retry_after_s, self.limit = retry_after_s, limit
        super().__init__(message)


class RequestTimeoutError(EngineError, RuntimeError):
    """The request waited `request_timeout_s` in the queue without starting."""

    kind = "queue_timeout"
    field_names = ("retry_after_s",)

    def __init__(self, message: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class ShuttingDownError(EngineError, RuntimeError):
    """The server is draining or stopped and this request will not be served."""

    kind = "shutting_down"
    retry_after_s = 1


class EngineCoreGoneError(EngineError, RuntimeError):
    """The engine core does not answer (its process died, hangs, or the front end
    stopped); another replica (or this one, once restarted) may serve the request."""

    kind = "engine_unavailable"
    retry_after_s = 1


class BatchFailedError(EngineError, RuntimeError):
    """Inference failed for a batch holding this request's texts."""

    kind = "inference_failed"


class TextTooLongError(EngineError, ValueError):
    """Input `index` has `tokens` tokens, more than the model's `limit` (truncate=false)."""

    kind = "input_too_long"
    field_names = ("index", "tokens", "limit")

    def __init__(self, index: int, tokens: int, limit: int) -> None:
        self.index, self.tokens, self.limit = index, tokens, limit
        super().__init__(
            f"input {index} has {tokens} tokens, more than the model's maximum of {limit}; "
            "shorten it or send truncate=true"
        )


class UnknownTokenIdError(EngineError, ValueError):
    """ids[row][column] is not a token id of the model (vocabulary of `size`)."""

    kind = "unknown_token_id"
    field_names = ("row", "column", "token_id", "size")

    def __init__(self, row: int, column: int, token_id: int, size: int) -> None:
        self.row, self.column, self.token_id, self.size = row, column, token_id, size
        super().__init__(
            f"ids[{row}][{column}] = {token_id} is not a token id of this model "
            f"(vocabulary of {size}: ids 0 to {size - 1})"
        )


class UnknownPromptError(EngineError, ValueError):
    """A prompt_name the model does not define; `known`: the names it does."""

    kind = "unknown_prompt"
    field_names = ("name", "known")

    def __init__(self, name: str, known: list[str]) -> None:
        self.name, self.known = name, known
        super().__init__(
            f"prompt_name '{name}' is not one of this model's prompts: {known or 'none defined'}"
        )


class NonFiniteVectorError(EngineError, RuntimeError):
    """The model returned NaN or infinite values for input `index` (and `count` - 1 other
    inputs of the request): never answered with 200."""

    kind = "non_finite_vector"
    field_names = ("index", "count")

    def __init__(self, index: int, count: int) -> None:
        self.index, self.count = index, count
        others = f" (and {count - 1} other inputs of this request)" if count > 1 else ""
        super().__init__(
            f"the model returned a non-finite vector (NaN or infinity) for input {index}"
            f"{others}; it is not returned (a damaged model file, or an input the model "
            "cannot represent; the server log names the file)"
        )


class InternalEngineError(EngineError, RuntimeError):
    """An unexpected exception (a bug) in the engine core, named by its type."""

    kind = "internal"
    field_names = ("type_name",)

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name
        super().__init__(f"internal error: {type_name}")


KINDS: dict[str, type[EngineError]] = {
    cls.kind: cls
    for cls in (
        RequestTooLargeError,
        QueueFullError,
        RequestTimeoutError,
        ShuttingDownError,
        EngineCoreGoneError,
        BatchFailedError,
        TextTooLongError,
        UnknownTokenIdError,
        UnknownPromptError,
        NonFiniteVectorError,
        InternalEngineError,
    )
}


def to_wire(exc: BaseException) -> dict[str, Any]:
    """{"kind", "message", "fields"} of an engine error; any other exception becomes an
    `InternalEngineError` naming its type (its message may hold data: not sent)."""
    if not isinstance(exc, EngineError) or type(exc).kind not in KINDS:
        exc = InternalEngineError(type(exc).__name__)
    return {"kind": exc.kind, "message": str(exc), "fields": exc.fields()}


def from_wire(error: dict[str, Any]) -> EngineError:
    """The engine error `to_wire` described, same class, message and fields (an unknown
    kind, from a newer core, becomes an `InternalEngineError`)."""
    cls = KINDS.get(error.get("kind", ""))
    if cls is None:
        return InternalEngineError(str(error.get("kind")))
    exc = cls.__new__(cls)
    Exception.__init__(exc, error["message"])
    for name, value in error.get("fields", {}).items():
        if name in cls.field_names:
            setattr(exc, name, value)
    return exc
