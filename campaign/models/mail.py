"""The outbox: one row per email to send, written in the transaction that caused it.

Rows hold references, not message text: the worker builds the message at send time, so the
outbox never stores a signer's name or address.
"""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, enum_check, utcnow


class OutboxStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OutboundEmail(Base):
    __tablename__ = "outbound_emails"
    __table_args__ = (
        Index("ix_outbound_emails_due", "status", "next_attempt_at"),
        Index("ix_outbound_emails_recipient_created", "recipient_index", "created_at"),
        enum_check("status", OutboxStatus, "status"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    # e.g. "form:<signature id>:<n>" (the nth email the form caused): a second row for the same
    # email is refused by the unique index.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    petition_id: Mapped[int | None] = mapped_column(
        ForeignKey("petitions.id", ondelete="CASCADE"), index=True)
    signature_id: Mapped[int | None] = mapped_column(
        ForeignKey("signatures.id", ondelete="SET NULL"), index=True)
    target_id: Mapped[int | None] = mapped_column(ForeignKey("targets.id", ondelete="SET NULL"))
    # Blind index of the recipient, for the per-address cap; None for mail to officials.
    recipient_index: Mapped[str | None] = mapped_column(String(64))
    # Caused by the public form: counts toward the per-address cap.
    from_public_form: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the outbox sweep last published the row: a task it published may still wait in the
    # broker's queue, and publishing the row again on every sweep only multiplied the tasks.
    swept_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Scrubbed of addresses and tokens (campaign.mail.reasons.scrub_error).
    last_error: Mapped[str] = mapped_column(Text, default="")
    # Why it waits or did not go, a key of campaign.mail.reasons.REASONS ("" when nothing to say).
    reason: Mapped[str] = mapped_column(String(32), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
