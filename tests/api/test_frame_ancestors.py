"""Only the widget may be framed: every other page, found from the URL map, keeps
frame-ancestors 'none' and X-Frame-Options DENY."""

from __future__ import annotations

import re
from typing import Any

import pytest

# The widget's pages; its POST answers inside the frame too (tests/api/test_embed.py).
FRAMABLE = {"embed.widget", "embed.check_email"}
ARGUMENTS = {"slug": "g20-chechnya", "token": "x", "filename": "css/site.css", "lang": "en"}


def _url(rule: Any) -> str:
    url = rule.rule
    for name in rule.arguments:
        converter = type(rule._converters[name]).__name__
        value = "1" if converter in {"IntegerConverter", "UUIDConverter"} else ARGUMENTS.get(name, "x")
        url = re.sub(rf"<(?:[^>:]+:)?{name}>", value, url)
    return url


@pytest.mark.usefixtures("demo")
def test_every_get_route_but_the_widget_refuses_to_be_framed(app, client):
    rules = [r for r in app.url_map.iter_rules() if "GET" in r.methods]
    framable = 0
    for rule in rules:
        url = _url(rule)
        response = client.get(url)
        response.close()
        csp = response.headers.get("Content-Security-Policy", "")
        if rule.endpoint in FRAMABLE:
            framable += 1
            assert "frame-ancestors *" in csp, url
            assert "X-Frame-Options" not in response.headers, url
        else:
            assert "frame-ancestors 'none'" in csp, (url, response.status_code, csp)
            assert response.headers.get("X-Frame-Options") == "DENY", url
    # Shown to fail once against a variant that made the snippet page framable.
    assert framable == len(FRAMABLE)
    assert len(rules) > 10, "the URL map looks empty"


def test_error_pages_refuse_to_be_framed(client):
    for path in ("/no-such-page", "/api/v1/nothing", "/embed/", "/embed/x/y/z"):
        response = client.get(path)
        assert response.status_code == 404
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], path
        assert response.headers["X-Frame-Options"] == "DENY"
