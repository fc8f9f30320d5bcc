"""Petitions, their lifecycle, and the sharded counter of confirmed signatures."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from campaign.models.base import Base, BigID, UTCDateTime, enum_check, utcnow
from campaign.models.campaigns import Campaign


class PetitionStatus(StrEnum):
    DRAFT = "draft"
    IN_REVIEW = "in_review"
    PUBLISHED = "published"
    CLOSED = "closed"


VISIBLE = frozenset({PetitionStatus.PUBLISHED, PetitionStatus.CLOSED})
SIGNABLE = frozenset({PetitionStatus.PUBLISHED})


class MailingPolicy(StrEnum):
    LETTERS = "letters"
    DELIVERIES = "deliveries"
    BOTH = "both"
    NONE = "none"


class PetitionStateError(ValueError):
    """A transition that the petition's current status does not allow."""


class Petition(Base):
    __tablename__ = "petitions"
    __table_args__ = (
        enum_check("status", PetitionStatus, "status"),
        enum_check("mailing_policy", MailingPolicy, "mailing_policy"),
    )

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    slug: Mapped[str] = mapped_column(String(120), unique=True)
    title: Mapped[str] = mapped_column(String(300))
    summary: Mapped[str] = mapped_column(Text, default="")
    body_markdown: Mapped[str] = mapped_column(Text, default="")
    # Sanitized HTML, rendered once when the body is saved, never per page view.
    body_html: Mapped[str] = mapped_column(Text, default="")
    letter: Mapped[str] = mapped_column(Text, default="")
    goal: Mapped[int] = mapped_column(Integer, default=1000)
    language: Mapped[str] = mapped_column(String(16), default="en")
    status: Mapped[str] = mapped_column(String(16), default=PetitionStatus.DRAFT)
    mailing_policy: Mapped[str] = mapped_column(String(16), default=MailingPolicy.NONE)
    # Signers may be endangered if named: opt-ins to show names default to off.
    is_sensitive: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The organizer's closing date: no signatures from this moment on.
    closes_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Admin review (when REVIEW_REQUIRED): when it was sent, and the reviewer's note on a return.
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    review_note: Mapped[str | None] = mapped_column(Text)
    # Issue 5: the organizer's switch for the public list of recent signers (first name +
    # country, only of those who ticked the box for it).
    show_recent_signers: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    campaign: Mapped[Campaign] = relationship(lazy="joined")

    @property
    def is_signable(self) -> bool:
        return self.status in SIGNABLE and not self.past_closing_date

    @property
    def past_closing_date(self) -> bool:
        return self.closes_at is not None and self.closes_at <= utcnow()

    @property
    def is_visible(self) -> bool:
        return self.status in VISIBLE

    def publish(self) -> None:
        if self.status not in {PetitionStatus.DRAFT, PetitionStatus.IN_REVIEW}:
            raise PetitionStateError(f"cannot publish a {self.status} petition")
        self.status = PetitionStatus.PUBLISHED
        self.published_at = utcnow()

    def submit_for_review(self) -> None:
        if self.status != PetitionStatus.DRAFT:
            raise PetitionStateError(f"cannot send a {self.status} petition to review")
        self.status = PetitionStatus.IN_REVIEW
        self.submitted_at = utcnow()

    def return_to_draft(self) -> None:
        if self.status != PetitionStatus.IN_REVIEW:
            raise PetitionStateError(f"cannot return a {self.status} petition to draft")
        self.status = PetitionStatus.DRAFT
        self.submitted_at = None

    def close(self) -> None:
        if self.status != PetitionStatus.PUBLISHED:
            raise PetitionStateError(f"cannot close a {self.status} petition")
        self.status = PetitionStatus.CLOSED
        self.closed_at = utcnow()


class PetitionCounter(Base):
    """Confirmed signatures, spread over a few rows so concurrent confirmations do not queue.

    The count is the sum of a petition's shards: a constant number of rows, exact at every commit.
    """

    __tablename__ = "petition_counters"

    petition_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("petitions.id", ondelete="CASCADE"), primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    confirmed: Mapped[int] = mapped_column(Integer, default=0)
