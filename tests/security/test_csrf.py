"""R26: every state-changing route in the final URL map refuses a request without its token,
for a visitor and for a signed-in admin; the routes exempt from session CSRF are exactly the
reviewed list, and each refuses a request without its own proof."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from campaign.extensions import csrf, db
from tests.organize.conftest import add_user, login

WRITE = {"POST", "PUT", "PATCH", "DELETE"}
CSRF_MESSAGE = "security token was missing or expired"

# Reviewed exemptions (DESIGN "Forms, CSRF and caching"), with what protects each instead.
EXEMPT_VIEWS = {
    "campaign.web.public.sign": "signed form token + Origin/Sec-Fetch-Site check",
    "campaign.web.embed.sign": "signed form token (the widget is a public sign form)",
    # Issue 7: mail programs' one-click POST (RFC 8058) carries no cookie; the webhook no session.
    "campaign.web.reach_public.unsubscribe": "signed unsubscribe token in the URL",
    "campaign.web.reach_public.bounce_webhook": "HMAC-SHA256 of timestamp and body (shared secret)",
}
EXEMPT_BLUEPRINTS = {
    "api": "token authentication, no cookies",
}


def _url(rule, values):
    url = rule.rule
    for name in rule.arguments:
        url = re.sub(rf"<(?:[a-z]+:)?{name}>", str(values.get(name, "1")), url)
    return url


def _table_counts(app):
    with app.app_context():
        return {table.name: db.session.scalar(select(func.count()).select_from(table))
                for table in db.metadata.sorted_tables}


def _write_rules(app):
    return [(rule, method) for rule in app.url_map.iter_rules()
            for method in sorted(rule.methods & WRITE)]


def _exempt(app, rule):
    view = app.view_functions[rule.endpoint]
    location = f"{view.__module__}.{view.__name__}"
    blueprint = rule.endpoint.rpartition(".")[0]
    return location in EXEMPT_VIEWS or blueprint in EXEMPT_BLUEPRINTS


def test_the_exemptions_are_exactly_the_reviewed_list(sec_app):
    views = set(csrf._exempt_views)
    blueprints = {bp.name if hasattr(bp, "name") else bp for bp in csrf._exempt_blueprints}
    assert views == set(EXEMPT_VIEWS), "a new CSRF exemption needs a review and a line in EXEMPT_VIEWS"
    assert blueprints == set(EXEMPT_BLUEPRINTS)


@pytest.mark.parametrize("who", ["visitor", "admin"])
def test_every_state_changing_route_refuses_a_missing_token(sec_app, who):
    app = sec_app
    client = app.test_client()
    if who == "admin":
        add_user(app, "root@example.org", admin=True)
        assert login(client, "root@example.org").status_code == 302
    values = {"slug": "g20-chechnya", "token": "x"}
    before = _table_counts(app)
    rules = _write_rules(app)
    assert len(rules) > 30, "the URL map lost its routes"
    refused = []
    for rule, method in rules:
        response = client.open(_url(rule, values), method=method, data={"name": "x", "email": "x@example.org"})
        body = response.get_data(as_text=True)
        if _exempt(app, rule):
            ok = 400 <= response.status_code < 500
        else:
            ok = response.status_code == 400 and CSRF_MESSAGE in body
        if not ok:
            refused.append((method, rule.rule, response.status_code))
    assert refused == [], f"routes that accepted a request without their token: {refused}"
    after = _table_counts(app)
    changed = {name for name in before if before[name] != after[name] and name not in {"audit_events",
                                                                                          "attempt_counters"}}
    assert changed == set(), changed


def test_a_token_from_another_session_is_refused(sec_app):
    add_user(sec_app, "a@example.org")
    add_user(sec_app, "b@example.org")
    first, second = sec_app.test_client(), sec_app.test_client()
    login(first, "a@example.org")
    login(second, "b@example.org")
    from tests.organize.conftest import csrf_of

    token_of_first = csrf_of(first.get("/organize/").get_data(as_text=True))
    response = second.post("/organize/campaigns/new", data={"csrf_token": token_of_first, "name": "Stolen",
                                                            "slug": "stolen", "organization": "x",
                                                            "sender_name": "x"})
    assert response.status_code == 400
