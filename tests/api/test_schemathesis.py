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
from sqlalchemy import select

from campaign.api.openapi import openapi_document
from campaign.extensions import db
from campaign.models import Petition, User
from campaign.services.api_tokens import create_api_token
from campaign.services.demo import DEMO_ORGANIZER_EMAIL, DEMO_PETITION_SLUG, seed_demo
from campaign.services.organizing import PetitionInput, create_petition
from tests.organize.conftest import FAST_HASHING
from tests.support import BASE_URL

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
MAX_EXAMPLES = 30
_DOCUMENT = openapi_document(BASE_URL)
OPERATIONS = [(path, method.upper()) for path, item in _DOCUMENT["paths"].items() for method in item]
# Negative cases need something to break: an operation without parameters or body has none.
RUNS = [(path, method, mode) for path, method in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode == GenerationMode.POSITIVE or _DOCUMENT["paths"][path][method.lower()].get("parameters")
        or "requestBody" in _DOCUMENT["paths"][path][method.lower()]]


@pytest.fixture
def api_schema(make_app: Any) -> Any:
    # Many requests from one client in a few seconds: the rate limit is another test's subject.
    app = make_app(RATELIMIT_API="1000000 per minute", **FAST_HASHING)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        petition = db.session.scalar(select(Petition).where(Petition.slug == DEMO_PETITION_SLUG))
        owner = db.session.scalar(select(User).where(User.email == DEMO_ORGANIZER_EMAIL))
        assert petition is not None and owner is not None
        # The organizer endpoints' cases mostly name the campaign's own petitions (published and
        # draft), so they get past the 404 and reach the real work; the write token may delete drafts.
        drafts = [create_petition(db.session, owner, petition.campaign, PetitionInput(
            title=f"Draft {n}", slug=f"fuzz-draft-{n}", body_markdown="Text.")).id for n in range(3)]
        db.session.flush()
        own_ids = [petition.id, *drafts]
        _token, secret = create_api_token(db.session, owner, petition.campaign, "Fuzzer", ["read", "write"], None)
        db.session.commit()
    loaded = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    loaded.api_token = secret  # type: ignore[attr-defined]

    @loaded.hook
    def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any] | None) -> Any:
        if path_parameters and "slug" in path_parameters:
            return st.sampled_from([{**path_parameters, "slug": DEMO_PETITION_SLUG}] * 3 + [path_parameters])
        if path_parameters and "petition_id" in path_parameters:
            return st.sampled_from([{**path_parameters, "petition_id": pid} for pid in own_ids]
                                   + [path_parameters])
        return st.just(path_parameters)

    return loaded


def test_every_route_of_the_document_is_fuzzed():
    assert len(OPERATIONS) == 14
    assert len(RUNS) == 27  # every operation with something to break is also fuzzed with invalid data


@pytest.mark.parametrize(("path", "method", "mode"), RUNS, ids=[f"{m} {p} {g.value}" for p, m, g in RUNS])
def test_api_conforms_to_its_openapi_document(api_schema, path, method, mode):
    operation = api_schema[path][method]
    seen: list[int] = []
    # Organizer operations run with the campaign's read-and-write token; public ones need none
    # (and ignore it).
    headers = {"Authorization": f"Bearer {api_schema.api_token}"} if path.startswith("/campaign") else {}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call_and_validate(checks=CHECKS, headers=headers)
        seen.append(response.status_code)

    run()
    spec = _DOCUMENT["paths"][path][method.lower()]
    # An operation with nothing to vary (GET /campaign) is one case, however often it is drawn.
    assert len(seen) >= (MAX_EXAMPLES // 2 if spec.get("parameters") or "requestBody" in spec else 1)
    if mode == GenerationMode.POSITIVE:
        # Valid requests do reach the handler's success path.
        assert {200, 201, 202, 204} & set(seen), seen
