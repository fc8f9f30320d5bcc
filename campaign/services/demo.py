"""The demo campaign: a call on the G20's leaders about the purge of gay men in Chechnya."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import unicodedata
from importlib import resources

from flask import current_app
from sqlalchemy import select

from campaign.models import (
    Campaign,
    MailingPolicy,
    Petition,
    PetitionTarget,
    PetitionTranslation,
    Target,
    TargetCountry,
)
from campaign.models.base import utcnow
from campaign.services.markdown import render_markdown
from campaign.services.petitions import create_counter_shards
from campaign.services.types import DbSession

DEMO_CAMPAIGN_SLUG = "chechnya"
DEMO_PETITION_SLUG = "g20-chechnya"
DEMO_ORGANIZER_EMAIL = "organizer@demo.example.org"

_BODY = """\
Since 2017, men in Chechnya suspected of being gay have been abducted, held in secret prisons,
tortured, and in some cases killed. Survivors and families have described the detentions to
journalists and human-rights organizations; the authorities deny that the men exist.

**We ask the leaders of the G20** to raise these crimes with the Russian Federation at every
meeting, to press for an independent investigation, and to offer safe passage and asylum to the
people who are still in danger.

Every signature is confirmed by email and delivered to the leader of the signer's own country.
"""

_RU_TITLE = "Лидеры G20: потребуйте прекратить аресты и пытки геев в Чечне"
_RU_SUMMARY = ("Геев в Чечне задерживают, пытают и убивают. Лидеры G20 могут сделать так, "
               "чтобы это больше не замалчивали.")
_RU_BODY = """\
С 2017 года мужчин в Чечне, которых подозревают в гомосексуальности, похищают, держат в тайных
тюрьмах, пытают, а некоторых убивают. Выжившие и их родные рассказали о задержаниях журналистам
и правозащитникам; власти отрицают, что эти люди вообще существуют.

**Мы просим лидеров G20** поднимать вопрос об этих преступлениях на каждой встрече с Российской
Федерацией, добиваться независимого расследования и предоставить безопасный выезд и убежище тем,
кто всё ещё в опасности.

Каждая подпись подтверждается по электронной почте и доставляется лидеру страны подписавшего.
"""

_LETTER = """\
Dear {title},

I am writing to ask you to use your voice at the G20 to call for an end to the arrests and
torture of gay men in Chechnya, for an independent investigation of these crimes, and for safe
passage for those who are still at risk.

Sincerely,
"""


def _example_address(name: str, country: str) -> str:
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    local = re.sub(r"[^a-z0-9]+", ".", ascii_name.lower()).strip(".")
    return f"{local}@{country.lower()}.leaders.example.org"


def demo_organizer_password() -> str:
    """The demo organizer's password: derived from SECRET_KEY, so `make run` can print it at every
    start without storing it, and nobody without the key (a production secret) can know it."""
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(), b"campaign.demo-organizer",
                      hashlib.sha256).digest()
    return base64.b32encode(digest[:15]).decode().lower()


def seed_demo_organizer(session: DbSession, campaign: Campaign) -> bool:
    """The demo campaign's owner account (DEMO_ORGANIZER_EMAIL), active. Idempotent."""
    from campaign.models import MemberRole, Membership, User, UserStatus
    from campaign.services.accounts import hash_password, new_session_token

    user = session.scalar(select(User).where(User.email == DEMO_ORGANIZER_EMAIL))
    created = user is None
    if user is None:
        user = User(email=DEMO_ORGANIZER_EMAIL, name="Demo Organizer",
                    password_hash=hash_password(demo_organizer_password()), status=UserStatus.ACTIVE,
                    session_token=new_session_token(), approved_at=utcnow())
        session.add(user)
        session.flush()
    if session.get(Membership, (campaign.id, user.id)) is None:
        session.add(Membership(campaign_id=campaign.id, user_id=user.id, role=MemberRole.OWNER))
        created = True
    session.flush()
    return created


def seed_demo(session: DbSession) -> bool:
    """Create the demo campaign, its 21 targets, its published petition and its organizer.

    Idempotent: returns False and changes nothing when the petition already exists (except that
    a database seeded before organizer accounts existed gets the demo organizer).
    The caller commits.
    """
    existing = session.scalar(select(Petition).where(Petition.slug == DEMO_PETITION_SLUG))
    if existing is not None:
        seed_demo_organizer(session, existing.campaign)
        return False
    data = json.loads(resources.files("campaign.data").joinpath("g20_leaders.json").read_text("utf-8"))
    campaign = session.scalar(select(Campaign).where(Campaign.slug == DEMO_CAMPAIGN_SLUG))
    if campaign is None:
        campaign = Campaign(
            slug=DEMO_CAMPAIGN_SLUG,
            name="End the anti-gay purge in Chechnya",
            organization="Demo Human Rights Coalition",
            description="A coalition call on the G20's leaders.",
            sender_name="Demo Human Rights Coalition",
        )
        session.add(campaign)
        session.flush()
    petition = Petition(
        campaign_id=campaign.id,
        slug=DEMO_PETITION_SLUG,
        title="G20 leaders: demand an end to the arrests and torture of gay men in Chechnya",
        summary="Gay men in Chechnya are being detained, tortured and killed. The G20's leaders "
                "can make this stop being ignored.",
        body_markdown=_BODY,
        body_html=render_markdown(_BODY),
        letter=_LETTER,
        goal=100_000,
        language="en",
        mailing_policy=MailingPolicy.LETTERS,
        is_sensitive=True,
    )
    session.add(petition)
    session.flush()
    for position, entry in enumerate(data["targets"]):
        email = _example_address(entry["name"], entry["country"])
        target = session.scalar(select(Target).where(Target.email == email))
        if target is None:
            target = Target(name=entry["name"], title=entry["title"], country=entry["country"],
                            email=email, group_name=data["group"])
            session.add(target)
            session.flush()
            # The EU and the AU write for their members outside the G20 (issue 4's routing).
            for code in entry.get("covers", []):
                session.add(TargetCountry(target_id=target.id, country=code))
        session.add(PetitionTarget(petition_id=petition.id, target_id=target.id,
                                   is_default=entry["country"] in {"EU", "AFU"}, position=position))
    create_counter_shards(session, petition)
    # Issue 5: the same petition in Russian (one count, whichever language people sign in).
    session.add(PetitionTranslation(petition_id=petition.id, language="ru", title=_RU_TITLE,
                                    summary=_RU_SUMMARY, body_markdown=_RU_BODY,
                                    body_html=render_markdown(_RU_BODY)))
    petition.publish()
    seed_demo_organizer(session, campaign)
    return True
