"""The WSGI fast path (campaign/web/fastpath.py): a microcached page answered again without Flask,
byte for byte and header for header, only for the request it was made for."""

from __future__ import annotations

import re
import time

import pytest
from flask import request_started

from campaign.extensions import db
from campaign.models import Petition
from campaign.services.counting import add_to_count
from campaign.web.fastpath import FastPath, allow

PAGE = "/petitions/g20-chechnya"


@pytest.fixture
def fast_app(make_app):
    from campaign.services.demo import seed_demo

    app = make_app(PAGE_MICROCACHE=30)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    return app


@pytest.fixture
def flask_requests(fast_app):
    """How many requests reached Flask (the fast path's answers never do)."""
    seen: list[str] = []

    def count(_sender, **_extra):
        from flask import request

        seen.append(request.path)

    request_started.connect(count, fast_app)
    yield seen
    request_started.disconnect(count, fast_app)


def _add_signatures(app, n: int) -> None:
    with app.app_context():
        add_to_count(db.session, db.session.query(Petition.id).scalar(), n)
        db.session.commit()


@pytest.mark.parametrize("path", [PAGE, f"{PAGE}/check-email", f"/ru{PAGE}", f"{PAGE}/check-email?lang=fr"])
def test_second_view_is_the_same_answer_without_flask(fast_app, flask_requests, path):
    client = fast_app.test_client()
    first = client.get(path)
    assert first.status_code == 200
    assert len(flask_requests) == 1
    second = client.get(path)
    assert len(flask_requests) == 1, "the second view reached Flask"
    assert second.status_code == 200
    assert second.get_data() == first.get_data()
    assert sorted(second.headers.items()) == sorted(first.headers.items())
    assert "Content-Security-Policy" in second.headers and "Set-Cookie" not in second.headers


def test_the_page_stays_as_old_as_the_setting_and_no_older(fast_app, flask_requests, monkeypatch):
    client = fast_app.test_client()
    first = client.get(PAGE)
    _add_signatures(fast_app, 5)
    assert client.get(PAGE).get_data() == first.get_data()
    later = time.monotonic() + 31
    monkeypatch.setattr(time, "monotonic", lambda: later)
    fresh = client.get(PAGE)
    assert len(flask_requests) == 2
    assert "<strong>5</strong>" in fresh.get_data(as_text=True)


def test_the_preselected_country_and_the_query_are_part_of_the_key(fast_app, flask_requests):
    client = fast_app.test_client()
    german = client.get(PAGE, headers={"Accept-Language": "de-DE,de;q=0.9"})
    # Another Accept-Language naming the same country is the same page: served by the fast path.
    again = client.get(PAGE, headers={"Accept-Language": "en-DE"})
    assert len(flask_requests) == 1 and again.get_data() == german.get_data()
    canadian = client.get(PAGE, headers={"Accept-Language": "fr-CA"})
    assert len(flask_requests) == 2
    assert canadian.get_data() != german.get_data()
    assert re.search(r'<option selected value="CA">', canadian.get_data(as_text=True))
    sourced = client.get(f"{PAGE}?source=newsletter", headers={"Accept-Language": "de-DE"})
    assert len(flask_requests) == 3
    assert 'value="newsletter"' in sourced.get_data(as_text=True)


def test_conditional_and_other_requests_go_through_the_app(fast_app, flask_requests):
    client = fast_app.test_client()
    first = client.get(PAGE)
    assert client.get(PAGE, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert client.head(PAGE).status_code == 200
    assert len(flask_requests) == 3
    # A 404 is never kept.
    assert client.get("/petitions/no-such-petition").status_code == 404
    assert client.get("/petitions/no-such-petition").status_code == 404
    assert len(flask_requests) == 5


def test_a_post_after_a_cached_page_signs_as_before(fast_app, flask_requests):
    from tests.support import form_token

    client = fast_app.test_client()
    client.get(PAGE)
    page = client.get(PAGE).get_data(as_text=True)
    response = client.post(f"{PAGE}/sign", data={
        "name": "Ada Lovelace", "email": "ada@example.com", "country": "DE",
        "form_token": form_token(page)})
    assert response.status_code == 303
    assert client.get(response.headers["Location"]).status_code == 200
    assert flask_requests == [PAGE, f"{PAGE}/sign", f"{PAGE}/check-email"]


def test_microcache_off_keeps_nothing(make_app):
    from campaign.services.demo import seed_demo

    app = make_app(PAGE_MICROCACHE=0)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    client.get(PAGE)
    _add_signatures(app, 7)
    assert "<strong>7</strong>" in client.get(PAGE).get_data(as_text=True)
    assert not isinstance(app.wsgi_app, FastPath)


def test_fast_path_answers_are_counted_in_the_metrics(fast_app):
    from campaign.metrics import process_metrics

    def served() -> float:
        counter = process_metrics().requests.labels("public.petition", "GET", "200")
        return counter._value.get()

    client = fast_app.test_client()
    before = served()
    client.get(PAGE)
    client.get(PAGE)
    client.get(PAGE)
    assert served() - before == 3


def _app(status: str = "200 OK", cookie: bool = False, mark: bool = True):
    calls: list[str] = []

    def app(environ, start_response):
        calls.append(environ["PATH_INFO"])
        headers = [("Content-Type", "text/plain")]
        if cookie:
            headers.append(("Set-Cookie", "who=me"))
        if mark:
            allow(environ, 30, "test")
        start_response(status, headers)
        return [b"body of ", environ["PATH_INFO"].encode()]

    return app, calls


def _get(wsgi, path: str, **environ):
    answered: list = []
    body = b"".join(wsgi({"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", **environ},
                         lambda status, headers, exc_info=None: answered.append((status, headers))))
    return answered[0][0], body


@pytest.mark.parametrize("kwargs", [{"cookie": True}, {"status": "500 ERROR"}, {"mark": False}])
def test_answers_with_a_cookie_an_error_or_no_mark_are_not_kept(kwargs):
    inner, calls = _app(**kwargs)
    wsgi = FastPath(inner, size=8)
    assert _get(wsgi, "/a")[1] == b"body of /a"
    assert _get(wsgi, "/a")[1] == b"body of /a"
    assert calls == ["/a", "/a"]


def test_the_least_recently_used_answer_goes_first():
    inner, calls = _app()
    wsgi = FastPath(inner, size=2)
    for path in ("/a", "/b", "/a", "/c", "/a", "/b"):
        assert _get(wsgi, path) == ("200 OK", f"body of {path}".encode())
    # /b was pushed out by /c; /a stayed in use.
    assert calls == ["/a", "/b", "/c", "/b"]
