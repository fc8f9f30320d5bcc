"""Fixtures for the security tests: an app with the demo petition and the bot checks on, signing
from a chosen client address, organizers of two campaigns, and reading the outbox back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from campaign.extensions import db
from campaign.models import OutboundEmail, Petition, Signature
from tests.organize.conftest import FAST_HASHING
from tests.support import form_token

SLUG = "g20-chechnya"
# The production defaults for the signing path's bot checks (tests/support switches them off).
BOT_CHECKS = {"SIGNING_IP_BURST": "1/60, 5/300", "SIGNING_DOMAIN_BURST": "30/60, 100/300",
              "SIGNING_RATELIMIT_PER_IP": "20 per minute; 200 per hour",
              "SIGNING_RATELIMIT_PER_PETITION": "2 per minute; 10 per hour",
              "SIGNING_MIN_FILL_SECONDS": 0, "FORM_TOKEN_BUCKET": 1}


@pytest.fixture
def make_sec_app(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    """An app with the demo petition seeded; keyword arguments override the config."""
    from campaign.services.demo import seed_demo

    def factory(**overrides: Any) -> Flask:
        app = make_app(**(FAST_HASHING | BOT_CHECKS | overrides))
        with app.app_context():
            seed_demo(db.session)
            db.session.commit()
        return app
    return factory


@pytest.fixture
def sec_app(make_sec_app: Callable[..., Flask]) -> Flask:
    return make_sec_app()


def client_from(app: Flask, ip: str) -> Any:
    """A test client whose requests come from this address (REMOTE_ADDR)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip
    return client


def sign_as(client: Any, email: str, slug: str = SLUG, **fields: Any) -> Any:
    page = client.get(f"/petitions/{slug}")
    data = {"name": "Ada Lovelace", "email": email, "country": "DE",
            "form_token": form_token(page.get_data(as_text=True))}
    data.update(fields)
    return client.post(f"/petitions/{slug}/sign", data=data)


def signature_of(app: Flask, email_fragment: str | None = None) -> list[Signature]:
    """Every signature (newest last), detached from the session, with the statuses as stored."""
    with app.app_context():
        rows = list(db.session.scalars(select(Signature).order_by(Signature.id)))
        for row in rows:
            db.session.expunge(row)
        return rows


def demo_petition_id(app: Flask) -> int:
    with app.app_context():
        found = db.session.scalar(select(Petition.id).where(Petition.slug == SLUG))
        assert found is not None
        return int(found)


def count_of(app: Flask, petition_id: int | None = None) -> int:
    from campaign.services.counting import signature_count

    with app.app_context():
        return signature_count(db.session, petition_id or demo_petition_id(app))


def outbox(app: Flask) -> list[tuple[int, str, int | None, str]]:
    with app.app_context():
        return [(r.id, r.kind, r.signature_id, r.status)
                for r in db.session.scalars(select(OutboundEmail).order_by(OutboundEmail.id))]
