"""What the organizer endpoints of the API say: a campaign's petitions (drafts too), signatures
with their people, deliveries and the mailings ledger, OSDI-shaped where OSDI has a shape, and
the reads behind them. Every read is bounded by the token's campaign id.

A signature's person carries the signer's name, and an email address only for signers who
agreed to hear from the organizers (as CSV exports do). docs/api.md lists where we differ
from OSDI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from campaign.api.resources import ORIGIN_SYSTEM, Urls, iso_datetime
from campaign.models import Campaign, Delivery, OutboundEmail, Petition, Signature, Target
from campaign.services.deliveries import TargetLedger, delivery_status
from campaign.services.privacy import cipher
from campaign.services.types import DbSession


@dataclass(frozen=True)
class SignatureFilter:
    status: str | None = None
    country: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    consent_updates: bool | None = None


def campaign_shape(campaign: Campaign, scopes: frozenset[str], urls: Urls) -> dict[str, Any]:
    return {
        "identifiers": [f"{ORIGIN_SYSTEM}:{campaign.id}"],
        "origin_system": ORIGIN_SYSTEM,
        "name": campaign.name,
        "slug": campaign.slug,
        "organization": campaign.organization,
        "token_scopes": sorted(scopes),
        "_links": {"self": {"href": f"{urls.api}/campaign"},
                   "osdi:petitions": {"href": f"{urls.api}/campaign/petitions"}},
    }


def manage_url(urls: Urls, petition_id: int) -> str:
    return f"{urls.api}/campaign/petitions/{petition_id}"


def managed_petition_shape(petition: Petition, count: int, urls: Urls) -> dict[str, Any]:
    """A petition as its organizers see it: drafts too, the Markdown source and the letter."""
    self_url = manage_url(urls, petition.id)
    links: dict[str, Any] = {
        "self": {"href": self_url},
        "osdi:signatures": {"href": f"{self_url}/signatures"},
        "campaign:deliveries": {"href": f"{self_url}/deliveries"},
        "campaign:mailings": {"href": f"{self_url}/mailings"},
    }
    if petition.is_visible:
        links["campaign:public"] = {"href": urls.petition(petition.slug)}
    modified = petition.updated_at or petition.published_at or petition.created_at
    return {
        "identifiers": [f"{ORIGIN_SYSTEM}:{petition.id}"],
        "origin_system": ORIGIN_SYSTEM,
        "id": petition.id,
        "created_date": iso_datetime(petition.created_at),
        "modified_date": iso_datetime(modified),
        "title": petition.title,
        "slug": petition.slug,
        "summary": petition.summary,
        "description": petition.body_html,
        "body_markdown": petition.body_markdown,
        "petition_text": petition.letter,
        "status": str(petition.status),
        "language": petition.language,
        "goal": petition.goal,
        "closes_on": iso_day_before(petition.closes_at),
        "mailing_policy": str(petition.mailing_policy),
        "is_sensitive": petition.is_sensitive,
        "accepting_signatures": petition.is_signable,
        "signature_count": count,
        "total_signatures": count,
        "browser_url": urls.petition_page(petition.slug),
        "_links": links,
    }


def iso_day_before(moment: datetime | None) -> str | None:
    # closes_at is the end of the chosen day (the form's closing date): give back that day.
    if moment is None:
        return None
    return (moment - timedelta(seconds=1)).date().isoformat()


def _plain(encrypted: bytes | None) -> str:
    try:
        return cipher().decrypt(encrypted) if encrypted else ""
    except ValueError:
        return ""


def signature_shape(signature: Signature, petition_url: str) -> dict[str, Any]:
    """An OSDI signature with its person embedded. The email only with the signer's consent."""
    erased = signature.anonymized_at is not None
    person: dict[str, Any] = {"name": "" if erased else _plain(signature.name_encrypted),
                              "email_addresses": [], "postal_addresses": [{"country": signature.country}]}
    if signature.consent_updates and not erased:
        address = _plain(signature.email_encrypted)
        if address:
            person["email_addresses"] = [{"address": address, "primary": True}]
    modified = max(filter(None, (signature.created_at, signature.confirmed_at, signature.invalidated_at,
                                 signature.held_at, signature.released_at, signature.anonymized_at)))
    return {
        "identifiers": [f"{ORIGIN_SYSTEM}:{signature.id}"],
        "origin_system": ORIGIN_SYSTEM,
        "id": signature.id,
        "created_date": iso_datetime(signature.created_at),
        "modified_date": iso_datetime(modified),
        "status": signature.status,
        "confirmed_date": iso_datetime(signature.confirmed_at),
        "comments": signature.comment,
        "referrer_data": {"source": signature.source},
        "country": signature.country,
        "consent_updates": signature.consent_updates,
        "consent_name_to_targets": signature.consent_name_to_targets,
        "consent_public_name": signature.consent_public_name,
        "erased": erased,
        "person": person,
        "_links": {"osdi:petition": {"href": petition_url}},
    }


def signatures_page(session: DbSession, petition_id: int, where: SignatureFilter, before: int | None,
                    limit: int) -> tuple[list[Signature], bool]:
    """Newest first (by id), filtered; up to `limit` and whether more follow."""
    query = select(Signature).where(Signature.petition_id == petition_id)
    if where.status:
        query = query.where(Signature.status == where.status)
    if where.country:
        query = query.where(Signature.country == where.country)
    if where.created_after is not None:
        query = query.where(Signature.created_at >= where.created_after)
    if where.created_before is not None:
        query = query.where(Signature.created_at < where.created_before)
    if where.consent_updates is not None:
        query = query.where(Signature.consent_updates.is_(where.consent_updates))
    if before is not None:
        query = query.where(Signature.id < before)
    rows = list(session.scalars(query.order_by(Signature.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def managed_petitions_page(session: DbSession, campaign_id: int, status: str | None, before: int | None,
                           limit: int) -> tuple[list[Petition], bool]:
    query = select(Petition).where(Petition.campaign_id == campaign_id)
    if status:
        query = query.where(Petition.status == status)
    if before is not None:
        query = query.where(Petition.id < before)
    rows = list(session.scalars(query.order_by(Petition.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def _target_ref(target: Target) -> dict[str, Any]:
    # Officials' names are public; their addresses are for the mail only.
    return {"id": target.id, "name": target.name, "title": target.title, "country": target.country}


def deliveries_page(session: DbSession, petition_id: int, before: int | None,
                    limit: int) -> tuple[list[dict[str, Any]], int | None]:
    """The petition's deliveries, newest first, with their status; and the next cursor position."""
    query = (select(Delivery, OutboundEmail, Target)
             .join(Target, Target.id == Delivery.target_id)
             .outerjoin(OutboundEmail, OutboundEmail.id == Delivery.email_id)
             .where(Delivery.petition_id == petition_id))
    if before is not None:
        query = query.where(Delivery.id < before)
    rows = session.execute(query.order_by(Delivery.id.desc()).limit(limit + 1)).all()
    items = [{
        "id": delivery.id,
        "kind": delivery.kind,
        "target": _target_ref(target),
        "new_signatures": delivery.new_count,
        "total_signatures": delivery.total_count,
        "status": delivery_status(email),
        "attempts": email.attempts if email else 0,
        "error": email.last_error if email else "",
        "created_date": iso_datetime(delivery.created_at),
        "sent_date": iso_datetime(email.sent_at) if email else None,
    } for delivery, email, target in rows[:limit]]
    return items, (rows[limit - 1][0].id if len(rows) > limit else None)


def mailings_shape(petition: Petition, ledger: list[TargetLedger], urls: Urls) -> dict[str, Any]:
    return {
        "petition_id": petition.id,
        "mailing_policy": str(petition.mailing_policy),
        "targets": [{
            "target": _target_ref(entry.target),
            "cadence": entry.mailing.cadence,
            "every_n": entry.mailing.every_n,
            "next_run_date": iso_datetime(entry.mailing.next_run_at),
            "letters": dict(entry.letters),
            "waiting": entry.waiting,
            "reached": entry.reached,
            "address_ok": entry.address_ok,
            "failing": entry.failing,
            "last_error": entry.mailing.last_error or "",
        } for entry in ledger],
        "_links": {"self": {"href": f"{manage_url(urls, petition.id)}/mailings"},
                   "osdi:petition": {"href": manage_url(urls, petition.id)}},
    }
