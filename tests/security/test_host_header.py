"""R24: every email is triggered while the request says Host: evil.example and
X-Forwarded-Host: evil.example (with and without a trusted proxy hop); every link in every
message points at BASE_URL. Each outbox row is also built inside such a request, so a builder
that reached for the request's host would show."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from campaign.extensions import db
from campaign.mail.messages import build_message
from campaign.models import OutboundEmail, Petition, User
from campaign.services import abuse
from campaign.services.outbox import _builders
from tests.organize.conftest import add_user, csrf_of, login
from tests.security.conftest import SLUG, client_from, sign_as
from tests.support import BASE_URL, confirm, confirm_path, deliver_due

EVIL = {"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Forwarded-For": "203.0.113.66"}
# The same on a client's environ, so the test client's cookie jar follows the host.
EVIL_ENVIRON = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in EVIL.items()}
# What these flows must produce: a kind missing here means a flow stopped mailing.
CORE_KINDS = {"signature_confirmation", "signature_already_confirmed", "account_verification",
              "account_exists", "password_reset", "organizer_invitation", "trending_alert"}
_LINK = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")


def _trigger_everything(app, mailbox):
    client = client_from(app, "198.51.100.9")
    client.environ_base.update(EVIL_ENVIRON)
    sign_as(client, "signer@example.org")
    deliver_due(app)
    confirm(client, confirm_path(next(m for m in mailbox.messages if m["To"] == "signer@example.org")))
    sign_as(client, "signer@example.org")  # already signed
    # Accounts: sign-up (new and existing address), a reset, an invitation.
    with app.app_context():
        campaign_id = db.session.scalar(select(Petition.campaign_id).where(Petition.slug == SLUG))
    add_user(app, "owner@example.org", campaign_id=campaign_id, role="owner")
    for address in ("new-organizer@example.org", "owner@example.org"):
        token = csrf_of(client.get("/account/signup").get_data(as_text=True))
        client.post("/account/signup", data={
            "csrf_token": token, "name": "N", "email": address, "password": "a long enough password 1",
            "password_again": "a long enough password 1"})
    token = csrf_of(client.get("/account/forgot").get_data(as_text=True))
    client.post("/account/forgot", data={"csrf_token": token, "email": "owner@example.org"})
    owner = app.test_client()
    # Set on the environ (not per request), so the test client's cookie jar follows the host.
    owner.environ_base.update(EVIL_ENVIRON)
    login(owner, "owner@example.org")
    path = f"/organize/campaigns/{campaign_id}/members"
    token = csrf_of(owner.get(path).get_data(as_text=True))
    owner.post(path, data={"csrf_token": token, "email": "invitee@example.org"})
    # Trending alerts come from beat, never a request; build one inside an evil request anyway.
    with app.test_request_context("/", headers=EVIL):
        for n in range(3):
            sign_as(client_from(app, "198.51.100.99"), f"burst{n}@example.org")
        abuse.detect_trending(db.session)
        db.session.commit()


def _links_of(app):
    """Every link of every outbox row's message, built inside an evil request."""
    found: dict[str, list[str]] = {}
    with app.test_request_context("/", headers=EVIL, base_url="http://evil.example"):
        for row in db.session.scalars(select(OutboundEmail)):
            builder = _builders.get(row.kind)
            draft = builder(db.session, row) if builder else None
            if draft is None:
                continue
            message = build_message(draft, app.config["MAIL_DEFAULT_SENDER"]).as_string()
            found.setdefault(row.kind, []).extend(_LINK.findall(message))
            assert "evil.example" not in message, row.kind
    return found


@pytest.mark.parametrize("hops", [0, 1])
def test_no_email_links_to_the_requests_host(make_sec_app, mailbox, hops):
    app = make_sec_app(PROXY_FIX_HOPS=hops, TRENDING_IP_PER_HOUR=3, SIGNING_IP_BURST="")
    _trigger_everything(app, mailbox)
    links = _links_of(app)
    missing = CORE_KINDS - set(links)
    assert not missing, f"flows that sent no email: {missing}"
    foreign = {kind: [u for u in urls if not u.startswith(BASE_URL) and "w3.org" not in u]
               for kind, urls in links.items()}
    assert {k: v for k, v in foreign.items() if v} == {}
    for message in mailbox.messages:
        assert "evil.example" not in message.as_string()
    with app.app_context():
        # Every registered kind is either covered here or one this test names as not reachable.
        unexercised = set(_builders) - set(links)
        assert db.session.scalar(select(User.id).limit(1))
    print("kinds exercised:", sorted(links), "not exercised:", sorted(unexercised))
