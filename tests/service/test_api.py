"""Every endpoint's happy path, in TEI's and OpenAI's shapes."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from service.config import Settings
from tests.service.conftest import metric_value, running


def test_embed_single_string_and_list(client, st_model):
    one = client.post("/embed", json={"inputs": "hello world"})
    assert one.status_code == 200
    assert np.asarray(one.json()).shape == (1, 384)
    many = client.post("/embed", json={"inputs": ["hello world", "bonjour"]}).json()
    assert np.allclose(many[0], one.json()[0], atol=1e-6)
    assert np.allclose(many[1], st_model.encode("bonjour"), atol=1e-4)


def test_embed_normalize_false_returns_raw_pooled_vector(client):
    raw = np.asarray(client.post("/embed", json={"inputs": "hello", "normalize": False}).json())
    unit = np.asarray(client.post("/embed", json={"inputs": "hello"}).json())
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3
    assert np.allclose(raw / np.linalg.norm(raw), unit, atol=1e-5)


def test_embed_dimensions_truncates_then_renormalises(client):
    full = np.asarray(client.post("/embed", json={"inputs": "hello"}).json())[0]
    cut = np.asarray(client.post("/embed", json={"inputs": "hello", "dimensions": 64}).json())[0]
    assert cut.shape == (64,)
    assert np.isclose(np.linalg.norm(cut), 1.0, atol=1e-5)
    assert np.allclose(cut, full[:64] / np.linalg.norm(full[:64]), atol=1e-5)


def test_embed_truncate_left_differs_from_right(client):
    text = "alpha " * 300 + "omega"
    right = client.post("/embed", json={"inputs": text}).json()
    left = client.post("/embed", json={"inputs": text, "truncation_direction": "Left"}).json()
    assert not np.allclose(right, left)


def test_similarity_is_cosine_of_embeddings(client):
    body = {"inputs": {"source_sentence": "A dog runs.", "sentences": ["A puppy runs.", "Taxes."]}}
    scores = client.post("/similarity", json=body).json()
    vecs = np.asarray(
        client.post("/embed", json={"inputs": ["A dog runs.", "A puppy runs.", "Taxes."]}).json()
    )
    assert len(scores) == 2 and scores[0] > scores[1]
    assert np.allclose(scores, vecs[1:] @ vecs[0], atol=1e-5)


def test_openai_float_and_base64_agree_and_count_tokens(client, st_model):
    texts = ["hello world", "Der Hund spielt im Garten."]
    floats = client.post("/v1/embeddings", json={"input": texts, "model": "anything"}).json()
    assert (
        floats["object"] == "list" and floats["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    )
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in floats["data"])
    b64 = client.post("/v1/embeddings", json={"input": texts, "encoding_format": "base64"}).json()
    for f, b in zip(floats["data"], b64["data"]):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert np.allclose(decoded, f["embedding"], atol=1e-6)
    expected_tokens = sum(len(ids) for ids in st_model.tokenizer(texts)["input_ids"])
    assert floats["usage"] == {"prompt_tokens": expected_tokens, "total_tokens": expected_tokens}


def test_openai_dimensions(client):
    out = client.post("/v1/embeddings", json={"input": "hi", "dimensions": 32}).json()
    vec = np.asarray(out["data"][0]["embedding"])
    assert vec.shape == (32,) and np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)


def test_health_info_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert info["dimension"] == 384 and info["max_input_length"] == 256
    assert info["backend"] == "onnx" and info["provider"] == "CPUExecutionProvider"
    assert info["max_client_batch_size"] == 2048 and info["max_batch_tokens"] == 16384
    assert client.get("/docs").status_code == 200
    assert "/v1/embeddings" in client.get("/openapi.json").json()["paths"]


def test_metrics_move_after_traffic(client):
    before = client.get("/metrics").text
    client.post("/embed", json={"inputs": ["one", "two", "three"]})
    client.post("/embed", json={"inputs": []})
    after = client.get("/metrics").text
    ok = {"route": "/embed", "status": "200"}
    assert (
        metric_value(after, "embed_requests_total", ok)
        == metric_value(before, "embed_requests_total", ok) + 1
    )
    assert metric_value(after, "embed_requests_total", {"route": "/embed", "status": "422"}) >= 1
    assert metric_value(after, "embed_input_tokens_total") > metric_value(
        before, "embed_input_tokens_total"
    )
    assert metric_value(after, "embed_batch_size_count") > metric_value(
        before, "embed_batch_size_count"
    )
    for name in (
        "embed_queue_depth",
        "embed_batch_tokens_bucket",
        "embed_inference_duration_seconds_bucket",
        "embed_request_duration_seconds_bucket",
        "embed_model_info",
    ):
        assert name in after


def test_prompt_name_prepends_the_models_prompt(bundled_model, tmp_path, cache_dir, st_model):
    folder = tmp_path / "prompted"
    shutil.copytree(bundled_model, folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "query: ", "passage": "passage: "}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    with running(Settings(_env_file=None, cache_dir=cache_dir, model=str(folder))) as client:
        got = client.post("/embed", json={"inputs": "where is it", "prompt_name": "query"}).json()
        bad = client.post("/embed", json={"inputs": "x", "prompt_name": "nope"})
    assert np.allclose(got[0], st_model.encode("query: where is it"), atol=1e-4)
    assert bad.status_code == 422 and "query" in bad.json()["error"]


def test_default_prompt_setting(bundled_model, tmp_path, cache_dir, st_model):
    folder = tmp_path / "prompted"
    shutil.copytree(bundled_model, folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "query: "}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    settings = Settings(
        _env_file=None, cache_dir=cache_dir, model=str(folder), default_prompt_name="query"
    )
    with running(settings) as client:
        got = client.post("/embed", json={"inputs": "where is it"}).json()
    assert np.allclose(got[0], st_model.encode("query: where is it"), atol=1e-4)


@pytest.mark.parametrize("route", ["/embed", "/v1/embeddings", "/similarity"])
def test_api_key_required_when_configured(route, cache_dir):
    settings = Settings(_env_file=None, cache_dir=cache_dir, api_key="k1,k2")
    body = {
        "/embed": {"inputs": "x"},
        "/v1/embeddings": {"input": "x"},
        "/similarity": {"inputs": {"source_sentence": "x", "sentences": ["y"]}},
    }[route]
    with running(settings) as client:
        missing = client.post(route, json=body)
        wrong = client.post(route, json=body, headers={"Authorization": "Bearer nope"})
        right = client.post(route, json=body, headers={"Authorization": "Bearer k2"})
        assert client.get("/health").status_code == 200
        assert client.get("/metrics").status_code == 200
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert right.status_code == 200
    if route.startswith("/v1"):
        assert missing.json()["error"]["type"] == "authentication_error"


def test_protected_ops_need_the_key(cache_dir):
    settings = Settings(_env_file=None, cache_dir=cache_dir, api_key="k", protect_ops=True)
    with running(settings) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200


def test_left_truncation_keeps_the_prompt(bundled_model, tmp_path, cache_dir, st_model):
    """truncation_direction Left on a model with prompts: the text's start is cut, the
    prompt kept (issue 25: the prompt used to be cut off with the text's start)."""
    folder = tmp_path / "prompted"
    shutil.copytree(bundled_model, folder)
    config = json.loads((folder / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "query: "}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config))
    text = "alpha " * 300 + "omega"  # 301 one-token words, over the 256-token maximum
    body = {"inputs": text, "prompt_name": "query", "truncation_direction": "Left"}
    with running(Settings(_env_file=None, cache_dir=cache_dir, model=str(folder))) as client:
        got = np.asarray(client.post("/embed", json=body).json()[0])
        right = client.post("/embed", json={**body, "truncation_direction": "Right"}).json()[0]
    # [CLS] query : <the last 252 words> [SEP] = 256 tokens
    kept = "query: " + "alpha " * 251 + "omega"
    assert np.allclose(got, st_model.encode(kept), atol=1e-4)
    without_prompt = st_model.encode("alpha " * 253 + "omega")  # what Left gave before
    assert not np.allclose(got, without_prompt, atol=1e-3)
    # Right truncation keeps the prompt as before
    assert np.allclose(right, st_model.encode("query: " + "alpha " * 252), atol=1e-4)


def test_left_truncation_keeps_the_e5_prompt(tmp_path):
    """The same on multilingual-e5's sentencepiece tokenizer (`query: ` -> ▁que ry :)."""
    pytest.importorskip("semantra_multilingual")
    from service.engine.tokenizer import ModelTokenizer
    from training.students.e5_offline import build_tokenizer, default_tokenizer_path

    build_tokenizer(default_tokenizer_path()).save_pretrained(tmp_path)
    tokenizer = ModelTokenizer(tmp_path, 32)
    text = "hello world " * 40 + "the end"
    tokens = tokenizer.tokens(["query: " + text])[0]  # /tokenize's view, with byte offsets
    prompt = [t["id"] for t in tokens if not t["special"] and t["stop"] <= len("query: ")]
    assert len(prompt) == 3  # ▁que ry :
    kept = tokenizer.encode([text], truncate=True, direction="left", prompt="query: ")[0]
    alone = tokenizer.encode(["query: " + text], truncate=True, direction="left")[0]
    assert kept.length == 32 and kept.full_length == alone.full_length
    assert kept.ids[1 : 1 + len(prompt)] == prompt  # the prompt survives
    assert kept.ids[-3:] == alone.ids[-3:]  # the text's end, then </s>
    assert alone.ids[1 : 1 + len(prompt)] != prompt  # cut without the prompt handling
