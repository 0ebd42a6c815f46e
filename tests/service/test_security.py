"""API keys, CORS, and what requests can never choose."""

from __future__ import annotations

import logging

from service.api.deps import key_matches
from service.config import Settings
from tests.service.conftest import running


def test_key_matching_checks_every_key():
    assert key_matches(b"b", [b"a", b"b"])
    assert not key_matches(b"c", [b"a", b"b"])
    assert not key_matches(b"", [b"a"])


def test_keys_are_never_logged(cache_dir, caplog):
    secret = "s3cr3t-key-value"
    with caplog.at_level(logging.DEBUG):
        settings = Settings(_env_file=None, cache_dir=cache_dir, api_key=secret)
        with running(settings) as client:
            client.post("/embed", json={"inputs": "x"}, headers={"Authorization": "Bearer bad"})
            client.post(
                "/embed", json={"inputs": "x"}, headers={"Authorization": f"Bearer {secret}"}
            )
    assert secret not in caplog.text
    assert secret not in repr(settings) and secret not in str(settings.model_dump())


def test_cors_is_off_by_default(client):
    preflight = client.options(
        "/embed",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_configured_origins(cache_dir):
    settings = Settings(_env_file=None, cache_dir=cache_dir, cors_origins=["https://app.example"])
    with running(settings) as client:
        ok = client.options(
            "/embed",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        other = client.options(
            "/embed",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert "access-control-allow-origin" not in other.headers


def test_request_cannot_choose_the_model(client):
    """`model` in /v1/embeddings is echoed as the served name; it never loads anything."""
    response = client.post("/v1/embeddings", json={"input": "x", "model": "/etc/passwd"})
    assert response.status_code == 200
    assert response.json()["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    unknown = client.post("/embed", json={"inputs": "x", "model": "/etc/passwd"})
    assert unknown.status_code == 422  # not a field of /embed
