"""Organizer reach (issue 7): updates emailed to consenting supporters, one row per recipient,
signature exports prepared as files, and the indexes the dashboard's aggregates read."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, enum_check, utcnow
from campaign.models.signatures import Signature

# The dashboard groups a petition's counted signatures by country and by source: with these,
# PostgreSQL answers from the index alone (docs/performance.md, 1,000,000 signatures).
Index("ix_signatures_petition_status_country", Signature.petition_id, Signature.status, Signature.country)
Index("ix_signatures_petition_status_source", Signature.petition_id, Signature.status, Signature.source)


class UpdateStatus(StrEnum):
    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    SENT = "sent"


EDITABLE = frozenset({UpdateStatus.DRAFT})
ACTIVE = frozenset({UpdateStatus.SCHEDULED, UpdateStatus.SENDING, UpdateStatus.PAUSED})


class SupporterUpdate(Base):
    """An email from a campaign's organizers to the signers who consented to hear from them.

    Audience: the signers of one petition (petition_id) or of the whole campaign (None),
    optionally only some countries or one language. It is sent at send_after by the reach job
    (beat), never by a broker countdown.
    """

    __tablename__ = "supporter_updates"
    __table_args__ = (
        Index("ix_supporter_updates_status_send_after", "status", "send_after"),
        enum_check("status", UpdateStatus, "status"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    petition_id: Mapped[int | None] = mapped_column(ForeignKey("petitions.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(200))
    body_markdown: Mapped[str] = mapped_column(Text, default="")
    # Comma-separated ISO country codes; empty: every country.
    countries: Mapped[str] = mapped_column(String(1000), default="")
    # A signer's locale (e.g. "de"); empty: every language.
    language: Mapped[str] = mapped_column(String(16), default="")
    status: Mapped[str] = mapped_column(String(16), default=UpdateStatus.DRAFT)
    send_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The compose form's one-time key: a double-submitted form makes one update, not two.
    form_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The last batch a worker finished: the reach job re-publishes a mailing that stopped moving.
    progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RecipientStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CANCELLED = "cancelled"


class UpdateRecipient(Base):
    """One supporter of one update: the blind index (one email per mailbox, even for someone
    who signed several petitions) and the signature to read the name and address from at send
    time. Claimed in batches with a lease, like the outbox."""

    __tablename__ = "update_recipients"
    __table_args__ = (
        UniqueConstraint("update_id", "email_index"),
        Index("ix_update_recipients_update_status", "update_id", "status"),
        enum_check("status", RecipientStatus, "status"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    update_id: Mapped[int] = mapped_column(ForeignKey("supporter_updates.id", ondelete="CASCADE"))
    signature_id: Mapped[int | None] = mapped_column(ForeignKey("signatures.id", ondelete="SET NULL"))
    # An unsubscribe cancels the queued rows of its address at once.
    email_index: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default=RecipientStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An SMTP reply or reason; never the address.
    error: Mapped[str] = mapped_column(String(300), default="")


class ExportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class SignatureExport(Base):
    """An export prepared as a file by a worker, downloadable through a signed link until
    expires_at (EXPORT_LINK_MAX_AGE); the file is deleted after that. Running under a lease
    (EXPORT_LEASE_SECONDS), so a worker that dies does not leave it running for ever."""

    __tablename__ = "signature_exports"
    __table_args__ = (enum_check("status", ExportStatus, "status"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # The columns, filters and format, as JSON (services/exports.py ExportRequest).
    request: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=ExportStatus.QUEUED)
    rows: Mapped[int] = mapped_column(Integer, default=0)
    filename: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A running export's claim: the reach job takes back one whose worker died (lease run out),
    # up to EXPORT_MAX_ATTEMPTS; attempts is also the fence for the outcome a worker writes.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SoftBounce(Base):
    """Soft bounces (a full mailbox, a server refusing for now) reported for one mailbox, kept as
    its blind index: SOFT_BOUNCE_LIMIT of them within SOFT_BOUNCE_WINDOW_DAYS suppress it like a
    hard bounce."""

    __tablename__ = "soft_bounces"

    email_index: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


__all__ = [
    "ACTIVE",
    "EDITABLE",
    "ExportStatus",
    "RecipientStatus",
    "SignatureExport",
    "SoftBounce",
    "SupporterUpdate",
    "UpdateRecipient",
    "UpdateStatus",
]
