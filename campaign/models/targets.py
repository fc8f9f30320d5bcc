"""Targets: the decision makers a petition is addressed to, and which petitions address whom."""

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, utcnow


class Target(Base):
    __tablename__ = "targets"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(300))
    # ISO 3166-1 alpha-2, or a body's code such as EU or AU.
    country: Mapped[str] = mapped_column(String(8), index=True)
    email: Mapped[str] = mapped_column(String(320))
    group_name: Mapped[str] = mapped_column(String(80), default="", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PetitionTarget(Base):
    __tablename__ = "petition_targets"

    petition_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("petitions.id", ondelete="CASCADE"), primary_key=True)
    target_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("targets.id", ondelete="CASCADE"), primary_key=True, index=True)
    # Receives the letters of signers whose country no target covers.
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    position: Mapped[int] = mapped_column(Integer, default=0)
