"""Contract tests for /api/v1: shapes, status codes, problem details, caching and CORS headers,
the privacy of signers, and signing with the sign form's rules and service."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from campaign.api.cursors import encode_cursor
from campaign.extensions import db
from campaign.models import OutboundEmail, Petition, Signature, SignatureStatus
from campaign.models.base import utcnow
from campaign.services.privacy import cipher
from campaign.web.api import RATE_LIMIT_SCOPES
from tests.api.conftest import SIGN_URL, api_sign, signer
from tests.support import confirm, confirm_path, deliver_due, text_of

PROBLEM = "application/problem+json"


def _nothing_written(app: Any) -> bool:
    with app.app_context():
        return db.session.query(Signature).count() == 0 and db.session.query(OutboundEmail).count() == 0


def _assert_problem(response: Any, status: int, type_suffix: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == PROBLEM
    data = response.get_json(force=True)
    assert {"type", "title", "status", "detail"} <= set(data)
    assert data["status"] == status and data["title"] and isinstance(data["detail"], str)
    if type_suffix is None:
        assert data["type"] == "about:blank"
    else:
        assert data["type"] == f"http://campaign.test/api/v1/docs#problem-{type_suffix}"
    return dict(data)


# --- the document and the docs page ---------------------------------------------------------------

def test_every_api_route_is_in_the_openapi_document_and_nothing_else(app, client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": "http://campaign.test/api/v1"}]
    documented = {(method.upper(), "/api/v1" + path.replace("{", "<").replace("}", ">"))
                  for path, item in document["paths"].items() for method in item}
    served = {(method, re.sub(r"<\w+:(\w+)>", r"<\1>", rule.rule))
              for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/")
              for method in rule.methods - {"HEAD", "OPTIONS"}
              if rule.endpoint not in {"api.openapi", "api.docs"}}
    assert documented == served


def test_every_documented_problem_type_resolves_to_the_docs_page(client):
    document = client.get("/api/v1/openapi.json").get_json()
    page = client.get("/api/v1/docs").get_data(as_text=True)
    for name, problem in document["x-problem-types"].items():
        assert problem["type"].endswith(f"/api/v1/docs#problem-{name}")
        assert f'id="problem-{name}"' in page


def test_docs_page_is_rendered_from_the_document_without_inline_script_or_style(client):
    response = client.get("/api/v1/docs")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    for operation_id in ("listPetitions", "getPetition", "getPetitionCount", "getPetitionTargets",
                         "signPetition"):
        assert f'id="{operation_id}"' in html
    assert "curl -s -X POST http://campaign.test/api/v1/petitions/g20-chechnya/signatures" in html
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert "cdn" not in html.lower() and "swagger-ui" not in html.lower()
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_every_api_view_has_a_rate_limit_scope(app):
    views = {rule.endpoint for rule in app.url_map.iter_rules()
             if rule.endpoint.startswith("api.") and rule.endpoint not in {"api.openapi", "api.docs"}}
    assert views == set(RATE_LIMIT_SCOPES)
    assert RATE_LIMIT_SCOPES["api.sign"] == "sign"


# --- reads ----------------------------------------------------------------------------------------

def test_petition_keeps_its_fields_adds_osdi_ones_and_never_a_target_email(client, demo):
    response = client.get("/api/v1/petitions/g20-chechnya")
    data = response.get_json()
    assert response.status_code == 200 and response.content_type == "application/json"
    assert data["slug"] == "g20-chechnya" and data["status"] == "published" and data["language"] == "en"
    assert data["goal"] == 100_000 and data["signature_count"] == data["total_signatures"] == 0
    assert data["url"] == data["browser_url"] == "http://campaign.test/petitions/g20-chechnya"
    assert data["identifiers"] == ["campaign:1"] and data["origin_system"] == "campaign"
    assert data["created_date"].endswith("Z") and data["modified_date"].endswith("Z")
    assert data["accepting_signatures"] is True
    assert len(data["targets"]) == 21 == len(data["target"])
    assert all(set(t) == {"name", "title", "country", "country_name"} for t in data["targets"])
    assert all(set(t) == {"name", "title"} for t in data["target"])
    assert data["_links"]["self"]["href"] == "http://campaign.test/api/v1/petitions/g20-chechnya"
    assert data["_links"]["osdi:record_signature_helper"]["href"].endswith("/g20-chechnya/signatures")
    assert "@" not in response.get_data(as_text=True), "an email address in a public answer"


def test_targets_and_count(client, demo):
    targets = client.get("/api/v1/petitions/g20-chechnya/targets").get_json()
    assert targets["slug"] == "g20-chechnya" and len(targets["targets"]) == 21
    assert targets["targets"][0] == {"name": "Javier Milei", "title": "President of Argentina",
                                     "country": "AR", "country_name": "Argentina"}
    count = client.get("/api/v1/petitions/g20-chechnya/count").get_json()
    assert count == {"slug": "g20-chechnya", "signature_count": 0, "total_signatures": 0, "goal": 100_000,
                     "accepting_signatures": True,
                     "_links": {"self": {"href": "http://campaign.test/api/v1/petitions/g20-chechnya/count"},
                                "osdi:petition": {"href": "http://campaign.test/api/v1/petitions/g20-chechnya"}}}


def test_count_follows_confirmations(client, demo, app, mailbox):
    assert api_sign(client).status_code == 202
    assert client.get("/api/v1/petitions/g20-chechnya/count").get_json()["signature_count"] == 0
    deliver_due(app)
    assert confirm(client, confirm_path(mailbox.messages[-1])).status_code == 303
    assert client.get("/api/v1/petitions/g20-chechnya/count").get_json()["signature_count"] == 1
    assert client.get("/api/v1/petitions/g20-chechnya").get_json()["signature_count"] == 1


@pytest.mark.parametrize("path", ["/api/v1/petitions", "/api/v1/petitions/g20-chechnya",
                                  "/api/v1/petitions/g20-chechnya/count",
                                  "/api/v1/petitions/g20-chechnya/targets", "/api/v1/openapi.json"])
def test_public_reads_are_cacheable_and_readable_by_any_site(client, demo, path):
    response = client.get(path, headers={"Origin": "https://partner.example"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert response.headers["Cache-Control"].startswith("public, max-age=")
    etag = response.headers["ETag"]
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.get_data() == b""
    assert "Set-Cookie" not in response.headers


def test_list_paginates_with_cursors_newest_first_and_hides_drafts(client, make_petition):
    for n in range(5):
        make_petition(f"open-{n}")
    make_petition("closed-one", status="closed")
    make_petition("draft-one", status="draft")
    make_petition("review-one", status="in_review")
    seen: list[str] = []
    url = "/api/v1/petitions?limit=3"
    pages = 0
    while url:
        data = client.get(url.replace("http://campaign.test", "")).get_json()
        assert data["per_page"] == 3 and len(data["_embedded"]["osdi:petitions"]) <= 3
        assert [link["href"] for link in data["_links"]["osdi:petitions"]] == \
            [p["_links"]["self"]["href"] for p in data["_embedded"]["osdi:petitions"]]
        seen += [p["slug"] for p in data["_embedded"]["osdi:petitions"]]
        url = data["_links"].get("next", {}).get("href")
        assert (url is None) == (data["next_cursor"] is None)
        pages += 1
        assert pages < 10
    assert seen == ["closed-one", "open-4", "open-3", "open-2", "open-1", "open-0", "g20-chechnya"]
    assert pages == 3
    closed = client.get("/api/v1/petitions?status=closed").get_json()
    assert [p["slug"] for p in closed["_embedded"]["osdi:petitions"]] == ["closed-one"]
    assert closed["_embedded"]["osdi:petitions"][0]["accepting_signatures"] is False
    for hidden in ("draft-one", "review-one"):
        _assert_problem(client.get(f"/api/v1/petitions/{hidden}"), 404)
        _assert_problem(client.get(f"/api/v1/petitions/{hidden}/count"), 404)
    assert "secret-" not in client.get("/api/v1/petitions?limit=100").get_data(as_text=True)


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=abc", "limit"), ("limit=-1", "limit"),
    ("limit=%C2%B2", "limit"), ("limit=99999999999999999999", "limit"), ("status=draft", "status"),
    ("status=", "status"), ("cursor=nope", "cursor"), ("cursor=", "cursor"),
    (f"cursor={encode_cursor('signatures', 5)}", "cursor"), ("cursor=eyJrIjoicGV0aXRpb25zIiwicCI6dHJ1ZX0", "cursor"),
])
def test_bad_query_parameters_are_problem_details_naming_the_parameter(client, demo, query, field):
    data = _assert_problem(client.get(f"/api/v1/petitions?{query}"), 400, "invalid-parameters")
    assert set(data["errors"]) == {field}


def test_unknown_petition_and_unknown_route_are_404_problems(client, demo):
    for path in ("/api/v1/petitions/nope", "/api/v1/petitions/nope/count", "/api/v1/petitions/nope/targets",
                 "/api/v1/nothing-here"):
        _assert_problem(client.get(path), 404)
    _assert_problem(client.post("/api/v1/petitions/nope/signatures", json=signer()), 404)


def test_wrong_method_is_a_405_problem(client, demo):
    # Listing signatures is for organizers' tokens, later: not a public read.
    _assert_problem(client.get(SIGN_URL), 405)
    _assert_problem(client.delete("/api/v1/petitions/g20-chechnya"), 405)


# --- signing --------------------------------------------------------------------------------------

def test_signing_goes_through_the_form_service_and_mails_a_confirmation(client, demo, app, mailbox):
    response = api_sign(client, email="Grace@Example.com", source="partner-api")
    assert response.status_code == 202 and response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Location" not in response.headers and "Set-Cookie" not in response.headers
    body = response.get_json()
    assert body["status"] == "accepted"
    assert body["_links"] == {"osdi:petition": {"href": "http://campaign.test/api/v1/petitions/g20-chechnya"}}
    with app.app_context():
        signature = db.session.query(Signature).one()
        assert signature.status == SignatureStatus.PENDING
        assert signature.source == "partner-api" and signature.country == "GB"
        assert signature.consent_updates is True and signature.comment == "For them."
        assert cipher().decrypt(signature.name_encrypted) == "Ada Lovelace"
    deliver_due(app)
    assert len(mailbox.messages) == 1
    message = mailbox.messages[0]
    assert "grace@example.com" in str(message["To"]).lower()
    assert message["Subject"] == "Please confirm your signature"
    assert "/confirm/" in text_of(message)


# Per-response values that differ between any two requests, whoever signs: a fresh request id,
# and the rate limiter's counters of this client's requests (X-RateLimit-*, Retry-After).
PER_RESPONSE = ("x-request-id", "x-ratelimit-", "retry-after")


def _comparable(response: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted((k, v) for k, v in response.headers.items() if not k.lower().startswith(PER_RESPONSE))
    return response.status_code, response.get_data(), headers


def test_the_answer_is_byte_identical_for_new_pending_confirmed_and_capped_addresses(client, demo, app,
                                                                                     mailbox):
    new = api_sign(client, email="new@example.com")
    pending_again = api_sign(client, email="new@example.com")
    deliver_due(app)
    confirm(client, confirm_path(mailbox.messages[0]))
    confirmed_again = api_sign(client, email="new@example.com")
    for _ in range(6):  # past EMAILS_PER_ADDRESS_PER_PETITION
        capped = api_sign(client, email="new@example.com")
    other = api_sign(client, email="someone.else@example.com", name="Someone Else")
    reference = _comparable(new)
    # Shown to fail once against a variant that added a header for repeat signers only.
    for response in (pending_again, confirmed_again, capped, other):
        assert _comparable(response) == reference
    with app.app_context():
        assert db.session.query(Signature).count() == 2
        # The cap holds for the API as for the form: 5 emails for one address and petition.
        sent_to_first = db.session.query(OutboundEmail).filter(
            OutboundEmail.recipient_index == cipher().blind_index("new@example.com")).count()
        assert sent_to_first == 5


def test_no_signer_data_in_any_public_answer_after_signing(client, demo, app, mailbox):
    api_sign(client, name="Zelda Quixote-Unique", email="zelda.unique@example.com", postcode="ZZ9 9ZZ",
             comment="A comment only I wrote")
    deliver_due(app)
    confirm(client, confirm_path(mailbox.messages[0]))
    secrets = ("Zelda", "Quixote", "zelda.unique", "ZZ9", "only I wrote")
    for path in ("/api/v1/petitions", "/api/v1/petitions/g20-chechnya", "/api/v1/petitions/g20-chechnya/count",
                 "/api/v1/petitions/g20-chechnya/targets", "/api/v1/openapi.json", "/api/v1/docs",
                 "/embed/g20-chechnya"):
        text = client.get(path).get_data(as_text=True)
        assert not [s for s in secrets if s in text], path


def test_mass_assignment_is_ignored(client, demo, app):
    response = client.post(SIGN_URL, json=signer(id=999, status="confirmed", petition_id=7,
                                                 signature_count=10**6, email_index="x", is_admin=True))
    assert response.status_code == 202
    with app.app_context():
        signature = db.session.query(Signature).one()
        assert signature.id != 999 and signature.status == SignatureStatus.PENDING
        assert signature.petition_id == 1
    assert client.get("/api/v1/petitions/g20-chechnya/count").get_json()["signature_count"] == 0


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"name": ""}, "name", "Enter your full name."),
    ({"name": "   "}, "name", "Enter your full name."),
    ({"name": None}, "name", "Enter your full name."),
    ({"name": "x" * 201}, "name", "Use at most 200 characters."),
    ({"name": "Ada\x00Lovelace"}, "name", "Remove the control characters"),
    ({"name": "Ada\nLovelace"}, "name", "Remove the control characters"),
    ({"name": 42}, "name", "Use a string."),
    ({"name": ["Ada"]}, "name", "Use a string."),
    ({"name": "\ud800"}, "name", "Use valid Unicode text."),
    ({"email": ""}, "email", "Enter your email address."),
    ({"email": "not-an-email"}, "email", "Enter a valid email address"),
    ({"email": "a@b"}, "email", "Enter a valid email address"),
    ({"email": "a" * 250 + "@example.com"}, "email", "That email address is too long."),
    ({"country": ""}, "country", "Choose your country."),
    ({"country": "XX"}, "country", "Choose a country from the list."),
    ({"country": "EU"}, "country", "Choose a country from the list."),
    ({"country": "de"}, "country", "Choose a country from the list."),
    ({"postcode": "1" * 21}, "postcode", "Use at most 20 characters."),
    ({"comment": "c" * 1001}, "comment", "Use at most 1,000 characters."),
    ({"comment": "bell\x07"}, "comment", "Remove the control characters"),
    ({"consent_updates": "yes"}, "consent_updates", "Use true or false."),
    ({"consent_updates": 1}, "consent_updates", "Use true or false."),
    ({"source": {"a": 1}}, "source", "Use a string."),
])
def test_each_invalid_field_is_named_in_a_422_and_nothing_is_written(client, demo, app, fields, field,
                                                                    message):
    data = _assert_problem(client.post(SIGN_URL, json=signer(**fields)), 422, "validation-error")
    assert set(data["errors"]) == {field}
    assert data["errors"][field].startswith(message)
    assert _nothing_written(app)


def test_every_invalid_field_is_reported_at_once(client, demo, app):
    data = _assert_problem(client.post(SIGN_URL, json={"email": "broken", "country": "XX", "postcode": 5}),
                           422, "validation-error")
    assert set(data["errors"]) == {"name", "email", "country", "postcode"}
    assert _nothing_written(app)


def test_a_missing_body_member_is_a_validation_error(client, demo, app):
    data = _assert_problem(client.post(SIGN_URL, json={}), 422, "validation-error")
    assert set(data["errors"]) == {"name", "email", "country"}


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"null", b'"text"', b"42", b"\xff\xfe{}", b"{\"a\": }",
                                  b"[" * 100_000 + b"]" * 100_000, b"\xef\xbb\xbf{}"])
def test_a_body_that_is_not_a_json_object_is_a_400(client, demo, app, body):
    response = client.post(SIGN_URL, data=body, content_type="application/json")
    _assert_problem(response, 400, "invalid-body")
    assert _nothing_written(app)


@pytest.mark.parametrize("content_type", [
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/jsonp", "application/problem+json", "text/json",
])
def test_only_application_json_is_accepted_so_cross_site_forms_cannot_sign(client, demo, app, content_type):
    # What a form or a no-cors fetch on another site can send without a preflight: refused, unread.
    # Shown to fail once against a variant that also accepted text/plain.
    body = json.dumps(signer()).encode()
    headers = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    if content_type is None:
        response = client.post(SIGN_URL, data=body, headers=headers)
    else:
        response = client.post(SIGN_URL, data=body, headers={**headers, "Content-Type": content_type})
    _assert_problem(response, 415, "unsupported-media-type")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert _nothing_written(app)


def test_json_with_a_charset_parameter_is_fine(client, demo):
    response = client.post(SIGN_URL, data=json.dumps(signer()), content_type="application/json; charset=utf-8")
    assert response.status_code == 202


def test_no_cors_preflight_is_ever_allowed_for_signing(client, demo):
    response = client.options(SIGN_URL, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    allowed = [h for h, _value in response.headers.items() if h.lower().startswith("access-control-allow")]
    assert allowed == []
    post = api_sign(client)
    assert not [h for h, _value in post.headers.items() if h.lower().startswith("access-control-")]


def test_a_body_over_the_size_limit_is_a_413_problem(client, demo, app):
    response = client.post(SIGN_URL, data=b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}',
                           content_type="application/json")
    _assert_problem(response, 413)
    assert _nothing_written(app)


def test_closed_petition_is_410_and_writes_nothing(client, demo, app):
    with app.app_context():
        db.session.get(Petition, 1).close()
        db.session.commit()
    _assert_problem(api_sign(client), 410, "petition-closed")
    assert client.get("/api/v1/petitions/g20-chechnya").get_json()["accepting_signatures"] is False
    assert _nothing_written(app)


def test_petition_past_its_closing_date_is_410(client, demo, app):
    from datetime import timedelta

    with app.app_context():
        db.session.get(Petition, 1).closes_at = utcnow() - timedelta(minutes=1)
        db.session.commit()
    _assert_problem(api_sign(client), 410, "petition-closed")
    assert _nothing_written(app)


def test_the_api_sets_and_reads_no_cookies(client, demo):
    client.set_cookie("session", "forged", domain="localhost")
    for response in (client.get("/api/v1/petitions"), api_sign(client),
                     client.post(SIGN_URL, json={"name": 1})):
        assert "Set-Cookie" not in response.headers


def test_paused_signing_is_a_503_problem_with_the_admins_message(client, demo, app):
    from campaign.services import killswitch

    with app.app_context():
        killswitch.set_switch(db.session, None, killswitch.petition_key(1), True, "Back after the audit.")
        db.session.commit()
    response = api_sign(client)
    data = _assert_problem(response, 503, "signing-paused")
    # Retry-After: 300 from the view, unless the rate limiter (RATELIMIT_HEADERS) writes its own.
    assert data["detail"] == "Back after the audit." and "Retry-After" in response.headers
    assert _nothing_written(app)
    assert client.get("/api/v1/petitions/g20-chechnya/count").status_code == 200


@pytest.mark.integration
def test_control_characters_in_a_source_code_are_removed_before_postgresql_sees_them(make_pg_app):
    # PostgreSQL refuses NUL in text; the form's hidden source field is cleaned, not refused.
    # Shown to fail once (DataError, a 500) with the field's _source_code filter removed.
    from campaign.services.demo import seed_demo

    app = make_pg_app()
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    assert api_sign(client, source="news\x00letter\x07").status_code == 202
    assert api_sign(client, email="b@example.com", comment="ok", source="\x00" * 100).status_code == 202
    with app.app_context():
        sources = sorted(s.source for s in db.session.query(Signature).all())
    assert sources == ["", "newsletter"]
