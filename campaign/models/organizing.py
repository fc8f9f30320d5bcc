"""What organizers add around their petitions: paper signatures, and the targets a campaign
added by hand or by CSV (targets without such a row are the shared lists, e.g. the G20)."""

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, utcnow


class OfflineSignatures(Base):
    """A number of paper signatures with a note. Each entry is added to the petition's counter
    when recorded (and subtracted when removed), so the one count includes them."""

    __tablename__ = "offline_signatures"

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    petition_id: Mapped[int] = mapped_column(ForeignKey("petitions.id", ondelete="CASCADE"), index=True)
    count: Mapped[int] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CampaignTarget(Base):
    """The campaign that owns a target. Only its organizers may see, edit or use it."""

    __tablename__ = "campaign_targets"

    target_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("targets.id", ondelete="CASCADE"), primary_key=True)
    campaign_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
