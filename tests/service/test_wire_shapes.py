"""Our OpenAPI schema against the peers' own definitions: the field names of TEI's request
and response structs (tests/service/data/tei_types.json, extracted from TEI's
router/src/http/types.rs and lib.rs at the commit it names) and of OpenAI's API reference
(tests/service/data/openai_shapes.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.api.errors import TEI_TYPES
from service.app import create_app
from service.config import Settings

DATA = Path(__file__).parent / "data"
TEI = json.loads((DATA / "tei_types.json").read_text())
OPENAI = json.loads((DATA / "openai_shapes.json").read_text())

# TEI struct -> our schema component, and the fields we accept beyond TEI's (with why)
TEI_TO_OURS = {
    "EmbedRequest": ("EmbedRequest", set()),
    "EmbedAllRequest": ("EmbedAllRequest", set()),
    # the top-level options this server accepted before it took TEI's `parameters`
    "SimilarityRequest": ("SimilarityRequest", {"truncate", "truncation_direction", "prompt_name"}),
    "SimilarityInput": ("SimilarityInputs", set()),
    "SimilarityParameters": ("SimilarityParameters", set()),
    "TokenizeRequest": ("TokenizeRequest", set()),
    "SimpleToken": ("SimpleToken", set()),
    "DecodeRequest": ("DecodeRequest", set()),
    "OpenAICompatRequest": ("OpenAIEmbeddingRequest", set()),
    "OpenAICompatEmbedding": ("OpenAIEmbedding", set()),
    "OpenAICompatUsage": ("OpenAIUsage", set()),
    "OpenAICompatResponse": ("OpenAIEmbeddingResponse", set()),
    "ErrorResponse": ("TEIError", set()),
}
OPENAI_TO_OURS = {
    "CreateEmbeddingRequest": "OpenAIEmbeddingRequest",
    "CreateEmbeddingResponse": "OpenAIEmbeddingResponse",
    "Embedding": "OpenAIEmbedding",
    "Usage": "OpenAIUsage",
    "ListModelsResponse": "OpenAIModelList",
    "Model": "OpenAIModel",
    "Error": "OpenAIErrorDetail",
}


@pytest.fixture(scope="module")
def openapi() -> dict:
    return create_app(Settings(_env_file=None)).openapi()


def _nullable(prop: dict) -> bool:
    return any(branch.get("type") == "null" for branch in prop.get("anyOf", []))


def test_every_tei_struct_is_mirrored():
    assert set(TEI["structs"]) == set(TEI_TO_OURS)


@pytest.mark.parametrize("tei_name", sorted(TEI_TO_OURS))
def test_field_names_match_tei(openapi, tei_name):
    ours_name, extras = TEI_TO_OURS[tei_name]
    schema = openapi["components"]["schemas"][ours_name]
    assert set(schema["properties"]) == set(TEI["structs"][tei_name]) | extras


@pytest.mark.parametrize(
    "tei_name", sorted(n for n in TEI_TO_OURS if "Request" in n or "Param" in n)
)
def test_tei_optional_fields_are_optional_and_nullable_here(openapi, tei_name):
    ours_name, _ = TEI_TO_OURS[tei_name]
    schema = openapi["components"]["schemas"][ours_name]
    fields = TEI["structs"][tei_name]
    for field, rust_type in fields.items():
        if rust_type.startswith("Option<"):
            assert field not in schema.get("required", []), field
            assert _nullable(schema["properties"][field]), f"{ours_name}.{field} refuses null"
    # nothing we require is optional in TEI
    for field in schema.get("required", []):
        assert not fields[field].startswith("Option<"), field


def test_simple_token_offsets_are_nullable_like_tei(openapi):
    schema = openapi["components"]["schemas"]["SimpleToken"]
    assert _nullable(schema["properties"]["start"]) and _nullable(schema["properties"]["stop"])


def test_error_types_are_teis():
    # TEI answers a bad API key with an empty 401 and has no 403/404 bodies: those are ours
    ours_only = {401, 403, 404}
    teis = {status: kind for status, kind in TEI_TYPES.items() if status not in ours_only}
    assert set(teis.values()) <= set(TEI["ErrorType"]), teis


def test_every_tei_post_route_exists(openapi):
    for path in TEI["routes"]["POST"]:
        assert "post" in openapi["paths"].get(path, {}), path


@pytest.mark.parametrize("openai_name", sorted(OPENAI_TO_OURS))
def test_field_names_match_openai(openapi, openai_name):
    schema = openapi["components"]["schemas"][OPENAI_TO_OURS[openai_name]]
    assert set(schema["properties"]) == set(OPENAI[openai_name])


def test_openai_models_routes_exist(openapi):
    assert "get" in openapi["paths"]["/v1/models"]
    assert "get" in openapi["paths"]["/v1/models/{model}"]
