"""Integrations: per-campaign API tokens, webhooks, and each webhook call (the queue and the log)."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, enum_check, utcnow


class ApiToken(Base):
    """A bearer token for one campaign. Only a SHA-256 of the secret is kept: it is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # Space-separated subset of "read write".
    scopes: Mapped[str] = mapped_column(String(32))
    # The secret's first characters, shown in lists so a leaked token can be recognised.
    prefix: Mapped[str] = mapped_column(String(16))
    # A 256-bit random secret needs no slow hash: SHA-256 cannot be brute-forced back.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookEvent(StrEnum):
    SIGNATURE_CONFIRMED = "signature.confirmed"
    PETITION_MILESTONE = "petition.milestone"
    DELIVERY_SENT = "delivery.sent"


class WebhookCallStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Webhook(Base):
    """A URL of an organizer's that is told about a campaign's events."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    # Space-separated WebhookEvent values.
    events: Mapped[str] = mapped_column(String(200))
    # The HMAC key, encrypted like signer data (it must be readable to sign with it).
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    # Signer fields the organizer opted in to for signature.confirmed ("name", "email"), audited.
    signer_fields: Mapped[str] = mapped_column(String(64), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookCall(Base):
    """One event for one webhook: queued with a next-attempt time, claimed with a lease, and
    kept as the delivery log. It holds references and counts, never a signer's name or email:
    the body is built at send time."""

    __tablename__ = "webhook_calls"
    __table_args__ = (
        UniqueConstraint("webhook_id", "event_key"),
        Index("ix_webhook_calls_due", "status", "next_attempt_at"),
        Index("ix_webhook_calls_webhook_created", "webhook_id", "created_at"),
        enum_check("status", WebhookCallStatus, "status"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    # e.g. "signature.confirmed:<signature id>": one call per event and webhook, however often
    # the hook runs.
    event_key: Mapped[str] = mapped_column(String(120))
    # The event's data as JSON: ids and counts only.
    data: Mapped[str] = mapped_column(Text, default="{}")
    status: Mapped[str] = mapped_column(String(16), default=WebhookCallStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
