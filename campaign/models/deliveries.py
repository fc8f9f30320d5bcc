"""Mail to officials: the countries a target covers, each petition's routing and per-target
delivery settings, every signature routed to a target with the batch it went in, the deliveries
(batches) themselves, the hourly letter quota per target, and the targets' responses."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, enum_check, utcnow
from campaign.models.signatures import Signature


class RoutingFallback(StrEnum):
    """Where the letter of a signer goes when no target of the petition covers their country."""
    ALL = "all"            # every target of the petition
    DEFAULTS = "defaults"  # the targets marked default (PetitionTarget.is_default)
    NOBODY = "nobody"


class Cadence(StrEnum):
    """When a target gets a batched delivery of its new signers."""
    EVERY_N = "every_n"  # once N new signatures are waiting for it
    DAILY = "daily"
    WEEKLY = "weekly"
    FINAL = "final"      # only once, when the petition closes


class RouteVia(StrEnum):
    """How a routed signature reaches its target."""
    LETTER = "letter"          # a letter of its own (letter_to_target)
    OVERFLOW = "overflow"      # over the hourly cap: folded into the next delivery
    NO_ADDRESS = "no_address"  # the target had no valid address: waits for the next delivery
    BATCH = "batch"            # deliveries only: the next batched delivery


# Routed rows that wait for a batched delivery when the petition sends letters only.
LETTERS_POLICY_BATCHED = frozenset({RouteVia.OVERFLOW, RouteVia.NO_ADDRESS})


class DeliveryKind(StrEnum):
    BATCH = "batch"  # new signers on the target's cadence
    FINAL = "final"  # what was left when the petition closed
    NOW = "now"      # the organizer's "deliver now": the complete petition


class Stance(StrEnum):
    SUPPORTS = "supports"
    PARTLY = "partly"
    NONCOMMITTAL = "noncommittal"
    OPPOSES = "opposes"
    DECLINED = "declined"


class TargetCountry(Base):
    """A further country a target covers, besides Target.country (e.g. the EU's members)."""

    __tablename__ = "target_countries"

    target_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("targets.id", ondelete="CASCADE"), primary_key=True)
    # ISO 3166-1 alpha-2, as on signatures.
    country: Mapped[str] = mapped_column(String(8), primary_key=True, index=True)


class PetitionMailing(Base):
    """A petition's mailing settings beside Petition.mailing_policy. A petition without a row
    has the defaults."""

    __tablename__ = "petition_mailings"
    __table_args__ = (enum_check("routing_fallback", RoutingFallback, "routing_fallback"),)

    petition_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("petitions.id", ondelete="CASCADE"), primary_key=True)
    routing_fallback: Mapped[str] = mapped_column(String(16), default=RoutingFallback.DEFAULTS)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TargetMailing(Base):
    """One target of one petition, as the mailings see it: its cadence and next send-after
    time, a claim counter for the planners, the failure watch, and the public figure of how
    many signatures reached it (a periodic aggregate, so the petition page reads it in O(1))."""

    __tablename__ = "target_mailings"
    __table_args__ = (enum_check("cadence", Cadence, "cadence"),)

    petition_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("petitions.id", ondelete="CASCADE"), primary_key=True)
    target_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("targets.id", ondelete="CASCADE"), primary_key=True, index=True)
    cadence: Mapped[str] = mapped_column(String(16), default=Cadence.DAILY)
    every_n: Mapped[int] = mapped_column(Integer, default=100)
    # Send-after time of the next daily or weekly delivery; beat looks for rows that are due.
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Bumped by the planner that takes this target's next batch: of two planners, one wins.
    version: Mapped[int] = mapped_column(Integer, default=0)
    # Set when mail to the target starts failing (the organizers are warned once per episode).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The highest outbox id whose failure has been looked at.
    failure_cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    # Signatures whose letter or batch reached the target (sent), refreshed periodically.
    reached: Mapped[int] = mapped_column(Integer, default=0)
    reached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RoutedSignature(Base):
    """A confirmed signature addressed to one target, and the batch it went in (batch_id, the
    delivery's id): never an id range, since ids commit out of order."""

    __tablename__ = "routed_signatures"
    __table_args__ = (
        UniqueConstraint("signature_id", "target_id"),
        Index("ix_routed_signatures_pending", "petition_id", "target_id", "batch_id"),
        enum_check("via", RouteVia, "via"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petitions.id", ondelete="CASCADE"))
    signature_id: Mapped[int] = mapped_column(ForeignKey("signatures.id", ondelete="CASCADE"))
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"))
    via: Mapped[str] = mapped_column(String(16))
    routed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    letter_email_id: Mapped[int | None] = mapped_column(
        ForeignKey("outbound_emails.id", ondelete="SET NULL"))
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"),
                                                 index=True)


class Delivery(Base):
    """A batch delivered to a target: one email with the letter, the counts and a CSV.
    Its status is its outbox row's (queued -> sent, or failed with the error)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        Index("ix_deliveries_petition_target_created", "petition_id", "target_id", "created_at"),
        enum_check("kind", DeliveryKind, "kind"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petitions.id", ondelete="CASCADE"))
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16), default=DeliveryKind.BATCH)
    # Figures when planned; the email recounts at send time (a signature invalidated in
    # between is left out).
    new_count: Mapped[int] = mapped_column(Integer, default=0)
    total_count: Mapped[int] = mapped_column(Integer, default=0)
    # "Deliver now" sends the signatures confirmed up to this moment.
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    email_id: Mapped[int | None] = mapped_column(
        ForeignKey("outbound_emails.id", ondelete="SET NULL"), unique=True)
    # "now:<form nonce>:<target id>": a second submit of one confirmation screen adds nothing.
    request_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    requested_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LetterQuota(Base):
    """Letters queued to a target in one clock hour (UTC), across petitions: the throttle."""

    __tablename__ = "letter_quotas"

    target_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("targets.id", ondelete="CASCADE"), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class TargetResponse(Base):
    """What a target answered, as the organizer recorded it. Signers routed to the target who
    consented to updates are told, in chunks behind notify_cursor (a signature id)."""

    __tablename__ = "target_responses"
    __table_args__ = (
        Index("ix_target_responses_petition_target", "petition_id", "target_id"),
        enum_check("stance", Stance, "stance"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petitions.id", ondelete="CASCADE"))
    target_id: Mapped[int] = mapped_column(ForeignKey("targets.id", ondelete="CASCADE"))
    responded_on: Mapped[date] = mapped_column(Date)
    stance: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, default="")
    link: Mapped[str] = mapped_column(String(500), default="")
    recorded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Signers are told when this is set; cleared once every one of them has an outbox row.
    notify_pending: Mapped[bool] = mapped_column(Boolean, default=True)
    notify_cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    notified: Mapped[int] = mapped_column(Integer, default=0)


# On signatures, declared here beside the job that uses it: the deliveries job looks for confirmed
# signatures that were never routed (released from hold, or routed by nothing yet).
Index("ix_signatures_status_routed", Signature.status, Signature.routed_at)
