"""The supporter's side (issue 5): manage-my-data (see, download, withdraw consent, delete), the
one reminder to confirm, referral codes, the rising goal, recent signers and petition translations.

Plain functions on a session: they add and flush, the caller commits. None reads the request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, func, literal_column, select, update

from campaign.models import (
    OutboundEmail,
    OutboxStatus,
    Petition,
    PetitionTranslation,
    Signature,
    SignatureStatus,
)
from campaign.models.base import utcnow
from campaign.services.abuse import public_state
from campaign.services.audit import record
from campaign.services.counting import add_to_count
from campaign.services.emails import Email
from campaign.services.markdown import render_markdown
from campaign.services.outbox import queue_email
from campaign.services.privacy import cipher
from campaign.services.types import DbSession
from campaign.services.updates import forget_mailbox

MY_DATA_LINK = "my_data_link"
REMINDER = "signature_reminder"
_MY_DATA_SALT = "campaign.my-data"
_CODE = re.compile(r"^[A-Za-z0-9_-]{4,16}$")
CONSENTS = ("consent_updates", "consent_name_to_targets", "consent_public_name", "consent_reply_to")


# --- tokens -------------------------------------------------------------------------------------

def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_MY_DATA_SALT,
                                  signer_kwargs={"digest_method": hashlib.sha256})


def my_data_token(email_index: str) -> str:
    """A link token bound to the mailbox's blind index (never the address itself)."""
    return _serializer().dumps({"i": email_index})


class MyDataTokenError(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "expired" or "invalid"


def index_for_token(token: str) -> str:
    """The blind index a manage-my-data token is for. Raises MyDataTokenError."""
    try:
        data: Any = _serializer().loads(token, max_age=int(current_app.config["MY_DATA_TOKEN_MAX_AGE"]))
    except SignatureExpired:
        raise MyDataTokenError("expired") from None
    except BadSignature:
        raise MyDataTokenError("invalid") from None
    if not isinstance(data, dict) or not isinstance(data.get("i"), str) or len(data["i"]) != 64:
        raise MyDataTokenError("invalid")
    return str(data["i"])


def my_data_path(email_index: str, language: str | None = None) -> str:
    path = f"/my-data/{my_data_token(email_index)}"
    return f"{path}?lang={language}" if language else path


# --- what the platform holds about a mailbox ----------------------------------------------------

@dataclass(frozen=True)
class HeldSignature:
    """One signature as its owner sees it: decrypted for this page only."""
    id: int
    petition_title: str
    petition_slug: str
    status: str
    name: str
    email: str
    postcode: str
    country: str
    comment: str
    language: str
    source: str
    referral_code: str
    referred: bool
    consents: dict[str, bool]
    created_at: datetime
    confirmed_at: datetime | None
    ip_hash_kept: bool


def signatures_of(session: DbSession, email_index: str) -> list[HeldSignature]:
    """Every signature of this mailbox across petitions, newest first (anonymized ones hold
    nothing personal any more and are left out)."""
    crypt = cipher()
    rows = session.execute(
        select(Signature, Petition.title, Petition.slug).join(Petition, Petition.id == Signature.petition_id)
        .where(Signature.email_index == email_index, Signature.anonymized_at.is_(None))
        .order_by(Signature.created_at.desc(), Signature.id.desc())).all()
    held = []
    for signature, title, slug in rows:
        held.append(HeldSignature(
            id=signature.id, petition_title=title, petition_slug=slug,
            # A held signature is shown as pending: its owner is told nothing a bot could use.
            status=str(public_state(signature)),
            name=crypt.decrypt(signature.name_encrypted), email=crypt.decrypt(signature.email_encrypted),
            postcode=crypt.decrypt(signature.postcode_encrypted) if signature.postcode_encrypted else "",
            country=signature.country, comment=signature.comment or "", language=signature.locale,
            source=signature.source or "", referral_code=signature.referral_code or "",
            referred=bool(signature.referred_by),
            consents={name: bool(getattr(signature, name)) for name in CONSENTS},
            created_at=signature.created_at, confirmed_at=signature.confirmed_at,
            ip_hash_kept=signature.ip_hash is not None))
    return held


def export_my_data(session: DbSession, email_index: str) -> dict[str, Any]:
    """The subject-access export: every personal field of every signature, as JSON-ready data."""
    return {
        "generated_at": utcnow().isoformat(),
        "about": ("Everything this site holds about the email address this link was sent to. "
                  "Names, email addresses and postcodes are stored encrypted."),
        "signatures": [{
            "petition": s.petition_title,
            "petition_url": f"{current_app.config['BASE_URL']}/petitions/{s.petition_slug}",
            "status": s.status, "name": s.name, "email": s.email, "postcode": s.postcode,
            "country": s.country, "comment": s.comment, "language": s.language, "source": s.source,
            "referral_code": s.referral_code, "came_through_someone_elses_share": s.referred,
            **s.consents,
            "signed_at": s.created_at.isoformat(),
            "confirmed_at": s.confirmed_at.isoformat() if s.confirmed_at else None,
            "keyed_hash_of_ip_address_kept": s.ip_hash_kept,
        } for s in signatures_of(session, email_index)],
    }


def _owned(session: DbSession, email_index: str, signature_id: int) -> Signature | None:
    return session.scalar(select(Signature).where(
        Signature.id == signature_id, Signature.email_index == email_index,
        Signature.anonymized_at.is_(None)))


def withdraw_consents(session: DbSession, email_index: str, signature_id: int,
                      keep: set[str]) -> list[str]:
    """Turn off every consent of one of the mailbox's signatures that is not in `keep`.

    Only ever withdraws: a consent not given before is not given here. Returns the names of the
    consents withdrawn; [] when the signature is not this mailbox's (nothing is said about why).
    """
    signature = _owned(session, email_index, signature_id)
    if signature is None:
        return []
    withdrawn = [name for name in CONSENTS if getattr(signature, name) and name not in keep]
    for name in withdrawn:
        setattr(signature, name, False)
    if withdrawn:
        petition = session.get(Petition, signature.petition_id)
        record(session, None, "signature.consent_withdrawn",
               campaign_id=petition.campaign_id if petition else None,
               object_type="signature", object_id=signature.id,
               summary=f"by its signer: {', '.join(withdrawn)}")
    session.flush()
    return withdrawn


def delete_my_signature(session: DbSession, email_index: str, signature_id: int) -> bool:
    """Delete one of the mailbox's signatures, in the caller's transaction.

    A confirmed one stops counting exactly once: the conditional DELETE's row count decides, so
    two concurrent deletes (or a delete racing a confirmation) subtract at most 1. Queued mail
    about it is cancelled; letters already sent stay sent (their outbox rows lose the link).
    When it was the mailbox's last signature, the outbox forgets the blind index too (suppressions
    keep theirs: docs/security.md). The audit log records the id and the petition, never the
    signer. Returns False when there was
    nothing of this mailbox's to delete.
    """
    signature = _owned(session, email_index, signature_id)
    if signature is None:
        return False
    petition_id, status_before = signature.petition_id, signature.status
    session.execute(
        update(OutboundEmail)
        .where(OutboundEmail.signature_id == signature_id, OutboundEmail.status == OutboxStatus.QUEUED)
        .values(status=OutboxStatus.CANCELLED, last_error="signature deleted by its signer")
        .execution_options(synchronize_session=False))
    session.expunge(signature)
    mine = (Signature.id == signature_id, Signature.email_index == email_index)
    counted = session.execute(
        delete(Signature).where(*mine, Signature.status == SignatureStatus.CONFIRMED)
        .execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
    if counted:
        add_to_count(session, petition_id, -1)
    else:
        gone = session.execute(
            delete(Signature).where(*mine, Signature.status != SignatureStatus.CONFIRMED)
            .execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
        if gone != 1:
            return False  # deleted by a concurrent request, or confirmed just now: try again
    # Erasure: once the mailbox has no signature left, its blind index leaves the outbox too
    # (the per-address cap then starts again; only the owner's own link can get here).
    if session.scalar(select(Signature.id).where(Signature.email_index == email_index).limit(1)) is None:
        session.execute(update(OutboundEmail).where(OutboundEmail.recipient_index == email_index)
                        .values(recipient_index=None).execution_options(synchronize_session=False))
        # And from supporter updates' recipient rows and the soft-bounce count (issue 7).
        forget_mailbox(session, email_index)
    petition = session.get(Petition, petition_id)
    record(session, None, "signature.deleted_by_signer",
           campaign_id=petition.campaign_id if petition else None, object_type="signature",
           object_id=signature_id,
           summary=f"{'counted' if counted else status_before} signature on "
                   f"{petition.title if petition else '?'} deleted by its signer")
    return True


def _form_emails_today(session: DbSession, email_index: str) -> int:
    since = utcnow() - timedelta(days=1)
    return int(session.scalar(select(func.count()).select_from(OutboundEmail).where(
        OutboundEmail.recipient_index == email_index, OutboundEmail.from_public_form.is_(True),
        OutboundEmail.created_at >= since)) or 0)


def request_my_data_link(session: DbSession, email: Email) -> bool:
    """Queue a manage-my-data link to an address, if it has signed anything and is under the
    per-address daily cap. The caller answers the same either way (no enumeration); the return
    value is for tests only."""
    index = cipher().blind_index(email.canonical)
    latest = session.scalar(select(Signature.id).where(
        Signature.email_index == index, Signature.anonymized_at.is_(None),
        Signature.status != SignatureStatus.INVALIDATED).order_by(Signature.id.desc()).limit(1))
    sent_today = _form_emails_today(session, index)
    if latest is None or sent_today >= int(current_app.config["EMAILS_PER_ADDRESS_PER_DAY"]):
        return False
    row = queue_email(session, kind=MY_DATA_LINK, key=f"my-data:{index[:32]}:{sent_today + 1}:"
                      f"{utcnow():%Y%m%d}", signature_id=latest, recipient_index=index,
                      from_public_form=True)
    return row is not None


# --- the one reminder ---------------------------------------------------------------------------

def queue_reminders(session: DbSession, now: datetime | None = None) -> int:
    """Queue one reminder to each signer still pending REMINDER_AFTER_HOURS after signing.

    Driven by beat over rows, never by broker countdowns. Held, invalidated and deleted
    signatures are never reminded (only status 'pending' is). reminded_at is stamped with a
    conditional UPDATE first, so two runs at once remind once, and the outbox key
    `reminder:<id>` makes a second row impossible. A signer at the per-address cap is stamped
    and skipped: no reminder later either. Returns the number queued; the caller commits.
    """
    config = current_app.config
    after = float(config["REMINDER_AFTER_HOURS"])
    if after <= 0:
        return 0
    now = now or utcnow()
    oldest = now - timedelta(hours=max(after, float(config["REMINDER_MAX_AGE_HOURS"])))
    candidates = list(session.execute(
        select(Signature.id, Signature.petition_id, Signature.email_index)
        .where(Signature.status == SignatureStatus.PENDING, Signature.reminded_at.is_(None),
               Signature.created_at <= now - timedelta(hours=after), Signature.created_at >= oldest)
        .order_by(Signature.id).limit(int(config["REMINDER_BATCH"]))))
    queued = 0
    for signature_id, petition_id, index in candidates:
        claimed = session.execute(
            update(Signature)
            .where(Signature.id == signature_id, Signature.status == SignatureStatus.PENDING,
                   Signature.reminded_at.is_(None))
            .values(reminded_at=now).execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if claimed != 1:
            continue
        petition = session.get(Petition, petition_id)
        if petition is None or not petition.is_signable:
            continue
        sent_for_petition = int(session.scalar(select(func.count()).select_from(OutboundEmail).where(
            OutboundEmail.recipient_index == index, OutboundEmail.from_public_form.is_(True),
            OutboundEmail.petition_id == petition_id)) or 0)
        if (sent_for_petition >= int(config["EMAILS_PER_ADDRESS_PER_PETITION"])
                or _form_emails_today(session, index) >= int(config["EMAILS_PER_ADDRESS_PER_DAY"])):
            continue
        if queue_email(session, kind=REMINDER, key=f"reminder:{signature_id}", petition_id=petition_id,
                       signature_id=signature_id, recipient_index=index, from_public_form=True):
            queued += 1
    return queued


# --- sharing and the petition page --------------------------------------------------------------

def new_referral_code() -> str:
    return secrets.token_urlsafe(6)  # 8 characters; a collision only blurs one organizer figure


def clean_referral_code(value: str | None) -> str:
    """A referral code from a URL or form, or "" if it is not one."""
    value = (value or "").strip()
    return value if _CODE.match(value) else ""


_STEPS = (1, 1.5, 2, 2.5, 3, 5, 7.5)


def displayed_goal(goal: int, count: int) -> int:
    """The goal as the page shows it: the organizer's, then the next round step once reached
    (1,000 -> 1,500 -> 2,000 -> 2,500 -> 3,000 -> 5,000 -> 7,500 -> 10,000 ...)."""
    if goal <= 0 or count < goal:
        return goal
    magnitude = 1
    while True:
        for step in _STEPS:
            candidate = int(step * magnitude)
            if candidate > count and candidate > goal:
                return candidate
        magnitude *= 10


@dataclass(frozen=True)
class RecentSigner:
    first_name: str
    country: str


def first_name(full_name: str) -> str:
    parts = full_name.split()
    return parts[0][:40] if parts else ""


def recent_signers(session: DbSession, petition: Petition) -> list[RecentSigner]:
    """The latest confirmed signers who ticked "show my first name": first name and country only.
    Empty when the organizer switched the list off or RECENT_SIGNERS is 0."""
    limit = int(current_app.config["RECENT_SIGNERS"])
    if limit <= 0 or not petition.show_recent_signers:
        return []
    crypt = cipher()
    rows = session.execute(
        select(Signature.name_encrypted, Signature.country)
        # The same predicate as the partial index ix_signatures_recent_public, written as
        # literals so that a prepared (generic) plan can still use it.
        .where(Signature.petition_id == petition.id, Signature.consent_public_name,
               Signature.status == literal_column("'confirmed'"), Signature.anonymized_at.is_(None))
        .order_by(Signature.confirmed_at.desc()).limit(limit))
    return [RecentSigner(first_name(crypt.decrypt(name)), country) for name, country in rows]


def referral_counts(session: DbSession, petition_id: int, limit: int = 20) -> list[tuple[int, str, int]]:
    """For organizers: which signers' shares brought confirmed signatures.
    (referrer's signature id, referral code, signatures brought), most first."""
    counts = list(session.execute(
        select(Signature.referred_by, func.count())
        .where(Signature.petition_id == petition_id, Signature.referred_by.is_not(None),
               Signature.status == SignatureStatus.CONFIRMED)
        .group_by(Signature.referred_by).order_by(func.count().desc()).limit(limit)))
    result = []
    for code, brought in counts:
        referrer = session.scalar(select(Signature.id).where(
            Signature.petition_id == petition_id, Signature.referral_code == code).limit(1))
        result.append((int(referrer or 0), str(code), int(brought)))
    return result


# --- translations -------------------------------------------------------------------------------

class TranslationError(ValueError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def translations_of(session: DbSession, petition_id: int) -> list[PetitionTranslation]:
    return list(session.scalars(select(PetitionTranslation).where(
        PetitionTranslation.petition_id == petition_id).order_by(PetitionTranslation.language)))


def title_in(session: DbSession, petition: Petition, language: str | None) -> str:
    """The petition's title in a language: its translation's, else its own."""
    if not language or language == petition.language:
        return petition.title
    translation = translation_for(session, petition.id, language)
    return translation.title if translation is not None else petition.title


def translation_for(session: DbSession, petition_id: int, language: str) -> PetitionTranslation | None:
    return session.scalar(select(PetitionTranslation).where(
        PetitionTranslation.petition_id == petition_id, PetitionTranslation.language == language))


def save_translation(session: DbSession, actor: Any, petition: Petition, language: str, title: str,
                     summary: str, body_markdown: str, allowed: list[str]) -> PetitionTranslation:
    """Add or replace the petition's text in one language (not its own: that is the petition)."""
    language = language.strip().lower()
    if language not in allowed:
        raise TranslationError("Choose one of the listed languages.", "language")
    if language == petition.language:
        raise TranslationError("That is the petition's own language: edit the petition instead.", "language")
    if not title.strip():
        raise TranslationError("Enter the translated title.", "title")
    translation = translation_for(session, petition.id, language)
    if translation is None:
        translation = PetitionTranslation(petition_id=petition.id, language=language, title="")
        session.add(translation)
    translation.title = title.strip()[:300]
    translation.summary = summary.strip()
    translation.body_markdown = body_markdown
    translation.body_html = render_markdown(body_markdown)
    translation.updated_at = utcnow()
    # The petition's own updated_at is in the public page's cache key: a new translation shows.
    petition.updated_at = utcnow()
    record(session, actor, "petition.translation_saved", campaign_id=petition.campaign_id,
           object_type="petition", object_id=petition.id, summary=f"{language}: {translation.title}")
    session.flush()
    return translation


def delete_translation(session: DbSession, actor: Any, petition: Petition, language: str) -> bool:
    translation = translation_for(session, petition.id, language)
    if translation is None:
        return False
    session.delete(translation)
    petition.updated_at = utcnow()
    record(session, actor, "petition.translation_deleted", campaign_id=petition.campaign_id,
           object_type="petition", object_id=petition.id, summary=language)
    session.flush()
    return True


def set_recent_signers(session: DbSession, actor: Any, petition: Petition, shown: bool) -> None:
    petition.show_recent_signers = shown
    petition.updated_at = utcnow()
    record(session, actor, "petition.recent_signers", campaign_id=petition.campaign_id,
           object_type="petition", object_id=petition.id, summary="shown" if shown else "hidden")
    session.flush()
