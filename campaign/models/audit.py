"""The audit log: who published, edited, invalidated, exported or deleted what, and when."""

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, utcnow


class AuditEvent(Base):
    """One thing an organizer or admin did. Never holds a signer's name or address.

    Objects are named by type and id without a foreign key, and the actor's and campaign's
    names are copied, so the record outlives what it describes.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_campaign_created", "campaign_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_email: Mapped[str] = mapped_column(String(320), default="")
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32), default="")
    object_id: Mapped[int | None] = mapped_column(BigInteger)
    summary: Mapped[str] = mapped_column(Text, default="")
