"""R28 headers and cookies (production settings: HSTS, __Host- session cookie with Secure,
HttpOnly, SameSite), the CSP on every page, no open redirect through next= (R32), and CSV cells
that cannot run as formulas (R39)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaign import create_app
from campaign.extensions import db
from campaign.services.csv_safe import FORMULA_STARTS, csv_text, neutralize, read_rows
from tests.organize.conftest import FAST_HASHING, add_user, csrf_of
from tests.security.conftest import SLUG
from tests.support import KEYS


@pytest.fixture
def production_app(tmp_path, smtp_port):
    app = create_app({**KEYS, **FAST_HASHING, "CAMPAIGN_ENV": "production", "BASE_URL": "https://act.example.org",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}", "CELERY_BROKER_URL": "memory://",
                      "RATELIMIT_STORAGE_URI": "memory://", "MAIL_PORT": smtp_port, "LOG_FORMAT": "text"})
    with app.app_context():
        db.create_all()
        from campaign.services.demo import seed_demo

        seed_demo(db.session)
        db.session.commit()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _cookie_attributes(header):
    name_value, *attributes = [part.strip() for part in header.split(";")]
    return name_value.split("=", 1)[0], {a.split("=", 1)[0].lower(): a.partition("=")[2] for a in attributes}


def test_production_session_cookie_is_host_prefixed_secure_httponly_samesite(production_app):
    client = production_app.test_client()
    response = client.get("/account/login", base_url="https://act.example.org")
    cookies = response.headers.getlist("Set-Cookie")
    assert cookies, "the login form sets the session that holds its CSRF token"
    for header in cookies:
        name, attributes = _cookie_attributes(header)
        assert name.startswith("__Host-"), header
        assert "secure" in attributes and "httponly" in attributes, header
        assert attributes.get("samesite", "").lower() in {"lax", "strict"}, header
        assert attributes.get("path") == "/" and "domain" not in attributes, header


def test_production_responses_carry_hsts_and_the_headers(production_app):
    client = production_app.test_client()
    for path in ("/", f"/petitions/{SLUG}", "/account/login", "/no-such-page", f"/api/v1/petitions/{SLUG}"):
        headers = client.get(path, base_url="https://act.example.org").headers
        hsts = headers.get("Strict-Transport-Security", "")
        assert "includeSubDomains" in hsts and int(hsts.split("max-age=")[1].split(";")[0]) >= 31_536_000, path


def test_every_get_route_has_csp_nosniff_and_referrer_policy(sec_app):
    """R28's crawl: every GET route the URL map has, with sample arguments."""
    client = sec_app.test_client()
    values = {"slug": SLUG, "token": "x", "filename": "css/site.css"}
    checked = 0
    for rule in sec_app.url_map.iter_rules():
        if "GET" not in rule.methods or any(a not in values for a in rule.arguments):
            continue
        path = rule.rule
        for name in rule.arguments:
            path = path.replace(f"<{name}>", values[name]).replace(f"<path:{name}>", values[name])
        response = client.get(path)
        response.close()  # static files are streamed from an open file
        headers = response.headers
        csp = headers.get("Content-Security-Policy", "")
        assert "frame-ancestors" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        if not path.startswith("/embed/"):
            assert "frame-ancestors 'none'" in csp, path
        assert headers.get("X-Content-Type-Options") == "nosniff", path
        assert headers.get("Referrer-Policy") in {"strict-origin-when-cross-origin", "no-referrer"}, path
        checked += 1
    assert checked > 15


NEXT_VALUES = ["https://evil.example/", "//evil.example", "/\\evil.example", "\\\\evil.example", "/%2F%2Fevil.example",
               "%2F%2Fevil.example", "javascript:alert(1)", "http:/evil.example", "/\t/evil.example",
               " //evil.example", "///evil.example", "/.//evil.example", "https:evil.example",
               "\u3002/evil.example", "/organize/?next=//evil.example", "data:text/html,x"]


@pytest.mark.parametrize("target", NEXT_VALUES)
def test_next_never_leaves_the_site(sec_app, target):
    add_user(sec_app, "who@example.org")
    client = sec_app.test_client()
    page = client.get("/account/login", query_string={"next": target})
    response = client.post("/account/login", query_string={"next": target}, data={
        "email": "who@example.org", "password": "correct horse battery staple",
        "csrf_token": csrf_of(page.get_data(as_text=True))})
    assert response.status_code in (302, 303)
    location = response.headers["Location"]
    parts = urlsplit(location)
    assert parts.scheme in ("", "http") and parts.netloc in ("", "localhost"), location
    assert not location.startswith(("//", "/\\")), location


def test_safe_next_allows_own_paths():
    from campaign.web.auth import safe_next

    assert safe_next("/organize/petitions/1") == "/organize/petitions/1"
    assert all(safe_next(v) in (None, v) and not (safe_next(v) or "/").startswith("//") for v in NEXT_VALUES)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(FORMULA_STARTS).flatmap(
    lambda start: st.text(max_size=10).map(lambda rest: start + rest)), st.integers(), st.none()),
    min_size=1, max_size=5), min_size=1, max_size=5))
def test_csv_cells_never_start_a_formula_and_round_trip(rows):
    """R39: no cell read back starts with = + - @ tab CR LF NUL; text survives the round trip."""
    width = max(len(row) for row in rows)
    rows = [row + [None] * (width - len(row)) for row in rows]
    back = read_rows(csv_text([f"c{i}" for i in range(width)], rows))[1:]
    assert len(back) == len(rows)
    for original, parsed in zip(rows, back, strict=True):
        for cell, text in zip(original, parsed, strict=True):
            if isinstance(cell, str):
                assert not text.startswith(FORMULA_STARTS)
                assert text == neutralize(cell)
                assert text.removeprefix("'") == cell or text == cell
