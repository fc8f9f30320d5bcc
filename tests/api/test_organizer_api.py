"""Contract tests of the organizer endpoints (/api/v1/campaign/...): per endpoint and token scope,
revoked, expired and other campaigns' tokens, 401 vs 403 vs 404, filters and cursors, privacy
(emails only with consent, nothing in logs, no cookies, no caching), and petitions CRUD with the
organizer UI's validation and sanitizing."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from campaign.extensions import db
from campaign.models import ApiToken, AuditEvent, Membership, Petition, PetitionStatus, Signature
from campaign.models.base import utcnow
from tests.api.organizer_support import SIGNERS_A, World, body_of, build_world, make_token
from tests.organize.conftest import FAST_HASHING, add_user, login

READS = ["/api/v1/campaign", "/api/v1/campaign/petitions", "/api/v1/campaign/petitions/{a}",
         "/api/v1/campaign/petitions/{a}/signatures", "/api/v1/campaign/petitions/{a}/deliveries",
         "/api/v1/campaign/petitions/{a}/mailings"]


@pytest.fixture
def world(make_app) -> World:
    return build_world(make_app(**FAST_HASHING))


@pytest.fixture
def api(world: World):
    return world.app.test_client()


def _url(template: str, world: World, petition: int | None = None) -> str:
    return template.format(a=petition or world.a_petition)


# --- authentication: 401 ---------------------------------------------------------------------------

def test_no_token_is_401_with_a_bearer_challenge(api, world):
    for path in READS:
        response = api.get(_url(path, world))
        assert response.status_code == 401
        assert response.content_type == "application/problem+json"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="campaign"'
        assert body_of(response)["type"].endswith("#problem-unauthorized")


def test_unknown_or_malformed_tokens_are_401(api, world):
    for header in ["Bearer cmp_" + "A" * 43, "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer",
                   "cmp_" + "A" * 43, "Bearer " + world.tokens["read"][:-1]]:
        response = api.get("/api/v1/campaign/petitions", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_revoked_token_is_401_at_once(api, world):
    assert api.get("/api/v1/campaign", headers=world.headers("read")).status_code == 200
    with world.app.app_context():
        from campaign.models import User
        from campaign.services.api_tokens import revoke_api_token

        token = db.session.scalar(select(ApiToken).where(ApiToken.name == "Read CRM"))
        assert revoke_api_token(db.session, db.session.get(User, world.a_owner), token)
        db.session.commit()
    assert api.get("/api/v1/campaign", headers=world.headers("read")).status_code == 401


def test_expired_token_is_401(api, world):
    secret = make_token(world.app, world.a_campaign, world.a_owner, ["read"], "Short", days=1)
    assert api.get("/api/v1/campaign", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    with world.app.app_context():
        db.session.execute(update(ApiToken).where(ApiToken.name == "Short")
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    assert api.get("/api/v1/campaign", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_token_stops_working_when_its_creator_is_no_longer_an_owner(api, world):
    with world.app.app_context():
        db.session.execute(update(Membership).where(Membership.user_id == world.a_owner)
                           .values(role="organizer"))
        db.session.commit()
    assert api.get("/api/v1/campaign", headers=world.headers("read")).status_code == 401


def test_an_organizer_session_cookie_is_not_an_api_credential(world):
    add_user(world.app, "cookie@example.com", campaign_id=world.a_campaign, role="owner")
    browser = world.app.test_client()
    assert login(browser, "cookie@example.com").status_code == 302
    assert browser.get("/organize/").status_code == 200
    for path in READS:
        assert browser.get(_url(path, world)).status_code == 401
    response = browser.post("/api/v1/campaign/petitions", json={"title": "Forged"})
    assert response.status_code == 401
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Petition).where(
            Petition.title == "Forged")) == 0


def test_token_is_stored_hashed_and_last_use_is_recorded(api, world):
    secret = world.tokens["read"]
    with world.app.app_context():
        token = db.session.scalar(select(ApiToken).where(ApiToken.name == "Read CRM"))
        assert token.last_used_at is None
        assert secret not in {token.token_hash, token.prefix, token.name}
        assert token.prefix == secret[:12]
    assert api.get("/api/v1/campaign", headers=world.headers("read")).status_code == 200
    with world.app.app_context():
        token = db.session.scalar(select(ApiToken).where(ApiToken.name == "Read CRM"))
        assert token.last_used_at is not None


# --- scopes: 403 -----------------------------------------------------------------------------------

def test_a_write_only_token_cannot_read(api, world):
    for path in READS:
        response = api.get(_url(path, world), headers=world.headers("write"))
        assert response.status_code == 403
        assert body_of(response)["type"].endswith("#problem-insufficient-scope")
        assert 'error="insufficient_scope", scope="read"' in response.headers["WWW-Authenticate"]


def test_a_read_only_token_cannot_write(api, world):
    headers = world.headers("read")
    draft = api.post("/api/v1/campaign/petitions", json={"title": "New"}, headers=world.headers("both"))
    assert draft.status_code == 201
    draft_id = body_of(draft)["id"]
    for method, path, body in [("POST", "/api/v1/campaign/petitions", {"title": "Nope"}),
                               ("PATCH", f"/api/v1/campaign/petitions/{draft_id}", {"title": "Nope"}),
                               ("DELETE", f"/api/v1/campaign/petitions/{draft_id}", None)]:
        response = api.open(path, method=method, json=body, headers=headers)
        assert response.status_code == 403, (method, path)
    assert api.get(f"/api/v1/campaign/petitions/{draft_id}", headers=headers).get_json()["title"] == "New"


# --- other campaigns: 404 --------------------------------------------------------------------------

def test_another_campaigns_objects_are_404_like_missing_ones(api, world):
    headers = world.headers("both")
    for petition_id in (world.b_petition, world.b_draft, 999_999):
        for path in READS[2:]:
            response = api.get(_url(path, world, petition_id), headers=headers)
            assert response.status_code == 404, path
            assert response.content_type == "application/problem+json"
        assert api.patch(f"/api/v1/campaign/petitions/{petition_id}", json={"title": "Hijack"},
                         headers=headers).status_code == 404
        assert api.delete(f"/api/v1/campaign/petitions/{petition_id}", headers=headers).status_code == 404
    # The same answer byte for byte: B's ids cannot be told from ids that do not exist.
    assert (api.get(f"/api/v1/campaign/petitions/{world.b_petition}/signatures", headers=headers).data
            == api.get("/api/v1/campaign/petitions/999999/signatures", headers=headers).data)
    listed = body_of(api.get("/api/v1/campaign/petitions?limit=100", headers=headers))
    assert world.b_petition not in {p["id"] for p in listed["_embedded"]["osdi:petitions"]}
    with world.app.app_context():
        titles = set(db.session.scalars(select(Petition.title).where(Petition.campaign_id == world.b_campaign)))
    assert titles == {"Petition B", "Draft B"}


def test_bs_token_sees_only_b(api, world):
    campaign = body_of(api.get("/api/v1/campaign", headers=world.headers("b")))
    assert campaign["name"] == "Campaign B"
    listed = body_of(api.get("/api/v1/campaign/petitions", headers=world.headers("b")))
    assert {p["id"] for p in listed["_embedded"]["osdi:petitions"]} == {world.b_petition, world.b_draft}
    assert api.get(f"/api/v1/campaign/petitions/{world.a_petition}/signatures",
                   headers=world.headers("b")).status_code == 404


# --- signatures ------------------------------------------------------------------------------------

def _signatures(api, world, query: str = "") -> list[dict]:
    response = api.get(f"/api/v1/campaign/petitions/{world.a_petition}/signatures{query}",
                       headers=world.headers("read"))
    assert response.status_code == 200, response.get_json()
    return body_of(response)["_embedded"]["osdi:signatures"]


def test_signatures_carry_names_and_only_consenting_signers_emails(api, world):
    items = _signatures(api, world)
    assert len(items) == len(SIGNERS_A)
    by_name = {item["person"]["name"]: item for item in items}
    for name, email, country, consent, confirmed in SIGNERS_A:
        item = by_name[name]
        addresses = [a["address"] for a in item["person"]["email_addresses"]]
        assert addresses == ([email] if consent else [])
        assert item["country"] == country
        assert item["consent_updates"] is consent
        assert item["status"] == ("confirmed" if confirmed else "pending")
        assert item["comments"] == "For them."
        assert item["identifiers"] == [f"campaign:{item['id']}"]
    # Newest first.
    assert [i["id"] for i in items] == sorted(world.signature_ids, reverse=True)


FILTERS = [
    ("?status=confirmed", {"Zarema Example", "Ayşe Örnek"}),
    ("?status=pending", {"Jean Exemple", "Kim Muster"}),
    ("?country=fr", {"Jean Exemple"}),
    ("?consent_updates=true", {"Zarema Example", "Jean Exemple"}),
    ("?consent_updates=false&status=confirmed", {"Ayşe Örnek"}),
    ("?created_after=2000-01-01&created_before=2999-12-31", {s[0] for s in SIGNERS_A}),
    ("?created_before=2000-01-01", set()),
    ("?created_after=2999-01-01T00:00:00Z", set()),
]


def test_signature_filters(api, world):
    for query, names in FILTERS:
        assert {i["person"]["name"] for i in _signatures(api, world, query)} == names, query


def test_signature_cursor_pagination_visits_each_once(api, world):
    seen: list[int] = []
    url = f"/api/v1/campaign/petitions/{world.a_petition}/signatures?limit=1&status=confirmed"
    pages = 0
    while url:
        page = body_of(api.get(url.replace("http://campaign.test", ""), headers=world.headers("read")))
        seen += [i["id"] for i in page["_embedded"]["osdi:signatures"]]
        url = page["_links"].get("next", {}).get("href")
        pages += 1
        assert pages < 10
    assert len(seen) == 2 == len(set(seen))
    # A cursor is bound to its list: one from another petition's list is refused.
    other = api.get(f"/api/v1/campaign/petitions/{world.a_petition}/deliveries?limit=1",
                    headers=world.headers("read"))
    assert other.status_code == 200


def test_bad_signature_parameters_are_400_problems(api, world):
    for query in ["?status=deleted", "?country=Germany", "?consent_updates=yes", "?created_after=yesterday",
                  "?created_before=2026-11-25T10:00:00", "?limit=0", "?limit=101", "?cursor=bad"]:
        response = api.get(f"/api/v1/campaign/petitions/{world.a_petition}/signatures{query}",
                           headers=world.headers("read"))
        assert response.status_code == 400, query
        assert body_of(response)["type"].endswith("#problem-invalid-parameters")
        assert body_of(response)["errors"]


def test_no_signer_name_or_email_reaches_the_logs(api, world, caplog):
    caplog.set_level(logging.DEBUG)
    _signatures(api, world)
    api.get(f"/api/v1/campaign/petitions/{world.a_petition}/signatures?consent_updates=true",
            headers=world.headers("read"))
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    for name, email, *_ in SIGNERS_A:
        assert name not in logged and email not in logged


def test_organizer_answers_are_private_no_cookies_no_cors(api, world):
    for path in READS:
        response = api.get(_url(path, world), headers={**world.headers("read"), "Origin": "https://evil.example"})
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store"
        assert "Authorization" in response.headers.get("Vary", "")
        assert "Set-Cookie" not in response.headers
        assert not any(h.startswith("Access-Control-") for h, _value in response.headers.items())
    preflight = api.options("/api/v1/campaign/petitions", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


# --- petitions CRUD --------------------------------------------------------------------------------

def test_create_read_update_delete_a_draft(api, world):
    headers = world.headers("both")
    created = api.post("/api/v1/campaign/petitions", headers=headers, json={
        "title": "Free the prisoners", "slug": "free-them", "summary": "Short.",
        "body_markdown": "**Now.** <script>alert(1)</script><img src=x onerror=alert(1)>",
        "petition_text": "Dear leader,", "goal": 5000, "language": "de", "closes_on": "2999-01-31",
        "mailing_policy": "none"})
    assert created.status_code == 201, created.get_json()
    petition = body_of(created)
    assert created.headers["Location"] == f"http://campaign.test/api/v1/campaign/petitions/{petition['id']}"
    assert petition["status"] == "draft" and petition["is_sensitive"] is True
    assert petition["closes_on"] == "2999-01-31" and petition["goal"] == 5000
    assert "<strong>Now.</strong>" in petition["description"]
    assert "<script" not in petition["description"] and "<img" not in petition["description"]
    assert "campaign:public" not in petition["_links"]  # drafts are not public
    assert api.get("/api/v1/petitions/free-them").status_code == 404

    path = f"/api/v1/campaign/petitions/{petition['id']}"
    edited = api.patch(path, headers=headers, json={"title": "Free them all", "is_sensitive": False,
                                                    "closes_on": None})
    assert edited.status_code == 200, edited.get_json()
    assert body_of(edited)["title"] == "Free them all"
    assert body_of(edited)["slug"] == "free-them" and body_of(edited)["goal"] == 5000  # unchanged
    assert body_of(edited)["is_sensitive"] is False and body_of(edited)["closes_on"] is None
    assert body_of(api.get(path, headers=headers))["title"] == "Free them all"

    assert api.delete(path, headers=headers).status_code == 204
    assert api.get(path, headers=headers).status_code == 404
    with world.app.app_context():
        summaries = list(db.session.scalars(select(AuditEvent.summary).where(
            AuditEvent.action == "api_token.write").order_by(AuditEvent.id)))
    assert [s.split(" “")[0] for s in summaries] == ["created", "edited (title, closes_at, is_sensitive)",
                                                     "deleted"]
    assert all("API token Sync (cmp_" in s for s in summaries)


INVALID_PETITIONS = [
    ({}, "title"),
    ({"title": ""}, "title"),
    ({"title": "x" * 301}, "title"),
    ({"title": "Ok", "goal": 0}, "goal"),
    ({"title": "Ok", "goal": "many"}, "goal"),
    ({"title": "Ok", "goal": True}, "goal"),
    ({"title": "Ok", "language": "xx-nope"}, "language"),
    ({"title": "Ok", "mailing_policy": "spam"}, "mailing_policy"),
    ({"title": "Ok", "closes_on": "2000-01-01"}, "closes_on"),
    ({"title": "Ok", "closes_on": "soon"}, "closes_on"),
    ({"title": "Ok", "slug": "Not A Slug!"}, "slug"),
    ({"title": "Ok", "slug": "g20-chechnya"}, "slug"),
    ({"title": "Ok\u0000"}, "title"),
    ({"title": "Ok", "is_sensitive": "yes"}, "is_sensitive"),
    ({"title": ["Ok"]}, "title"),
]


def test_invalid_petitions_are_422_with_the_uis_messages(api, world):
    for body, member in INVALID_PETITIONS:
        response = api.post("/api/v1/campaign/petitions", json=body, headers=world.headers("write"))
        assert response.status_code == 422, (body, response.get_json())
        problem = body_of(response)
        assert problem["type"].endswith("#problem-validation-error")
        assert member in problem["errors"], problem
    with world.app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Petition).where(
            Petition.campaign_id == world.a_campaign)) == 1


def test_write_requests_must_be_json_objects(api, world):
    headers = world.headers("write")
    assert api.post("/api/v1/campaign/petitions", data="title=x", headers=headers,
                    content_type="application/x-www-form-urlencoded").status_code == 415
    assert api.post("/api/v1/campaign/petitions", data="[1]", headers=headers,
                    content_type="application/json").status_code == 400


def test_a_published_petition_keeps_its_address_and_cannot_be_deleted_by_token(api, world):
    headers = world.headers("both")
    path = f"/api/v1/campaign/petitions/{world.a_petition}"
    response = api.patch(path, json={"slug": "moved"}, headers=headers)
    assert response.status_code == 422 and "slug" in body_of(response)["errors"]
    deleted = api.delete(path, headers=headers)
    assert deleted.status_code == 409
    assert body_of(deleted)["type"].endswith("#problem-petition-not-draft")
    with world.app.app_context():
        petition = db.session.get(Petition, world.a_petition)
        assert petition.status == PetitionStatus.PUBLISHED and petition.slug == "g20-chechnya"
        assert db.session.scalar(select(func.count()).select_from(Signature).where(
            Signature.petition_id == world.a_petition)) == len(SIGNERS_A)


def test_petition_list_includes_drafts_and_filters_by_status(api, world):
    headers = world.headers("both")
    api.post("/api/v1/campaign/petitions", json={"title": "Draft one"}, headers=headers)
    everything = body_of(api.get("/api/v1/campaign/petitions", headers=headers))["_embedded"]["osdi:petitions"]
    assert {p["status"] for p in everything} == {"draft", "published"}
    drafts = body_of(api.get("/api/v1/campaign/petitions?status=draft", headers=headers))
    assert [p["title"] for p in drafts["_embedded"]["osdi:petitions"]] == ["Draft one"]
    demo = next(p for p in everything if p["status"] == "published")
    assert demo["signature_count"] == 2 and demo["_links"]["campaign:public"]["href"].endswith("/g20-chechnya")


# --- deliveries and mailings -----------------------------------------------------------------------

def test_deliveries_and_mailings_status(api, world):
    from campaign.models import User
    from campaign.services.deliveries import deliver_now

    headers = world.headers("read")
    path = f"/api/v1/campaign/petitions/{world.a_petition}"
    assert body_of(api.get(f"{path}/deliveries", headers=headers))["_embedded"]["campaign:deliveries"] == []
    mailings = body_of(api.get(f"{path}/mailings", headers=headers))
    assert len(mailings["targets"]) == 21
    assert all("email" not in entry["target"] for entry in mailings["targets"])
    with world.app.app_context():
        petition = db.session.get(Petition, world.a_petition)
        made = deliver_now(db.session, db.session.get(User, world.a_owner), petition, None, "nonce-1")
        db.session.commit()
        assert len(made) > 1
    first = body_of(api.get(f"{path}/deliveries?limit=1", headers=headers))
    second = body_of(api.get(first["_links"]["next"]["href"].replace("http://campaign.test", ""), headers=headers))
    one, two = first["_embedded"]["campaign:deliveries"][0], second["_embedded"]["campaign:deliveries"][0]
    assert one["id"] > two["id"]
    assert one["kind"] == "now" and one["status"] == "queued" and one["total_signatures"] == 2
    assert set(one["target"]) == {"id", "name", "title", "country"}
