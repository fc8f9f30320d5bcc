"""Abuse resistance and privacy: the admins' kill switches, the suppression list (blind index
only) and the trending alerts raised to a petition's organizers."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, enum_check, utcnow


class SiteSetting(Base):
    """One switch an admin flips at run time (no deploy): a key and a small JSON value.

    Keys: signing_paused, new_petitions_paused, bulk_mail_paused, confirmations_paused,
    site_banner, and petition_signing_paused:<petition id>. Read through a short per-process
    cache (services/killswitch.py).
    """

    __tablename__ = "site_settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="{}")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class SuppressionReason(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"


class Suppression(Base):
    """An address that is not mailed again: kept as its blind index only, never the address.

    campaign_id None: every campaign (bounces, complaints, "unsubscribe from everything");
    otherwise one campaign's mailings. Erasure may keep these rows: without them an erased
    person could be mailed again (docs/security.md, the one documented exception).
    """

    __tablename__ = "suppressions"
    __table_args__ = (
        Index("ix_suppressions_email_index_campaign", "email_index", "campaign_id"),
        enum_check("reason", SuppressionReason, "reason"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    email_index: Mapped[str] = mapped_column(String(64))
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrendingKind(StrEnum):
    IP = "ip"
    DOMAIN = "domain"


class TrendingAlert(Base):
    """An address (keyed hash) or email domain signing one petition faster than the set rate.

    One row per petition, kind, subject and hour: the beat job may run often, organizers are
    told once. Holds counts and hashes or domains, never a signer's address.
    """

    __tablename__ = "trending_alerts"
    __table_args__ = (
        UniqueConstraint("petition_id", "kind", "subject", "window_start"),
        enum_check("kind", TrendingKind, "kind"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petitions.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # The IP's keyed hash, or the email domain's keyed hash.
    subject: Mapped[str] = mapped_column(String(64))
    # The domain's name, read back from one signature of that domain; empty for IPs.
    label: Mapped[str] = mapped_column(String(255), default="")
    count: Mapped[int] = mapped_column(Integer)
    threshold: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
