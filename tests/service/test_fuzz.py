"""Schemathesis against the service's own OpenAPI schema: no 5xx, every response conforms.

Runs against a real server process; bounded examples per operation keep it well under two
minutes. (Drives operations through Hypothesis directly: schemathesis' pytest plugin does
not support this pytest yet.)"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.conftest import server_process  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip
EXAMPLES = 25


@pytest.fixture(scope="module")
def live_schema(cache_dir):
    with server_process(cache_dir, EMBED_MAX_CLIENT_BATCH_SIZE="64") as (_, url):
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        schema.config.base_url = url
        yield schema, url


def _operations(schema):
    return [result.ok() for result in schema.get_all_operations()]


def test_schema_has_every_route(live_schema):
    schema, _ = live_schema
    paths = {op.path for op in _operations(schema)}
    assert set(PATHS) <= paths


PATHS = ["/embed", "/similarity", "/v1/embeddings", "/health", "/info", "/metrics", "/",
         "/embed_all", "/tokenize", "/decode", "/rerank", "/v1/models"]  # fmt: skip


@pytest.mark.parametrize("path", PATHS)
def test_operation_conforms_and_never_fails(live_schema, path):
    schema, url = live_schema
    operation = next(op for op in _operations(schema) if op.path == path)

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(base_url=url, checks=CHECKS)

    check()
