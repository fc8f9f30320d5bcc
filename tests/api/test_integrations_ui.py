"""The organizer pages for API tokens and webhooks: owners create a token (shown once, stored
hashed, audited) and revoke it (the API answers 401 at once); organizers who are not owners get
403; webhooks are registered with the same URL checks, and their delivery log is shown."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from campaign.extensions import db
from campaign.models import ApiToken, AuditEvent, Webhook
from tests.api.receiver import Receiver, start_receiver
from tests.organize.conftest import FAST_HASHING, add_user, csrf_of, login

SECRET = re.compile(r"<code class=\"secret\" data-secret>(cmp_[A-Za-z0-9_-]{43}|whsec_[A-Za-z0-9_-]{43})</code>")


@pytest.fixture
def receiver():
    yield from start_receiver()


def _owner_client(app):
    from campaign.services.demo import seed_demo

    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        from campaign.models import Campaign

        campaign_id = db.session.scalars(select(Campaign.id)).one()
    add_user(app, "owner@example.com", campaign_id=campaign_id, role="owner")
    client = app.test_client()
    assert login(client, "owner@example.com").status_code == 302
    return client, campaign_id


def test_owner_creates_a_token_sees_it_once_and_revokes_it(make_app):
    app = make_app(**FAST_HASHING)
    client, campaign_id = _owner_client(app)
    page_url = f"/organize/campaigns/{campaign_id}/integrations"
    page = client.get(page_url)
    assert page.status_code == 200 and "API tokens" in page.get_data(as_text=True)
    created = client.post(f"/organize/campaigns/{campaign_id}/api-tokens", data={
        "csrf_token": csrf_of(page.get_data(as_text=True)), "name": "CiviCRM sync", "scopes": ["read"],
        "expires": "30"})
    assert created.status_code == 201
    assert created.headers["Cache-Control"] == "no-store"
    html = created.get_data(as_text=True)
    secret = SECRET.search(html).group(1)
    assert secret.startswith("cmp_")
    # Shown once: not on the next view of the page, not in the database.
    again = client.get(page_url).get_data(as_text=True)
    assert secret not in again and secret[:12] in again
    with app.app_context():
        token = db.session.scalar(select(ApiToken).where(ApiToken.name == "CiviCRM sync"))
        assert token.scopes == "read" and token.expires_at is not None
        assert secret not in {token.token_hash, token.prefix}
        token_id = token.id
    headers = {"Authorization": f"Bearer {secret}"}
    api = app.test_client()
    assert api.get("/api/v1/campaign", headers=headers).status_code == 200
    assert api.post("/api/v1/campaign/petitions", json={"title": "x"}, headers=headers).status_code == 403

    revoked = client.post(f"/organize/api-tokens/{token_id}/revoke", data={"csrf_token": csrf_of(again)})
    assert revoked.status_code == 303
    assert api.get("/api/v1/campaign", headers=headers).status_code == 401
    with app.app_context():
        actions = list(db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.object_type == "api_token").order_by(AuditEvent.id)))
        assert actions == ["api_token.created", "api_token.revoked"]
        assert all(secret not in s for s in db.session.scalars(select(AuditEvent.summary)))


def test_the_petition_page_links_to_the_widget_snippets(make_app):
    app = make_app(**FAST_HASHING)
    client, campaign_id = _owner_client(app)
    with app.app_context():
        from campaign.models import Petition

        petition_id = db.session.scalars(select(Petition.id)).one()
    page = client.get(f"/organize/petitions/{petition_id}").get_data(as_text=True)
    assert 'href="/embed/g20-chechnya/snippet"' in page
    assert f'href="/organize/campaigns/{campaign_id}/integrations"' in page  # the nav


def test_a_token_needs_a_name_and_a_scope_and_a_csrf_token(make_app):
    app = make_app(**FAST_HASHING)
    client, campaign_id = _owner_client(app)
    token = csrf_of(client.get(f"/organize/campaigns/{campaign_id}/integrations").get_data(as_text=True))
    url = f"/organize/campaigns/{campaign_id}/api-tokens"
    assert client.post(url, data={"csrf_token": token, "name": "", "scopes": ["read"]}).status_code == 400
    assert client.post(url, data={"csrf_token": token, "name": "x", "expires": "0"}).status_code == 400
    assert client.post(url, data={"name": "x", "scopes": ["read"], "expires": "0"}).status_code == 400
    with app.app_context():
        assert db.session.scalars(select(ApiToken)).all() == []


def test_organizers_who_are_not_owners_cannot_manage_integrations(make_app):
    app = make_app(**FAST_HASHING)
    _client, campaign_id = _owner_client(app)
    add_user(app, "helper@example.com", campaign_id=campaign_id, role="organizer")
    helper = app.test_client()
    login(helper, "helper@example.com")
    assert "/integrations" not in helper.get(f"/organize/campaigns/{campaign_id}").get_data(as_text=True)
    assert helper.get(f"/organize/campaigns/{campaign_id}/integrations").status_code == 403
    token = csrf_of(helper.get("/organize/").get_data(as_text=True))
    response = helper.post(f"/organize/campaigns/{campaign_id}/api-tokens",
                           data={"csrf_token": token, "name": "Mine", "scopes": ["read"], "expires": "0"})
    assert response.status_code == 403
    with app.app_context():
        assert db.session.scalars(select(ApiToken)).all() == []


def test_webhooks_are_registered_with_the_url_checks_and_show_their_log(make_app, receiver: Receiver):
    app = make_app(**FAST_HASHING, WEBHOOK_ALLOW_LOOPBACK=True, WEBHOOK_BACKOFF_BASE=0)
    client, campaign_id = _owner_client(app)
    page = client.get(f"/organize/campaigns/{campaign_id}/integrations").get_data(as_text=True)
    url = f"/organize/campaigns/{campaign_id}/webhooks"
    refused = client.post(url, data={"csrf_token": csrf_of(page), "url": "http://10.1.2.3/hook",
                                     "events": ["signature.confirmed"]})
    assert refused.status_code == 400
    assert "not a public address" in refused.get_data(as_text=True)
    created = client.post(url, data={"csrf_token": csrf_of(page), "url": receiver.url,
                                     "events": ["signature.confirmed", "petition.milestone"],
                                     "signer_fields": ["country"]})
    assert created.status_code == 201
    secret = SECRET.search(created.get_data(as_text=True)).group(1)
    with app.app_context():
        hook = db.session.scalars(select(Webhook)).one()
        assert hook.events == "signature.confirmed petition.milestone" and hook.signer_fields == "country"
        assert secret.encode() not in hook.secret_encrypted
        hook_id = hook.id
    from tests.api.test_webhooks import _send_due, _sign

    _sign(app, "Zarema Example", "zarema@example.net")
    assert _send_due(app) == ["sent"]
    log = client.get(f"/organize/webhooks/{hook_id}").get_data(as_text=True)
    assert "signature.confirmed" in log and "HTTP 200" in log and "sent" in log
    assert "Zarema" not in log
    token = csrf_of(log)
    assert client.post(f"/organize/webhooks/{hook_id}/disable", data={"csrf_token": token}).status_code == 303
    with app.app_context():
        assert db.session.get(Webhook, hook_id).active is False
    assert client.post(f"/organize/webhooks/{hook_id}/enable", data={"csrf_token": token}).status_code == 303
    assert client.post(f"/organize/webhooks/{hook_id}/delete", data={"csrf_token": token}).status_code == 303
    with app.app_context():
        assert db.session.get(Webhook, hook_id) is None
        actions = set(db.session.scalars(select(AuditEvent.action).where(AuditEvent.object_type == "webhook")))
        assert actions == {"webhook.created", "webhook.signer_fields", "webhook.disabled", "webhook.enabled",
                           "webhook.deleted"}
