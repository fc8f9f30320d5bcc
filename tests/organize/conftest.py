"""Fixtures for the organizer tests: fast (but still R35-compliant) password hashing, accounts,
signing in with the page's own CSRF token, and two campaigns whose organizers must not see
each other's objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask

from campaign.extensions import db
from campaign.models import MemberRole, Membership, User, UserStatus

# The floor R35 allows: keeps hundreds of sign-ins in the suite fast.
FAST_HASHING = {"PASSWORD_HASH_MEMORY_KIB": 19456, "PASSWORD_HASH_TIME_COST": 2, "PASSWORD_HASH_PARALLELISM": 1}
PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="(?:[a-z]+-)?csrf_token" (?:type="hidden" )?value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "the page has no CSRF token"
    return match.group(1)


@pytest.fixture
def org_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(**FAST_HASHING)


@pytest.fixture
def make_org_app(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    def factory(**overrides: Any) -> Flask:
        return make_app(**(FAST_HASHING | overrides))
    return factory


def add_user(app: Flask, email: str, *, password: str = PASSWORD, admin: bool = False,
             status: str = UserStatus.ACTIVE, campaign_id: int | None = None,
             role: str = MemberRole.ORGANIZER) -> int:
    from campaign.services.accounts import hash_password, new_session_token

    with app.app_context():
        user = User(email=email, name=email.split("@")[0], password_hash=hash_password(password),
                    is_admin=admin, status=status, session_token=new_session_token())
        db.session.add(user)
        db.session.flush()
        if campaign_id is not None:
            db.session.add(Membership(campaign_id=campaign_id, user_id=user.id, role=role))
        db.session.commit()
        return user.id


def login(client: Any, email: str, password: str = PASSWORD, **headers: str) -> Any:
    page = client.get("/account/login")
    return client.post("/account/login", data={
        "email": email, "password": password, "csrf_token": csrf_of(page.get_data(as_text=True))},
        headers=headers)


def post(client: Any, path: str, data: dict[str, Any] | None = None, page: str | None = None, **kw: Any) -> Any:
    """POST with a CSRF token taken from a page the client can see (default: /account)."""
    html = client.get(page or "/organize/").get_data(as_text=True)
    return client.post(path, data={"csrf_token": csrf_of(html), **(data or {})}, **kw)


@dataclass
class Side:
    """One campaign and everything in it, with the people who may touch it."""
    campaign_id: int
    owner: str
    organizer: str
    petition_id: int
    draft_id: int
    target_id: int
    signature_id: int
    confirmed_id: int
    offline_id: int
    invitation_id: int
    owner_id: int = 0
    organizer_id: int = 0
    extra: dict[str, int] = field(default_factory=dict)


def build_side(app: Flask, name: str) -> Side:
    """A campaign with a published petition (one pending, one confirmed signature), a draft,
    its own target, a paper entry and a pending invitation."""
    from campaign.models import Campaign
    from campaign.services import organizing, target_lists
    from campaign.services.emails import parse_email
    from campaign.services.signing import SignerInput, confirm_signature, sign_petition

    owner = f"owner-{name}@example.com"
    organizer = f"organizer-{name}@example.com"
    owner_id = add_user(app, owner)
    with app.app_context():
        actor = db.session.get(User, owner_id)
        assert actor is not None
        campaign = organizing.create_campaign(db.session, actor, organizing.CampaignInput(
            name=f"Campaign {name}", slug=f"campaign-{name}", organization=f"Org {name}", sender_name=""))
        petition = organizing.create_petition(db.session, actor, campaign, organizing.PetitionInput(
            title=f"Petition {name}", slug=f"petition-{name}", body_markdown="Please sign."))
        draft = organizing.create_petition(db.session, actor, campaign, organizing.PetitionInput(
            title=f"Draft {name}", slug=f"draft-{name}", body_markdown="Draft."))
        target = target_lists.create_target(db.session, actor, campaign.id, target_lists.TargetInput(
            name=f"Target {name}", title="Mayor", country="DE", email=f"mayor-{name}@example.org", group="City"))
        target_lists.add_target_to_petition(db.session, actor, petition, target.id)
        petition.publish()  # directly: whatever REVIEW_REQUIRED says, B's petition is live
        sign_petition(db.session, petition, SignerInput(name=f"Pending Signer {name}",
                                                        email=parse_email(f"pending-{name}@example.net"),
                                                        country="DE"))
        sign_petition(db.session, petition, SignerInput(name=f"Confirmed Signer {name}",
                                                        email=parse_email(f"confirmed-{name}@example.net"),
                                                        country="FR", consent_updates=True))
        from sqlalchemy import select

        from campaign.models import Signature

        pending, confirmed = db.session.scalars(select(Signature).where(
            Signature.petition_id == petition.id).order_by(Signature.id)).all()
        confirm_signature(db.session, confirmed)
        offline = organizing.add_offline_signatures(db.session, actor, petition, 10, "stall")
        invitation = organizing.invite_organizer(db.session, actor, campaign, f"invitee-{name}@example.com")
        db.session.commit()
        side = Side(campaign_id=campaign.id, owner=owner, organizer=organizer, petition_id=petition.id,
                    draft_id=draft.id, target_id=target.id, signature_id=pending.id,
                    confirmed_id=confirmed.id, offline_id=offline.id, invitation_id=invitation.id,
                    owner_id=owner_id)
        assert db.session.get(Campaign, campaign.id) is not None
    side.organizer_id = add_user(app, organizer, campaign_id=side.campaign_id)
    for argument, make in OBJECT_MAKERS.items():
        side.extra[argument] = make(app, side)
    return side


def _target_response(app: Flask, side: Side) -> int:
    from datetime import date

    from campaign.models import Stance, TargetResponse

    with app.app_context():
        response = TargetResponse(petition_id=side.petition_id, target_id=side.target_id,
                                  responded_on=date(2026, 1, 1), stance=next(iter(Stance)).value,
                                  text="We will look into it.")
        db.session.add(response)
        db.session.commit()
        return response.id


# Objects that other organizer routes name in their URLs (the IDOR sweep in test_permissions.py
# needs one of campaign B's for each): URL argument -> a maker returning the object's id.
OBJECT_MAKERS: dict[str, Callable[[Flask, Side], int]] = {"response_id": _target_response}


def _api_token(app: Flask, side: Side) -> int:
    from campaign.models import ApiToken

    with app.app_context():
        token = ApiToken(campaign_id=side.campaign_id, name="CRM", scopes="read", prefix="cmp_test",
                         token_hash=f"{side.campaign_id:064d}")
        db.session.add(token)
        db.session.commit()
        return token.id


def _webhook(app: Flask, side: Side) -> int:
    from campaign.models import Webhook
    from campaign.services.privacy import cipher

    with app.app_context():
        hook = Webhook(campaign_id=side.campaign_id, url="https://crm.example.org/hook",
                       events="signature.confirmed", secret_encrypted=cipher().encrypt("whsec_test"))
        db.session.add(hook)
        db.session.commit()
        return hook.id


OBJECT_MAKERS.update({"token_id": _api_token, "webhook_id": _webhook})


def _supporter_update(app: Flask, side: Side) -> int:
    from campaign.models import SupporterUpdate

    with app.app_context():
        row = SupporterUpdate(campaign_id=side.campaign_id, subject="News", body_markdown="Hello {{ first_name }}")
        db.session.add(row)
        db.session.commit()
        return row.id


def _signature_export(app: Flask, side: Side) -> int:
    from campaign.models import SignatureExport
    from campaign.services.exports import ExportRequest

    with app.app_context():
        row = SignatureExport(campaign_id=side.campaign_id, request=ExportRequest().to_json())
        db.session.add(row)
        db.session.commit()
        return row.id


# Issue 7 (organizer reach): supporter updates and export files.
OBJECT_MAKERS.update({"update_id": _supporter_update, "export_id": _signature_export})


@pytest.fixture
def two_sides(org_app: Flask) -> tuple[Side, Side]:
    return build_side(org_app, "a"), build_side(org_app, "b")
