"""Rate limits (Flask-Limiter): 429 with Retry-After on sign-in, reset, the API and organizer
actions; never on the sign form; memory fallback when Redis is down; the client address only
from the configured proxy hops."""

from __future__ import annotations

import time

import pytest

from tests.organize.conftest import add_user, csrf_of, login
from tests.security.conftest import SLUG, client_from, sign_as, signature_of

TIGHT = {"RATELIMIT_LOGIN_PER_IP": "3 per minute", "RATELIMIT_LOGIN_PER_ACCOUNT": "4 per minute",
         "RATELIMIT_RESET_PER_IP": "2 per minute", "RATELIMIT_RESET_PER_ACCOUNT": "100 per minute",
         "RATELIMIT_API": "5 per minute", "RATELIMIT_ORGANIZER": "3 per minute",
         "LOGIN_ATTEMPTS_PER_IP": 1000, "LOGIN_ATTEMPTS_PER_ACCOUNT": 1000}


def _login_attempt(client, email="nobody@example.org", **headers):
    token = csrf_of(client.get("/account/login").get_data(as_text=True))
    return client.post("/account/login", data={"email": email, "password": "wrong password!",
                                               "csrf_token": token}, headers=headers)


def _assert_friendly_429(response):
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    page = response.get_data(as_text=True)
    assert "Too many attempts" in page and "Traceback" not in page


def test_login_per_address_then_429_with_retry_after(make_sec_app):
    app = make_sec_app(**TIGHT)
    client = client_from(app, "198.51.100.1")
    statuses = [_login_attempt(client).status_code for _ in range(3)]
    assert 429 not in statuses
    _assert_friendly_429(_login_attempt(client))
    # Another address is not affected; GETs of the form are not counted.
    assert _login_attempt(client_from(app, "198.51.100.2")).status_code != 429


def test_login_per_account_across_addresses(make_sec_app):
    app = make_sec_app(**(TIGHT | {"RATELIMIT_LOGIN_PER_IP": "100 per minute"}))
    statuses = [_login_attempt(client_from(app, f"198.51.100.{n}"), "target@example.org").status_code
                for n in range(10, 15)]
    assert statuses[:4] == [401] * 4 and statuses[4] == 429
    # The same answer whether or not the account exists: limits key on what was typed.
    assert _login_attempt(client_from(app, "198.51.100.20"), "other@example.org").status_code == 401


def test_password_reset_requests_are_limited(make_sec_app):
    app = make_sec_app(**TIGHT)
    client = client_from(app, "198.51.100.30")

    def forgot():
        token = csrf_of(client.get("/account/forgot").get_data(as_text=True))
        return client.post("/account/forgot", data={"email": "someone@example.org", "csrf_token": token})

    assert [forgot().status_code for _ in range(2)] == [303, 303]
    _assert_friendly_429(forgot())


def test_api_answers_429_problem_details(make_sec_app):
    app = make_sec_app(**TIGHT)
    client = client_from(app, "198.51.100.40")
    for _ in range(5):
        assert client.get(f"/api/v1/petitions/{SLUG}").status_code == 200
    response = client.get(f"/api/v1/petitions/{SLUG}")
    assert response.status_code == 429
    assert response.content_type == "application/problem+json"
    assert response.get_json()["status"] == 429
    assert int(response.headers["Retry-After"]) > 0


def test_organizer_actions_are_limited_per_account(make_sec_app):
    app = make_sec_app(**TIGHT)
    add_user(app, "busy@example.org")
    client = client_from(app, "198.51.100.50")
    login(client, "busy@example.org")
    token = csrf_of(client.get("/organize/").get_data(as_text=True))
    statuses = [client.post("/organize/preview", data={"csrf_token": token, "body_markdown": "x"}).status_code
                for _ in range(4)]
    assert 429 not in statuses[:3] and statuses[3] == 429


def test_the_sign_form_never_answers_429(make_sec_app):
    """DESIGN: over a limit the signature is held, silently; the answer stays the usual 303."""
    app = make_sec_app(**TIGHT)
    client = client_from(app, "198.51.100.60")
    statuses = {sign_as(client, f"flood{n}@example.org").status_code for n in range(40)}
    assert statuses == {303}
    rows = signature_of(app)
    assert len(rows) == 40 and sum(r.status == "held" for r in rows) == 39


def test_redis_down_falls_back_to_memory_instead_of_failing(make_sec_app):
    app = make_sec_app(**(TIGHT | {"RATELIMIT_STORAGE_URI": "redis://127.0.0.1:9/0",
                                   "RATELIMIT_STORAGE_OPTIONS": {"socket_connect_timeout": 0.2,
                                                                 "socket_timeout": 0.2}}))
    client = client_from(app, "198.51.100.70")
    statuses = [_login_attempt(client).status_code for _ in range(4)]
    assert 500 not in statuses
    assert statuses[-1] == 429  # still limited, in memory


@pytest.mark.parametrize(("hops", "limited"), [(0, True), (1, False)])
def test_client_address_comes_only_from_the_configured_proxy_hops(make_sec_app, hops, limited):
    """With PROXY_FIX_HOPS=0 a forged X-Forwarded-For changes nothing; with 1 proxy, the
    proxy's X-Forwarded-For names the client."""
    app = make_sec_app(**(TIGHT | {"PROXY_FIX_HOPS": hops}))
    client = client_from(app, "127.0.0.1")
    statuses = [_login_attempt(client, f"n{n}@example.org", **{"X-Forwarded-For": f"203.0.113.{n}"}).status_code
                for n in range(5)]
    assert (429 in statuses) is limited


# --- each app its own limiter; Retry-After only where it belongs --------------------------------

def test_each_app_has_its_own_limiter(make_sec_app):
    """One module-level Limiter kept the first app's RATELIMIT_ENABLED (and storage) for every
    later app of the process (here: the last one's). Shown to fail once with the shared
    limiter: the first app answered 401 to every attempt."""
    limited = make_sec_app(**TIGHT)
    unlimited = make_sec_app(**(TIGHT | {"RATELIMIT_ENABLED": False}))
    assert [_login_attempt(client_from(unlimited, "198.51.100.80")).status_code
            for _ in range(5)] == [401] * 5
    statuses = [_login_attempt(client_from(limited, "198.51.100.80")).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]


def test_a_views_own_retry_after_is_kept_and_ordinary_answers_carry_none(make_sec_app):
    from campaign.extensions import db
    from campaign.services import killswitch

    app = make_sec_app(**(TIGHT | {"RATELIMIT_API": "50 per minute"}))
    client = client_from(app, "198.51.100.90")
    ordinary = client.get(f"/api/v1/petitions/{SLUG}")
    assert ordinary.status_code == 200 and "Retry-After" not in ordinary.headers
    assert ordinary.headers["X-RateLimit-Limit"] == "50"
    with app.app_context():
        killswitch.set_switch(db.session, None, killswitch.SIGNING, True, "Back soon.")
        db.session.commit()
        killswitch.forget_cached()
    paused = client.post(f"/api/v1/petitions/{SLUG}/signatures", json={
        "name": "Ada", "email": "ada@example.org", "country": "DE"})
    # Flask-Limiter's header hook used to replace the view's 300 with its own window's reset.
    assert paused.status_code == 503 and paused.headers["Retry-After"] == "300"


# --- the sign forms: Flask-Limiter counts, the signature is held, the answer is the usual 303 -----

def test_sign_requests_over_the_per_address_limit_are_held_not_refused(make_sec_app):
    app = make_sec_app(SIGNING_IP_BURST="", SIGNING_RATELIMIT_PER_IP="3 per minute",
                       SIGNING_RATELIMIT_PER_PETITION="")
    client = client_from(app, "198.51.100.100")
    assert {sign_as(client, f"p{n}@example.org").status_code for n in range(5)} == {303}
    assert [(s.status, s.hold_reasons) for s in signature_of(app)] == (
        [("pending", None)] * 3 + [("held", "rate_limit")] * 2)
    # Another address has its own counter.
    sign_as(client_from(app, "198.51.100.101"), "other@example.org")
    assert signature_of(app)[-1].status == "pending"


def test_sign_requests_over_the_per_petition_limit_are_held(make_sec_app):
    app = make_sec_app(SIGNING_IP_BURST="", SIGNING_RATELIMIT_PER_IP="",
                       SIGNING_RATELIMIT_PER_PETITION="2 per minute")
    client = client_from(app, "198.51.100.110")
    for n in range(3):
        assert sign_as(client, f"q{n}@example.org").status_code == 303
    assert [s.hold_reasons for s in signature_of(app)] == [None, None, "rate_limit"]
    # The integrity note counts it under rate limits.
    from tests.security.conftest import demo_petition_id

    with app.app_context():
        from campaign.extensions import db
        from campaign.services.abuse import forget_integrity, integrity_note

        forget_integrity()
        assert integrity_note(db.session, demo_petition_id(app)).held_rate_limits == 1


def test_sign_limits_storage_down_never_fails_or_holds_a_signature(make_sec_app):
    app = make_sec_app(SIGNING_IP_BURST="", SIGNING_RATELIMIT_PER_PETITION="1 per minute",
                       RATELIMIT_STORAGE_URI="redis://127.0.0.1:9/0",
                       RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 0.2, "socket_timeout": 0.2})
    client = client_from(app, "198.51.100.120")
    assert [sign_as(client, f"r{n}@example.org").status_code for n in range(3)] == [303] * 3
    assert all(s.status == "pending" for s in signature_of(app))


@pytest.mark.integration
def test_sign_limits_on_redis_count_every_limit_in_one_round_trip(make_sec_app, redis_url, monkeypatch):
    """On Redis the sign path's counters move in one pipeline (issue 9) and still hold exactly
    as the limits say: the per-address limit and the per-petition limit each by itself."""
    import redis

    app = make_sec_app(SIGNING_IP_BURST="", SIGNING_RATELIMIT_PER_IP="3 per minute; 50 per hour",
                       SIGNING_RATELIMIT_PER_PETITION="4 per minute", RATELIMIT_STORAGE_URI=redis_url,
                       RATELIMIT_KEY_PREFIX=f"pipeline-test-{time.time_ns()}")
    sent: list[object] = []
    original = redis.client.Pipeline.execute

    def counting(self, *args, **kwargs):
        sent.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counting)
    client = client_from(app, "198.51.100.130")
    assert {sign_as(client, f"s{n}@example.org").status_code for n in range(5)} == {303}
    assert len(sent) == 5  # one pipeline per sign request
    # Every counter expires with its window (3 limits: two per address, one per petition).
    store = redis.Redis.from_url(redis_url)
    keys = store.keys(f"*{app.config['RATELIMIT_KEY_PREFIX']}*")
    assert len(keys) == 3, keys
    assert all(0 < store.ttl(key) <= 3600 for key in keys)
    assert sorted(int(store.get(key) or 0) for key in keys) == [5, 5, 5]
    assert [(s.status, s.hold_reasons) for s in signature_of(app)] == (
        [("pending", None)] * 3 + [("held", "rate_limit")] * 2)
