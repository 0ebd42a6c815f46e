"""Bad input gets a 4xx with a message naming what was wrong and the limit; never a 500."""

from __future__ import annotations

import pytest

from service.config import Settings
from tests.service.conftest import running

LONG = "word " * 400  # > 256 tokens


@pytest.fixture(scope="module")
def strict_client(cache_dir):
    settings = Settings(
        _env_file=None,
        cache_dir=cache_dir,
        max_client_batch_size=4,
        max_input_chars=5000,
        max_body_bytes=64 * 1024,
    )
    with running(settings) as client:
        yield client


CASES = [
    # (route, body or raw bytes, status, words the message must contain)
    ("/embed", b"{not json", 400, ["not valid JSON"]),
    ("/embed", {"inputs": 5}, 422, ["inputs"]),
    ("/embed", {"inputs": []}, 422, ["empty list"]),
    ("/embed", {"inputs": ""}, 422, ["empty"]),
    ("/embed", {"inputs": ["ok", "   "]}, 422, ["item 1", "whitespace"]),
    ("/embed", {"inputs": ["a"] * 5}, 413, ["5 inputs", "limit of 4"]),
    ("/embed", {"inputs": LONG, "truncate": False}, 413, ["tokens", "maximum of 256"]),
    ("/embed", {"inputs": "x", "dimensions": 0}, 422, ["dimensions"]),
    ("/embed", {"inputs": "x", "dimensions": 385}, 422, ["between 1 and 384"]),
    ("/embed", {"inputs": "x", "normalise": True}, 422, ["normalise"]),
    ("/embed", {"inputs": "x", "truncate": "yes"}, 422, ["truncate", "boolean"]),
    ("/embed", {"inputs": "x", "normalize": 1}, 422, ["normalize", "boolean"]),
    ("/tokenize", {"inputs": "x", "add_special_tokens": "false"}, 422, ["add_special_tokens"]),
    ("/embed", {"inputs": "x" * 5001}, 413, ["5001 characters", "limit of 5000"]),
    ("/similarity", {"inputs": {"source_sentence": "a", "sentences": []}}, 422, ["sentences"]),
    ("/similarity", {"inputs": {"source_sentence": " ", "sentences": ["b"]}}, 422, ["source"]),
    ("/v1/embeddings", {"input": [1, 2, 3]}, 400, ["token-id arrays"]),
    ("/v1/embeddings", {"input": [[1, 2]]}, 400, ["token-id arrays"]),
    ("/v1/embeddings", {"input": "x", "encoding_format": "base65"}, 400, ["encoding_format"]),
    ("/v1/embeddings", {"input": "x", "dimensions": 10_000}, 400, ["between 1 and 384"]),
    ("/v1/embeddings", {"input": []}, 400, ["empty list"]),
    ("/v1/embeddings", {"model": "m"}, 400, ["input"]),
    ("/v1/embeddings", {"input": ["a"] * 5}, 413, ["limit of 4"]),
]


@pytest.mark.parametrize(("route", "body", "status", "words"), CASES)
def test_bad_input(strict_client, route, body, status, words):
    if isinstance(body, bytes):
        response = strict_client.post(
            route, content=body, headers={"content-type": "application/json"}
        )
    else:
        response = strict_client.post(route, json=body)
    assert response.status_code == status, response.text
    payload = response.json()
    message = payload["error"]["message"] if route.startswith("/v1") else payload["error"]
    for word in words:
        assert word in message, message
    if route.startswith("/v1"):
        assert payload["error"]["type"] == "invalid_request_error"
    else:
        assert payload["error_type"] == "Validation"


def test_wrong_content_type_is_415(strict_client):
    response = strict_client.post(
        "/embed", content=b'{"inputs":"x"}', headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415 and "application/json" in response.json()["error"]


def test_body_over_limit_is_413_before_parsing(strict_client):
    response = strict_client.post(
        "/embed",
        content=b'{"inputs": "' + b"a" * 70_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413 and "65536" in response.json()["error"]


def test_deeply_nested_json_is_400(strict_client):
    body = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = strict_client.post(
        "/embed", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def test_input_exactly_at_max_length_is_accepted(strict_client, st_model):
    tokenizer = st_model.tokenizer
    ids = tokenizer("word " * 400, add_special_tokens=False)["input_ids"][:254]
    text = tokenizer.decode(ids)
    assert len(tokenizer(text)["input_ids"]) == 256
    ok = strict_client.post("/embed", json={"inputs": text, "truncate": False})
    over = strict_client.post("/embed", json={"inputs": text + " word", "truncate": False})
    assert ok.status_code == 200
    assert over.status_code == 413 and "257 tokens" in over.json()["error"]


def test_server_still_healthy_after_bad_input(strict_client):
    assert strict_client.get("/health").status_code == 200
    assert strict_client.post("/embed", json={"inputs": "fine"}).status_code == 200


RAW_CASES = [
    # (raw body, status, words in the message)
    # a Latin-1 byte, not UTF-8: the message names the byte and its offset
    (
        b'{"inputs": "caf\xe9 au lait"}',
        400,
        ["not valid JSON", "not UTF-8", "0xe9", "byte offset 15", "invalid continuation byte"],
    ),
    (b'{"inputs": "lone \\ud800 surrogate"}', 400, ["not valid JSON"]),
    (b'{"inputs": ' + b'"a", ' * 3 + b"}", 400, ["not valid JSON"]),
]


@pytest.mark.parametrize(("body", "status", "words"), RAW_CASES)
def test_undecodable_bodies(strict_client, body, status, words):
    response = strict_client.post(
        "/embed", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    for word in words:
        assert word in response.json()["error"]


@pytest.mark.parametrize("text", [
    "nul \u0000 byte inside",
    "🙂🚀🎉👍🏽",  # emoji only
    "مرحبا بالعالم، هذا نص من اليمين إلى اليسار",  # right-to-left
    "שלום עולם",
    "∑∫√∞ ≠ ≈ ÷ × ← → ↔ ⇒",
    "ﷺ ﷽ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕳𝖊𝖆𝖛𝖞 ẞ ǅ ﬁ",
    "\u200b\u200d zero-width joiners \ufeff",
])  # fmt: skip
def test_unusual_but_valid_text_is_embedded(strict_client, text):
    for route, body in (("/embed", {"inputs": text}), ("/v1/embeddings", {"input": text})):
        response = strict_client.post(route, json=body)
        assert response.status_code == 200, response.text


def test_ten_megabyte_body_is_413_with_default_limit(client):
    body = b'{"inputs": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    response = client.post("/embed", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "max_body_bytes" in response.json()["error"]


def test_chunked_body_over_limit_is_413(strict_client):
    def chunks():
        for _ in range(100):
            yield b"a" * 1024

    response = strict_client.post(
        "/embed", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


INVISIBLE_ONLY = [
    "\u0000",  # NUL
    "\u0000\u0000 \u0000",
    "\ufeff",  # BOM
    "\u200b\u200c\u200d",  # zero-width space, non-joiner, joiner
    "\u0001\u0007\u001b\u007f",  # control characters
    "\u2060\u00ad \t\n",  # word joiner, soft hyphen, whitespace
    "\u2028\u2029",  # line and paragraph separators
]


@pytest.mark.parametrize("text", INVISIBLE_ONLY)
def test_text_of_only_invisible_characters_is_empty_on_every_route(strict_client, text):
    """Answered as whitespace-only text is (422; 400 under /v1/), never embedded."""
    bodies = [
        ("/embed", {"inputs": text}),
        ("/embed", {"inputs": ["fine", text]}),
        ("/", {"inputs": text}),
        ("/embed_all", {"inputs": text}),
        ("/tokenize", {"inputs": text}),
        ("/similarity", {"inputs": {"source_sentence": text, "sentences": ["b"]}}),
        ("/similarity", {"inputs": {"source_sentence": "a", "sentences": [text]}}),
        ("/v1/embeddings", {"input": text}),
        ("/v1/embeddings", {"input": ["fine", text]}),
    ]
    for route, body in bodies:
        response = strict_client.post(route, json=body)
        whitespace = strict_client.post(route, json=_replace(body, text, "   "))
        assert response.status_code == whitespace.status_code, (route, response.text)
        assert response.status_code == (400 if route.startswith("/v1/") else 422)
        assert "whitespace" in response.text, response.text


def _replace(body, old: str, new: str):
    if isinstance(body, dict):
        return {k: _replace(v, old, new) for k, v in body.items()}
    if isinstance(body, list):
        return [_replace(v, old, new) for v in body]
    return new if body == old else body
