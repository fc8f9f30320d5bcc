"""Fixtures for organizer reach (issue 7): a campaign with an organizer signed in, and signers
written in bulk (encrypted like the signing path writes them) so thousands cost a second."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import insert, select

from campaign.extensions import db
from campaign.models import Campaign, MemberRole, Petition, PetitionStatus, Signature, SignatureStatus, User
from campaign.models.base import utcnow
from campaign.services.emails import canonical_email
from campaign.services.petitions import create_counter_shards
from campaign.services.privacy import cipher
from tests.organize.conftest import FAST_HASHING, add_user, csrf_of, login

ORGANIZER = "organizer@reach.example.org"
UNSUBSCRIBE = re.compile(r"<(http://campaign\.test(/unsubscribe/[^>]+))>")


@dataclass
class World:
    app: Flask
    campaign_id: int
    petition_id: int
    other_petition_id: int
    organizer_id: int


def make_world(app: Flask) -> World:
    with app.app_context():
        campaign = Campaign(slug="reach", name="Reach test", organization="Reach Coalition",
                            sender_name="Reach Coalition")
        db.session.add(campaign)
        db.session.flush()
        petitions = []
        for slug in ("reach-one", "reach-two"):
            petition = Petition(campaign_id=campaign.id, slug=slug, title=f"Petition {slug}", summary="s",
                                body_markdown="b", body_html="<p>b</p>", language="en",
                                status=PetitionStatus.PUBLISHED, published_at=utcnow())
            db.session.add(petition)
            db.session.flush()
            create_counter_shards(db.session, petition)
            petitions.append(petition.id)
        db.session.commit()
        campaign_id = campaign.id
    organizer_id = add_user(app, ORGANIZER, campaign_id=campaign_id, role=MemberRole.OWNER)
    with app.app_context():
        user = db.session.get(User, organizer_id)
        assert user is not None
        user.name = "Olga Organizer"
        db.session.commit()
    return World(app, campaign_id, petitions[0], petitions[1], organizer_id)


def add_signers(app: Flask, petition_id: int, count: int, *, start: int = 0, consent: bool = True,
                status: str = SignatureStatus.CONFIRMED, country: str = "DE", source: str = "",
                locale: str = "en", domain: str = "example.net", age: timedelta = timedelta(hours=1),
                name: str = "Signer{n} Person") -> list[str]:
    """Insert count signatures in one statement; returns their addresses (signer<n>@domain)."""
    crypt = cipher_of(app)
    now = utcnow()
    rows, addresses = [], []
    for n in range(start, start + count):
        address = f"signer{n}@{domain}"
        addresses.append(address)
        rows.append({
            "petition_id": petition_id, "name_encrypted": crypt.encrypt(name.format(n=n)),
            "email_encrypted": crypt.encrypt(address), "email_index": crypt.blind_index(canonical_email(address)),
            "country": country, "comment": "", "consent_updates": consent, "source": source, "locale": locale,
            "status": status, "created_at": now - age,
            "confirmed_at": now if status == SignatureStatus.CONFIRMED else None,
        })
    with app.app_context():
        for chunk in range(0, len(rows), 2000):
            db.session.execute(insert(Signature), rows[chunk:chunk + 2000])
        db.session.commit()
    return addresses


def cipher_of(app: Flask) -> Any:
    with app.app_context():
        return cipher()


def index_of(app: Flask, address: str) -> str:
    with app.app_context():
        return cipher().blind_index(canonical_email(address))


def signed_in(app: Flask) -> Any:
    client = app.test_client()
    assert login(client, ORGANIZER).status_code == 302
    return client


def post_form(client: Any, path: str, data: dict[str, Any], page: str | None = None, **kw: Any) -> Any:
    """POST with the CSRF token of a page the organizer can see (the form's own page by default)."""
    html = client.get(page or path).get_data(as_text=True)
    return client.post(path, data={"csrf_token": csrf_of(html), **data}, **kw)


def recipient_of(message: EmailMessage) -> str:
    return str(message["To"]).strip().lower()


def unsubscribe_path(message: EmailMessage) -> str:
    match = UNSUBSCRIBE.fullmatch(" ".join(str(message["List-Unsubscribe"]).split()))
    assert match, message["List-Unsubscribe"]
    return match.group(2)


def signature_ids(app: Flask, petition_id: int) -> list[int]:
    with app.app_context():
        return list(db.session.scalars(select(Signature.id).where(Signature.petition_id == petition_id)))


@pytest.fixture
def reach_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(**FAST_HASHING)


@pytest.fixture
def world(reach_app: Flask) -> World:
    return make_world(reach_app)
