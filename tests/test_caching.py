"""Anonymous petition pages are cacheable: a stable body within a form-token window, an ETag that
includes the count, Cache-Control from the settings, 304 on a match, and never a cookie."""

from __future__ import annotations

import time

import pytest

from campaign.extensions import db
from campaign.models import Petition
from campaign.services.counting import add_to_count
from tests.support import form_token

PAGE = "/petitions/g20-chechnya"


@pytest.fixture
def cache_app(make_app):
    from campaign.services.demo import seed_demo

    app = make_app(PAGE_MAX_AGE=7, PAGE_STALE_WHILE_REVALIDATE=11, FORM_TOKEN_BUCKET=60)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    return app


@pytest.fixture
def at_time(monkeypatch):
    """Pin the clock the form token reads (and so the token window)."""
    import campaign.web.forms as forms

    def pin(seconds: float) -> None:
        monkeypatch.setattr(forms.time, "time", lambda: seconds)

    return pin


def test_page_carries_etag_and_cache_control_from_the_settings(cache_app):
    response = cache_app.test_client().get(PAGE)
    assert response.status_code == 200
    assert response.headers["ETag"].startswith('"') and len(response.headers["ETag"]) > 10
    assert response.headers["Cache-Control"] == "public, max-age=7, stale-while-revalidate=11"


def test_matching_if_none_match_answers_304_without_a_body(cache_app):
    client = cache_app.test_client()
    first = client.get(PAGE)
    etag = first.headers["ETag"]
    again = client.get(PAGE, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.get_data() == b""
    assert again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == first.headers["Cache-Control"]
    assert client.get(PAGE, headers={"If-None-Match": '"something-else"'}).status_code == 200
    assert client.get(PAGE, headers={"If-None-Match": f'W/{etag}'}).status_code == 304


def test_page_sets_no_cookie_and_does_not_vary_on_cookies(cache_app):
    client = cache_app.test_client()
    for headers in ({}, {"Cookie": "session=abc; other=1"}, {"Accept-Language": "de-DE,de;q=0.9"}):
        response = client.get(PAGE, headers=headers)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
        vary = [v.strip().lower() for v in response.headers.get("Vary", "").split(",") if v.strip()]
        assert "cookie" not in vary
        assert "private" not in response.headers["Cache-Control"]
        assert "no-store" not in response.headers["Cache-Control"]
    assert client.get_cookie("session") is None


def test_body_and_token_are_stable_within_a_window_and_the_token_still_works(cache_app, at_time):
    at_time(1_800_000_000 + 5)
    first = cache_app.test_client().get(PAGE)
    at_time(1_800_000_000 + 50)
    second = cache_app.test_client().get(PAGE)
    assert first.get_data() == second.get_data()
    assert first.headers["ETag"] == second.headers["ETag"]
    token = form_token(first.get_data(as_text=True))
    response = cache_app.test_client().post(f"{PAGE}/sign", data={
        "name": "Ada Lovelace", "email": "ada@example.com", "country": "DE", "form_token": token})
    assert response.status_code == 303


def test_a_new_window_gives_a_new_token_and_etag(cache_app, at_time):
    at_time(1_800_000_000 + 59)
    first = cache_app.test_client().get(PAGE)
    at_time(1_800_000_000 + 60)
    second = cache_app.test_client().get(PAGE)
    assert first.headers["ETag"] != second.headers["ETag"]
    assert form_token(first.get_data(as_text=True)) != form_token(second.get_data(as_text=True))


def test_the_token_is_signed_for_the_petition_with_its_window_as_issue_time(cache_app, at_time):
    from campaign.web.forms import _serializer

    at_time(1_800_000_000 + 42)
    token = form_token(cache_app.test_client().get(PAGE).get_data(as_text=True))
    with cache_app.app_context():
        petition_id = db.session.query(Petition.id).scalar()
        value, issued = _serializer().loads(token, return_timestamp=True)
    assert value == petition_id
    assert int(issued.timestamp()) == 1_800_000_000 // 60 * 60


def test_an_old_token_still_expires(make_app, at_time):
    from campaign.services.demo import seed_demo

    app = make_app(FORM_TOKEN_MAX_AGE=120, FORM_TOKEN_BUCKET=60)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    now = time.time()
    at_time(now)
    token = form_token(app.test_client().get(PAGE).get_data(as_text=True))
    at_time(now + 200)
    response = app.test_client().post(f"{PAGE}/sign", data={
        "name": "Slow", "email": "slow@example.com", "country": "DE", "form_token": token})
    assert response.status_code == 400
    assert "open for a long time" in response.get_data(as_text=True)


def test_the_etag_changes_with_the_count_and_the_page_shows_it(cache_app):
    client = cache_app.test_client()
    before = client.get(PAGE)
    with cache_app.app_context():
        petition_id = db.session.query(Petition.id).scalar()
        add_to_count(db.session, petition_id, 1234)
        db.session.commit()
    after = client.get(PAGE, headers={"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200
    assert after.headers["ETag"] != before.headers["ETag"]
    assert "1,234" in after.get_data(as_text=True)


def test_the_etag_changes_when_the_petition_closes(cache_app):
    client = cache_app.test_client()
    before = client.get(PAGE)
    with cache_app.app_context():
        db.session.get(Petition, db.session.query(Petition.id).scalar()).close()
        db.session.commit()
    after = client.get(PAGE, headers={"If-None-Match": before.headers["ETag"]})
    assert after.status_code == 200
    assert "This petition is closed" in after.get_data(as_text=True)


def test_preselected_country_is_part_of_the_key_and_vary(cache_app):
    client = cache_app.test_client()
    plain = client.get(PAGE)
    german = client.get(PAGE, headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert "accept-language" in plain.headers["Vary"].lower()
    assert plain.headers["ETag"] != german.headers["ETag"]
    assert plain.get_data() != german.get_data()
    assert client.get(PAGE, headers={"Accept-Language": "de-DE"}).get_data() == german.get_data()


def test_pages_render_the_same_without_the_process_cache(make_app, at_time):
    from campaign.services.demo import seed_demo

    at_time(1_800_000_000)
    bodies = []
    for size in (0, 16):
        app = make_app(PAGE_CACHE_SIZE=size)
        with app.app_context():
            seed_demo(db.session)
            db.session.commit()
        response = app.test_client().get(PAGE)
        assert response.status_code == 200
        bodies.append(response)
    assert "ETag" in bodies[0].headers
    assert 'name="form_token"' in bodies[0].get_data(as_text=True)


def test_microcache_serves_the_last_page_for_its_seconds_then_reads_again(make_app, monkeypatch):
    import campaign.web.public as public
    from campaign.services.demo import seed_demo

    app = make_app(PAGE_MICROCACHE=30)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    first = client.get(PAGE)
    with app.app_context():
        add_to_count(db.session, db.session.query(Petition.id).scalar(), 5)
        db.session.commit()
    cached = client.get(PAGE)
    assert cached.get_data() == first.get_data() and cached.headers["ETag"] == first.headers["ETag"]
    assert client.get(PAGE, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert "Set-Cookie" not in cached.headers
    later = time.monotonic() + 31
    monkeypatch.setattr(public.time, "monotonic", lambda: later)
    fresh = client.get(PAGE)
    assert fresh.headers["ETag"] != first.headers["ETag"]
    assert "<strong>5</strong>" in fresh.get_data(as_text=True)


def test_gunicorn_conf_turns_the_microcache_on_and_sizes_the_pool(monkeypatch):
    import importlib.util

    from tests.support import ROOT

    for name in ("SQLALCHEMY_POOL_SIZE", "SQLALCHEMY_MAX_OVERFLOW", "PAGE_MICROCACHE"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("gunicorn_conf_caching", ROOT / "gunicorn.conf.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(module.raw_env) == ["PAGE_MICROCACHE=1", "SQLALCHEMY_MAX_OVERFLOW=2", "SQLALCHEMY_POOL_SIZE=1"]


def test_check_email_page_is_served_from_the_microcache(make_app):
    from campaign.services.demo import seed_demo

    app = make_app(PAGE_MICROCACHE=30)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    first = client.get(f"{PAGE}/check-email")
    with app.app_context():
        db.session.get(Petition, db.session.query(Petition.id).scalar()).title = "Renamed"
        db.session.commit()
    second = client.get(f"{PAGE}/check-email")
    assert first.status_code == second.status_code == 200
    assert second.get_data() == first.get_data()
    assert "Set-Cookie" not in second.headers
