"""Request dependencies: the API-key check and, for routes that need the model, the check
that it is serving, as ONE route dependency (`require_serving`); routes then take the
engine with `engine_of(request)`."""

from __future__ import annotations

import hmac

from fastapi import Request

from service.api.errors import ApiError
from service.engine.engine import EmbeddingEngine
from service.engine.errors import EngineCoreGoneError

# The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its
# thread pool, a thread hop per request that showed in the profile of the 64-client load.
# And there is one per route, not two: solving each FastAPI dependency costs about as much
# Python as validating the body (docs/benchmarks.md, "per-request Python work").


async def require_serving(request: Request) -> None:
    """401/403 as `check_api_key` says, then 503 while the model loads or the server drains."""
    check_api_key(request)
    check_serving(request)


def engine_of(request: Request) -> EmbeddingEngine:
    """The running engine (after `require_serving` passed)."""
    return request.app.state.engine


def check_serving(request: Request) -> None:
    """503 while loading or draining, or while the engine core does not answer."""
    health = request.app.state.lifecycle.health()
    if health == "ok":
        return
    if health == "draining":
        raise ApiError(
            503,
            "server is shutting down; retry on another replica",
            code="shutting_down",
            headers={"Retry-After": "1"},
        )
    if health == "unavailable":
        raise EngineCoreGoneError(request.app.state.engine.core.unavailable_message())
    raise ApiError(503, "model is not loaded yet; retry shortly", headers={"Retry-After": "1"})


def key_matches(presented: bytes, keys: list[bytes]) -> bool:
    """Constant-time comparison against every configured key (no early exit)."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched


async def require_api_key(request: Request) -> None:
    """Route dependency form of `check_api_key`."""
    check_api_key(request)


def check_api_key(request: Request) -> None:
    """401 without `Authorization: Bearer <key>`, 403 with a wrong key. Keys never logged."""
    keys: list[bytes] = request.app.state.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not key_matches(token.strip().encode(), keys):
        raise ApiError(403, "invalid API key", code="invalid_api_key")
