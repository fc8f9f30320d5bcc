"""The demo campaign, the public JSON API, and headers every response carries."""

from __future__ import annotations

from campaign.extensions import db
from campaign.models import Petition, PetitionTarget, Target
from campaign.services.demo import seed_demo


def test_seed_demo_is_idempotent_with_21_leaders_at_example_addresses(app):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["seed-demo"])
    second = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0 and "Seeded" in first.output
    assert second.exit_code == 0 and "nothing changed" in second.output
    with app.app_context():
        assert db.session.query(Petition).count() == 1
        assert db.session.query(Target).count() == 21
        assert db.session.query(PetitionTarget).count() == 21
        petition = db.session.query(Petition).one()
        assert petition.slug == "g20-chechnya" and petition.goal == 100_000
        assert petition.status == "published" and petition.is_sensitive
        assert petition.campaign.name == "End the anti-gay purge in Chechnya"
        targets = db.session.query(Target).all()
        assert all(t.email.endswith(".example.org") for t in targets)
        countries = {t.country for t in targets}
        assert len(countries - {"EU", "AFU"}) == 19 and {"EU", "AFU"} <= countries
        assert seed_demo(db.session) is False


def test_api_petition_shape_and_no_target_emails(client, demo):
    response = client.get("/api/v1/petitions/g20-chechnya")
    assert response.status_code == 200
    data = response.get_json()
    assert {"slug", "title", "status", "goal", "signature_count", "targets"} <= set(data)
    assert data["slug"] == "g20-chechnya" and data["status"] == "published"
    assert data["goal"] == 100_000 and data["signature_count"] == 0
    assert len(data["targets"]) == 21
    assert all(set(t) == {"name", "title", "country", "country_name"} for t in data["targets"])
    assert "example.org" not in response.get_data(as_text=True)
    assert data["url"] == "http://campaign.test/petitions/g20-chechnya"


def test_security_headers_on_pages_and_api(client, demo):
    for path in ("/", "/petitions/g20-chechnya", "/api/v1/petitions/g20-chechnya", "/no-such-page"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
        assert "'unsafe-inline'" not in headers["Content-Security-Policy"], path
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_every_post_route_refuses_a_missing_token(client, demo):
    """R26: every state-changing route, found from the URL map, rejects a POST without its token."""
    app = client.application
    rules = [r for r in app.url_map.iter_rules()
             if r.methods & {"POST", "PUT", "PATCH", "DELETE"} and not r.rule.startswith("/api/")]
    assert rules, "no state-changing routes found"
    args = {"slug": "g20-chechnya", "token": "x"}
    for rule in rules:
        url = rule.rule
        for name in rule.arguments:
            url = url.replace(f"<{name}>", args.get(name, "1"))
        for method in rule.methods & {"POST", "PUT", "PATCH", "DELETE"}:
            response = client.open(url, method=method, data={"name": "x"})
            assert response.status_code in (400, 404), (method, url, response.status_code)
    with app.app_context():
        from campaign.models import Signature

        assert db.session.query(Signature).count() == 0


def test_healthz(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
