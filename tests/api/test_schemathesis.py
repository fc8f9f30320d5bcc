"""Schemathesis against the served OpenAPI document, through the WSGI app (no network): a short
run in `make test` (bench/ owns the long one, RELIABILITY item 36). Every response must be a
documented status with a documented content type, headers and body, and never a 5xx.

Each operation is driven by Hypothesis with Schemathesis's strategies (valid and invalid data),
MAX_EXAMPLES cases per operation and mode. Schemathesis's own pytest plugin (`from_fixture`) is
not used: it relies on a pytest internal (`Item._nodeid`) that pytest 9 no longer has.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from campaign.api.openapi import openapi_document
from campaign.extensions import db
from campaign.services.demo import DEMO_PETITION_SLUG, seed_demo
from tests.support import BASE_URL

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
MAX_EXAMPLES = 30
OPERATIONS = [(path, method.upper()) for path, item in openapi_document(BASE_URL)["paths"].items()
              for method in item]


@pytest.fixture
def api_schema(make_app: Any) -> Any:
    # Many requests from one client in a few seconds: the rate limit is another test's subject.
    app = make_app(RATELIMIT_API="1000000 per minute")
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    loaded = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)

    @loaded.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
        # Mostly the demo petition, so most cases get past the 404 and reach the real work.
        if not path_parameters or "slug" not in path_parameters:
            return st.just(path_parameters)
        return st.sampled_from([{**path_parameters, "slug": DEMO_PETITION_SLUG}] * 3 + [path_parameters])

    return loaded


def test_every_route_of_the_document_is_fuzzed():
    assert len(OPERATIONS) == 5


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_api_conforms_to_its_openapi_document(api_schema, path, method, mode):
    operation = api_schema[path][method]
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call_and_validate(checks=CHECKS)
        seen.append(response.status_code)

    run()
    assert len(seen) >= MAX_EXAMPLES // 2
    if mode == GenerationMode.POSITIVE:
        # Valid requests for the demo petition do reach the handler's success path.
        assert {200, 202} & set(seen), seen
