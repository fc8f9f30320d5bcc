"""Batched deliveries to targets: the planner that beat runs (cadences, send-after times, the
final delivery, routing signatures that nothing routed yet), "deliver now", the delivery email
with its CSV, the ledger per petition and target, the failure watch that warns organizers, and
the public figures (delivered to N leaders, letters that reached each).

Each batch is a Delivery row whose id is the batch id written on the signatures it carries; its
email is one outbox row keyed delivery:<petition>:<target>:<batch id>. Planners claim a target's
next batch with a conditional UPDATE on TargetMailing.version, so two beats never make two.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from campaign.mail.messages import Draft
from campaign.models import (
    Cadence,
    Delivery,
    DeliveryKind,
    LetterQuota,
    MailingPolicy,
    Membership,
    OutboundEmail,
    OutboxStatus,
    Petition,
    PetitionStatus,
    PetitionTarget,
    RoutedSignature,
    RouteVia,
    Signature,
    SignatureStatus,
    Target,
    TargetMailing,
    User,
    UserStatus,
)
from campaign.models.base import utcnow
from campaign.models.deliveries import LETTERS_POLICY_BATCHED
from campaign.services.counting import signature_count
from campaign.services.csv_safe import csv_bytes
from campaign.services.letters import (
    BATCH_POLICIES,
    LETTER,
    Signer,
    letter_text,
    one_line,
    paragraphs,
    plan_letters,
    signer_for_official,
    stable_message_id,
)
from campaign.services.outbox import after_sent, message_kind, queue_email
from campaign.services.petitions import absolute_url, petition_targets
from campaign.services.routing import deliverable_address, route
from campaign.services.types import DbSession
from campaign.services.webhooks import on_delivery_sent

log = logging.getLogger(__name__)

DELIVERY = "delivery_to_target"
TARGET_FAILING = "target_failing"
CSV_HEADER = ("name", "country", "comment", "date", "email")
INTERVALS = {Cadence.DAILY: timedelta(days=1), Cadence.WEEKLY: timedelta(days=7)}
# A petition closed longer ago than this is no longer planned for (its final delivery is made).
CLOSED_PLANNING_WINDOW = timedelta(days=30)
# A send that failed this many times, and is still being retried, counts as "failing".
FAILING_ATTEMPTS = 2


class MailingError(ValueError):
    """A request that cannot be done as asked; the message is fit to show next to the form."""


# --- per-target settings -------------------------------------------------------------------------

def target_mailing(session: DbSession, petition_id: int, target_id: int,
                   now: datetime | None = None) -> TargetMailing:
    """The petition's mailing row for this target, created with the defaults (daily, first
    delivery a day from now) if missing. Flushes."""
    row = session.get(TargetMailing, (petition_id, target_id))
    if row is None:
        now = now or utcnow()
        row = TargetMailing(petition_id=petition_id, target_id=target_id, cadence=Cadence.DAILY,
                            every_n=100, next_run_at=now + INTERVALS[Cadence.DAILY], version=0,
                            failure_cursor=0, last_error="", reached=0)
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # another planner created it first
            row = session.get(TargetMailing, (petition_id, target_id), populate_existing=True)
            assert row is not None
    return row


def set_cadence(session: DbSession, petition: Petition, target_id: int, cadence: str, *,
                every_n: int | None = None, first_at: datetime | None = None,
                now: datetime | None = None) -> TargetMailing:
    """Choose when a target gets batched deliveries. Raises MailingError.

    every_n: for Cadence.EVERY_N, at least 1. first_at: for daily and weekly, the first send-after
    time; one in the past is accepted and means "at the next run, then every day (week) at that
    time" — the planner never sends a burst of the deliveries it missed.
    """
    now = now or utcnow()
    if target_id not in {t.id for t in petition_targets(session, petition.id)}:
        raise MailingError("This target is not one of the petition's.")
    try:
        value = Cadence(cadence)
    except ValueError:
        raise MailingError("Choose how often this target gets deliveries.") from None
    row = target_mailing(session, petition.id, target_id, now)
    if value == Cadence.EVERY_N:
        if every_n is None or every_n < 1 or every_n > 1_000_000:
            raise MailingError("Enter a number of signatures between 1 and 1,000,000.")
        row.every_n = every_n
    if value in INTERVALS:
        if first_at is not None and first_at.tzinfo is None:
            raise MailingError("The first delivery time needs a time zone.")
        row.next_run_at = first_at or (now + INTERVALS[value])
    row.cadence = value
    row.version += 1  # a planner that read the old settings loses its claim
    session.flush()
    return row


# --- the planner (beat: deliveries.run) ------------------------------------------------------------

@dataclass
class PlanResult:
    routed: int = 0
    deliveries: list[int] = field(default_factory=list)
    warned: int = 0
    refreshed: int = 0


def run_mailings(session: DbSession, now: datetime | None = None, route_limit: int = 2000) -> PlanResult:
    """What beat runs: route confirmed signatures nothing routed yet, plan due deliveries, watch
    for failing targets, refresh the public figures, drop old quota rows. The caller commits.
    Safe to run twice at once: claims and idempotency keys decide who does what."""
    now = now or utcnow()
    result = PlanResult()
    result.routed = route_unrouted(session, limit=route_limit, now=now)
    result.deliveries = plan_deliveries(session, now)
    result.warned = watch_failures(session, now)
    result.refreshed = refresh_reached(session, now)
    delete_old_quotas(session, now)
    return result


def route_unrouted(session: DbSession, limit: int = 2000, now: datetime | None = None) -> int:
    """Route confirmed signatures that were never routed (released from hold, or confirmed by a
    path that did not route them). Returns how many were looked at."""
    signatures = list(session.scalars(
        select(Signature).where(Signature.status == SignatureStatus.CONFIRMED,
                                Signature.routed_at.is_(None))
        .order_by(Signature.id).limit(limit)))
    for signature in signatures:
        plan_letters(session, signature, now)
    return len(signatures)


def delete_old_quotas(session: DbSession, now: datetime) -> None:
    """Forget the hourly letter counts of the day before yesterday and earlier."""
    session.execute(delete(LetterQuota).where(LetterQuota.window_start < now - timedelta(days=2)))


def _planned_petitions(session: DbSession, now: datetime) -> list[Petition]:
    return list(session.scalars(
        select(Petition).where(
            Petition.mailing_policy != MailingPolicy.NONE,
            or_(Petition.status == PetitionStatus.PUBLISHED,
                and_(Petition.status == PetitionStatus.CLOSED,
                     Petition.closed_at >= now - CLOSED_PLANNING_WINDOW)))
        .order_by(Petition.id)))


def batched_vias(policy: str) -> frozenset[str]:
    """The routed signatures that travel in batches under this policy: all of them when the
    petition sends deliveries, else only those the cap or a bad address kept from a letter."""
    if policy in BATCH_POLICIES:
        return frozenset(RouteVia)
    if policy == MailingPolicy.LETTERS:
        return frozenset(LETTERS_POLICY_BATCHED)
    return frozenset()


def pending_counts(session: DbSession, petition: Petition) -> dict[int, int]:
    """target id -> confirmed signatures waiting for its next batch."""
    vias = batched_vias(petition.mailing_policy)
    if not vias:
        return {}
    rows = session.execute(
        select(RoutedSignature.target_id, func.count())
        .join(Signature, Signature.id == RoutedSignature.signature_id)
        .where(RoutedSignature.petition_id == petition.id, RoutedSignature.batch_id.is_(None),
               RoutedSignature.via.in_(sorted(vias)), Signature.status == SignatureStatus.CONFIRMED)
        .group_by(RoutedSignature.target_id))
    return {int(target_id): int(count) for target_id, count in rows}


def _next_run(current: datetime | None, interval: timedelta, now: datetime) -> datetime:
    """The first slot after now on the same grid: a missed week is skipped, not sent in a burst."""
    if current is None:
        return now + interval
    if current > now:
        return current
    missed = (now - current) // interval + 1
    return current + interval * missed


def plan_deliveries(session: DbSession, now: datetime | None = None) -> list[int]:
    """Make the batches that are due, each a Delivery plus its outbox row. Returns their ids."""
    now = now or utcnow()
    created: list[int] = []
    for petition in _planned_petitions(session, now):
        created += _plan_petition(session, petition, now)
    return created


def _plan_petition(session: DbSession, petition: Petition, now: datetime) -> list[int]:
    targets = petition_targets(session, petition.id)
    if not targets:
        return []
    pending = pending_counts(session, petition)
    closing = petition.status == PetitionStatus.CLOSED or petition.past_closing_date
    created: list[int] = []
    for target in targets:
        if not deliverable_address(target.email):
            continue  # waits, in full, until the organizer gives the target an address
        mailing = target_mailing(session, petition.id, target.id, now)
        waiting = pending.get(target.id, 0)
        kind: DeliveryKind | None = None
        next_run = mailing.next_run_at
        if closing:
            kind = DeliveryKind.FINAL if waiting else None
        elif mailing.cadence == Cadence.EVERY_N:
            kind = DeliveryKind.BATCH if waiting >= max(1, mailing.every_n) else None
        elif mailing.cadence in INTERVALS and (mailing.next_run_at is None or mailing.next_run_at <= now):
            next_run = _next_run(mailing.next_run_at, INTERVALS[Cadence(mailing.cadence)], now)
            kind = DeliveryKind.BATCH if waiting else None
        if kind is None and next_run == mailing.next_run_at:
            continue
        if not _claim(session, mailing, next_run):
            continue
        if kind is not None:
            delivery = _make_batch(session, petition, target, kind, now)
            if delivery is not None:
                created.append(delivery.id)
    return created


def _claim(session: DbSession, mailing: TargetMailing, next_run: datetime | None) -> bool:
    result = session.execute(
        update(TargetMailing)
        .where(TargetMailing.petition_id == mailing.petition_id,
               TargetMailing.target_id == mailing.target_id,
               TargetMailing.version == mailing.version)
        .values(version=TargetMailing.version + 1, next_run_at=next_run)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.refresh(mailing)
    return True


def _mark_pending(session: DbSession, petition: Petition, target_id: int, batch_id: int) -> int:
    """Write the batch id on the target's waiting, confirmed signatures. Returns how many."""
    vias = batched_vias(petition.mailing_policy)
    if not vias:
        return 0
    confirmed = select(Signature.id).where(Signature.petition_id == petition.id,
                                           Signature.status == SignatureStatus.CONFIRMED)
    result = session.execute(
        update(RoutedSignature)
        .where(RoutedSignature.petition_id == petition.id, RoutedSignature.target_id == target_id,
               RoutedSignature.batch_id.is_(None), RoutedSignature.via.in_(sorted(vias)),
               RoutedSignature.signature_id.in_(confirmed))
        .values(batch_id=batch_id)
        .execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


def routed_total(session: DbSession, petition_id: int, target_id: int) -> int:
    """Confirmed signatures routed to this target, all told."""
    return int(session.scalar(
        select(func.count()).select_from(RoutedSignature)
        .join(Signature, Signature.id == RoutedSignature.signature_id)
        .where(RoutedSignature.petition_id == petition_id, RoutedSignature.target_id == target_id,
               Signature.status == SignatureStatus.CONFIRMED)) or 0)


def _make_batch(session: DbSession, petition: Petition, target: Target, kind: DeliveryKind,
                now: datetime) -> Delivery | None:
    delivery = Delivery(petition_id=petition.id, target_id=target.id, kind=kind, cutoff=now,
                        created_at=now)
    session.add(delivery)
    session.flush()
    marked = _mark_pending(session, petition, target.id, delivery.id)
    if marked == 0:
        session.delete(delivery)
        session.flush()
        return None
    delivery.new_count = marked
    delivery.total_count = routed_total(session, petition.id, target.id)
    email = queue_email(session, kind=DELIVERY, key=f"delivery:{petition.id}:{target.id}:{delivery.id}",
                        petition_id=petition.id, target_id=target.id)
    delivery.email_id = email.id if email is not None else None
    session.flush()
    return delivery


# --- deliver now -------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeliverNowLine:
    """What one target would receive: exactly what the confirmation screen says."""
    target: Target
    address_ok: bool
    count: int        # the petition's count (signature_count), stated in the email
    rows: int         # signatures in the CSV
    named: int        # rows with a name (and comment): routed to this target and consented
    with_email: int   # rows with an email address: routed to this target and consented
    subject: str = ""                                            # the email's subject
    letter: list[list[str]] = field(default_factory=list)        # its letter, in paragraphs


@dataclass(frozen=True)
class DeliverNowPreview:
    petition: Petition
    lines: list[DeliverNowLine]

    @property
    def sendable(self) -> list[DeliverNowLine]:
        return [line for line in self.lines if line.address_ok]

    @property
    def skipped(self) -> list[DeliverNowLine]:
        return [line for line in self.lines if not line.address_ok]


def _chosen_targets(session: DbSession, petition: Petition, target_ids: Iterable[int] | None) -> list[Target]:
    targets = petition_targets(session, petition.id)
    if target_ids is None:
        return targets
    wanted = set(target_ids)
    unknown = wanted - {t.id for t in targets}
    if unknown:
        raise MailingError("Choose targets of this petition only.")
    return [t for t in targets if t.id in wanted]


def _consent_groups(session: DbSession, petition_id: int,
                    cutoff: datetime | None = None) -> list[tuple[str, bool, bool, int]]:
    """(country, named consent, email consent, count) of the confirmed signatures."""
    query = (select(Signature.country, Signature.consent_name_to_targets, Signature.consent_reply_to,
                    func.count())
             .where(Signature.petition_id == petition_id, Signature.status == SignatureStatus.CONFIRMED,
                    Signature.anonymized_at.is_(None))
             .group_by(Signature.country, Signature.consent_name_to_targets, Signature.consent_reply_to))
    if cutoff is not None:
        query = query.where(Signature.confirmed_at <= cutoff)
    return [(c, bool(n), bool(e), int(k)) for c, n, e, k in session.execute(query)]


def _routing_by_country(session: DbSession, petition_id: int,
                        countries: Iterable[str]) -> dict[str, set[int]]:
    return {c: {t.id for t in route(session, petition_id, c)} for c in set(countries)}


def preview_deliver_now(session: DbSession, petition: Petition,
                        target_ids: Iterable[int] | None = None) -> DeliverNowPreview:
    """What "deliver now" would send to each chosen target (all when None). Reads only.
    Raises MailingError for a target that is not the petition's."""
    targets = _chosen_targets(session, petition, target_ids)
    groups = _consent_groups(session, petition.id)
    routes = _routing_by_country(session, petition.id, [g[0] for g in groups])
    count = signature_count(session, petition.id)
    rows = sum(g[3] for g in groups)
    lines = []
    for target in targets:
        named = sum(k for c, n, _e, k in groups if n and target.id in routes[c])
        with_email = sum(k for c, _n, e, k in groups if e and target.id in routes[c])
        lines.append(DeliverNowLine(target, deliverable_address(target.email), count, rows, named,
                                    with_email, delivery_subject(petition, count, rows, full=True),
                                    paragraphs(letter_text(petition, target))))
    return DeliverNowPreview(petition, lines)


def deliver_now(session: DbSession, actor: User | None, petition: Petition, target_ids: Iterable[int] | None,
                nonce: str, now: datetime | None = None) -> list[Delivery]:
    """Send the complete petition (letter, count, every confirmed signature as CSV) to the chosen
    targets (all when None), in the caller's transaction. Targets without a valid address are
    skipped. nonce comes from the confirmation screen: submitting the same screen twice adds
    nothing (Delivery.request_key is unique). The target's waiting signatures are written on
    the delivery, so its next batch starts after them. Raises MailingError."""
    from campaign.services.audit import record

    now = now or utcnow()
    if not nonce or len(nonce) > 64:
        raise MailingError("The confirmation screen was incomplete. Open it again.")
    if petition.status not in {PetitionStatus.PUBLISHED, PetitionStatus.CLOSED}:
        raise MailingError("Only a published or closed petition can be delivered.")
    targets = _chosen_targets(session, petition, target_ids)
    if not targets:
        raise MailingError("This petition has no targets to deliver to.")
    made: list[Delivery] = []
    count = signature_count(session, petition.id)
    for target in targets:
        if not deliverable_address(target.email):
            continue
        delivery = Delivery(petition_id=petition.id, target_id=target.id, kind=DeliveryKind.NOW, cutoff=now,
                            created_at=now, request_key=f"now:{nonce}:{target.id}",
                            requested_by_id=actor.id if actor is not None else None, total_count=count)
        try:
            with session.begin_nested():
                session.add(delivery)
        except IntegrityError:
            continue  # this screen was submitted already
        delivery.new_count = _mark_pending(session, petition, target.id, delivery.id)
        email = queue_email(session, kind=DELIVERY, key=f"delivery:{petition.id}:{target.id}:{delivery.id}",
                            petition_id=petition.id, target_id=target.id)
        delivery.email_id = email.id if email is not None else None
        made.append(delivery)
    if made:
        record(session, actor, "petition.delivered_now", campaign_id=petition.campaign_id,
               object_type="petition", object_id=petition.id,
               summary=f"{petition.title}: complete petition to {len(made)} "
                       f"target{'s' if len(made) != 1 else ''}")
    session.flush()
    return made


# --- the delivery email ----------------------------------------------------------------------------

def _batch_signers(session: DbSession, delivery: Delivery) -> Iterator[Signer]:
    query = (select(Signature).join(RoutedSignature, RoutedSignature.signature_id == Signature.id)
             .where(RoutedSignature.batch_id == delivery.id, Signature.status == SignatureStatus.CONFIRMED,
                    Signature.anonymized_at.is_(None))
             .order_by(Signature.confirmed_at, Signature.id)
             .execution_options(yield_per=2000))
    for signature in session.scalars(query):
        yield signer_for_official(signature)


def _full_signers(session: DbSession, delivery: Delivery) -> Iterator[Signer]:
    groups = _consent_groups(session, delivery.petition_id, delivery.cutoff)
    routes = _routing_by_country(session, delivery.petition_id, [g[0] for g in groups])
    query = (select(Signature)
             .where(Signature.petition_id == delivery.petition_id,
                    Signature.status == SignatureStatus.CONFIRMED,
                    Signature.anonymized_at.is_(None), Signature.confirmed_at <= delivery.cutoff)
             .order_by(Signature.confirmed_at, Signature.id)
             .execution_options(yield_per=2000))
    for signature in session.scalars(query):
        # A signer's tick names their own leader: elsewhere the row is anonymous.
        allowed = delivery.target_id in routes.get(signature.country, set())
        yield signer_for_official(signature, named_allowed=allowed)


def delivery_csv(signers: Iterable[Signer]) -> tuple[bytes, int, int]:
    """The CSV attachment (formula-safe RFC 4180), the number of rows, and of named rows."""
    rows: list[tuple[str, str, str, str, str]] = []
    named = 0
    for signer in signers:
        rows.append((signer.line, signer.country, signer.comment, signer.confirmed_on, signer.email))
        named += signer.named
    return csv_bytes(CSV_HEADER, rows), len(rows), named


def _release_batch(session: DbSession, delivery: Delivery) -> None:
    # Committed with the outbox's "cancelled": the signatures wait for the next batch.
    session.execute(update(RoutedSignature).where(RoutedSignature.batch_id == delivery.id)
                    .values(batch_id=None).execution_options(synchronize_session=False))


def delivery_subject(petition: Petition, total: int, rows: int, *, full: bool) -> str:
    """The subject of a delivery: the same words on the confirmation screen and in the email."""
    if full:
        return one_line(f"Petition “{petition.title}”: {total:,} signatures", 200)
    return one_line(f"Petition “{petition.title}”: {rows:,} new signatures ({total:,} in all)", 200)


@message_kind(DELIVERY)
def delivery_to_target(session: DbSession, row: OutboundEmail) -> Draft | None:
    """One batch to one official: the letter, the new and total counts, and the CSV, built
    from the batch id at send time (a signature invalidated since is left out). None when
    nothing is left to send, the target is no longer the petition's, or it has no valid address
    any more."""
    delivery = session.scalar(select(Delivery).where(Delivery.email_id == row.id))
    if delivery is None:
        return None
    target = session.get(Target, delivery.target_id)
    petition = session.get(Petition, delivery.petition_id)
    if target is None or petition is None:
        return None
    if session.get(PetitionTarget, (petition.id, target.id)) is None:
        return None  # taken off the petition before it was sent
    if not deliverable_address(target.email):
        if delivery.kind != DeliveryKind.NOW:
            _release_batch(session, delivery)
        return None
    full = delivery.kind == DeliveryKind.NOW
    signers = _full_signers(session, delivery) if full else _batch_signers(session, delivery)
    data, rows, named = delivery_csv(signers)
    if rows == 0:
        return None
    if full:
        total = signature_count(session, petition.id)
    else:
        # As of the batch; less the ones of this batch invalidated since it was made.
        total = max(rows, delivery.total_count - (delivery.new_count - rows))
    date = delivery.created_at.date().isoformat()
    return Draft(
        kind=DELIVERY,
        to_name=target.name,
        to_address=target.email,
        subject=delivery_subject(petition, total, rows, full=full),
        sender_name=petition.campaign.sender_name,
        message_id=stable_message_id(row.idempotency_key),
        attachments=[(f"signatures-{petition.slug}-{date}.csv", "text/csv; charset=utf-8", data)],
        context={
            "petition": petition,
            "target": target,
            "delivery": delivery,
            "full": full,
            "final": delivery.kind == DeliveryKind.FINAL,
            "letter": paragraphs(letter_text(petition, target)),
            "rows": rows,
            "named": named,
            "total": total,
            "organization": petition.campaign.organization,
            "petition_url": absolute_url(f"/petitions/{petition.slug}"),
        },
    )


# Webhooks (issue 8): delivery.sent once the mail server accepted a delivery.
after_sent(DELIVERY)(on_delivery_sent)


# --- the ledger ------------------------------------------------------------------------------------

_BOUNCE = re.compile(r"^(recipient refused|5\d\d\b)|: 5\d\d\b")


def delivery_status(email: OutboundEmail | None) -> str:
    """queued, retrying, sent, bounced (the server refused it: 5xx), failed or cancelled."""
    if email is None:
        return "cancelled"
    if email.status in {OutboxStatus.QUEUED, OutboxStatus.SENDING}:
        return "retrying" if email.last_error and email.attempts else "queued"
    if email.status == OutboxStatus.SENT:
        return "sent"
    if email.status == OutboxStatus.FAILED:
        return "bounced" if _BOUNCE.search(email.last_error or "") else "failed"
    return "cancelled"


@dataclass(frozen=True)
class DeliveryEntry:
    delivery: Delivery
    status: str
    error: str
    attempts: int
    sent_at: datetime | None


@dataclass(frozen=True)
class TargetLedger:
    target: Target
    mailing: TargetMailing
    address_ok: bool
    letters: dict[str, int]   # status -> letters
    waiting: int              # signatures waiting for the next batch
    reached: int
    deliveries: list[DeliveryEntry]

    @property
    def failing(self) -> bool:
        return self.mailing.failing_since is not None or not self.address_ok


def ledger(session: DbSession, petition: Petition, deliveries_per_target: int = 20) -> list[TargetLedger]:
    """Per target of the petition: letters by status, waiting signatures, the latest deliveries
    with their status and error, and whether mail to it is failing."""
    targets = petition_targets(session, petition.id)
    letters: dict[int, dict[str, int]] = defaultdict(dict)
    for target_id, status, last_error, count in session.execute(
            select(OutboundEmail.target_id, OutboundEmail.status,
                   OutboundEmail.last_error != "", func.count())
            .where(OutboundEmail.petition_id == petition.id, OutboundEmail.kind == LETTER)
            .group_by(OutboundEmail.target_id, OutboundEmail.status, OutboundEmail.last_error != "")):
        if target_id is None:
            continue
        label = status
        if status in {OutboxStatus.QUEUED, OutboxStatus.SENDING}:
            label = "retrying" if last_error else "queued"
        letters[int(target_id)][label] = letters[int(target_id)].get(label, 0) + int(count)
    waiting = pending_counts(session, petition)
    result = []
    for target in targets:
        mailing = session.get(TargetMailing, (petition.id, target.id)) or TargetMailing(
            petition_id=petition.id, target_id=target.id, cadence=Cadence.DAILY, every_n=100,
            reached=0, last_error="", version=0, failure_cursor=0)
        entries = []
        latest = (select(Delivery, OutboundEmail)
                  .outerjoin(OutboundEmail, OutboundEmail.id == Delivery.email_id)
                  .where(Delivery.petition_id == petition.id, Delivery.target_id == target.id)
                  .order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(deliveries_per_target))
        for delivery, email in session.execute(latest):
            entries.append(DeliveryEntry(delivery, delivery_status(email), email.last_error if email else "",
                                         email.attempts if email else 0, email.sent_at if email else None))
        result.append(TargetLedger(target, mailing, deliverable_address(target.email),
                                   dict(letters[target.id]),
                                   waiting.get(target.id, 0), mailing.reached, entries))
    return result


# --- the failure watch -----------------------------------------------------------------------------

def _failing_condition() -> ColumnElement[bool]:
    return and_(OutboundEmail.kind.in_([LETTER, DELIVERY]), or_(
        OutboundEmail.status == OutboxStatus.FAILED,
        and_(OutboundEmail.status.in_([OutboxStatus.QUEUED, OutboxStatus.SENDING]),
             OutboundEmail.attempts >= FAILING_ATTEMPTS, OutboundEmail.last_error != "")))


def watch_failures(session: DbSession, now: datetime | None = None) -> int:
    """Notice targets whose mail starts failing (refused, or retried FAILING_ATTEMPTS times):
    mark them failing and warn the campaign's organizers once per episode; mark them recovered
    once a later letter or delivery to them is sent. Returns how many warnings were queued."""
    now = now or utcnow()
    warned = 0
    failures = session.execute(
        select(OutboundEmail.petition_id, OutboundEmail.target_id, func.max(OutboundEmail.id))
        .where(_failing_condition(), OutboundEmail.petition_id.is_not(None),
               OutboundEmail.target_id.is_not(None))
        .group_by(OutboundEmail.petition_id, OutboundEmail.target_id)).all()
    for petition_id, target_id, newest in failures:
        if petition_id is None or target_id is None:
            continue
        mailing = target_mailing(session, petition_id, target_id, now)
        if newest <= mailing.failure_cursor:
            continue
        error = session.scalar(select(OutboundEmail.last_error).where(OutboundEmail.id == newest)) or ""
        mailing.failure_cursor = newest
        mailing.last_error = error[:2000]
        if mailing.failing_since is None:
            mailing.failing_since = now
            warned += _warn_organizers(session, petition_id, target_id, now)
    for mailing in session.scalars(select(TargetMailing).where(TargetMailing.failing_since.is_not(None))):
        recovered = session.scalar(
            select(OutboundEmail.id).where(
                OutboundEmail.petition_id == mailing.petition_id,
                OutboundEmail.target_id == mailing.target_id,
                OutboundEmail.kind.in_([LETTER, DELIVERY]), OutboundEmail.status == OutboxStatus.SENT,
                OutboundEmail.id > mailing.failure_cursor).limit(1))
        if recovered is not None:
            mailing.failing_since = None
    session.flush()
    return warned


def organizers_of(session: DbSession, petition_id: int) -> list[int]:
    """Active members of the petition's campaign (owners and organizers)."""
    return list(session.scalars(
        select(User.id).join(Membership, Membership.user_id == User.id)
        .join(Petition, Petition.campaign_id == Membership.campaign_id)
        .where(Petition.id == petition_id, User.status == UserStatus.ACTIVE).order_by(User.id)))


def _warn_organizers(session: DbSession, petition_id: int, target_id: int, now: datetime) -> int:
    episode = int(now.timestamp())
    count = 0
    for user_id in organizers_of(session, petition_id):
        key = f"{TARGET_FAILING}:{petition_id}:{target_id}:{episode}:{user_id}"
        row = queue_email(session, kind=TARGET_FAILING, key=key,
                          petition_id=petition_id, target_id=target_id)
        count += row is not None
    return count


@message_kind(TARGET_FAILING)
def target_failing_email(session: DbSession, row: OutboundEmail) -> Draft | None:
    """To one organizer: mail to a target is failing. Names the target, never a signer."""
    parts = row.idempotency_key.split(":")
    if len(parts) != 5 or not parts[4].isdigit() or row.petition_id is None or row.target_id is None:
        return None
    user = session.get(User, int(parts[4]))
    petition = session.get(Petition, row.petition_id)
    target = session.get(Target, row.target_id)
    mailing = session.get(TargetMailing, (row.petition_id, row.target_id))
    if user is None or user.status != UserStatus.ACTIVE:
        return None
    if petition is None or target is None or mailing is None:
        return None
    if mailing.failing_since is None:
        return None  # recovered before the warning went out
    return Draft(
        kind=TARGET_FAILING,
        to_name=user.name,
        to_address=user.email,
        subject="Mail to a target of your petition is failing",
        sender_name=petition.campaign.sender_name,
        context={
            "petition": petition,
            "target": target,
            "error": mailing.last_error,
            "since": mailing.failing_since,
            "ledger_url": absolute_url(f"/organize/petitions/{petition.id}/mailings"),
        },
    )


# --- public figures ----------------------------------------------------------------------------------

def refresh_reached(session: DbSession, now: datetime | None = None) -> int:
    """Recount, per petition and target, the signatures whose letter or batch was sent: the
    periodic aggregate the petition page reads. Returns how many rows changed."""
    now = now or utcnow()
    changed = 0
    letter_email = OutboundEmail.__table__.alias("letter_email")
    batch_email = OutboundEmail.__table__.alias("batch_email")
    for petition in _planned_petitions(session, now):
        counts = dict(session.execute(
            select(RoutedSignature.target_id, func.count(func.distinct(RoutedSignature.signature_id)))
            .outerjoin(letter_email, letter_email.c.id == RoutedSignature.letter_email_id)
            .outerjoin(Delivery, Delivery.id == RoutedSignature.batch_id)
            .outerjoin(batch_email, batch_email.c.id == Delivery.email_id)
            .where(RoutedSignature.petition_id == petition.id,
                   or_(letter_email.c.status == OutboxStatus.SENT, batch_email.c.status == OutboxStatus.SENT))
            .group_by(RoutedSignature.target_id)).all())
        for target in petition_targets(session, petition.id):
            value = int(counts.get(target.id, 0))
            mailing = session.get(TargetMailing, (petition.id, target.id))
            if mailing is None and value == 0:
                continue
            mailing = mailing or target_mailing(session, petition.id, target.id, now)
            if mailing.reached != value:
                mailing.reached = value
                mailing.reached_at = now
                changed += 1
    session.flush()
    return changed


@dataclass(frozen=True)
class PublicMailings:
    delivered_to: int                 # targets that received the complete petition
    delivered_on: datetime | None
    reached: list[tuple[Target, int]]  # targets and the letters that reached them

    @property
    def any(self) -> bool:
        return bool(self.delivered_to or self.reached)


def public_mailings(session: DbSession, petition: Petition) -> PublicMailings:
    """What the petition page says about deliveries: three small queries."""
    delivered = session.execute(
        select(func.count(func.distinct(Delivery.target_id)), func.max(OutboundEmail.sent_at))
        .join(OutboundEmail, OutboundEmail.id == Delivery.email_id)
        .where(Delivery.petition_id == petition.id,
               Delivery.kind.in_([DeliveryKind.NOW, DeliveryKind.FINAL]),
               OutboundEmail.status == OutboxStatus.SENT)).one()
    reached = list(session.execute(
        select(Target, TargetMailing.reached)
        .join(TargetMailing, TargetMailing.target_id == Target.id)
        .join(PetitionTarget, and_(PetitionTarget.target_id == Target.id,
                                   PetitionTarget.petition_id == TargetMailing.petition_id))
        .where(TargetMailing.petition_id == petition.id, TargetMailing.reached > 0)
        .order_by(PetitionTarget.position, Target.name)))
    return PublicMailings(int(delivered[0] or 0), delivered[1], [(t, int(n)) for t, n in reached])

