"""Fixtures for the API and widget tests: extra petitions and signing through the API.
(The widget's browser test lives in tests/browser/, beside the live server and Chromium it uses:
one Playwright per process.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from campaign.extensions import db
from campaign.models import Campaign, Petition, PetitionTarget, Target
from campaign.models.base import utcnow
from campaign.services.petitions import create_counter_shards

SIGN_URL = "/api/v1/petitions/g20-chechnya/signatures"


def signer(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "Ada Lovelace", "email": "ada@example.com", "country": "GB",
                            "postcode": "NW1 6XE", "comment": "For them.", "consent_updates": True,
                            "source": "partner-api"}
    body.update(fields)
    return body


def api_sign(client: Any, slug: str = "g20-chechnya", **fields: Any) -> Any:
    return client.post(f"/api/v1/petitions/{slug}/signatures", json=signer(**fields))


@pytest.fixture
def make_petition(app: Flask, demo: str) -> Callable[..., int]:
    """Add a petition to the demo's campaign: make_petition("slug", status="closed") -> its id."""
    def make(slug: str, status: str = "published", title: str | None = None, targets: int = 1) -> int:
        with app.app_context():
            campaign = db.session.query(Campaign).first()
            assert campaign is not None
            petition = Petition(campaign_id=campaign.id, slug=slug, title=title or f"Petition {slug}",
                                summary="A summary.", body_markdown="Text.", body_html="<p>Text.</p>",
                                status=status, goal=500, language="en",
                                published_at=utcnow() if status != "draft" else None)
            db.session.add(petition)
            db.session.flush()
            create_counter_shards(db.session, petition)
            for n in range(targets):
                target = Target(name=f"Target {slug} {n}", title="Minister", country="FR",
                                email=f"secret-{slug}-{n}@targets.example.org")
                db.session.add(target)
                db.session.flush()
                db.session.add(PetitionTarget(petition_id=petition.id, target_id=target.id, position=n))
            db.session.commit()
            return petition.id

    return make
