"""Organizer accounts: sign-up with verification and approval, sign-in throttling without
enumeration, Argon2id parameters and re-hashing, reset links (expiry, single use, tampering),
TOTP, sessions, open redirects, invitations and the CLI commands."""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pyotp
import pytest
from sqlalchemy import select

from campaign.extensions import db
from campaign.logs import redact
from campaign.models import AttemptCounter, Membership, User, UserStatus
from campaign.models.base import utcnow
from campaign.services import accounts
from tests.organize.conftest import PASSWORD, add_user, csrf_of, login, post
from tests.support import deliver_due, text_of

LINK = re.compile(r"http://campaign\.test(/[A-Za-z0-9/._-]+)")


def _link(mailbox, to: str, path_start: str) -> str:
    for message in reversed(mailbox.messages):
        if to in str(message["To"]).lower():
            for path in LINK.findall(text_of(message)):
                if path.startswith(path_start):
                    return path
    raise AssertionError(f"no {path_start} link mailed to {to}")


def _user(app, email: str) -> User:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        assert user is not None
        db.session.expunge(user)
        return user


def _signup(client, email: str, password: str = PASSWORD, **extra):
    page = client.get("/account/signup").get_data(as_text=True)
    return client.post("/account/signup", data={"name": "Nadia", "email": email, "password": password,
                                                "password_again": password, "csrf_token": csrf_of(page),
                                                **extra})


# --- sign-up ----------------------------------------------------------------------------------

def test_signup_verify_then_wait_for_an_admins_approval(org_app, mailbox):
    client = org_app.test_client()
    response = _signup(client, "nadia@example.com", is_admin="1", status="active")
    assert response.status_code == 303 and response.headers["Location"].endswith("/account/signup/sent")
    user = _user(org_app, "nadia@example.com")
    assert user.status == UserStatus.UNVERIFIED and not user.is_admin  # extra fields changed nothing
    assert login(client, "nadia@example.com").status_code == 403

    assert deliver_due(org_app) == {"sent": 1}
    message = mailbox.messages[-1]
    assert message["Subject"] == "Confirm your email address"
    path = _link(mailbox, "nadia@example.com", "/account/confirm/")
    opened = client.get(path)  # a mail scanner opening the link changes nothing
    assert opened.status_code == 200 and opened.headers["Cache-Control"] == "no-store"
    assert _user(org_app, "nadia@example.com").status == UserStatus.UNVERIFIED
    assert client.post(path, data={"csrf_token": csrf_of(opened.get_data(as_text=True))}).status_code == 303
    assert _user(org_app, "nadia@example.com").status == UserStatus.PENDING

    refused = login(client, "nadia@example.com")
    assert refused.status_code == 403 and "approval" in refused.get_data(as_text=True)

    add_user(org_app, "admin@example.com", admin=True)
    admin = org_app.test_client()
    login(admin, "admin@example.com")
    queue = admin.get("/organize/admin/users?status=pending").get_data(as_text=True)
    assert "nadia@example.com" in queue
    assert post(admin, f"/organize/admin/users/{user.id}/status", {"status": "active"}).status_code == 303
    assert login(client, "nadia@example.com").status_code == 302
    assert client.get("/organize/").status_code == 200


def test_signup_with_a_taken_address_answers_the_same_and_tells_the_owner(org_app, mailbox):
    add_user(org_app, "taken@example.com")
    new = _signup(org_app.test_client(), "fresh@example.com")
    taken = _signup(org_app.test_client(), "Taken@Example.com")
    assert (new.status_code, new.headers["Location"]) == (taken.status_code, taken.headers["Location"])
    deliver_due(org_app)
    subjects = {str(m["To"]).lower(): m["Subject"] for m in mailbox.messages}
    assert subjects == {"fresh@example.com": "Confirm your email address",
                        "taken@example.com": "About your organizer account"}
    with org_app.app_context():
        assert db.session.query(User).count() == 2


def test_open_signups_are_active_once_verified(make_org_app, mailbox):
    app = make_org_app(SIGNUPS_OPEN=True)
    client = app.test_client()
    _signup(client, "open@example.com")
    deliver_due(app)
    path = _link(mailbox, "open@example.com", "/account/confirm/")
    client.post(path, data={"csrf_token": csrf_of(client.get(path).get_data(as_text=True))})
    assert _user(app, "open@example.com").status == UserStatus.ACTIVE
    assert login(client, "open@example.com").status_code == 302


@pytest.mark.parametrize(("password", "message"), [
    ("short", "at least 10"), ("aaaaaaaaaaaa", "harder to guess"), ("weak@example.com", "email address")])
def test_weak_passwords_are_refused_and_nothing_is_written(org_app, password, message):
    response = _signup(org_app.test_client(), "weak@example.com", password=password)
    assert response.status_code == 200 and message in response.get_data(as_text=True)
    with org_app.app_context():
        assert db.session.query(User).count() == 0


# --- sign-in, throttling ------------------------------------------------------------------------

def _body(response) -> str:
    return re.sub(r'value="[^"]+" name="csrf_token"|name="csrf_token" (?:type="hidden" )?value="[^"]+"', "",
                  response.get_data(as_text=True))


def test_wrong_password_and_unknown_account_get_the_same_answer(org_app):
    add_user(org_app, "real@example.com")
    wrong = login(org_app.test_client(), "real@example.com", "not the password at all")
    unknown = login(org_app.test_client(), "ghost@example.com", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert _body(wrong).replace("real@example.com", "X") == _body(unknown).replace("ghost@example.com", "X")


def test_login_is_throttled_per_account_and_the_lockout_says_nothing_about_existence(make_org_app):
    app = make_org_app(LOGIN_ATTEMPTS_PER_ACCOUNT=5)
    add_user(app, "victim@example.com")
    client = app.test_client()
    statuses = [login(client, "victim@example.com", f"guess number {n}").status_code for n in range(5)]
    assert statuses == [401] * 5
    locked = login(client, "victim@example.com")  # even the right password waits out the lockout
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    for n in range(5):
        login(client, "nobody@example.com", f"guess number {n}")
    ghost = login(client, "nobody@example.com")
    assert ghost.status_code == 429
    assert _body(locked).replace("victim@example.com", "X") == _body(ghost).replace("nobody@example.com", "X")
    # Another account is not locked by this one's failures.
    add_user(app, "other@example.com")
    assert login(app.test_client(), "other@example.com").status_code == 302
    # When the window has passed, the right password works again.
    with app.app_context():
        for row in db.session.scalars(select(AttemptCounter)):
            row.window_start = utcnow().replace(year=2000)
        db.session.commit()
    assert login(client, "victim@example.com").status_code == 302


def test_credential_stuffing_from_one_address_is_throttled(make_org_app):
    app = make_org_app(LOGIN_ATTEMPTS_PER_IP=20)
    add_user(app, "target@example.com")
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "203.0.113.7"
    statuses = [login(attacker, f"user{n}@example.com", "password123456").status_code for n in range(21)]
    assert statuses[:20] == [401] * 20 and statuses[20] == 429
    assert login(attacker, "target@example.com").status_code == 429
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "198.51.100.9"
    assert login(elsewhere, "target@example.com").status_code == 302
    with app.app_context():  # only keyed hashes are stored, never the address
        keys = " ".join(db.session.scalars(select(AttemptCounter.key)))
    assert "203.0.113.7" not in keys and "user1@example.com" not in keys


def test_argon2id_parameters_and_rehash_on_login(org_app):
    add_user(org_app, "hash@example.com")
    stored = _user(org_app, "hash@example.com").password_hash
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    # The operator raises the cost: the next sign-in stores a hash with the new parameters.
    org_app.config.update(PASSWORD_HASH_MEMORY_KIB=20480, PASSWORD_HASH_TIME_COST=3)
    org_app.extensions.pop("campaign.password_hasher")
    assert login(org_app.test_client(), "hash@example.com").status_code == 302
    assert _user(org_app, "hash@example.com").password_hash.startswith("$argon2id$v=19$m=20480,t=3,p=1$")


def test_parameters_below_the_floor_are_refused(make_org_app):
    app = make_org_app(PASSWORD_HASH_MEMORY_KIB=8192)
    with app.app_context(), pytest.raises(ValueError, match="19456"):
        accounts.hash_password("whatever it is")


def test_default_parameters_meet_r35():
    from campaign.config import SETTINGS

    defaults = {s.name: s.default for s in SETTINGS}
    assert defaults["PASSWORD_HASH_MEMORY_KIB"] >= 19456 and defaults["PASSWORD_HASH_TIME_COST"] >= 2


def test_disabled_account_cannot_sign_in_and_loses_its_session(org_app):
    uid = add_user(org_app, "soon-gone@example.com")
    add_user(org_app, "admin@example.com", admin=True)
    client, admin = org_app.test_client(), org_app.test_client()
    login(client, "soon-gone@example.com")
    login(admin, "admin@example.com")
    assert post(admin, f"/organize/admin/users/{uid}/status", {"status": "disabled"}).status_code == 303
    assert client.get("/organize/").status_code == 302
    assert login(client, "soon-gone@example.com").status_code == 403


def test_logout_ends_the_session(org_app):
    add_user(org_app, "bye@example.com")
    client = org_app.test_client()
    login(client, "bye@example.com")
    assert client.get("/account/logout").status_code == 405  # a GET (a link, a prefetch) does nothing
    assert post(client, "/account/logout").status_code == 302
    assert client.get("/organize/").status_code == 302


# --- open redirects ---------------------------------------------------------------------------

NEXT_VALUES = [
    "https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example", "/\t/evil.example",
    "http:evil.example", "javascript:alert(1)", "%2F%2Fevil.example", "https:%2F%2Fevil.example",
    "/%0d%0aLocation:%20https://evil.example", " //evil.example", "/\x00//evil.example", "///evil.example",
]


def test_next_never_leaves_the_site(org_app):
    add_user(org_app, "next@example.com")
    for target in NEXT_VALUES:
        _check_next(org_app, target)


def _check_next(org_app, target):
    client = org_app.test_client()
    page = client.get("/account/login", query_string={"next": target})
    response = client.post("/account/login", query_string={"next": target}, data={
        "email": "next@example.com", "password": PASSWORD, "csrf_token": csrf_of(page.get_data(as_text=True))})
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert response.status_code == 302
    assert parts.netloc in ("", "localhost") and not location.startswith("//") and "evil" not in parts.netloc
    # Everything falls back to the organizer home, except a path on this site (even an odd one).
    expected = target if target.startswith("/%0d") else "/organize/"
    assert location == expected, (target, location)


def test_next_to_an_own_page_is_followed(org_app):
    add_user(org_app, "next@example.com")
    client = org_app.test_client()
    first = client.get("/organize/campaigns/new")
    assert first.status_code == 302 and "next=" in first.headers["Location"]
    page = client.get(first.headers["Location"])
    response = client.post(first.headers["Location"], data={
        "email": "next@example.com", "password": PASSWORD, "csrf_token": csrf_of(page.get_data(as_text=True))})
    assert response.headers["Location"] == "/organize/campaigns/new"


# --- password reset ---------------------------------------------------------------------------

def _request_reset(app, client, email: str):
    page = client.get("/account/forgot").get_data(as_text=True)
    return client.post("/account/forgot", data={"email": email, "csrf_token": csrf_of(page)})


def _reset(client, path: str, password: str):
    page = client.get(path)
    if page.status_code != 200:
        return page
    return client.post(path, data={"password": password, "password_again": password,
                                   "csrf_token": csrf_of(page.get_data(as_text=True))})


def test_reset_link_works_once_and_ends_other_sessions(org_app, mailbox):
    add_user(org_app, "forgetful@example.com")
    signed_in = org_app.test_client()
    login(signed_in, "forgetful@example.com")
    client = org_app.test_client()
    known = _request_reset(org_app, client, "forgetful@example.com")
    unknown = _request_reset(org_app, client, "stranger@example.com")
    assert known.status_code == unknown.status_code == 303
    assert known.headers["Location"] == unknown.headers["Location"]
    assert deliver_due(org_app) == {"sent": 1}  # nothing goes to an address without an account
    assert mailbox.messages[-1]["Subject"] == "Reset your password"
    path = _link(mailbox, "forgetful@example.com", "/account/reset/")
    assert redact(f"GET {path} HTTP/1.1") == "GET /account/reset/[redacted] HTTP/1.1"

    assert _reset(client, path, "a brand new passphrase").status_code == 303
    assert signed_in.get("/organize/").status_code == 302  # the old session ended
    reused = _reset(org_app.test_client(), path, "yet another passphrase")
    assert reused.status_code == 404 and "used already" in reused.get_data(as_text=True)
    assert login(org_app.test_client(), "forgetful@example.com").status_code == 401
    assert login(org_app.test_client(), "forgetful@example.com", "a brand new passphrase").status_code == 302


def test_expired_tampered_and_foreign_reset_tokens_are_refused(make_org_app, monkeypatch):
    app = make_org_app(RESET_TOKEN_MAX_AGE=3600)
    uid = add_user(app, "reset@example.com")
    with app.app_context():
        user = db.session.get(User, uid)
        real = time.time
        monkeypatch.setattr("itsdangerous.timed.time.time", lambda: real() - 3601)
        expired = accounts.reset_token(user)
        monkeypatch.setattr("itsdangerous.timed.time.time", real)
        fresh = accounts.reset_token(user)
        verification = accounts.verification_token(user)  # a real token for another purpose
    client = app.test_client()
    assert client.get(f"/account/reset/{expired}").status_code == 410
    assert "expired" in client.get(f"/account/reset/{expired}").get_data(as_text=True)
    tampered = fresh[:-3] + ("aaa" if not fresh.endswith("aaa") else "bbb")
    assert client.get(f"/account/reset/{tampered}").status_code == 404
    assert client.get(f"/account/reset/{verification}").status_code == 404
    assert client.get(f"/account/reset/{fresh}").status_code == 200
    # None of them changed the password.
    assert login(app.test_client(), "reset@example.com").status_code == 302


def test_reset_requests_are_capped_per_address(org_app, mailbox):
    add_user(org_app, "spam-me@example.com")
    for _ in range(6):
        _request_reset(org_app, org_app.test_client(), "spam-me@example.com")
    assert deliver_due(org_app) == {"sent": 3}


# --- TOTP -------------------------------------------------------------------------------------

def _enable_totp(client) -> pyotp.TOTP:
    page = client.get("/account/totp").get_data(as_text=True)
    secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page).group(1)
    assert 'src="data:image/svg+xml;base64,' in page  # the QR code, drawn on the server
    totp = pyotp.TOTP(secret)
    response = client.post("/account/totp", data={"code": totp.now(), "csrf_token": csrf_of(page)})
    assert response.status_code == 303
    return totp


def test_totp_second_step_and_no_replay(org_app):
    add_user(org_app, "2fa@example.com")
    client = org_app.test_client()
    login(client, "2fa@example.com")
    totp = _enable_totp(client)
    post(client, "/account/logout")

    first = login(client, "2fa@example.com")
    assert first.status_code == 302 and first.headers["Location"].endswith("/account/login/code")
    assert client.get("/organize/").status_code == 302  # not signed in before the code
    page = client.get("/account/login/code").get_data(as_text=True)
    wrong = client.post("/account/login/code", data={"code": "000000", "csrf_token": csrf_of(page)})
    assert wrong.status_code == 401
    code = totp.at(time.time() + 30)  # the next step: the current one was used to set it up
    ok = client.post("/account/login/code", data={"code": code, "csrf_token": csrf_of(page)})
    assert ok.status_code == 302 and client.get("/organize/").status_code == 200

    other = org_app.test_client()
    login(other, "2fa@example.com")
    page = other.get("/account/login/code").get_data(as_text=True)
    replay = other.post("/account/login/code", data={"code": code, "csrf_token": csrf_of(page)})
    assert replay.status_code == 401


def test_an_admin_can_require_totp(org_app):
    uid = add_user(org_app, "must@example.com")
    add_user(org_app, "admin@example.com", admin=True)
    admin = org_app.test_client()
    login(admin, "admin@example.com")
    assert post(admin, f"/organize/admin/users/{uid}/totp", {"required": "1"}).status_code == 303
    client = org_app.test_client()
    login(client, "must@example.com")
    response = client.get("/organize/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/account/totp")
    _enable_totp(client)
    assert client.get("/organize/").status_code == 200
    settings = client.get("/account").get_data(as_text=True)
    assert "cannot be turned off" in settings


def test_platform_can_require_totp_for_admins(make_org_app):
    app = make_org_app(REQUIRE_TOTP_FOR_ADMINS=True)
    add_user(app, "admin@example.com", admin=True)
    client = app.test_client()
    login(client, "admin@example.com")
    assert client.get("/organize/admin/users").headers["Location"].endswith("/account/totp")


# --- invitations ------------------------------------------------------------------------------

def test_invitation_makes_a_new_active_co_organizer(org_app, two_sides, mailbox):
    a, _ = two_sides
    deliver_due(org_app)
    path = _link(mailbox, "invitee-a@example.com", "/invitations/confirm/")
    assert redact(f"GET {path} HTTP/1.1").endswith("/confirm/[redacted] HTTP/1.1")
    client = org_app.test_client()
    page = client.get(path)
    assert page.status_code == 200 and "Campaign a" in page.get_data(as_text=True)
    response = client.post(path, data={"action": "signup", "signup-name": "Invitee",
                                       "signup-password": PASSWORD, "signup-password_again": PASSWORD,
                                       "signup-csrf_token": csrf_of(page.get_data(as_text=True))})
    assert response.status_code == 302
    assert client.get(f"/organize/campaigns/{a.campaign_id}").status_code == 200
    user = _user(org_app, "invitee-a@example.com")
    assert user.status == UserStatus.ACTIVE
    with org_app.app_context():
        assert db.session.get(Membership, (a.campaign_id, user.id)).role == "organizer"
    assert org_app.test_client().get(path).status_code == 404  # used


def test_invitation_is_for_its_address_only_and_can_be_withdrawn(org_app, two_sides, mailbox):
    a, _ = two_sides
    deliver_due(org_app)
    path = _link(mailbox, "invitee-a@example.com", "/invitations/confirm/")
    stranger = org_app.test_client()
    add_user(org_app, "stranger@example.com")
    login(stranger, "stranger@example.com")
    page = stranger.get(path).get_data(as_text=True)
    refused = stranger.post(path, data={"action": "join", "join-csrf_token": csrf_of(page)})
    assert refused.status_code == 400 and "invitee-a@example.com" in refused.get_data(as_text=True)
    assert stranger.get(f"/organize/campaigns/{a.campaign_id}").status_code == 404

    owner = org_app.test_client()
    login(owner, a.owner)
    assert post(owner, f"/organize/invitations/{a.invitation_id}/revoke").status_code == 303
    assert org_app.test_client().get(path).status_code == 404


# --- commands ---------------------------------------------------------------------------------

def test_create_admin_reads_the_password_from_the_environment_or_asks(org_app):
    runner = org_app.test_cli_runner()
    result = runner.invoke(args=["create-admin", "root@example.com"],
                           env={"CAMPAIGN_ADMIN_PASSWORD": "an admin passphrase"})
    assert result.exit_code == 0, result.output
    assert login(org_app.test_client(), "root@example.com", "an admin passphrase").status_code == 302
    user = _user(org_app, "root@example.com")
    assert user.is_admin and user.status == UserStatus.ACTIVE

    asked = runner.invoke(args=["create-admin", "second@example.com"],
                          input="second passphrase\nsecond passphrase\n", env={"CAMPAIGN_ADMIN_PASSWORD": ""})
    assert asked.exit_code == 0, asked.output
    assert _user(org_app, "second@example.com").is_admin
    weak = runner.invoke(args=["create-admin", "third@example.com"], env={"CAMPAIGN_ADMIN_PASSWORD": "short"})
    assert weak.exit_code != 0 and "at least 10" in weak.output


def test_demo_seeds_an_organizer_whose_credentials_only_development_prints(org_app, make_org_app):
    runner = org_app.test_cli_runner()
    assert runner.invoke(args=["seed-demo"]).exit_code == 0
    printed = runner.invoke(args=["demo-credentials"])
    assert printed.exit_code == 0
    email, password = re.search(r"Demo organizer: (\S+) / (\S+)", printed.output).groups()
    client = org_app.test_client()
    assert login(client, email, password).status_code == 302
    home = client.get("/organize/").get_data(as_text=True)
    assert "End the anti-gay purge in Chechnya" in home

    production = make_org_app(CAMPAIGN_ENV="production", REDIS_URL="redis://127.0.0.1:1/0")
    refused = production.test_cli_runner().invoke(args=["demo-credentials"])
    assert refused.exit_code != 0 and password not in refused.output


def test_session_cookie_is_secure_httponly_and_samesite_in_production(make_org_app):
    production = make_org_app(CAMPAIGN_ENV="production", REDIS_URL="redis://127.0.0.1:1/0")
    assert production.config["SESSION_COOKIE_SECURE"] is True
    assert production.config["SESSION_COOKIE_HTTPONLY"] is True
    assert production.config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_flask_login_leaves_public_pages_cacheable(org_app, two_sides):
    """Flask-Login looks at the session after each request; a public page must still neither set
    a cookie nor vary on one (petition pages are cached), while signing in does set one."""
    a, _ = two_sides
    client = org_app.test_client()
    for path in ("/petitions/petition-a", "/api/v1/petitions/petition-a", "/"):
        response = client.get(path)
        assert "Set-Cookie" not in response.headers, path
        assert "cookie" not in response.headers.get("Vary", "").lower(), path
    signed_in = login(client, a.owner)
    assert "session=" in signed_in.headers["Set-Cookie"] and "HttpOnly" in signed_in.headers["Set-Cookie"]
    assert "cookie" in client.get("/organize/").headers.get("Vary", "").lower()
