"""R36 (short run) and SQL-ish input: Hypothesis fills the sign form (and the widget's) with
anything, never a 500; quotes, comment markers, wildcards and NULs in every search and filter
(organizer signature search, bulk review filters, the API) are data, never SQL."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from campaign.extensions import db
from campaign.models import Petition, Signature
from tests.organize.conftest import add_user, csrf_of, login
from tests.security.conftest import SLUG, client_from, demo_petition_id, sign_as

EXAMPLES = int(os.environ.get("FORM_FUZZ_EXAMPLES", "80"))
field = st.one_of(st.text(max_size=300), st.sampled_from(["", " ", "\x00", "' OR 1=1 --", "a" * 5000,
                                                          "<script>", "\ud800".encode("utf-8", "surrogatepass")
                                                          .decode("utf-8", "replace")]))


@pytest.mark.parametrize("path", ["/petitions/{slug}/sign", "/embed/{slug}/sign"])
def test_the_sign_forms_never_answer_500(make_sec_app, path):
    app = make_sec_app()
    client = client_from(app, "198.51.100.1")
    page = client.get(f"/petitions/{SLUG}").get_data(as_text=True)
    from tests.support import form_token

    token = form_token(page)

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
              phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
    @given(name=field, email=st.one_of(st.emails(), field), country=st.one_of(st.sampled_from(["DE", "FR", ""]), field),
           postcode=field, comment=field, website=field, source=field, use_token=st.booleans(),
           extra=st.dictionaries(st.text(max_size=10), field, max_size=3))
    def fuzz(name, email, country, postcode, comment, website, source, use_token, extra):
        data = {**extra, "name": name, "email": email, "country": country, "postcode": postcode,
                "comment": comment, "website": website, "source": source,
                "form_token": token if use_token else comment}
        response = client.post(path.format(slug=SLUG), data=data)
        assert response.status_code in (200, 303, 400, 404, 410, 413), response.status_code
        assert b"Traceback" not in response.get_data()

    fuzz()


SQLISH = ["' OR '1'='1", "'; DROP TABLE signatures; --", '" OR ""="', "%", "_", "\\", "%' --",
          "1; SELECT * FROM users", "\x00", "ä' UNION SELECT email FROM users --", "*/ OR 1=1 /*",
          "198.51.100.0/24' OR 1=1 --", "a@b.c' OR 1=1 --"]


def _signers(app):
    for n in range(3):
        sign_as(client_from(app, f"198.51.100.{n + 1}"), f"s{n}@example.org", name=f"Signer {n}")


@pytest.mark.parametrize("payload", SQLISH)
def test_sqlish_payloads_in_every_search_and_filter(make_sec_app, payload):
    app = make_sec_app()
    _signers(app)
    add_user(app, "root@example.org", admin=True)
    client = app.test_client()
    login(client, "root@example.org")
    petition_id = demo_petition_id(app)
    base = f"/organize/petitions/{petition_id}/signatures"
    # (response, whether the payload as a filter must match no signer)
    checks = [
        (client.get(base, query_string={"name": payload}), True),
        (client.get(base, query_string={"email": payload}), True),
        (client.get(base, query_string={"country": payload, "status": payload}), True),
        (client.get(base, query_string={"page": payload}), False),
        (client.get("/organize/admin/users", query_string={"status": payload}), False),
        (client.get(f"/api/v1/petitions/{payload}"), False),
        (client.get("/api/v1/petitions", query_string={"q": payload, "status": payload, "page": payload}), False),
        (client.get(f"/petitions/{SLUG}", query_string={"source": payload}), False),
    ]
    token = csrf_of(client.get(f"/organize/petitions/{petition_id}/moderation").get_data(as_text=True))
    for name in ("ip", "domain", "country"):
        preview = client.post(f"/organize/petitions/{petition_id}/moderation/preview", data={
            "csrf_token": token, name: payload, "action": "invalidate"})
        checks.append((preview, False))
        body = preview.get_data(as_text=True)
        assert "<strong>0</strong> signatures would be" in body or preview.status_code == 400, (name, payload)
    for response, must_be_empty in checks:
        assert response.status_code < 500, (response.request.path, response.status_code)
        if must_be_empty:
            assert "Signer " not in response.get_data(as_text=True), (response.request.url, payload)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Signature)) == 3
        assert db.session.scalar(select(Petition.slug).where(Petition.slug == SLUG)) == SLUG


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | field,
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=4), max_leaves=12)


def test_the_json_sign_api_never_answers_500(make_sec_app):
    """Any JSON value, and objects with the signer's fields set to anything, never a 5xx
    (Schemathesis in tests/api covers the documented shapes; this covers the undocumented)."""
    app = make_sec_app(RATELIMIT_API="100000 per minute")
    client = client_from(app, "198.51.100.2")
    path = f"/api/v1/petitions/{SLUG}/signatures"

    @settings(max_examples=EXAMPLES // 2, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=st.one_of(_json, st.fixed_dictionaries(
        {"name": st.one_of(field, _json), "email": st.one_of(st.emails(), field, _json),
         "country": st.one_of(st.sampled_from(["DE", "FR"]), field, _json)},
        optional={"postcode": _json, "comment": _json, "consent_updates": _json, "source": _json,
                  "website": _json})), raw=st.booleans())
    def fuzz(body, raw):
        import json

        if raw:  # also bytes that are not JSON at all
            data = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")[:-1]
        else:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
        response = client.post(path, data=data, content_type="application/json")
        assert response.status_code < 500, (body, response.status_code)
        assert response.content_type == "application/problem+json" or response.status_code == 202

    fuzz()
