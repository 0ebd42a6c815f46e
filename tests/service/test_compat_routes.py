"""TEI's and OpenAI's other routes and request forms: null = default on every optional
field, /similarity's `parameters`, /embed_all, /tokenize, /decode, POST /, /v1/models, and
424 for the routes of other model types."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.config import Settings
from tests.service.conftest import async_running, running

TEI = json.loads((Path(__file__).parent / "data" / "tei_types.json").read_text())
SIMPLE_TOKEN_FIELDS = set(TEI["structs"]["SimpleToken"])
LONG = "alpha " * 300 + "omega"


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ----------------------------------------------------------------- null = default


NULLS = [
    ("/embed", {"inputs": "hello", "normalize": None, "truncate": None,
                "truncation_direction": None, "dimensions": None, "prompt_name": None}),
    ("/", {"inputs": "hello", "truncate": None}),
    ("/embed_all", {"inputs": "hello", "truncate": None, "truncation_direction": None,
                    "prompt_name": None}),
    ("/similarity", {"inputs": {"source_sentence": "hello", "sentences": ["hi"]},
                     "parameters": None, "truncate": None}),
    ("/similarity", {"inputs": {"source_sentence": "hello", "sentences": ["hi"]},
                     "parameters": {"truncate": None, "truncation_direction": None,
                                    "prompt_name": None}}),
    ("/tokenize", {"inputs": "hello", "add_special_tokens": None, "prompt_name": None}),
    ("/decode", {"ids": [101, 7592, 102], "skip_special_tokens": None}),
    ("/v1/embeddings", {"input": "hello", "model": None, "encoding_format": None,
                        "dimensions": None, "user": None}),
]  # fmt: skip


@pytest.mark.parametrize(("route", "body"), NULLS)
def test_null_means_default(client, route, body):
    defaults = {k: v for k, v in body.items() if v is not None}
    if route == "/similarity":
        defaults = {"inputs": body["inputs"]}
    with_nulls = client.post(route, json=body)
    assert with_nulls.status_code == 200, with_nulls.text
    assert with_nulls.json() == client.post(route, json=defaults).json()


def test_post_root_is_embed(client):
    body = {"inputs": ["hello", "world"]}
    assert client.post("/", json=body).json() == client.post("/embed", json=body).json()


# ----------------------------------------------------------------- /similarity


def test_similarity_takes_teis_parameters(client):
    inputs = {"source_sentence": LONG, "sentences": [LONG + " tail", "Taxes."]}
    right = client.post("/similarity", json={"inputs": inputs, "parameters": {}}).json()
    left = client.post(
        "/similarity", json={"inputs": inputs, "parameters": {"truncation_direction": "left"}}
    ).json()
    top_level_left = client.post(
        "/similarity", json={"inputs": inputs, "truncation_direction": "Left"}
    ).json()
    assert right == client.post("/similarity", json={"inputs": inputs}).json()
    assert left == top_level_left
    assert not np.allclose(left, right)


def test_similarity_parameters_disagreeing_with_top_level_is_422(client):
    body = {
        "inputs": {"source_sentence": "a", "sentences": ["b"]},
        "truncate": False,
        "parameters": {"truncate": True},
    }
    response = client.post("/similarity", json=body)
    assert response.status_code == 422
    assert "parameters.truncate" in response.json()["error"]


def test_similarity_parameters_unknown_field_is_422(client):
    body = {"inputs": {"source_sentence": "a", "sentences": ["b"]}, "parameters": {"x": 1}}
    response = client.post("/similarity", json=body)
    assert response.status_code == 422 and "parameters.x" in response.json()["error"]


# ----------------------------------------------------------------- /embed_all


def test_embed_all_matches_sentence_transformers_token_embeddings(client, st_model):
    texts = ["A man is playing a guitar.", "Der Hund spielt im Garten.", "北京是中国的首都。"]
    rows = client.post("/embed_all", json={"inputs": texts}).json()
    assert len(rows) == len(texts)
    for text, row in zip(texts, rows):
        expected = st_model.encode(text, output_value="token_embeddings").cpu().numpy()
        assert np.asarray(row).shape == expected.shape  # unpadded: one row per token
        assert cosines(row, expected).min() >= 0.9999


def test_embed_all_rows_are_the_tokens_and_pool_to_embed(client):
    text = "Héllo wörld, how are you?"
    rows = np.asarray(client.post("/embed_all", json={"inputs": text}).json()[0])
    tokens = client.post("/tokenize", json={"inputs": text}).json()[0]
    assert rows.shape == (len(tokens), 384)
    raw = np.asarray(client.post("/embed", json={"inputs": text, "normalize": False}).json()[0])
    assert np.allclose(rows.mean(axis=0), raw, atol=1e-5)  # the model's mean pooling


def test_embed_all_truncates_like_embed(client):
    rows = client.post("/embed_all", json={"inputs": LONG}).json()[0]
    assert len(rows) == 256
    refused = client.post("/embed_all", json={"inputs": LONG, "truncate": False})
    assert refused.status_code == 413 and "maximum of 256" in refused.json()["error"]


async def test_embed_and_embed_all_share_one_batch(cache_dir, recording_backend, st_model):
    settings = Settings(_env_file=None, cache_dir=cache_dir, max_wait_ms=300)
    async with async_running(settings, recording_backend) as client:
        recording_backend.shapes.clear()
        pooled, tokens = await asyncio.gather(
            client.post("/embed", json={"inputs": ["a short one", "hello world"]}),
            client.post("/embed_all", json={"inputs": ["a much longer input sentence here"]}),
        )
    assert len(recording_backend.shapes) == 1  # one forward pass served both requests
    assert recording_backend.shapes[0][0] == 3
    expected = st_model.encode(["a short one", "hello world"])
    assert cosines(pooled.json(), expected).min() >= 0.9999
    token_rows = st_model.encode(
        "a much longer input sentence here", output_value="token_embeddings"
    ).numpy()
    assert cosines(tokens.json()[0], token_rows).min() >= 0.9999


# ----------------------------------------------------------------- /tokenize, /decode


def test_tokenize_matches_the_models_tokenizer_and_teis_shape(client, st_model):
    texts = ["Héllo wörld", "北京 emoji 🙂"]
    tokens = client.post("/tokenize", json={"inputs": texts}).json()
    for text, row in zip(texts, tokens):
        assert [t["id"] for t in row] == st_model.tokenizer(text)["input_ids"]
        assert all(set(t) == SIMPLE_TOKEN_FIELDS for t in row)
        assert row[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None,
                          "stop": None}  # fmt: skip
        data = text.encode()
        for token in row[1:-1]:  # start/stop are UTF-8 byte offsets, as TEI's
            assert not token["special"]
            assert data[token["start"] : token["stop"]].decode() == token["text"]


def test_tokenize_single_string_and_without_special_tokens(client):
    one = client.post("/tokenize", json={"inputs": "hello world"}).json()
    bare = client.post("/tokenize", json={"inputs": "hello world", "add_special_tokens": False})
    assert len(one) == 1 and [t["text"] for t in one[0]] == ["[CLS]", "hello", "world", "[SEP]"]
    assert bare.json() == [one[0][1:-1]]


def test_tokenize_does_not_truncate(client):
    tokens = client.post("/tokenize", json={"inputs": LONG}).json()[0]
    assert len(tokens) == 303


def test_tokenize_applies_prompt_name(bundled_model, tmp_path, cache_dir):
    model = tmp_path / "model"
    shutil.copytree(bundled_model, model)
    config = json.loads((model / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "query: "}
    (model / "config_sentence_transformers.json").write_text(json.dumps(config))
    settings = Settings(_env_file=None, model=str(model), cache_dir=cache_dir, max_wait_ms=5)
    with running(settings) as c:
        tokens = c.post("/tokenize", json={"inputs": "hi", "prompt_name": "query"}).json()[0]
        unknown = c.post("/tokenize", json={"inputs": "hi", "prompt_name": "nope"})
    assert [t["text"] for t in tokens] == ["[CLS]", "query", ":", "hi", "[SEP]"]
    assert tokens[3]["start"] == len("query: ")
    assert unknown.status_code == 422 and "query" in unknown.json()["error"]


def test_decode_round_trips_tokenize(client):
    texts = ["hello world", "der hund spielt im garten."]
    tokens = client.post("/tokenize", json={"inputs": texts}).json()
    ids = [[t["id"] for t in row] for row in tokens]
    assert client.post("/decode", json={"ids": ids}).json() == texts
    assert client.post("/decode", json={"ids": ids[0]}).json() == [texts[0]]
    kept = client.post("/decode", json={"ids": ids[0], "skip_special_tokens": False}).json()
    assert kept == ["[CLS] hello world [SEP]"]


DECODE_ERRORS = [
    ({"ids": []}, 422, "non-empty list"),
    ({"ids": [[101], []]}, 422, "item 1"),
    ({"ids": [-1]}, 422, "non-empty list of token ids"),
    ({"ids": [1.5]}, 422, "token ids"),
    ({"ids": [99_999_999]}, 422, "vocabulary of 30522"),
    ({"ids": [[1]] * 10_000}, 413, "max_client_batch_size"),
]


@pytest.mark.parametrize(("body", "status", "words"), DECODE_ERRORS)
def test_decode_bad_ids(client, body, status, words):
    response = client.post("/decode", json=body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]
    assert response.json()["error_type"] == "Validation"


def test_tokenize_too_many_inputs_is_413(client):
    response = client.post("/tokenize", json={"inputs": ["a"] * 10_000})
    assert response.status_code == 413 and "max_client_batch_size" in response.json()["error"]


# ----------------------------------------------------------------- other model types


@pytest.mark.parametrize(
    ("route", "body", "words"),
    [
        ("/rerank", {"query": "q", "texts": ["a"]}, "not a re-ranker model"),
        ("/predict", {"inputs": "a"}, "not a classifier model"),
        ("/embed_sparse", {"inputs": "a"}, "SPLADE"),
    ],
)
def test_other_model_type_routes_answer_424_in_teis_shape(client, route, body, words):
    response = client.post(route, json=body)
    assert response.status_code == 424  # what TEI answers for an embedding model
    payload = response.json()
    assert set(payload) == set(TEI["structs"]["ErrorResponse"])
    assert payload["error_type"] == "Backend" and words in payload["error"]
    assert "embedding model" in payload["error"]


# ----------------------------------------------------------------- /v1/models


def test_models_list_and_retrieve(client):
    listing = client.get("/v1/models")
    assert listing.status_code == 200
    body = listing.json()
    assert body["object"] == "list" and len(body["data"]) == 1
    model = body["data"][0]
    assert model["id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert model["object"] == "model" and isinstance(model["created"], int)
    assert client.get(f"/v1/models/{model['id']}").json() == model
    missing = client.get("/v1/models/gpt-4")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert model["id"] in missing.json()["error"]["message"]


def test_models_list_uses_served_model_name(cache_dir):
    settings = Settings(_env_file=None, cache_dir=cache_dir, served_model_name="my-embedder")
    with running(settings) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["my-embedder"]


# ----------------------------------------------------------------- OpenAI's 400s


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ([1.5], ["item 0", "number", "list of strings"]),
        (["ok", [1, 2]], ["item 1", "token-id arrays", "check_embedding_ctx_length=False"]),
        ([101, 7592], ["token-id arrays", "send the text itself"]),
        ({"text": "x"}, ["string or a list of strings"]),
        (None, ["string or a list of strings"]),
    ],
)
def test_openai_non_text_input_is_400_naming_input(client, value, words):
    response = client.post("/v1/embeddings", json={"input": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input" and error["type"] == "invalid_request_error"
    for word in words:
        assert word in error["message"], error["message"]
