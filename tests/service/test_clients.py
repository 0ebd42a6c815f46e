"""The clients users really call, unmodified, against a live `python -m service` on
loopback: the openai SDK, huggingface_hub's InferenceClient, LangChain's OpenAIEmbeddings
and its TEI-backed HuggingFaceEndpointEmbeddings. Every vector is checked against
sentence-transformers on the same model, not only the status code."""

from __future__ import annotations

import numpy as np
import pytest

from tests.service.conftest import server_process

TEXTS = ["A man is playing a guitar.", "Der Hund spielt im Garten.", "北京是中国的首都。"]
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def live_url(cache_dir):
    """One server process for the whole module."""
    with server_process(cache_dir) as (_, url):
        yield url


@pytest.fixture(scope="module")
def expected(st_model):
    return st_model.encode(TEXTS)


def assert_same_vectors(got, want) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape
    cosines = (got * want).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert cosines.min() >= MIN_COSINE, cosines


# ----------------------------------------------------------------- openai SDK


@pytest.fixture(scope="module")
def openai_client(live_url):
    from openai import OpenAI

    return OpenAI(base_url=f"{live_url}/v1", api_key="unused", max_retries=0)


def test_openai_sdk_default_is_base64_and_decodes(openai_client, expected):
    raw = openai_client.embeddings.with_raw_response.create(model="m", input=TEXTS)
    assert b'"encoding_format":"base64"' in raw.http_request.read().replace(b" ", b"")
    response = raw.parse()
    assert [d.index for d in response.data] == [0, 1, 2]
    assert_same_vectors([d.embedding for d in response.data], expected)
    assert response.usage.prompt_tokens > 0


def test_openai_sdk_float(openai_client, expected):
    response = openai_client.embeddings.create(model="m", input=TEXTS, encoding_format="float")
    assert_same_vectors([d.embedding for d in response.data], expected)
    assert response.model == "sentence-transformers/all-MiniLM-L6-v2"


def test_openai_sdk_single_string(openai_client, expected):
    response = openai_client.embeddings.create(model="m", input=TEXTS[0])
    assert_same_vectors([response.data[0].embedding], expected[:1])


def test_openai_sdk_dimensions(openai_client, expected):
    response = openai_client.embeddings.create(model="m", input=TEXTS, dimensions=64)
    cut = expected[:, :64] / np.linalg.norm(expected[:, :64], axis=1, keepdims=True)
    assert_same_vectors([d.embedding for d in response.data], cut)


def test_openai_sdk_models_list(openai_client):
    models = list(openai_client.models.list())
    assert [m.id for m in models] == ["sentence-transformers/all-MiniLM-L6-v2"]
    assert models[0].object == "model" and models[0].owned_by
    assert openai_client.models.retrieve(models[0].id).id == models[0].id


def test_openai_sdk_error_is_a_bad_request_naming_input(openai_client):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.embeddings.create(model="m", input=[[101, 7592]])
    assert caught.value.param == "input"
    assert "check_embedding_ctx_length=False" in caught.value.message


# ----------------------------------------------------------------- huggingface_hub


@pytest.fixture
def hub_online(monkeypatch):
    """huggingface_hub refuses every URL, loopback too, while HF_HUB_OFFLINE (or
    TRANSFORMERS_OFFLINE) is set: lift it for this test only."""
    from huggingface_hub import constants
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    yield
    monkeypatch.undo()
    reset_sessions()  # the next session is built offline again


def test_inference_client_feature_extraction(live_url, hub_online, expected):
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=live_url)  # posts to `/`, TEI's alias of /embed
    assert_same_vectors(client.feature_extraction(TEXTS[0]), expected[:1])
    routed = InferenceClient(model=f"{live_url}/embed")
    assert_same_vectors(routed.feature_extraction(TEXTS), expected)


def test_inference_client_sentence_similarity(live_url, hub_online, expected):
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=f"{live_url}/similarity")
    scores = client.sentence_similarity(TEXTS[0], other_sentences=TEXTS)
    want = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(scores, want @ want[0], atol=1e-4)
    assert scores[0] == pytest.approx(1.0, abs=1e-5)


# ----------------------------------------------------------------- LangChain


def test_langchain_openai_embeddings(live_url, expected):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="all-MiniLM-L6-v2",
        base_url=f"{live_url}/v1",
        api_key="unused",
        check_embedding_ctx_length=False,  # send text, not tiktoken ids
        max_retries=0,
    )
    assert_same_vectors(embeddings.embed_documents(TEXTS), expected)
    assert_same_vectors([embeddings.embed_query(TEXTS[1])], expected[1:2])


def test_langchain_openai_embeddings_dimensions(live_url, expected):
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model="all-MiniLM-L6-v2",
        base_url=f"{live_url}/v1",
        api_key="unused",
        check_embedding_ctx_length=False,
        dimensions=128,
        max_retries=0,
    )
    cut = expected[:, :128] / np.linalg.norm(expected[:, :128], axis=1, keepdims=True)
    assert_same_vectors(embeddings.embed_documents(TEXTS), cut)


def test_langchain_huggingface_endpoint_embeddings(live_url, hub_online, expected):
    from langchain_huggingface import HuggingFaceEndpointEmbeddings

    embeddings = HuggingFaceEndpointEmbeddings(model=live_url)
    assert_same_vectors(embeddings.embed_documents(TEXTS), expected)
    assert_same_vectors([embeddings.embed_query(TEXTS[2])], expected[2:3])
