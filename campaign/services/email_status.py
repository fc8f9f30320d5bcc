"""The organizer's "email status" page: where a petition's emails are (sent, waiting, retrying,
refused, not needed, paused, suppressed), whether mail is running late, and, for one signer found
by exact email address through the blind index, each of their emails in plain words.

Reads only: counts grouped in the database, never a message text, never a raw SMTP reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select

from campaign.mail.reasons import reason_words
from campaign.models import OutboundEmail, OutboxStatus, Petition, Signature
from campaign.models.base import utcnow
from campaign.services.emails import InvalidEmail, canonical_email, parse_email
from campaign.services.killswitch import switches
from campaign.services.outbox import _builders, queue_for
from campaign.services.privacy import cipher
from campaign.services.types import DbSession

# What each kind is, for someone who never saw the code.
KIND_LABELS = {
    "signature_confirmation": "Request to confirm a signature",
    "signature_already_confirmed": "Note that the address had already signed",
    "letter_to_target": "Signer's letter to an official",
    "delivery_to_target": "Petition delivery to an official",
    "leader_response": "News of an official's answer",
    "target_failing": "Warning that mail to an official is failing",
    "trending_alert": "Alert about unusual signing",
}
STATES = ("sent", "waiting", "retrying", "refused", "not_needed", "paused", "suppressed")


def kind_label(kind: str) -> str:
    return KIND_LABELS.get(kind, kind.replace("_", " ").capitalize())


def _state(kind: str, status: str, attempts: int, reason: str, paused: frozenset[str]) -> str:
    if status == OutboxStatus.SENT:
        return "sent"
    if status == OutboxStatus.FAILED:
        return "refused"
    if status == OutboxStatus.CANCELLED:
        return "suppressed" if reason in {"suppressed", "bounced"} else "not_needed"
    if queue_for(kind) in paused:
        return "paused"
    return "retrying" if status == OutboxStatus.QUEUED and attempts > 0 else "waiting"


@dataclass
class PetitionEmailStatus:
    counts: dict[str, int]
    next_retry_at: datetime | None  # the soonest next try among the retrying emails
    oldest_due_at: datetime | None  # the longest-waiting email that is due and not paused
    waited_seconds: float
    delayed: bool  # waited longer than EMAIL_DELAY_WARNING_SECONDS
    paused_queues: list[str] = field(default_factory=list)


def petition_email_status(session: DbSession, petition: Petition, delay_warning_seconds: float,
                          now: datetime | None = None) -> PetitionEmailStatus:
    """Counts of the petition's emails by state, and how long the oldest due email has waited.
    A constant number of grouped queries (index on petition_id), whatever the petition's size."""
    now = now or utcnow()
    paused = switches(session).paused_queues()
    counts = dict.fromkeys(STATES, 0)
    next_retry: datetime | None = None
    rows = session.execute(
        select(OutboundEmail.kind, OutboundEmail.status, OutboundEmail.attempts > 0, OutboundEmail.reason,
               func.count(), func.min(OutboundEmail.next_attempt_at))
        .where(OutboundEmail.petition_id == petition.id)
        .group_by(OutboundEmail.kind, OutboundEmail.status, OutboundEmail.attempts > 0, OutboundEmail.reason))
    for kind, status, tried, reason, count, soonest in rows:
        state = _state(kind, status, int(bool(tried)), reason, paused)
        counts[state] += int(count)
        if state == "retrying" and soonest is not None and (next_retry is None or soonest < next_retry):
            next_retry = soonest
    running = [k for k in _builders if queue_for(k) not in paused]
    oldest = session.scalar(
        select(func.min(OutboundEmail.next_attempt_at))
        .where(OutboundEmail.petition_id == petition.id, OutboundEmail.status == OutboxStatus.QUEUED,
               OutboundEmail.next_attempt_at <= now, OutboundEmail.kind.in_(running)))
    waited = max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0
    return PetitionEmailStatus(counts, next_retry, oldest, waited, waited > delay_warning_seconds,
                               sorted(paused))


@dataclass
class SignerEmail:
    kind: str
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    why: str  # plain words; never the stored SMTP reply


@dataclass
class SignerLookup:
    message: str = ""  # when nothing could be looked up, why
    found: bool = False  # a signature with this address exists on the petition
    emails: list[SignerEmail] = field(default_factory=list)


_WAITING_WORDS = {
    "waiting": "It is in line to be sent. Emails normally go within a minute; a long line after a surge "
               "or a stopped sending program makes it later.",
    "paused": "An administrator has paused this kind of email for the whole platform. It goes when they "
              "resume it.",
    "sent": "Our mail server accepted it. If the person did not get it, ask them to look in their spam "
            "folder; after that it is up to their mail provider.",
}


def signer_emails(session: DbSession, petition: Petition, raw_email: str,
                  now: datetime | None = None) -> SignerLookup:
    """The petition's emails to or about the signer with this exact address (blind index: the
    address is never stored or searched in the clear), newest first."""
    now = now or utcnow()
    try:
        address = parse_email(raw_email)
    except InvalidEmail:
        return SignerLookup("Enter a whole email address: the look-up matches exact addresses only.")
    index = cipher().blind_index(canonical_email(address.address))
    signature_id = session.scalar(select(Signature.id).where(Signature.petition_id == petition.id,
                                                             Signature.email_index == index))
    mine = [OutboundEmail.recipient_index == index]
    if signature_id is not None:
        mine.append(OutboundEmail.signature_id == signature_id)
    rows = session.scalars(select(OutboundEmail).where(OutboundEmail.petition_id == petition.id, or_(*mine))
                           .order_by(OutboundEmail.created_at.desc(), OutboundEmail.id.desc()).limit(50))
    paused = switches(session).paused_queues()
    emails = []
    for row in rows:
        state = _state(row.kind, row.status, row.attempts, row.reason, paused)
        why = reason_words(row.reason, row.status) if state not in _WAITING_WORDS else _WAITING_WORDS[state]
        if state == "retrying":
            why = (reason_words(row.reason, row.status) or "The last try did not work.") + \
                  " Next try: " + _in(row.next_attempt_at - now) + "."
        if row.status == OutboxStatus.SENDING:
            why = "It is being sent right now."
        emails.append(SignerEmail(kind_label(row.kind), state, row.attempts, row.created_at,
                                  row.next_attempt_at if row.status == OutboxStatus.QUEUED else None,
                                  row.sent_at, why))
    if signature_id is None and not emails:
        return SignerLookup("Nobody with this address has signed this petition.")
    return SignerLookup("", signature_id is not None, emails)


def _in(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "now, as soon as a sending program is free"
    if seconds < 90:
        return f"in about {seconds} seconds"
    if seconds < 5400:
        return f"in about {round(seconds / 60)} minutes"
    return f"in about {round(seconds / 3600)} hours"
