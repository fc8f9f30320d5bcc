"""Confirmation links: signed, expiring, bound to one signature, useless for anything else."""

from __future__ import annotations

import hashlib

from itsdangerous import URLSafeTimedSerializer

from campaign.extensions import db
from campaign.models import Signature
from campaign.services.signing import confirmation_token
from tests.support import confirm, confirm_path, deliver_due, sign


def _count(client) -> int:
    return client.get("/api/v1/petitions/g20-chechnya").get_json()["signature_count"]


def _token_for(app, **payload) -> str:
    with app.app_context():
        return URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="campaign.confirm-signature",
                                      signer_kwargs={"digest_method": hashlib.sha256}).dumps(payload)


def test_tampered_token_is_a_clear_404(client, demo, app, mailbox):
    sign(client)
    deliver_due(app)
    path = confirm_path(mailbox.messages[0])
    for bad in (path[:-3] + "abc", path + "x", "/confirm/garbage", "/confirm/" + "A" * 300):
        response = client.get(bad)
        assert response.status_code == 404, bad
        assert "This link does not work" in response.get_data(as_text=True)
        assert client.post(bad).status_code in (400, 404)
    assert _count(client) == 0


def test_expired_token_is_410_and_counts_nothing(make_app, mailbox):
    app = make_app(CONFIRM_TOKEN_MAX_AGE=-1)
    from campaign.services.demo import seed_demo

    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    sign(client)
    deliver_due(app)
    path = confirm_path(mailbox.messages[0])
    response = client.get(path)
    assert response.status_code == 410
    assert "expired" in response.get_data(as_text=True)
    assert _count(client) == 0


def test_a_token_signed_for_another_purpose_is_refused(client, demo, app):
    sign(client)
    with app.app_context():
        signature = db.session.query(Signature).one()
        other = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="campaign.sign-form").dumps(
            {"s": signature.id, "e": signature.email_index[:16]})
    assert client.get(f"/confirm/{other}").status_code == 404


def test_a_token_for_another_signature_or_mailbox_is_refused(client, demo, app):
    sign(client)
    with app.app_context():
        signature = db.session.query(Signature).one()
        index = signature.email_index[:16]
    assert client.get(f"/confirm/{_token_for(app, s=signature.id + 1, e=index)}").status_code == 404
    assert client.get(f"/confirm/{_token_for(app, s=signature.id, e='0' * 16)}").status_code == 404
    assert client.get(f"/confirm/{_token_for(app, s='1', e=index)}").status_code == 404
    assert client.get(f"/confirm/{_token_for(app, s=signature.id, e=index)}").status_code == 200


def test_token_carries_at_least_128_bits_of_secret(client, demo, app):
    sign(client)
    with app.app_context():
        token = confirmation_token(db.session.query(Signature).one())
    signature_part = token.rsplit(".", 1)[1]
    assert len(signature_part) * 6 >= 256  # HMAC-SHA256, base64url


def test_reused_valid_link_changes_nothing_the_second_time(client, demo, app, mailbox):
    sign(client)
    deliver_due(app)
    path = confirm_path(mailbox.messages[0])
    assert confirm(client, path).status_code == 303
    assert _count(client) == 1
    page = client.get(path)
    assert page.status_code == 200 and "already confirmed" in page.get_data(as_text=True)
    assert _count(client) == 1


def test_confirm_pages_keep_the_token_out_of_referrers_and_caches(client, demo, app, mailbox):
    sign(client)
    deliver_due(app)
    response = client.get(confirm_path(mailbox.messages[0]))
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
