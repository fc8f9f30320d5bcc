"""Signing and confirming: the supporter's path from the form to a counted signature."""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol, cast

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from campaign.models import OutboundEmail, Signature, SignatureStatus
from campaign.models.base import utcnow
from campaign.services.abuse import SigningSignals, domain_hash, email_domain, hold_reasons, public_state
from campaign.services.counting import add_to_count
from campaign.services.emails import Email
from campaign.services.letters import route_on_confirmation
from campaign.services.outbox import queue_email_once
from campaign.services.privacy import cipher
from campaign.services.types import DbSession
from campaign.services.webhooks import on_signature_confirmed

CONFIRMATION = "signature_confirmation"
ALREADY_CONFIRMED = "signature_already_confirmed"
_CONFIRM_SALT = "campaign.confirm-signature"


@dataclass(frozen=True)
class SignerInput:
    """What a supporter typed, already validated by the form."""
    name: str
    email: Email
    country: str
    postcode: str = ""
    comment: str = ""
    consent_updates: bool = False
    consent_name_to_targets: bool = False
    consent_reply_to: bool = False
    consent_public_name: bool = False
    source: str = ""
    locale: str = "en"
    referred_by: str = ""  # the referral code of the signer whose share link brought this one


class SignablePetition(Protocol):
    """What signing needs of a petition: a Petition, or the sign view's short-lived snapshot."""

    @property
    def id(self) -> int: ...

    @property
    def is_signable(self) -> bool: ...


class SignOutcome(StrEnum):
    # For tests and metrics only: the supporter sees the same page whatever happened.
    NEW = "new"
    RESENT = "resent"
    ALREADY_CONFIRMED = "already_confirmed"
    CAPPED = "capped"
    RACED = "raced"


def sign_petition(session: DbSession, petition: SignablePetition, signer: SignerInput,
                  ip: str | None = None, signals: SigningSignals | None = None) -> SignOutcome:
    """Record a pending signature and queue its confirmation email, in the caller's transaction.

    Signing again with the same mailbox writes no second signature: a pending one gets its
    confirmation again, a confirmed one gets a note that it had already signed; both within the
    per-address cap. The caller commits; the email is published after commit.
    A new signature that trips a bot check (signals: honeypot, fill time; bursts per address and
    email domain; disposable domains) is stored as held, silently: same outcome, same email.
    Raises ValueError if the petition does not take signatures.
    """
    if not petition.is_signable:
        raise ValueError("petition is not open for signatures")
    crypt = cipher()
    index = crypt.blind_index(signer.email.canonical)
    # Decided for every request, new address or not, so both take the same queries and time.
    ip_hash, network_hash = crypt.ip_hashes(ip)
    domain = email_domain(signer.email.canonical)
    domain_digest = domain_hash(crypt, domain)
    reasons = hold_reasons(session, petition.id, ip_hash=ip_hash, domain=domain,
                           domain_digest=domain_digest, signals=signals or SigningSignals(ip=ip))
    # The hot path (issue 9): one INSERT ... ON CONFLICT DO NOTHING RETURNING id, no look-up
    # first and no savepoint. The unique (petition, blind index) decides: no id back means the
    # mailbox had signed (or a concurrent request for it won), and it carries on as a repeat.
    values: dict[str, Any] = {
        "petition_id": petition.id,
        "name_encrypted": crypt.encrypt(signer.name),
        "email_encrypted": crypt.encrypt(signer.email.address),
        "postcode_encrypted": crypt.encrypt(signer.postcode) if signer.postcode else None,
        "email_index": index,
        "country": signer.country,
        "comment": signer.comment,
        "consent_updates": signer.consent_updates,
        "consent_name_to_targets": signer.consent_name_to_targets,
        "consent_reply_to": signer.consent_reply_to,
        "consent_public_name": signer.consent_public_name,
        "source": signer.source[:64],
        "locale": signer.locale,
        "referral_code": secrets.token_urlsafe(6),
        "referred_by": signer.referred_by[:16] or None,
        "ip_hash": ip_hash,
        "network_hash": network_hash,
        "email_domain_hash": domain_digest,
    }
    if reasons:
        values |= {"status": SignatureStatus.HELD, "hold_reasons": ",".join(reasons), "held_at": utcnow()}
    signature_id = _insert_new(session, values)
    if signature_id is not None:
        outcome = SignOutcome.NEW
        # New, pending or held: held looks pending to its owner (public_state), so the same email.
        shown: str = SignatureStatus.PENDING
    else:
        outcome = SignOutcome.RESENT
        signature = session.scalar(select(Signature).where(
            Signature.petition_id == petition.id, Signature.email_index == index))
        if signature is None:
            raise RuntimeError("a signature conflicted on insert and then could not be found")
        signature_id = signature.id
        # A held signature is mailed exactly like the one it stands for: a bot learns nothing.
        shown = public_state(signature)
    if shown == SignatureStatus.CONFIRMED:
        kind = ALREADY_CONFIRMED
        outcome = SignOutcome.ALREADY_CONFIRMED if outcome != SignOutcome.NEW else outcome
    elif shown == SignatureStatus.PENDING:
        kind = CONFIRMATION
    else:
        # Invalidated: the supporter sees the usual page and gets no email.
        return SignOutcome.CAPPED

    sent_for_petition, sent_today = _form_emails(session, index, petition.id)
    config = current_app.config
    if (sent_for_petition >= int(config["EMAILS_PER_ADDRESS_PER_PETITION"])
            or sent_today >= int(config["EMAILS_PER_ADDRESS_PER_DAY"])):
        return SignOutcome.CAPPED
    row = queue_email_once(
        session, kind=kind, key=f"form:{signature_id}:{sent_for_petition + 1}",
        petition_id=petition.id, signature_id=signature_id, recipient_index=index,
        from_public_form=True)
    if row is None:  # a concurrent repeat already queued this email
        return SignOutcome.RACED
    return outcome


@functools.lru_cache(maxsize=4)
def _insert_statement(dialect: str) -> Any:
    # Built once per dialect on the Core table: the parameters of each call are the VALUES,
    # so the hot path builds no statement and SQLAlchemy reuses its compiled form (issue 9).
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = cast(Table, Signature.__table__)
    return (insert(table).on_conflict_do_nothing(index_elements=["petition_id", "email_index"])
            .returning(table.c.id))


def _insert_new(session: DbSession, values: dict[str, Any]) -> int | None:
    """Insert a signature unless (petition, blind index) exists; its id, or None if it did."""
    found = session.execute(_insert_statement(session.get_bind().dialect.name), values).scalar()
    return None if found is None else int(found)


@functools.lru_cache(maxsize=1)
def _form_emails_statement() -> Any:
    table = OutboundEmail.__table__.c
    return (select(func.count().filter(table.petition_id == bindparam("petition")),
                   func.count().filter(table.created_at >= bindparam("since", type_=table.created_at.type)))
            .where(table.recipient_index == bindparam("index"), table.from_public_form.is_(True)))


def _form_emails(session: DbSession, index: str, petition_id: int) -> tuple[int, int]:
    """Emails the public form has caused to this mailbox: for this petition, and in 24 hours.
    One query: both counts are FILTERs over the mailbox's rows (its index)."""
    for_petition, today = session.execute(
        _form_emails_statement(),
        {"petition": petition_id, "since": utcnow() - timedelta(days=1), "index": index}).one()
    return int(for_petition or 0), int(today or 0)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_CONFIRM_SALT,
                                  signer_kwargs={"digest_method": hashlib.sha256})


def confirmation_token(signature: Signature) -> str:
    # Bound to the mailbox's index too, so a reused id never confirms someone else.
    return _serializer().dumps({"s": signature.id, "e": signature.email_index[:16]})


class TokenError(ValueError):
    """The link is not valid: tampered, for something else, or too old."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "expired" or "invalid"


def signature_for_token(session: DbSession, token: str) -> Signature:
    """The signature a confirmation link is for. Raises TokenError."""
    try:
        data: Any = _serializer().loads(token, max_age=int(current_app.config["CONFIRM_TOKEN_MAX_AGE"]))
    except SignatureExpired:
        raise TokenError("expired") from None
    except BadSignature:
        raise TokenError("invalid") from None
    if not isinstance(data, dict) or not isinstance(data.get("s"), int):
        raise TokenError("invalid")
    signature = session.get(Signature, data["s"])
    if signature is None or signature.email_index[:16] != data.get("e"):
        raise TokenError("invalid")
    return signature


def confirm_signature(session: DbSession, signature: Signature) -> bool:
    """Confirm a pending signature and count it, in the caller's transaction.

    Idempotent: returns True only for the call that moved it from pending to confirmed, so a
    double click or two concurrent requests count it once. A held signature gets its
    confirmed_at and stays held (False: not counted).
    """
    result = session.execute(
        update(Signature)
        .where(Signature.id == signature.id, Signature.status == SignatureStatus.PENDING)
        .values(status=SignatureStatus.CONFIRMED, confirmed_at=utcnow())
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        # A held signature records that its owner confirmed it, and stays held and uncounted
        # until an organizer releases it (then it counts, once).
        held = session.execute(
            update(Signature)
            .where(Signature.id == signature.id, Signature.status == SignatureStatus.HELD,
                   Signature.confirmed_at.is_(None))
            .values(confirmed_at=utcnow())
            .execution_options(synchronize_session=False))
        if held.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(signature)
        return False
    add_to_count(session, signature.petition_id, 1)
    session.refresh(signature)
    # Its letters to the targets it is routed to: outbox rows in this transaction, sent from the
    # letters queue, so they never hold up anyone's confirmation email (issue 4).
    route_on_confirmation(session, signature)
    # Webhooks (issue 8): calls queued in this transaction, published after it commits.
    on_signature_confirmed(session, signature)
    return True
