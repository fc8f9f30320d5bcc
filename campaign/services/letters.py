"""Letters to targets: routing a confirmed signature to its officials, the hourly cap per
target, and the letter each official receives (letter_to_target, on the letters queue).

What an official learns about a signer is the signer's choice: the name (and the comment) only
with "Add my name to the letter", the address (as Reply-To) only with "Let the leader reply to me
by email"; otherwise the letter is signed "A supporter from <country>".
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from campaign.mail.messages import Draft
from campaign.models import (
    LetterQuota,
    MailingPolicy,
    OutboundEmail,
    Petition,
    PetitionTarget,
    RoutedSignature,
    RouteVia,
    Signature,
    SignatureStatus,
    Target,
)
from campaign.models.base import utcnow
from campaign.services.counting import signature_count
from campaign.services.countries import country_name
from campaign.services.outbox import message_kind, queue_email
from campaign.services.petitions import absolute_url
from campaign.services.privacy import cipher
from campaign.services.routing import deliverable_address, route
from campaign.services.types import DbSession

log = logging.getLogger(__name__)

LETTER = "letter_to_target"
LETTER_POLICIES = frozenset({MailingPolicy.LETTERS, MailingPolicy.BOTH})
BATCH_POLICIES = frozenset({MailingPolicy.DELIVERIES, MailingPolicy.BOTH})


# --- routing a confirmed signature -------------------------------------------------------------

def plan_letters(session: DbSession, signature: Signature,
                 now: datetime | None = None) -> list[RoutedSignature]:
    """Route a confirmed signature to its targets, in the caller's transaction: one
    RoutedSignature per target, and for letter policies a letter_to_target outbox row
    (key letter:<signature>:<target>) while the target's hourly cap allows; over the cap, or
    without a valid address, the signature waits for the target's next batched delivery.

    Idempotent: the first call marks signature.routed_at with a conditional UPDATE; any later
    or concurrent call returns []. A signature that is not confirmed is left alone.
    """
    now = now or utcnow()
    claimed = session.execute(
        update(Signature)
        .where(Signature.id == signature.id, Signature.routed_at.is_(None),
               Signature.status == SignatureStatus.CONFIRMED)
        .values(routed_at=now)
        .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return []
    petition = session.get(Petition, signature.petition_id)
    if petition is None or petition.mailing_policy == MailingPolicy.NONE:
        return []
    letters = petition.mailing_policy in LETTER_POLICIES
    routed: list[RoutedSignature] = []
    for target in route(session, petition.id, signature.country):
        if not letters:
            via = RouteVia.BATCH
        elif not deliverable_address(target.email):
            via = RouteVia.NO_ADDRESS
        elif take_letter_slot(session, target.id, now):
            via = RouteVia.LETTER
        else:
            via = RouteVia.OVERFLOW
        row = RoutedSignature(petition_id=petition.id, signature_id=signature.id, target_id=target.id,
                              via=via, routed_at=now)
        session.add(row)
        if via == RouteVia.LETTER:
            email = queue_email(session, kind=LETTER, key=f"letter:{signature.id}:{target.id}",
                                petition_id=petition.id, signature_id=signature.id, target_id=target.id)
            row.letter_email_id = email.id if email is not None else None
        routed.append(row)
    session.flush()
    return routed


def route_on_confirmation(session: DbSession, signature: Signature) -> None:
    """plan_letters for the confirmation request, inside a savepoint: if routing fails, the
    error is logged and the signature is left unrouted for the deliveries job, which retries;
    the confirmation itself never fails because of a letter."""
    try:
        with session.begin_nested():
            plan_letters(session, signature)
    except Exception:  # the confirmation must stand whatever happened to its letters
        log.exception("routing signature %s failed; the deliveries job will retry", signature.id)


def take_letter_slot(session: DbSession, target_id: int, now: datetime | None = None) -> bool:
    """Count one letter against the target's cap for this clock hour (UTC); False when the cap
    (LETTERS_PER_TARGET_PER_HOUR) is reached. One conditional upsert: exact under concurrency.

    A full window is told by a plain read first: PostgreSQL locks the conflicting row for ON
    CONFLICT DO UPDATE even when its WHERE fails, so every confirmation routed to one leader
    queued on that row until commit (bench/surge.py saw it). The count only grows within a
    window, so a full one read without a lock stays full."""
    cap = int(current_app.config["LETTERS_PER_TARGET_PER_HOUR"])
    if cap <= 0:
        return False
    window = hour_window(now or utcnow())
    used = session.scalar(select(LetterQuota.used).where(LetterQuota.target_id == target_id,
                                                         LetterQuota.window_start == window))
    if used is not None and used >= cap:
        return False
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(LetterQuota).values(target_id=target_id, window_start=window, used=1)
    upsert = statement.on_conflict_do_update(
        index_elements=[LetterQuota.target_id, LetterQuota.window_start],
        set_={"used": LetterQuota.used + 1},
        where=LetterQuota.used < cap,
    ).returning(LetterQuota.used)
    return session.execute(upsert).first() is not None


def hour_window(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def letter_recipients(session: DbSession, signature: Signature) -> list[Target]:
    """Whom this signer's letter goes to: the targets it was routed to, or, before it is
    routed (a pending signature), where routing would send it now. [] when the petition
    sends no mail."""
    petition = session.get(Petition, signature.petition_id)
    if petition is None or petition.mailing_policy == MailingPolicy.NONE:
        return []
    if signature.routed_at is None:
        # Not routed yet (every confirmation email): route_on_confirmation writes the rows
        # in the transaction that sets routed_at, so there are none to read.
        return route(session, petition.id, signature.country)
    return list(session.scalars(
        select(Target).join(RoutedSignature, RoutedSignature.target_id == Target.id)
        .where(RoutedSignature.signature_id == signature.id).order_by(RoutedSignature.id)))


# --- what the official reads -------------------------------------------------------------------

@dataclass(frozen=True)
class Signer:
    """A signer as an official may see them: only what they consented to show."""
    line: str          # "Ada Lovelace" or "A supporter from Germany"
    named: bool
    country: str       # the country's name
    comment: str       # "" unless named
    email: str         # "" unless they consented to replies
    confirmed_on: str  # YYYY-MM-DD


def anonymous_line(country_code: str) -> str:
    return f"A supporter from {country_name(country_code)}"


def signer_for_official(signature: Signature, *, named_allowed: bool = True) -> Signer:
    """What a letter or CSV row shows of this signer. named_allowed=False for an official the
    signer was not routed to: their tick named their own leader, not every leader."""
    named = named_allowed and signature.consent_name_to_targets
    crypt = cipher()
    name = crypt.decrypt(signature.name_encrypted) if named else ""
    email = crypt.decrypt(signature.email_encrypted) if named_allowed and signature.consent_reply_to else ""
    confirmed = signature.confirmed_at or signature.created_at
    return Signer(
        line=name.strip() or anonymous_line(signature.country),
        named=bool(name.strip()),
        country=country_name(signature.country),
        comment=signature.comment.strip() if named else "",
        email=email,
        confirmed_on=confirmed.date().isoformat(),
    )


def letter_text(petition: Petition, target: Target) -> str:
    """The petition's letter addressed to this target. {name}, {title} and {country} are
    replaced by plain substitution (str.format on an organizer's text could reach attributes)."""
    text = petition.letter.strip() or petition.summary.strip() or petition.title
    for key, value in (("{name}", target.name), ("{title}", target.title),
                       ("{country}", country_name(target.country))):
        text = text.replace(key, value)
    return text


def paragraphs(text: str) -> list[list[str]]:
    """Text split into paragraphs of lines, for HTML bodies that need no |safe."""
    blocks = text.replace("\r\n", "\n").replace("\r", "\n").split("\n\n")
    return [block.strip("\n").split("\n") for block in blocks if block.strip()]


def one_line(text: str, limit: int = 180) -> str:
    """Text fit for a Subject: line breaks and control characters become spaces."""
    cleaned = "".join(" " if ord(ch) < 32 or ch in "\u2028\u2029\x85\x7f" else ch for ch in text)
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1].rstrip() + "…"


def stable_message_id(key: str) -> str:
    """The same Message-ID for every attempt at one outbox row; opaque, so it reveals no ids."""
    digest = hmac.new(current_app.config["SECRET_KEY"].encode(), f"message-id:{key}".encode(),
                      hashlib.sha256).hexdigest()[:40]
    _, sender = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])
    domain = sender.rpartition("@")[2] or "localhost"
    return f"<{digest}@{domain}>"


@message_kind(LETTER)
def letter_to_target(session: DbSession, row: OutboundEmail) -> Draft | None:
    """One supporter's letter to one official. None (cancelled) when the signature is no
    longer confirmed, the petition stopped sending letters, the target is no longer the
    petition's, or the target has no valid address any more (the signature then waits for the
    target's next batched delivery)."""
    if row.signature_id is None or row.target_id is None:
        return None
    signature = session.get(Signature, row.signature_id)
    target = session.get(Target, row.target_id)
    if signature is None or target is None:
        return None
    if signature.status != SignatureStatus.CONFIRMED or signature.anonymized_at is not None:
        return None
    petition = session.get(Petition, signature.petition_id)
    if petition is None or petition.mailing_policy not in LETTER_POLICIES:
        return None
    if session.get(PetitionTarget, (petition.id, target.id)) is None:
        return None  # the organizer took the target off the petition before it was sent
    if not deliverable_address(target.email):
        # Committed with the outbox's outcome: the signature is not lost, it goes in a batch.
        session.execute(
            update(RoutedSignature)
            .where(RoutedSignature.signature_id == signature.id, RoutedSignature.target_id == target.id,
                   RoutedSignature.batch_id.is_(None))
            .values(via=RouteVia.NO_ADDRESS)
            .execution_options(synchronize_session=False))
        return None
    signer = signer_for_official(signature)
    country = country_name(signature.country)
    return Draft(
        kind=LETTER,
        to_name=target.name,
        to_address=target.email,
        subject=one_line(f"{petition.title} — a letter from a supporter in {country}"),
        sender_name=petition.campaign.sender_name,
        reply_to=signer.email or None,
        message_id=stable_message_id(row.idempotency_key),
        context={
            "petition": petition,
            "target": target,
            "letter": paragraphs(letter_text(petition, target)),
            "signer": signer,
            "comment": paragraphs(signer.comment),
            "organization": petition.campaign.organization,
            "count": signature_count(session, petition.id),
            "petition_url": absolute_url(f"/petitions/{petition.slug}"),
        },
    )

