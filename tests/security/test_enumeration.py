"""R33 (responses; the timing comparison is bench/held_timing.py's sibling): signing with an
address that has signed (pending, confirmed, held or invalidated) answers byte for byte like
one that has not, apart from per-response tokens; no public page shows a signer by default."""

from __future__ import annotations

import re

from sqlalchemy import update

from campaign.extensions import db
from campaign.models import Signature, SignatureStatus
from tests.security.conftest import SLUG, client_from, sign_as
from tests.support import confirm, confirm_path, deliver_due

_VOLATILE = {"date", "x-request-id"}


def _exact(response):
    headers = sorted((k, v) for k, v in response.headers.items() if k.lower() not in _VOLATILE)
    return response.status_code, headers, response.get_data()


def _answer(app, email, ip):
    client = client_from(app, ip)
    first = sign_as(client, email)
    follow = client.get(first.location)
    return _exact(first), _exact(follow)


def test_signed_and_unsigned_addresses_get_identical_answers(make_sec_app, mailbox):
    app = make_sec_app(SIGNING_IP_BURST="")
    client = client_from(app, "198.51.100.1")
    for address in ("pending@example.org", "confirmed@example.org", "held@example.org",
                    "invalid@example.org"):
        sign_as(client, address)
    deliver_due(app)
    confirm(client, confirm_path(next(m for m in mailbox.messages if m["To"] == "confirmed@example.org")))
    with app.app_context():
        db.session.execute(update(Signature).where(Signature.id == 3).values(status=SignatureStatus.HELD))
        db.session.execute(update(Signature).where(Signature.id == 4).values(status=SignatureStatus.INVALIDATED))
        db.session.commit()
    fresh = _answer(app, "never-signed@example.org", "198.51.100.2")
    for address in ("pending@example.org", "confirmed@example.org", "Confirmed@Example.org",
                    "held@example.org", "invalid@example.org"):
        assert _answer(app, address, "198.51.100.3") == fresh, address


def test_no_public_page_names_a_signer(make_sec_app):
    app = make_sec_app()
    sign_as(client_from(app, "198.51.100.5"), "visible@example.org", name="Zelda Quartermain")
    client = app.test_client()
    for path in ("/", f"/petitions/{SLUG}", f"/petitions/{SLUG}/check-email", f"/embed/{SLUG}",
                 f"/api/v1/petitions/{SLUG}", "/api/v1/petitions"):
        body = client.get(path).get_data(as_text=True)
        assert "Zelda" not in body and "visible@" not in body, path
        assert not re.search(r"[\w.+-]+@example\.org", body), path
