"""Shared set-up for the organizer API and webhook tests: two campaigns (the demo's, "A", and
another, "B"), signatures on each, and tokens made by the service as their owners would."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from sqlalchemy import select

from campaign.extensions import db
from campaign.models import Campaign, Petition, Signature, User
from campaign.services import api_tokens, organizing
from campaign.services.demo import DEMO_ORGANIZER_EMAIL, DEMO_PETITION_SLUG, seed_demo
from campaign.services.emails import parse_email
from campaign.services.signing import SignerInput, confirm_signature, sign_petition

# The signers of A's petition: name, email, country, consent to updates, confirmed.
SIGNERS_A = [
    ("Zarema Example", "zarema@example.net", "RU", True, True),
    ("Ayşe Örnek", "ayse@example.net", "TR", False, True),
    ("Jean Exemple", "jean@example.net", "FR", True, False),
    ("Kim Muster", "kim@example.net", "DE", False, False),
]


@dataclass
class World:
    app: Flask
    a_campaign: int
    a_petition: int
    a_owner: int
    b_campaign: int
    b_petition: int
    b_draft: int
    b_owner: int
    tokens: dict[str, str] = field(default_factory=dict)
    signature_ids: list[int] = field(default_factory=list)

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}


def add_signer(petition: Petition, name: str, email: str, country: str, consent: bool, confirm: bool) -> int:
    sign_petition(db.session, petition, SignerInput(name=name, email=parse_email(email), country=country,
                                                    consent_updates=consent, comment="For them."))
    db.session.flush()
    signature = db.session.scalars(select(Signature).where(Signature.petition_id == petition.id)
                                   .order_by(Signature.id.desc())).first()
    assert signature is not None
    if confirm:
        confirm_signature(db.session, signature)
    return signature.id


def make_token(app: Flask, campaign_id: int, user_id: int, scopes: list[str], name: str = "CRM",
               days: int | None = None) -> str:
    with app.app_context():
        user = db.session.get(User, user_id)
        campaign = db.session.get(Campaign, campaign_id)
        assert user is not None and campaign is not None
        _token, secret = api_tokens.create_api_token(db.session, user, campaign, name, scopes, days)
        db.session.commit()
        return secret


def build_world(app: Flask) -> World:
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        petition = db.session.scalar(select(Petition).where(Petition.slug == DEMO_PETITION_SLUG))
        owner = db.session.scalar(select(User).where(User.email == DEMO_ORGANIZER_EMAIL))
        assert petition is not None and owner is not None
        ids = [add_signer(petition, *signer) for signer in SIGNERS_A]
        b_owner = User(email="owner-b@example.com", name="Owner B", password_hash="x", status="active",
                       session_token="b" * 32)
        db.session.add(b_owner)
        db.session.flush()
        campaign_b = organizing.create_campaign(db.session, b_owner, organizing.CampaignInput(
            name="Campaign B", slug="campaign-b", organization="Org B", sender_name=""))
        petition_b = organizing.create_petition(db.session, b_owner, campaign_b, organizing.PetitionInput(
            title="Petition B", slug="petition-b", body_markdown="Please sign."))
        petition_b.publish()
        draft_b = organizing.create_petition(db.session, b_owner, campaign_b, organizing.PetitionInput(
            title="Draft B", slug="draft-b", body_markdown="Draft."))
        add_signer(petition_b, "Secret Signer B", "secret-b@example.net", "DE", True, True)
        db.session.commit()
        world = World(app, petition.campaign_id, petition.id, owner.id, campaign_b.id, petition_b.id,
                      draft_b.id, b_owner.id, signature_ids=ids)
    world.tokens["read"] = make_token(app, world.a_campaign, world.a_owner, ["read"], "Read CRM")
    world.tokens["write"] = make_token(app, world.a_campaign, world.a_owner, ["write"], "Write tool")
    world.tokens["both"] = make_token(app, world.a_campaign, world.a_owner, ["read", "write"], "Sync")
    world.tokens["b"] = make_token(app, world.b_campaign, world.b_owner, ["read", "write"], "B's CRM")
    return world


def body_of(response: Any) -> Any:
    return response.get_json(force=True)
