"""Errors are mapped to HTTP in one place (the app's exception handlers): every route answers
the engine's errors, and any unexpected exception, in its own shape (TEI's or OpenAI's)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.api.errors import to_api_error
from service.app import create_app
from service.config import Settings
from service.engine.errors import (
    BatchFailedError,
    EngineCoreGoneError,
    QueueFullError,
    ShuttingDownError,
    UnknownTokenIdError,
)
from tests.service.conftest import metric_value

EMBEDDING_ROUTES = [
    ("/embed", {"inputs": "x"}),
    ("/", {"inputs": "x"}),
    ("/embed_all", {"inputs": "x"}),
    ("/tokenize", {"inputs": "x"}),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"]}}),
    ("/v1/embeddings", {"input": "x", "model": "m"}),
]
ENGINE_ERRORS = [
    # (exception the engine raises, status, TEI error_type, OpenAI type and code, Retry-After)
    (QueueFullError("busy", 3, "max_queued_inputs"), 429, "Overloaded",
     ("rate_limit_error", "overloaded"), "3"),
    (ShuttingDownError("stopping"), 503, "Unhealthy", ("server_error", "shutting_down"), "1"),
    (BatchFailedError("batch failed"), 500, "Backend", ("server_error", "inference_failed"),
     None),
    (RuntimeError("a bug"), 500, "Backend", ("server_error", "internal_error"), None),
]  # fmt: skip


@pytest.fixture(scope="module")
def app_client(cache_dir):
    """A running app whose engine methods the tests replace; unexpected exceptions are
    answered (and re-raised to the server's log, which this client does not re-raise)."""
    app = create_app(Settings(_env_file=None, cache_dir=cache_dir, max_wait_ms=5))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


@pytest.mark.parametrize(("error", "status", "tei_type", "openai", "retry"), ENGINE_ERRORS)
@pytest.mark.parametrize(("route", "body"), EMBEDDING_ROUTES)
def test_engine_errors_answered_in_the_routes_shape(
    app_client, monkeypatch, route, body, error, status, tei_type, openai, retry
):
    app, client = app_client

    async def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(app.state.engine, "embed", fail)
    monkeypatch.setattr(app.state.engine, "token_strings", fail)
    response = client.post(route, json=body)
    assert response.status_code == status, response.text
    assert response.headers.get("retry-after") == retry
    payload = response.json()
    message = "internal error" if type(error) is RuntimeError else str(error)
    if route.startswith("/v1/"):
        assert set(payload) == {"error"}
        assert (payload["error"]["type"], payload["error"]["code"]) == openai
        assert message in payload["error"]["message"]
    else:
        assert payload == {"error": payload["error"], "error_type": tei_type}
        assert message in payload["error"]


def test_unexpected_error_counts_as_500_in_metrics(app_client, monkeypatch):
    app, client = app_client

    async def fail(*args, **kwargs):
        raise KeyError("bug")

    monkeypatch.setattr(app.state.engine, "embed", fail)
    labels = {"route": "/embed", "status": "500"}
    before = metric_value(client.get("/metrics").text, "embed_requests_total", labels)
    assert client.post("/embed", json={"inputs": "x"}).status_code == 500
    after = metric_value(client.get("/metrics").text, "embed_requests_total", labels)
    assert after == before + 1


def test_info_before_the_model_loaded_is_503_in_teis_shape(cache_dir):
    client = TestClient(create_app(Settings(_env_file=None, cache_dir=cache_dir)))  # no lifespan
    response = client.get("/info")
    assert response.status_code == 503
    assert response.json() == {"error": "model is loading", "error_type": "Unhealthy"}


def test_engine_errors_map_to_statuses():
    gone = to_api_error(EngineCoreGoneError("front end stopped"))
    assert (gone.status, gone.code, gone.headers) == (
        503,
        "engine_unavailable",
        {"Retry-After": "1"},
    )
    unknown = to_api_error(UnknownTokenIdError(0, 1, 99, 10))
    assert (unknown.status, unknown.param) == (422, "ids")
    assert "99" in unknown.message


def test_key_and_readiness_are_checked_before_the_body(cache_dir):
    """One route dependency checks the API key, then that the model serves, before FastAPI
    validates the body; the 424 routes check only the key."""
    settings = Settings(_env_file=None, cache_dir=cache_dir, api_key="k")
    client = TestClient(create_app(settings))  # no lifespan: the model is not loaded
    bad_body = {"inputs": 5, "input": 5}
    assert client.post("/embed", json=bad_body).status_code == 401
    assert client.post("/v1/embeddings", json=bad_body).json()["error"]["code"] == (
        "missing_api_key"
    )
    assert client.post("/rerank", json={}).status_code == 401
    key = {"Authorization": "Bearer k"}
    loading = client.post("/embed", json=bad_body, headers=key)
    assert loading.status_code == 503 and loading.json()["error_type"] == "Unhealthy"
    assert client.get("/v1/models", headers=key).status_code == 503
    assert client.post("/rerank", json={}, headers=key).status_code == 424


def test_engine_errors_cross_the_ipc_as_the_same_exception():
    """Behind `--workers` the core's error travels as kind and fields (msgpack) and the
    front end re-raises the same class, which maps to the same HTTP answer."""
    import msgpack

    from service.engine.errors import (
        InternalEngineError,
        RequestTimeoutError,
        RequestTooLargeError,
        TextTooLongError,
        UnknownPromptError,
        from_wire,
        to_wire,
    )

    errors = [
        QueueFullError("busy", 3, "max_queued_inputs"),
        RequestTooLargeError("too big", "request_timeout_s"),
        RequestTimeoutError("waited", 4),
        ShuttingDownError("stopping"),
        EngineCoreGoneError("gone"),
        BatchFailedError("batch failed"),
        TextTooLongError(2, 600, 512),
        UnknownTokenIdError(0, 1, 99, 10),
        UnknownPromptError("nope", ["query"]),
    ]
    for error in errors:
        crossed = from_wire(msgpack.unpackb(msgpack.packb(to_wire(error))))
        assert type(crossed) is type(error) and str(crossed) == str(error)
        assert crossed.fields() == error.fields()
        assert vars(to_api_error(crossed)) == vars(to_api_error(error))
    bug = from_wire(to_wire(KeyError("secret data")))
    assert isinstance(bug, InternalEngineError) and str(bug) == "internal error: KeyError"
    assert "secret" not in str(bug)
    assert to_api_error(bug).status == to_api_error(KeyError("x")).status == 500
    assert from_wire({"kind": "from_a_newer_core", "message": "m"}).kind == "internal"


def test_unknown_routes_and_methods_answer_in_the_routes_error_shape(client):
    """The router's own 404 and 405 speak the API's error shape (TEI's, OpenAI's under
    /v1/), name what was wrong, and keep the `Allow` header; not FastAPI's `detail`."""
    wrong_method = client.get("/embed")
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
    assert wrong_method.json() == {
        "error": "GET is not allowed on /embed; allowed: POST",
        "error_type": "Validation",
    }
    openai = client.get("/v1/embeddings").json()["error"]
    assert openai["code"] == "method_not_allowed" and "GET" in openai["message"]
    missing = client.post("/no-such-route", json={})
    assert missing.status_code == 404
    assert missing.json() == {"error": "no route /no-such-route", "error_type": "NotFound"}
