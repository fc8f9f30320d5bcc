"""Retention: what the platform forgets, and when. IP hashes after IP_HASH_RETENTION_DAYS,
unconfirmed signatures after UNCONFIRMED_RETENTION_DAYS, and every signer's name, email,
postcode, comment and hashes once their petition has been closed for ANONYMIZE_AFTER_DAYS
(the counts stay: the rows stay, emptied).

Each step works in batches of RETENTION_BATCH rows and commits per batch, so a long run holds
no lock for long and a run that stops half-way is finished by the next one (idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import String, cast, delete, literal, select, update

from campaign.models import OutboundEmail, OutboxStatus, Petition, PetitionStatus, Signature, SignatureStatus
from campaign.models.base import utcnow
from campaign.services.privacy import cipher
from campaign.services.types import DbSession


@dataclass(frozen=True)
class RetentionReport:
    ip_hashes_dropped: int
    unconfirmed_deleted: int
    anonymized: int

    def __str__(self) -> str:
        return (f"{self.ip_hashes_dropped} IP hashes dropped, {self.unconfirmed_deleted} unconfirmed "
                f"signatures deleted, {self.anonymized} signatures anonymized")


def _batch() -> int:
    return max(1, int(current_app.config["RETENTION_BATCH"]))


def _ids(session: DbSession, *conditions: Any) -> list[int]:
    query = select(Signature.id).where(*conditions).order_by(Signature.id).limit(_batch())
    return list(session.scalars(query))


def drop_ip_hashes(session: DbSession, now: datetime | None = None) -> int:
    """Forget the IP and network hashes of signatures older than IP_HASH_RETENTION_DAYS."""
    cutoff = (now or utcnow()) - timedelta(days=int(current_app.config["IP_HASH_RETENTION_DAYS"]))
    total = 0
    while ids := _ids(session, Signature.created_at < cutoff,
                      (Signature.ip_hash.is_not(None)) | (Signature.network_hash.is_not(None))):
        session.execute(update(Signature).where(Signature.id.in_(ids))
                        .values(ip_hash=None, network_hash=None).execution_options(synchronize_session=False))
        session.commit()
        total += len(ids)
    return total


def purge_unconfirmed(session: DbSession, now: datetime | None = None) -> int:
    """Delete signatures never confirmed by their owner (pending, or held without a
    confirmation) created more than UNCONFIRMED_RETENTION_DAYS ago. Their outbox rows keep
    no reference (the foreign key sets it to NULL) and held no signer data in the first place."""
    cutoff = (now or utcnow()) - timedelta(days=int(current_app.config["UNCONFIRMED_RETENTION_DAYS"]))
    unconfirmed = (Signature.status == SignatureStatus.PENDING) | (
        (Signature.status == SignatureStatus.HELD) & Signature.confirmed_at.is_(None))
    total = 0
    while ids := _ids(session, Signature.created_at < cutoff, unconfirmed):
        _scrub_outbox(session, ids)
        session.execute(delete(Signature).where(Signature.id.in_(ids)).execution_options(
            synchronize_session=False))
        session.commit()
        total += len(ids)
    return total


def _scrub_outbox(session: DbSession, signature_ids: list[int]) -> None:
    # SMTP errors can quote the recipient's address; the blind index is theirs too.
    session.execute(update(OutboundEmail).where(OutboundEmail.signature_id.in_(signature_ids))
                    .values(last_error="", recipient_index=None).execution_options(synchronize_session=False))
    session.execute(update(OutboundEmail).where(OutboundEmail.signature_id.in_(signature_ids),
                                                OutboundEmail.status == OutboxStatus.QUEUED)
                    .values(status=OutboxStatus.CANCELLED, last_error="signer data removed")
                    .execution_options(synchronize_session=False))


def anonymize_closed_petitions(session: DbSession, now: datetime | None = None) -> int:
    """Empty the personal fields of every signature of petitions closed more than
    ANONYMIZE_AFTER_DAYS ago. Statuses stay, so the counts (and the counter) do not change."""
    cutoff = (now or utcnow()) - timedelta(days=int(current_app.config["ANONYMIZE_AFTER_DAYS"]))
    petition_ids = list(session.scalars(select(Petition.id).where(
        Petition.status == PetitionStatus.CLOSED, Petition.closed_at.is_not(None),
        Petition.closed_at < cutoff)))
    total = 0
    for petition_id in petition_ids:
        total += anonymize_petition(session, petition_id, now=now)
    return total


def anonymize_petition(session: DbSession, petition_id: int, now: datetime | None = None) -> int:
    """Anonymize one petition's signatures, batch by batch, committing each. Returns how many."""
    crypt = cipher()
    empty = crypt.encrypt("")  # a valid ciphertext of nothing: readers keep working
    stamp = now or utcnow()
    total = 0
    while ids := _ids(session, Signature.petition_id == petition_id, Signature.anonymized_at.is_(None)):
        _scrub_outbox(session, ids)
        # The blind index must stay unique per petition and must no longer name a mailbox.
        session.execute(update(Signature).where(Signature.id.in_(ids)).values(
            name_encrypted=empty, email_encrypted=empty, postcode_encrypted=None, comment="",
            email_index=literal("anonymized:") + cast(Signature.id, String), ip_hash=None,
            network_hash=None, email_domain_hash=None, anonymized_at=stamp)
            .execution_options(synchronize_session=False))
        session.commit()
        total += len(ids)
    return total


def run_retention(session: DbSession, now: datetime | None = None) -> RetentionReport:
    """Every retention step, in order. Idempotent; commits as it goes."""
    return RetentionReport(
        ip_hashes_dropped=drop_ip_hashes(session, now),
        unconfirmed_deleted=purge_unconfirmed(session, now),
        anonymized=anonymize_closed_petitions(session, now),
    )
