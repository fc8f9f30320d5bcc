"""Signatures: one per petition and email, encrypted at rest, counted only once confirmed."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, EncryptedText, UTCDateTime, enum_check, utcnow


class SignatureStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    HELD = "held"
    INVALIDATED = "invalidated"


COUNTED = frozenset({SignatureStatus.CONFIRMED})


class HoldReason(StrEnum):
    """Why the signing path held a signature for review (the signer is not told)."""
    HONEYPOT = "honeypot"          # the hidden field was filled in
    TOO_FAST = "too_fast"          # sent sooner after the form was issued than a person types
    IP_BURST = "ip_burst"          # the same address signed this petition too often, too fast
    DOMAIN_BURST = "domain_burst"  # the same email domain did
    DISPOSABLE = "disposable"      # a throwaway-address domain (campaign/data/disposable_domains.txt)
    RATE_LIMIT = "rate_limit"      # over Flask-Limiter's sign limits per address (SIGNING_RATELIMIT_*)


class Signature(Base):
    __tablename__ = "signatures"
    __table_args__ = (
        UniqueConstraint("petition_id", "email_index"),
        Index("ix_signatures_petition_status_created", "petition_id", "status", "created_at"),
        enum_check("status", SignatureStatus, "status"),
        # Burst checks on the signing path and bulk review by IP, network or email domain.
        Index("ix_signatures_petition_ip_created", "petition_id", "ip_hash", "created_at"),
        Index("ix_signatures_petition_network", "petition_id", "network_hash"),
        Index("ix_signatures_petition_domain_created", "petition_id", "email_domain_hash", "created_at"),
        # Issue 5: the recent signers a petition page lists; partial, so it holds only the few
        # signatures whose owners agreed to be listed, and costs other inserts nothing to speak of.
        Index("ix_signatures_recent_public", "petition_id", "confirmed_at",
              postgresql_where=text("consent_public_name AND status = 'confirmed'"),
              sqlite_where=text("consent_public_name AND status = 'confirmed'")),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petitions.id", ondelete="CASCADE"))
    # Fernet ciphertexts (SIGNER_DATA_KEYS): a dump without the key names nobody.
    name_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    email_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    postcode_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Keyed hash of the normalized email: uniqueness and look-ups without decrypting.
    email_index: Mapped[str] = mapped_column(String(64), index=True)
    country: Mapped[str] = mapped_column(String(8))
    # Encrypted like the name (EncryptedText): what someone writes can name them.
    comment: Mapped[str] = mapped_column(EncryptedText, default="")
    consent_updates: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(64), default="")
    locale: Mapped[str] = mapped_column(String(16), default="en")
    status: Mapped[str] = mapped_column(String(16), default=SignatureStatus.PENDING)
    # Keyed hashes of the client address and its network; the raw address is never stored.
    ip_hash: Mapped[str | None] = mapped_column(String(64))
    network_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by an organizer or admin who invalidated it (the audit log says who); it stops
    # counting and is never mailed.
    invalidated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    invalidation_reason: Mapped[str | None] = mapped_column(Text)
    # Abuse resistance (issue 6). Keyed hash of the email's domain (bursts, bulk review by
    # domain): a small personal domain would name its owner, so never the domain itself.
    email_domain_hash: Mapped[str | None] = mapped_column(String(64))
    # Why it was held, comma-separated HoldReason values; None if it never was.
    hold_reasons: Mapped[str | None] = mapped_column(String(200))
    held_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when an organizer released it from hold (it then counts once confirmed).
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by the retention job: name, email, postcode, comment and hashes are gone.
    anonymized_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Mailings to officials (issue 4): the signer's own ticks. Without the first, letters and
    # CSVs say "A supporter from <country>" and carry no comment; without the second, no
    # official sees the address. The third is for the public list of recent signers.
    consent_name_to_targets: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_reply_to: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_public_name: Mapped[bool] = mapped_column(Boolean, default=False)
    # When its letters were planned (routed to its targets, or to nobody): confirmed signatures
    # without it are picked up by the deliveries job (e.g. after a release from hold).
    routed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The supporter's experience (issue 5): this signer's own code for the share links of the
    # thank-you page, the code of the signer whose share brought this one, and when the one
    # reminder to confirm was queued (or skipped by the cap): never a second one.
    referral_code: Mapped[str | None] = mapped_column(String(16), index=True)
    referred_by: Mapped[str | None] = mapped_column(String(16))
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
