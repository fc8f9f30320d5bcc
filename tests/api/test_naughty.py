"""The Big List of Naughty Strings in every field of the API and the widget: never a 5xx, always
a documented answer naming only the fields that were naughty, and what is echoed back is escaped.

Fields are grouped so that one request carries a string in several fields that accept the same
kinds of text; each group is its own test, so pytest-xdist can spread them.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest

from campaign.extensions import db
from campaign.models import Signature
from campaign.services.demo import seed_demo
from tests.api.conftest import signer
from tests.support import ROOT, form_token

NAUGHTY: list[str] = json.loads((ROOT.parent / "shared" / "data" / "naughty-strings" / "blns.json")
                                .read_text("utf-8"))
SIGN = "/api/v1/petitions/g20-chechnya/signatures"


@pytest.fixture
def quiet_app(make_app: Any) -> Any:
    # Hundreds of requests from one client: the API's rate limit is not what is tested here.
    app = make_app(RATELIMIT_API="1000000 per minute")
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    return app


@pytest.mark.parametrize("fields", [("comment", "source"), ("name", "postcode"), ("email",), ("country",)])
def test_naughty_strings_in_every_signing_field_of_the_api(quiet_app, fields):
    client = quiet_app.test_client()
    accepted = 0
    for n, text in enumerate(NAUGHTY):
        # A fresh address per request, so every accepted one reaches the database (no email cap).
        body = signer(**{"email": f"naughty-{n}@example.com", **dict.fromkeys(fields, text)})
        response = client.post(SIGN, json=body)
        assert response.status_code in (202, 422), (fields, text, response.status_code)
        if response.status_code == 422:
            assert response.content_type == "application/problem+json"
            assert set(response.get_json()["errors"]) <= set(fields), (fields, text)
        accepted += response.status_code == 202
    with quiet_app.app_context():
        assert db.session.query(Signature).count() == accepted
    if fields == ("comment", "source"):
        # Printable text in any script is welcome (DESIGN): only control characters are refused.
        assert accepted > 0.9 * len(NAUGHTY)


def test_naughty_strings_as_the_body_and_in_query_and_path(quiet_app):
    client = quiet_app.test_client()
    for text in NAUGHTY:
        raw = client.post(SIGN, data=text.encode("utf-8", "surrogatepass"), content_type="application/json")
        assert raw.status_code in (400, 422), text
        quoted = quote(text, safe="")
        for path in (f"/api/v1/petitions?cursor={quoted}&limit={quoted}&status={quoted}",
                     f"/api/v1/petitions/{quoted}", f"/embed/{quoted}",
                     f"/embed/g20-chechnya?source={quoted}", f"/embed/g20-chechnya/snippet?source={quoted}",
                     f"/embed/g20-chechnya/check-email?source={quoted}"):
            response = client.get(path)
            assert response.status_code in (200, 308, 400, 404), (path, response.status_code)


@pytest.mark.parametrize("fields", [("name", "postcode", "source"), ("email", "country")])
def test_naughty_strings_in_the_widget_form_are_escaped(quiet_app, fields):
    client = quiet_app.test_client()
    token = form_token(client.get("/embed/g20-chechnya").get_data(as_text=True))
    headers = {"Origin": "http://campaign.test", "Sec-Fetch-Site": "same-origin"}
    for n, text in enumerate(NAUGHTY):
        data = {"name": "Ada", "email": f"widget-{n}@example.com", "country": "DE", "form_token": token,
                **dict.fromkeys(fields, text)}
        response = client.post("/embed/g20-chechnya/sign", data=data, headers=headers)
        assert response.status_code in (303, 400), (fields, text, response.status_code)
        if response.status_code == 400 and "<script" in text.lower():
            assert text not in response.get_data(as_text=True), (fields, text)
