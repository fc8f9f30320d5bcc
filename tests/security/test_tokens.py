"""R31: confirmation links, sign-form tokens and account links: expired, reused, tampered, for
another signature, and for another purpose (wrong salt) are refused; a reused valid link changes
nothing the second time; tokens carry at least 128 bits of signature."""

from __future__ import annotations

import base64
import time

import pytest
from itsdangerous import URLSafeTimedSerializer

from campaign.models import Signature
from campaign.services.signing import confirmation_token
from tests.security.conftest import SLUG, client_from, count_of, demo_petition_id, sign_as
from tests.support import confirm_path, deliver_due, form_token


def _two_signatures(app, mailbox):
    client = client_from(app, "198.51.100.1")
    sign_as(client, "one@example.org")
    sign_as(client_from(app, "198.51.100.2"), "two@example.org")
    deliver_due(app)
    paths = {m["To"]: confirm_path(m) for m in mailbox.messages}
    return client, paths["one@example.org"], paths["two@example.org"]


def _csrf(client, path):
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match
    return match.group(1)


def test_a_reused_confirmation_link_changes_nothing_the_second_time(sec_app, mailbox):
    client, path, _other = _two_signatures(sec_app, mailbox)
    token = _csrf(client, path)
    assert client.post(path, data={"csrf_token": token}).status_code == 303
    assert client.post(path, data={"csrf_token": token}).status_code == 303
    assert count_of(sec_app) == 1


@pytest.mark.parametrize("mutation", ["tamper_payload", "tamper_signature", "truncate", "other_salt",
                                      "other_signature", "form_token_as_confirm"])
def test_invalid_confirmation_links_are_refused(sec_app, mailbox, mutation):
    client, path, other = _two_signatures(sec_app, mailbox)
    token = path.rsplit("/", 1)[1]
    payload, stamp, signature = token.split(".")
    with sec_app.test_request_context():
        if mutation == "tamper_payload":
            data = base64.urlsafe_b64encode(b'{"s":2,"e":"0000000000000000"}').rstrip(b"=").decode()
            bad = f"{data}.{stamp}.{signature}"
        elif mutation == "tamper_signature":
            bad = f"{payload}.{stamp}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
        elif mutation == "truncate":
            bad = f"{payload}.{stamp}"
        elif mutation == "other_salt":
            bad = URLSafeTimedSerializer(sec_app.config["SECRET_KEY"], salt="campaign.password-reset").dumps(
                {"s": 1, "e": "x"})
        elif mutation == "other_signature":
            # A genuine token for signature 2, with signature 1's id swapped in: signed data differs.
            other_token = other.rsplit("/", 1)[1]
            bad = other_token.replace(other_token.split(".")[0], payload)
        else:
            bad = form_token(client.get(f"/petitions/{SLUG}").get_data(as_text=True))
    assert client.get(f"/confirm/{bad}").status_code in (404, 410)
    assert client.post(f"/confirm/{bad}", data={"csrf_token": "x"}).status_code in (400, 404, 410)
    assert count_of(sec_app) == 0


def test_an_expired_confirmation_link_is_refused(make_sec_app, mailbox):
    app = make_sec_app(CONFIRM_TOKEN_MAX_AGE=1)
    client, path, _ = _two_signatures(app, mailbox)
    time.sleep(2.1)
    assert client.get(path).status_code == 410
    assert count_of(app) == 0


def test_a_link_for_a_reused_id_does_not_confirm_someone_else(sec_app, mailbox):
    """The token names the signature's blind index too: once an id belongs to another mailbox
    (a purged signature's id reused), an old link for that id is refused."""
    _two_signatures(sec_app, mailbox)
    with sec_app.app_context():
        stale = Signature(id=1, petition_id=demo_petition_id(sec_app), name_encrypted=b"x", email_encrypted=b"x",
                          email_index="a" * 64, country="DE")
        token = confirmation_token(stale)
    assert sec_app.test_client().get(f"/confirm/{token}").status_code == 404
    assert count_of(sec_app) == 0


def test_form_tokens_expired_tampered_or_for_another_petition(make_sec_app):
    app = make_sec_app(FORM_TOKEN_MAX_AGE=1)
    client = client_from(app, "198.51.100.9")
    token = form_token(client.get(f"/petitions/{SLUG}").get_data(as_text=True))
    data = {"name": "A", "email": "a@example.org", "country": "DE"}
    assert client.post(f"/petitions/{SLUG}/sign", data={**data, "form_token": token[:-3] + "abc"}).status_code == 400
    with app.test_request_context():
        from campaign.web.forms import make_form_token

        elsewhere = make_form_token(demo_petition_id(app) + 1)
    assert client.post(f"/petitions/{SLUG}/sign", data={**data, "form_token": elsewhere}).status_code == 400
    time.sleep(2.1)
    expired = client.post(f"/petitions/{SLUG}/sign", data={**data, "form_token": token})
    assert expired.status_code == 400 and "open for a long time" in expired.get_data(as_text=True)
    assert count_of(app) == 0


def test_tokens_carry_at_least_128_bits_of_signature(sec_app, mailbox):
    _client, path, _ = _two_signatures(sec_app, mailbox)
    signature = path.rsplit(".", 1)[1]
    assert len(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))) * 8 >= 128


def test_password_reset_link_is_single_use(sec_app, mailbox):
    from tests.organize.conftest import add_user, csrf_of

    add_user(sec_app, "owner@example.org")
    client = sec_app.test_client()
    token = csrf_of(client.get("/account/forgot").get_data(as_text=True))
    client.post("/account/forgot", data={"csrf_token": token, "email": "owner@example.org"})
    deliver_due(sec_app)
    import re

    link = re.search(r"http://campaign\.test(/account/reset/[A-Za-z0-9._-]+)",
                     mailbox.messages[-1].get_body(("plain",)).get_content())
    assert link
    page = client.get(link.group(1))
    assert page.status_code == 200
    new = {"csrf_token": csrf_of(page.get_data(as_text=True)), "password": "a brand new password 9",
           "password_again": "a brand new password 9"}
    assert client.post(link.group(1), data=new).status_code in (302, 303)
    again = client.get(link.group(1))
    assert again.status_code in (400, 404, 410)


def test_the_cached_session_serializer_follows_a_key_rotation(make_app):
    """Session cookies are signed by a serializer built once per key set (issue 9): a new
    SECRET_KEY refuses the old cookies unless the old key is listed in SECRET_KEY_FALLBACKS."""
    from flask import request

    app = make_app()
    sessions = app.session_interface
    cookie = app.config["SESSION_COOKIE_NAME"]
    old = sessions.get_signing_serializer(app).dumps({"user": "x"})
    assert sessions.get_signing_serializer(app) is sessions.get_signing_serializer(app)

    def user_of_old_cookie():
        with app.test_request_context("/", headers={"Cookie": f"{cookie}={old}"}):
            return sessions.open_session(app, request).get("user")

    assert user_of_old_cookie() == "x"
    old_key = app.secret_key
    app.secret_key = app.config["SECRET_KEY"] = f"{old_key}-rotated"
    assert user_of_old_cookie() is None
    app.config["SECRET_KEY_FALLBACKS"] = [old_key]
    assert user_of_old_cookie() == "x"
