"""Updates to supporters: an organizer writes an email in Markdown with merge fields, previews it,
test-sends it to themself, picks the audience (consenting, confirmed signers of a petition or of
the whole campaign, optionally by country or language) and sends it now or at a set time.

Life of an update: draft -> scheduled (send_after) -> sending -> sent, with paused and cancelled
on the way. The reach job (beat) starts updates that are due: one transaction moves the update
to sending and writes one recipient row per mailbox (INSERT ... SELECT, deduplicated by blind
index; suppressed addresses are written as suppressed). Batch tasks on the bulk queue then
claim REACH_BATCH_SIZE rows with a lease, check the suppression list again, and send them over
one SMTP connection, marking each row as it is accepted. A paused or cancelled update is noticed
between two messages. A worker that dies leaves its rows claimed until the lease ends; then
another worker sends them (only the message in flight at the moment of death can arrive twice,
with the same Message-ID).
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

from flask import current_app
from flask_mail import BadHeaderError
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from markupsafe import Markup, escape
from sqlalchemy import and_, case, func, insert, literal, or_, select, update

from campaign.mail.messages import Draft, HeaderInjection, build_message, display_name
from campaign.mail.sender import TemporaryFailure, refusal, send_message, smtp_connection
from campaign.models import (
    Campaign,
    Petition,
    RecipientStatus,
    Signature,
    SignatureStatus,
    SupporterUpdate,
    Suppression,
    SuppressionReason,
    UpdateRecipient,
    UpdateStatus,
    User,
)
from campaign.models.base import utcnow
from campaign.models.reach import ACTIVE, EDITABLE
from campaign.services.audit import record
from campaign.services.bounces import suppress_everywhere
from campaign.services.countries import is_country
from campaign.services.markdown import render_markdown
from campaign.services.organizing import NotFound, OrganizingError, campaign_for
from campaign.services.outbox import backoff_seconds
from campaign.services.privacy import cipher
from campaign.services.suppression import email_index_of, suppress
from campaign.services.types import DbSession

log = logging.getLogger(__name__)

KIND = "supporter_update"
MERGE_FIELDS = {
    "first_name": "the supporter's first name (or “friend” when we have none)",
    "petition_title": "the title of the petition they signed",
    "petition_link": "the address of the petition they signed",
    "unsubscribe_link": "their own unsubscribe link (one is in the footer anyway)",
}
_MERGE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_UNSUBSCRIBE_SALT = "campaign.unsubscribe"


class UpdateError(OrganizingError):
    """An update that cannot be saved or sent as asked; the message is fit to show at the field."""


# --- composing --------------------------------------------------------------------------------


@dataclass
class UpdateInput:
    subject: str
    body_markdown: str
    petition_id: int | None = None
    countries: list[str] | None = None
    language: str = ""


def merge_fields_in(text: str) -> list[str]:
    return [match.group(1) for match in _MERGE.finditer(text or "")]


def check_merge_fields(text: str, field: str) -> None:
    """Raise UpdateError naming the first unknown merge field (so it shows at preview, not send)."""
    for name in merge_fields_in(text):
        if name not in MERGE_FIELDS:
            known = ", ".join("{{ " + f + " }}" for f in MERGE_FIELDS)
            raise UpdateError(f"“{{{{ {name} }}}}” is not a merge field. Use one of: {known}.", field)


def _validate(session: DbSession, campaign: Campaign, data: UpdateInput) -> None:
    subject = (data.subject or "").strip()
    if not subject:
        raise UpdateError("Write a subject.", "subject")
    if len(subject) > 200 or any(ord(ch) < 32 for ch in subject):
        raise UpdateError("The subject must be one line of at most 200 characters.", "subject")
    if not (data.body_markdown or "").strip():
        raise UpdateError("Write the message.", "body_markdown")
    check_merge_fields(data.subject, "subject")
    if {"petition_link", "unsubscribe_link"} & set(merge_fields_in(data.subject)):
        raise UpdateError("Links cannot go in the subject.", "subject")
    check_merge_fields(data.body_markdown, "body_markdown")
    if data.petition_id is not None:
        petition = session.get(Petition, data.petition_id)
        if petition is None or petition.campaign_id != campaign.id:
            raise UpdateError("Choose one of this campaign's petitions.", "petition_id")
    for code in data.countries or []:
        if not is_country(code):
            raise UpdateError("Choose listed countries only.", "countries")
    if data.language and not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?", data.language):
        raise UpdateError("A language code such as en or pt-BR.", "language")


def _apply(update_row: SupporterUpdate, data: UpdateInput) -> None:
    update_row.subject = data.subject.strip()
    update_row.body_markdown = data.body_markdown
    update_row.petition_id = data.petition_id
    update_row.countries = ",".join(sorted(set(data.countries or [])))
    update_row.language = data.language or ""


def create_update(
    session: DbSession, actor: User, campaign_id: int, data: UpdateInput, form_key: str | None = None
) -> SupporterUpdate:
    """A draft update. A form sent twice (the same form_key) gives back the first draft instead
    of a second one. Raises NotFound or UpdateError. The caller commits."""
    campaign = campaign_for(session, actor, campaign_id)
    if form_key:
        existing = session.scalar(select(SupporterUpdate).where(SupporterUpdate.form_key == form_key))
        if existing is not None:
            if existing.campaign_id != campaign.id:
                raise NotFound
            return existing
    _validate(session, campaign, data)
    row = SupporterUpdate(
        campaign_id=campaign.id, created_by_id=actor.id, form_key=form_key or None, status=UpdateStatus.DRAFT
    )
    _apply(row, data)
    session.add(row)
    session.flush()
    record(
        session,
        actor,
        "update.create",
        campaign_id=campaign.id,
        object_type="update",
        object_id=row.id,
        summary=row.subject,
    )
    return row


def update_for(session: DbSession, actor: User, update_id: int) -> tuple[SupporterUpdate, Campaign]:
    row = session.get(SupporterUpdate, update_id)
    if row is None:
        raise NotFound
    return row, campaign_for(session, actor, row.campaign_id)


def edit_update(session: DbSession, actor: User, update_id: int, data: UpdateInput) -> SupporterUpdate:
    row, campaign = update_for(session, actor, update_id)
    if row.status not in EDITABLE:
        raise UpdateError("Only a draft can be edited.")
    _validate(session, campaign, data)
    _apply(row, data)
    row.updated_at = utcnow()
    record(
        session,
        actor,
        "update.edit",
        campaign_id=campaign.id,
        object_type="update",
        object_id=row.id,
        summary=row.subject,
    )
    return row


# --- the audience -----------------------------------------------------------------------------


def _audience_filter(row: SupporterUpdate) -> list[Any]:
    conditions: list[Any] = [
        Signature.status == SignatureStatus.CONFIRMED,
        Signature.consent_updates.is_(True),
        Signature.anonymized_at.is_(None),
    ]
    if row.petition_id is not None:
        conditions.append(Signature.petition_id == row.petition_id)
    else:
        conditions.append(
            Signature.petition_id.in_(
                select(Petition.id).where(Petition.campaign_id == row.campaign_id).scalar_subquery()
            )
        )
    if row.countries:
        conditions.append(Signature.country.in_(row.countries.split(",")))
    if row.language:
        conditions.append(or_(Signature.locale == row.language, Signature.locale.like(row.language + "-%")))
    return conditions


def _suppressed(campaign_id: int, email_index: Any) -> Any:
    return (
        select(Suppression.id)
        .where(
            Suppression.email_index == email_index,
            or_(Suppression.campaign_id.is_(None), Suppression.campaign_id == campaign_id),
        )
        .exists()
    )


def audience(session: DbSession, row: SupporterUpdate) -> tuple[int, int]:
    """(mailboxes that would get it, of which suppressed): distinct blind indexes."""
    base = select(Signature.email_index).where(*_audience_filter(row)).distinct().subquery()
    total = int(session.scalar(select(func.count()).select_from(base)) or 0)
    suppressed = int(
        session.scalar(
            select(func.count()).select_from(base).where(_suppressed(row.campaign_id, base.c.email_index))
        )
        or 0
    )
    return total, suppressed


# --- rendering --------------------------------------------------------------------------------


@dataclass
class Rendered:
    subject: str
    html: Markup
    text: str


def _placeholder(name: str) -> str:
    # Letters only: Markdown leaves it alone and nh3 keeps it in text and in href values.
    return "zqmerge" + name.replace("_", "x") + "zq"


class Compiled:
    """The update's body rendered and sanitized once; per recipient only the merge fields change."""

    def __init__(self, subject: str, body_markdown: str) -> None:
        self.subject = subject
        self.text_source = body_markdown
        self.html_source = render_markdown(_MERGE.sub(lambda m: _placeholder(m.group(1)), body_markdown))

    def render(self, values: dict[str, str]) -> Rendered:
        def text_value(match: re.Match[str]) -> str:
            return values.get(match.group(1), "")

        html = self.html_source
        for name in MERGE_FIELDS:
            html = html.replace(_placeholder(name), str(escape(values.get(name, ""))))
        subject = " ".join(_MERGE.sub(text_value, self.subject).split())
        return Rendered(subject=subject, html=Markup(html), text=_MERGE.sub(text_value, self.text_source))  # noqa: S704 - nh3-sanitized, values escaped


def first_name(full_name: str) -> str:
    parts = display_name(full_name).split()
    return parts[0] if parts else "friend"


def petition_link(petition: Petition | None) -> str:
    base = current_app.config["BASE_URL"]
    return f"{base}/petitions/{petition.slug}" if petition is not None else base


def unsubscribe_token(campaign_id: int, email_index: str) -> str:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_UNSUBSCRIBE_SALT).dumps(
        {"c": campaign_id, "e": email_index}
    )


def unsubscribe_link(campaign_id: int, email_index: str) -> str:
    return f"{current_app.config['BASE_URL']}/unsubscribe/{unsubscribe_token(campaign_id, email_index)}"


def unsubscribe_headers(link: str) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe, for every email a supporter gets because they asked for news."""
    return {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def preview(session: DbSession, row: SupporterUpdate, actor: User) -> Rendered:
    """The update as its first recipient would see it, with the organizer's own name standing in.
    Raises UpdateError for an unknown merge field."""
    check_merge_fields(row.subject, "subject")
    check_merge_fields(row.body_markdown, "body_markdown")
    petition = (
        session.get(Petition, row.petition_id)
        if row.petition_id
        else session.scalar(
            select(Petition).where(Petition.campaign_id == row.campaign_id).order_by(Petition.id).limit(1)
        )
    )
    values = {
        "first_name": first_name(actor.name or ""),
        "petition_title": petition.title if petition else "",
        "petition_link": petition_link(petition),
        "unsubscribe_link": current_app.config["BASE_URL"] + "/unsubscribe/…",
    }
    return Compiled(row.subject, row.body_markdown).render(values)


def _draft(
    campaign: Campaign,
    rendered: Rendered,
    to_address: str,
    unsubscribe: str,
    message_id: str | None,
    test: bool = False,
    language: str = "",
) -> Draft:
    headers = unsubscribe_headers(unsubscribe)
    return Draft(
        kind=KIND,
        to_name="",
        to_address=to_address,
        subject=("[Test] " if test else "") + rendered.subject,
        sender_name=campaign.sender_name or campaign.organization,
        context={
            "body_html": rendered.html,
            "body_text": rendered.text,
            "campaign": campaign,
            "unsubscribe_url": unsubscribe,
            "test": test,
            "subject": rendered.subject,
            # the mail layout reads the page language from a petition
            "petition": {"language": language or "en"},
        },
        headers=headers,
        message_id=message_id,
    )


def _message_id(update_id: int, recipient_id: int) -> str:
    _, sender = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])
    domain = sender.rsplit("@", 1)[-1] or "localhost"
    return f"<update-{update_id}-{recipient_id}@{domain}>"


def send_test(session: DbSession, update_id: int, user_id: int) -> str:
    """Send the update to the organizer who asked (worker side), marked as a test."""
    row = session.get(SupporterUpdate, update_id)
    user = session.get(User, user_id)
    if row is None or user is None:
        return "skipped"
    campaign = session.get(Campaign, row.campaign_id)
    assert campaign is not None
    rendered = preview(session, row, user)
    index = email_index_of(user.email)
    draft = _draft(
        campaign,
        rendered,
        user.email,
        unsubscribe_link(campaign.id, index),
        None,
        test=True,
        language=row.language,
    )
    send_message(build_message(draft, current_app.config["MAIL_DEFAULT_SENDER"]))
    return "sent"


# --- sending ------------------------------------------------------------------------------------


def schedule_update(session: DbSession, actor: User, update_id: int, send_after: datetime | None) -> str:
    """Move a draft to scheduled (send_after None: now). Returns "scheduled", or "already" when
    it had left draft already (a second click on send makes no second mailing). Raises
    UpdateError for a time in the past or an audience of zero. The caller commits."""
    row, campaign = update_for(session, actor, update_id)
    if row.status != UpdateStatus.DRAFT:
        return "already"
    now = utcnow()
    if send_after is not None and send_after < now - timedelta(minutes=1):
        raise UpdateError("That time has passed. Choose a time in the future, or send now.", "send_at")
    check_merge_fields(row.subject, "subject")
    check_merge_fields(row.body_markdown, "body_markdown")
    total, suppressed = audience(session, row)
    if total - suppressed <= 0:
        raise UpdateError(
            "Nobody would receive this update: no confirmed signer in this audience has "
            "agreed to hear from you (or all of them unsubscribed)."
        )
    changed = session.execute(
        update(SupporterUpdate)
        .where(SupporterUpdate.id == row.id, SupporterUpdate.status == UpdateStatus.DRAFT)
        .values(status=UpdateStatus.SCHEDULED, send_after=send_after or now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        return "already"
    session.refresh(row)
    when = "now" if send_after is None else send_after.isoformat()
    record(
        session,
        actor,
        "update.schedule",
        campaign_id=campaign.id,
        object_type="update",
        object_id=row.id,
        summary=f"{total - suppressed} recipients ({suppressed} suppressed), send {when}",
    )
    return "scheduled"


def _set_status(
    session: DbSession, actor: User, update_id: int, action: str, allowed: set[str], to: UpdateStatus
) -> bool:
    row, campaign = update_for(session, actor, update_id)
    changed = session.execute(
        update(SupporterUpdate)
        .where(SupporterUpdate.id == row.id, SupporterUpdate.status.in_(allowed))
        .values(
            status=to,
            updated_at=utcnow(),
            **({"finished_at": utcnow()} if to == UpdateStatus.CANCELLED else {}),
            # Resumed: no batch is running, so the reach job re-publishes it at its next run.
            **({"progress_at": None} if to == UpdateStatus.SENDING else {}),
        )
        .execution_options(synchronize_session=False)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    if to == UpdateStatus.CANCELLED:
        session.execute(
            update(UpdateRecipient)
            .where(UpdateRecipient.update_id == row.id, UpdateRecipient.status == RecipientStatus.QUEUED)
            .values(status=RecipientStatus.CANCELLED)
            .execution_options(synchronize_session=False)
        )
    record(
        session, actor, f"update.{action}", campaign_id=campaign.id, object_type="update", object_id=row.id
    )
    return True


def pause_update(session: DbSession, actor: User, update_id: int) -> bool:
    """Stop sending after the message in flight; the rest stays queued. The caller commits."""
    return _set_status(
        session,
        actor,
        update_id,
        "pause",
        {UpdateStatus.SENDING, UpdateStatus.SCHEDULED},
        UpdateStatus.PAUSED,
    )


def resume_update(session: DbSession, actor: User, update_id: int) -> bool:
    """Back to sending (or to scheduled, if it had not started); the caller commits and publishes."""
    row, _ = update_for(session, actor, update_id)
    target = UpdateStatus.SENDING if row.started_at is not None else UpdateStatus.SCHEDULED
    return _set_status(session, actor, update_id, "resume", {UpdateStatus.PAUSED}, target)


def cancel_update(session: DbSession, actor: User, update_id: int) -> bool:
    """Stop for good: queued recipients become cancelled. The caller commits."""
    return _set_status(
        session, actor, update_id, "cancel", set(ACTIVE) | {UpdateStatus.DRAFT}, UpdateStatus.CANCELLED
    )


def progress(session: DbSession, update_id: int) -> dict[str, int]:
    counts = dict.fromkeys((s.value for s in RecipientStatus), 0)
    for status, n in session.execute(
        select(UpdateRecipient.status, func.count())
        .where(UpdateRecipient.update_id == update_id)
        .group_by(UpdateRecipient.status)
    ):
        counts[str(status)] = int(n)
    counts["total"] = sum(counts.values())
    return counts


def start_due_updates(session: DbSession) -> list[int]:
    """Scheduled updates whose time has come: move each to sending and write its recipients,
    one transaction per update (two runs at once: the conditional UPDATE lets one win). Commits.
    Returns the ids to publish batches for."""
    now = utcnow()
    due = list(
        session.scalars(
            select(SupporterUpdate.id)
            .where(SupporterUpdate.status == UpdateStatus.SCHEDULED, SupporterUpdate.send_after <= now)
            .order_by(SupporterUpdate.send_after)
        )
    )
    session.rollback()
    started: list[int] = []
    for update_id in due:
        changed = session.execute(
            update(SupporterUpdate)
            .where(SupporterUpdate.id == update_id, SupporterUpdate.status == UpdateStatus.SCHEDULED)
            .values(
                status=UpdateStatus.SENDING,
                started_at=func.coalesce(SupporterUpdate.started_at, now),
                progress_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            continue
        row = session.get(SupporterUpdate, update_id)
        assert row is not None
        _write_recipients(session, row)
        session.commit()
        started.append(update_id)
    return started


def _write_recipients(session: DbSession, row: SupporterUpdate) -> None:
    """One row per mailbox (the lowest signature id of a blind index), in one INSERT ... SELECT."""
    exists = select(UpdateRecipient.id).where(UpdateRecipient.update_id == row.id).limit(1)
    if session.scalar(exists) is not None:
        return  # written already (a resumed update)
    chosen = (
        select(func.min(Signature.id).label("signature_id"), Signature.email_index)
        .where(*_audience_filter(row))
        .group_by(Signature.email_index)
        .subquery()
    )
    status = case(
        (_suppressed(row.campaign_id, chosen.c.email_index), literal(RecipientStatus.SUPPRESSED.value)),
        else_=literal(RecipientStatus.QUEUED.value),
    )
    session.execute(
        insert(UpdateRecipient).from_select(
            ["update_id", "signature_id", "email_index", "status", "attempts", "error"],
            select(
                literal(row.id),
                chosen.c.signature_id,
                chosen.c.email_index,
                status,
                literal(0),
                literal(""),
            ),
        )
    )


def _claimable(now: datetime) -> Any:
    return or_(
        and_(
            UpdateRecipient.status == RecipientStatus.QUEUED,
            or_(UpdateRecipient.next_attempt_at.is_(None), UpdateRecipient.next_attempt_at <= now),
        ),
        and_(UpdateRecipient.status == RecipientStatus.SENDING, UpdateRecipient.lease_until < now),
    )


def stalled_updates(session: DbSession) -> list[int]:
    """Sending updates with work left that no worker has moved within the lease: their batch
    tasks were lost (a worker killed, a broker message dropped). Commits nothing."""
    lease = int(current_app.config["REACH_LEASE_SECONDS"])
    now = utcnow()
    quiet = now - timedelta(seconds=max(lease // 2, 1))
    rows = list(
        session.scalars(
            select(SupporterUpdate.id).where(
                SupporterUpdate.status == UpdateStatus.SENDING,
                or_(SupporterUpdate.progress_at.is_(None), SupporterUpdate.progress_at < quiet),
            )
        )
    )
    stalled = [
        i
        for i in rows
        if session.scalar(
            select(UpdateRecipient.id).where(UpdateRecipient.update_id == i, _claimable(now)).limit(1)
        )
        is not None
        or session.scalar(
            select(UpdateRecipient.id)
            .where(UpdateRecipient.update_id == i, UpdateRecipient.status == RecipientStatus.SENDING)
            .limit(1)
        )
        is not None
    ]
    for update_id in rows:
        _finish_if_done(session, update_id)
    session.rollback()
    return stalled


def _status_of(session: DbSession, update_id: int) -> str | None:
    status = session.scalar(select(SupporterUpdate.status).where(SupporterUpdate.id == update_id))
    session.rollback()  # a short read: on SQLite an open transaction holds the write lock
    return status


@dataclass
class BatchResult:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    retry: int = 0
    cancelled: int = 0
    stopped: str = ""
    more: bool = False


def _claim(session: DbSession, update_id: int, size: int) -> tuple[list[int], datetime]:
    now = utcnow()
    lease = now + timedelta(seconds=int(current_app.config["REACH_LEASE_SECONDS"]))
    # SKIP LOCKED on PostgreSQL: two batch tasks take different rows instead of waiting; SQLite
    # has one writer at a time anyway (and leaves FOR UPDATE out).
    ids = list(
        session.scalars(
            select(UpdateRecipient.id)
            .where(UpdateRecipient.update_id == update_id, _claimable(now))
            .order_by(UpdateRecipient.id)
            .limit(size)
            .with_for_update(skip_locked=True)
        )
    )
    if not ids:
        session.rollback()
        return [], lease
    session.execute(
        update(UpdateRecipient)
        .where(UpdateRecipient.id.in_(ids), _claimable(now))
        .values(status=RecipientStatus.SENDING, lease_until=lease, attempts=UpdateRecipient.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    mine = list(
        session.scalars(
            select(UpdateRecipient.id).where(
                UpdateRecipient.id.in_(ids),
                UpdateRecipient.status == RecipientStatus.SENDING,
                UpdateRecipient.lease_until == lease,
            )
        )
    )
    session.rollback()
    return mine, lease


def _mark(session: DbSession, ids: list[int], lease: datetime, **values: Any) -> None:
    """Record outcomes, fenced by the claim's lease (a late worker cannot overwrite a newer claim)."""
    if not ids:
        return
    session.execute(
        update(UpdateRecipient)
        .where(
            UpdateRecipient.id.in_(ids),
            UpdateRecipient.status == RecipientStatus.SENDING,
            UpdateRecipient.lease_until == lease,
        )
        .values(lease_until=None, **values)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def _renew(session: DbSession, ids: list[int], lease: datetime) -> datetime:
    """Push the lease of the rows still ours forward; returns the new fence value."""
    renewed = utcnow() + timedelta(seconds=int(current_app.config["REACH_LEASE_SECONDS"]))
    if ids:
        session.execute(
            update(UpdateRecipient)
            .where(UpdateRecipient.id.in_(ids), UpdateRecipient.status == RecipientStatus.SENDING,
                   UpdateRecipient.lease_until == lease)
            .values(lease_until=renewed)
            .execution_options(synchronize_session=False)
        )
    session.commit()
    return renewed


def _release(session: DbSession, update_id: int, ids: list[int], lease: datetime) -> None:
    """Hand unsent claimed rows back: queued again, or cancelled when the update was cancelled."""
    status = _status_of(session, update_id)
    target = RecipientStatus.CANCELLED if status == UpdateStatus.CANCELLED else RecipientStatus.QUEUED
    _mark(
        session, ids, lease, status=target, attempts=UpdateRecipient.attempts - 1
    )  # not an attempt: nothing was tried


def _crash_if_asked(sent_so_far: int) -> None:
    # Fault tests: CRASH_POINT=reach_before_smtp:N makes the worker exit right before the SMTP
    # send of its Nth update email (refused in production, like the outbox's crash points).
    point = current_app.config.get("CRASH_POINT") or ""
    if point.startswith("reach_before_smtp:") and sent_so_far + 1 >= int(point.split(":", 1)[1]):
        log.warning("crash point %s reached: exiting", point)
        os._exit(70)


_sent_in_process = 0


def send_batch(
    session: DbSession, update_id: int, on_sent: Callable[[int], None] | None = None
) -> BatchResult:
    """Claim up to REACH_BATCH_SIZE recipients and send them over one SMTP connection (worker
    side). Safe to run any number of times at once. Commits its own transactions."""
    global _sent_in_process
    result = BatchResult()
    row = session.get(SupporterUpdate, update_id)
    if row is None or row.status != UpdateStatus.SENDING:
        result.stopped = row.status if row is not None else "missing"
        session.rollback()
        return result
    campaign = session.get(Campaign, row.campaign_id)
    assert campaign is not None
    compiled = Compiled(row.subject, row.body_markdown)
    campaign_id, language = campaign.id, row.language
    session.expunge(campaign)
    session.rollback()

    ids, lease = _claim(session, update_id, int(current_app.config["REACH_BATCH_SIZE"]))
    result.claimed = len(ids)
    if not ids:
        _finish_if_done(session, update_id)
        return result

    # Checked again now, not only when the recipients were written: an unsubscribe a moment ago wins.
    rows = session.execute(
        select(
            UpdateRecipient.id,
            UpdateRecipient.email_index,
            Signature.name_encrypted,
            Signature.email_encrypted,
            Signature.status,
            Signature.consent_updates,
            Petition,
        )
        .join(Signature, Signature.id == UpdateRecipient.signature_id, isouter=True)
        .join(Petition, Petition.id == Signature.petition_id, isouter=True)
        .where(UpdateRecipient.id.in_(ids))
        .order_by(UpdateRecipient.id)
    ).all()
    suppressed_indexes = set(
        session.scalars(
            select(Suppression.email_index).where(
                Suppression.email_index.in_([r.email_index for r in rows]),
                or_(Suppression.campaign_id.is_(None), Suppression.campaign_id == campaign_id),
            )
        )
    )
    for petition in {r.Petition for r in rows if r.Petition is not None}:
        session.expunge(petition)
    session.rollback()

    to_send = []
    suppressed_ids, gone_ids = [], []
    for r in rows:
        if r.email_index in suppressed_indexes:
            suppressed_ids.append(r.id)
        elif r.email_encrypted is None or r.status != SignatureStatus.CONFIRMED or not r.consent_updates:
            gone_ids.append(r.id)  # deleted, invalidated or consent withdrawn since
        else:
            to_send.append(r)
    _mark(session, suppressed_ids, lease, status=RecipientStatus.SUPPRESSED, error="suppressed")
    _mark(session, gone_ids, lease, status=RecipientStatus.CANCELLED, error="no longer wanted")
    result.suppressed, result.cancelled = len(suppressed_ids), len(gone_ids)

    sender = current_app.config["MAIL_DEFAULT_SENDER"]
    remaining = [r.id for r in to_send]
    lost: set[int] = set()
    last_check = time.monotonic()
    try:
        with smtp_connection() as connection:
            for position, r in enumerate(to_send):
                if time.monotonic() - last_check > 1.0:
                    # Pause and cancel take effect within about a second; the lease on what is
                    # left is renewed, so a slow batch is never taken over while it still runs.
                    last_check = time.monotonic()
                    status = _status_of(session, update_id)
                    if status != UpdateStatus.SENDING:
                        result.stopped = str(status)
                        break
                    lease = _renew(session, remaining, lease)
                    kept = set(session.scalars(select(UpdateRecipient.id).where(
                        UpdateRecipient.id.in_(remaining), UpdateRecipient.lease_until == lease)))
                    session.rollback()
                    if len(kept) != len(remaining):
                        # Another worker took these over (our lease had run out): leave them to it.
                        log.warning("update %s: lease lost on %s emails", update_id,
                                    len(remaining) - len(kept))
                        lost.update(i for i in remaining if i not in kept)
                if r.id in lost:
                    continue
                unsubscribe = unsubscribe_link(campaign_id, r.email_index)
                values = {
                    "first_name": first_name(cipher().decrypt(r.name_encrypted)),
                    "petition_title": r.Petition.title if r.Petition else "",
                    "petition_link": petition_link(r.Petition),
                    "unsubscribe_link": unsubscribe,
                }
                address = cipher().decrypt(r.email_encrypted)
                try:
                    message = build_message(
                        _draft(
                            campaign,
                            compiled.render(values),
                            address,
                            unsubscribe,
                            _message_id(update_id, r.id),
                            language=language,
                        ),
                        sender,
                    )
                    _crash_if_asked(_sent_in_process)
                    connection.send(message)
                except (BadHeaderError, HeaderInjection, ValueError) as error:
                    _mark(session, [r.id], lease, status=RecipientStatus.FAILED, error=type(error).__name__)
                    result.failed += 1
                except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException) as error:
                    code = _code_of(error)
                    failure = refusal(error)
                    if isinstance(failure, TemporaryFailure):
                        _retry(session, r.id, lease, f"deferred {code}")
                        result.retry += 1
                    else:
                        if failure.mailbox:
                            # A hard bounce at the door: never again, from any campaign (R5), and
                            # its other queued updates dropped, committed with the failed mark
                            # (the outbox's rule and path).
                            suppress_everywhere(session, r.email_index)
                        _mark(
                            session,
                            [r.id],
                            lease,
                            status=RecipientStatus.FAILED,
                            error=f"refused {code}".strip(),
                        )
                        result.failed += 1
                else:
                    _mark(session, [r.id], lease, status=RecipientStatus.SENT, sent_at=utcnow(), error="")
                    _sent_in_process += 1
                    result.sent += 1
                    if on_sent:
                        on_sent(r.id)
                remaining = [x.id for x in to_send[position + 1 :] if x.id not in lost]
    except (TemporaryFailure, smtplib.SMTPException, OSError) as error:
        # The connection broke or never opened: what is left waits a little and goes again.
        log.warning(
            "update %s: SMTP connection failed (%s); %s emails wait",
            update_id,
            type(error).__name__,
            len(remaining),
        )
        delay = backoff_seconds(
            1, int(current_app.config["OUTBOX_BACKOFF_BASE"]), int(current_app.config["OUTBOX_BACKOFF_MAX"])
        )
        _mark(
            session,
            remaining,
            lease,
            status=RecipientStatus.QUEUED,
            next_attempt_at=utcnow() + timedelta(seconds=delay),
            error=type(error).__name__,
        )
        result.retry += len(remaining)
        remaining = []
    if remaining:
        _release(session, update_id, remaining, lease)
    session.execute(
        update(SupporterUpdate)
        .where(SupporterUpdate.id == update_id)
        .values(progress_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if not result.stopped:
        result.more = not _finish_if_done(session, update_id)
    return result


def _code_of(error: smtplib.SMTPRecipientsRefused | smtplib.SMTPResponseException) -> str:
    # Only the number is kept on the row: the server's words may quote the address.
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        return str(codes[0]) if codes else ""
    return str(error.smtp_code)


def _retry(session: DbSession, recipient_id: int, lease: datetime, error: str) -> None:
    attempts = session.scalar(select(UpdateRecipient.attempts).where(UpdateRecipient.id == recipient_id)) or 0
    if attempts >= int(current_app.config["OUTBOX_MAX_ATTEMPTS"]):
        _mark(session, [recipient_id], lease, status=RecipientStatus.FAILED, error=f"gave up: {error}")
        return
    delay = backoff_seconds(
        attempts,
        int(current_app.config["OUTBOX_BACKOFF_BASE"]),
        int(current_app.config["OUTBOX_BACKOFF_MAX"]),
    )
    _mark(
        session,
        [recipient_id],
        lease,
        status=RecipientStatus.QUEUED,
        error=error,
        next_attempt_at=utcnow() + timedelta(seconds=delay),
    )


def _finish_if_done(session: DbSession, update_id: int) -> bool:
    """Mark a sending update sent once no recipient is queued or being sent. Commits."""
    open_rows = session.scalar(
        select(UpdateRecipient.id)
        .where(
            UpdateRecipient.update_id == update_id,
            UpdateRecipient.status.in_([RecipientStatus.QUEUED, RecipientStatus.SENDING]),
        )
        .limit(1)
    )
    if open_rows is not None:
        session.rollback()
        return False
    session.execute(
        update(SupporterUpdate)
        .where(SupporterUpdate.id == update_id, SupporterUpdate.status == UpdateStatus.SENDING)
        .values(status=UpdateStatus.SENT, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return True


# --- unsubscribing ------------------------------------------------------------------------------


@dataclass
class UnsubscribeLink:
    campaign: Campaign
    email_index: str


def read_unsubscribe_token(session: DbSession, token: str) -> UnsubscribeLink:
    """The campaign and mailbox behind a link. Raises NotFound for a tampered, expired or
    foreign (another purpose's) token."""
    try:
        data = URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_UNSUBSCRIBE_SALT).loads(
            token, max_age=int(current_app.config["UNSUBSCRIBE_TOKEN_MAX_AGE"])
        )
    except (BadSignature, SignatureExpired):
        raise NotFound from None
    if not isinstance(data, dict) or not isinstance(data.get("e"), str) or not isinstance(data.get("c"), int):
        raise NotFound
    campaign = session.get(Campaign, data["c"])
    if campaign is None:
        raise NotFound
    return UnsubscribeLink(campaign, data["e"])


def is_unsubscribed(session: DbSession, link: UnsubscribeLink) -> bool:
    return (
        session.scalar(
            select(Suppression.id)
            .where(
                Suppression.email_index == link.email_index,
                or_(Suppression.campaign_id.is_(None), Suppression.campaign_id == link.campaign.id),
            )
            .limit(1)
        )
        is not None
    )


def unsubscribe(session: DbSession, link: UnsubscribeLink) -> None:
    """Honored at once: the address is suppressed for the campaign, its consent is withdrawn on
    the campaign's petitions, and its queued update emails are dropped. Idempotent. The caller
    commits."""
    suppress(session, link.email_index, SuppressionReason.UNSUBSCRIBE, link.campaign.id)
    petitions = select(Petition.id).where(Petition.campaign_id == link.campaign.id).scalar_subquery()
    session.execute(
        update(Signature)
        .where(Signature.email_index == link.email_index, Signature.petition_id.in_(petitions))
        .values(consent_updates=False)
        .execution_options(synchronize_session=False)
    )
    updates = (
        select(SupporterUpdate.id).where(SupporterUpdate.campaign_id == link.campaign.id).scalar_subquery()
    )
    session.execute(
        update(UpdateRecipient)
        .where(
            UpdateRecipient.email_index == link.email_index,
            UpdateRecipient.update_id.in_(updates),
            UpdateRecipient.status == RecipientStatus.QUEUED,
        )
        .values(status=RecipientStatus.SUPPRESSED, error="unsubscribed")
        .execution_options(synchronize_session=False)
    )


def suppression_counts(session: DbSession, campaign_id: int) -> dict[str, int]:
    """Suppressed mailboxes among the campaign's signers, by reason (unsubscribes from this
    campaign; bounces and complaints from anywhere)."""
    signers = (
        select(Signature.email_index)
        .join(Petition, Petition.id == Signature.petition_id)
        .where(Petition.campaign_id == campaign_id)
        .distinct()
        .subquery()
    )
    rows = session.execute(
        select(Suppression.reason, func.count(func.distinct(Suppression.email_index)))
        .where(
            Suppression.email_index.in_(select(signers.c.email_index)),
            or_(Suppression.campaign_id.is_(None), Suppression.campaign_id == campaign_id),
        )
        .group_by(Suppression.reason)
    )
    counts = dict.fromkeys((r.value for r in SuppressionReason), 0)
    counts.update({str(reason): int(n) for reason, n in rows})
    return counts


def updates_of(session: DbSession, campaign_id: int) -> list[SupporterUpdate]:
    return list(
        session.scalars(
            select(SupporterUpdate)
            .where(SupporterUpdate.campaign_id == campaign_id)
            .order_by(SupporterUpdate.created_at.desc(), SupporterUpdate.id.desc())
            .limit(200)
        )
    )


def forget_mailbox(session: DbSession, email_index: str) -> int:
    """For erasure: drop what reach keeps under a mailbox's blind index (its update recipient
    rows and soft bounce count). The suppression row stays, the documented exception, so an
    erased person is not mailed again. The caller commits. Returns the rows deleted."""
    from sqlalchemy import delete

    from campaign.models import SoftBounce

    deleted = session.execute(delete(UpdateRecipient).where(UpdateRecipient.email_index == email_index)
                              .execution_options(synchronize_session=False))
    session.execute(delete(SoftBounce).where(SoftBounce.email_index == email_index)
                    .execution_options(synchronize_session=False))
    return int(deleted.rowcount)  # type: ignore[attr-defined]
