"""The suppression list: addresses that unsubscribed, bounced or complained, kept as their blind
index only. Supporter mail (anything the outbox sends to a signer that the signer did not just
ask for) is skipped for a suppressed address. The sign form's own emails (the confirmation) still
go after an unsubscribe or a complaint, since the person has just asked for them, but not to a
mailbox that hard-bounced: it would only bounce again."""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select

from campaign.models import OutboundEmail, Suppression, SuppressionReason
from campaign.services.emails import canonical_email, parse_email
from campaign.services.privacy import cipher
from campaign.services.types import DbSession


def email_index_of(email: str) -> str:
    """The blind index an address is suppressed under: the same as a signature's."""
    address = parse_email(email).address
    return cipher().blind_index(canonical_email(address))


def suppress(session: DbSession, email_index: str, reason: SuppressionReason | str,
             campaign_id: int | None = None) -> Suppression:
    """Add a suppression in the caller's transaction; returns the existing row if there is one.

    campaign_id None suppresses every campaign's mail (bounces, complaints, "from everything").
    """
    reason = SuppressionReason(reason)
    existing = session.scalar(select(Suppression).where(
        Suppression.email_index == email_index,
        Suppression.campaign_id.is_(None) if campaign_id is None else Suppression.campaign_id == campaign_id))
    if existing is not None:
        return existing
    row = Suppression(email_index=email_index, reason=reason, campaign_id=campaign_id)
    session.add(row)
    session.flush()
    return row


def suppress_email(session: DbSession, email: str, reason: SuppressionReason | str,
                   campaign_id: int | None = None) -> Suppression:
    """suppress() for an address as typed. Raises InvalidEmail."""
    return suppress(session, email_index_of(email), reason, campaign_id)


def is_index_suppressed(session: DbSession, email_index: str, campaign_id: int | None = None) -> bool:
    """True if the blind index is suppressed everywhere, or for this campaign."""
    scope: ColumnElement[bool] = Suppression.campaign_id.is_(None)
    if campaign_id is not None:
        scope = or_(scope, Suppression.campaign_id == campaign_id)
    return session.scalar(select(Suppression.id).where(Suppression.email_index == email_index, scope)
                          .limit(1)) is not None


def is_suppressed(session: DbSession, email: str, campaign_id: int | None = None) -> bool:
    """True if this address must not get supporter mail (from this campaign, when given).

    Matches through the blind index of the canonical address, so AB@gmail.com and a.b@gmail.com
    are one mailbox. An address that is not valid is never suppressed (nothing can reach it).
    """
    try:
        index = email_index_of(email)
    except ValueError:
        return False
    return is_index_suppressed(session, index, campaign_id)


def is_index_bounced(session: DbSession, email_index: str) -> bool:
    """True if the mailbox hard-bounced (a bounce suppression for every campaign): nothing can
    reach it, so not even the sign form's own emails are sent."""
    return session.scalar(select(Suppression.id).where(
        Suppression.email_index == email_index, Suppression.campaign_id.is_(None),
        Suppression.reason == SuppressionReason.BOUNCE).limit(1)) is not None


def is_supporter_mail(row: OutboundEmail) -> bool:
    """Mail to a signer (it has their blind index) that the sign form did not just cause."""
    return row.recipient_index is not None and not row.from_public_form


def outbox_row_suppressed(session: DbSession, row: OutboundEmail, campaign_id: int | None) -> bool:
    """The outbox's check before it builds a message: supporter mail to a suppressed address."""
    if not is_supporter_mail(row) or row.recipient_index is None:
        return False
    return is_index_suppressed(session, row.recipient_index, campaign_id)
