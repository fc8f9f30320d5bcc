"""Signatures: one per petition and email, encrypted at rest, counted only once confirmed."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, enum_check, utcnow


class SignatureStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    HELD = "held"
    INVALIDATED = "invalidated"


COUNTED = frozenset({SignatureStatus.CONFIRMED})


class Signature(Base):
    __tablename__ = "signatures"
    __table_args__ = (
        UniqueConstraint("petition_id", "email_index"),
        Index("ix_signatures_petition_status_created", "petition_id", "status", "created_at"),
        enum_check("status", SignatureStatus, "status"),
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
    comment: Mapped[str] = mapped_column(Text, default="")
    consent_updates: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(64), default="")
    locale: Mapped[str] = mapped_column(String(16), default="en")
    status: Mapped[str] = mapped_column(String(16), default=SignatureStatus.PENDING)
    # Keyed hashes of the client address and its network; the raw address is never stored.
    ip_hash: Mapped[str | None] = mapped_column(String(64))
    network_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
