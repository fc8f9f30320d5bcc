"""Routing: which of a petition's targets a signer's letter goes to.

A target covers its own country (Target.country) and any further ones (TargetCountry). A signer
goes to the targets that cover their country; when none does, to what the petition's fallback
says: all its targets, its default targets, or nobody.
"""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, or_, select

from campaign.models import (
    MailingPolicy,
    Petition,
    PetitionMailing,
    PetitionTarget,
    RoutingFallback,
    Target,
    TargetCountry,
)
from campaign.models.base import utcnow
from campaign.services.countries import is_country
from campaign.services.types import DbSession


def mailing_settings(session: DbSession, petition_id: int) -> PetitionMailing:
    """The petition's mailing settings; an unsaved row with the defaults if it has none."""
    found = session.get(PetitionMailing, petition_id)
    return found if found is not None else PetitionMailing(
        petition_id=petition_id, routing_fallback=RoutingFallback.DEFAULTS)


def set_routing_fallback(session: DbSession, petition: Petition, fallback: str) -> None:
    """Choose where signers from countries no target covers are routed. Raises ValueError."""
    value = RoutingFallback(fallback)
    row = session.get(PetitionMailing, petition.id)
    if row is None:
        row = PetitionMailing(petition_id=petition.id)
        session.add(row)
    row.routing_fallback = value
    row.updated_at = utcnow()
    session.flush()


def sends_mail(petition: Petition) -> bool:
    return petition.mailing_policy != MailingPolicy.NONE


def route(session: DbSession, petition_id: int, country: str) -> list[Target]:
    """The targets of this petition that a signer from `country` is addressed to, in the
    petition's order. Reads only; no target at all gives []."""
    covering = select(TargetCountry.target_id).where(TargetCountry.country == country)
    base = (select(Target).join(PetitionTarget, PetitionTarget.target_id == Target.id)
            .where(PetitionTarget.petition_id == petition_id)
            .order_by(PetitionTarget.position, Target.name, Target.id))
    found = list(session.scalars(base.where(or_(Target.country == country, Target.id.in_(covering)))))
    if found:
        return found
    fallback = mailing_settings(session, petition_id).routing_fallback
    if fallback == RoutingFallback.ALL:
        return list(session.scalars(base))
    if fallback == RoutingFallback.DEFAULTS:
        return list(session.scalars(base.where(PetitionTarget.is_default.is_(True))))
    return []


def routing_table(session: DbSession, petition_id: int, countries: list[str]) -> dict[str, list[Target]]:
    """country -> targets, for the organizer's preview of where letters go."""
    return {country: route(session, petition_id, country) for country in countries}


def covered_countries(session: DbSession, target_id: int) -> list[str]:
    """The further countries a target covers, besides its own."""
    return list(session.scalars(select(TargetCountry.country).where(TargetCountry.target_id == target_id)
                                .order_by(TargetCountry.country)))


def set_covered_countries(session: DbSession, target: Target, countries: list[str]) -> list[str]:
    """Replace the further countries a target covers. Unknown codes raise ValueError; the
    target's own country is implied and not stored twice. Returns the stored codes."""
    codes = sorted({code.strip().upper() for code in countries if code.strip()} - {target.country})
    unknown = [code for code in codes if not is_country(code)]
    if unknown:
        raise ValueError("Not a country code: " + ", ".join(unknown))
    session.execute(delete(TargetCountry).where(TargetCountry.target_id == target.id))
    for code in codes:
        session.add(TargetCountry(target_id=target.id, country=code))
    session.flush()
    return codes


@lru_cache(maxsize=4096)
def deliverable_address(address: str) -> bool:
    """Whether an official's address can be mailed at all (syntax only; no DNS)."""
    if not address or any(ch in address for ch in "\r\n\0"):
        return False
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True
