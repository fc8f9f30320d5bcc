"""Organizer accounts, their place in campaigns (owner or organizer), invitations, and the
counters that throttle sign-in attempts."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from campaign.models.base import Base, BigID, UTCDateTime, enum_check, utcnow


class UserStatus(StrEnum):
    UNVERIFIED = "unverified"  # signed up, has not opened the link in the verification email
    PENDING = "pending"        # verified, waits for an admin's approval
    ACTIVE = "active"
    DISABLED = "disabled"


class User(Base):
    """An organizer or a platform admin. Flask-Login's user object (see get_id)."""

    __tablename__ = "users"
    __table_args__ = (enum_check("status", UserStatus, "status"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    # Lower-cased as typed (email-validator's normalized form); one account per address.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=UserStatus.UNVERIFIED)
    # Rotated when the password changes: every session cookie naming the old one stops working.
    session_token: Mapped[str] = mapped_column(String(64))
    # The TOTP secret, Fernet-encrypted like signer data; None until set up.
    totp_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The last accepted TOTP time step: a code is accepted once, never replayed.
    totp_last_step: Mapped[int | None] = mapped_column(Integer)
    # An admin requires a second factor for this account.
    totp_required: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # --- Flask-Login -----------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self.status == UserStatus.ACTIVE

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return f"{self.id}:{self.session_token}"

    @property
    def has_totp(self) -> bool:
        return self.totp_secret_encrypted is not None


class MemberRole(StrEnum):
    OWNER = "owner"          # everything in the campaign, plus inviting and removing organizers
    ORGANIZER = "organizer"  # edits the campaign's petitions, targets and signatures


class Membership(Base):
    __tablename__ = "campaign_members"
    __table_args__ = (enum_check("role", MemberRole, "role"),)

    campaign_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    role: Mapped[str] = mapped_column(String(16), default=MemberRole.ORGANIZER)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InvitationStatus(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REVOKED = "revoked"


class Invitation(Base):
    """An owner's invitation to a co-organizer, mailed as a signed link naming this row."""

    __tablename__ = "invitations"
    __table_args__ = (enum_check("status", InvitationStatus, "status"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16), default=MemberRole.ORGANIZER)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Random, in the signed link: a link stops working once its row is revoked or used.
    nonce: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=InvitationStatus.PENDING)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AttemptCounter(Base):
    """Failed attempts per key in a fixed window: sign-in per account and per client address,
    reset requests, sign-ups. Keys hold keyed hashes, never a raw address or IP."""

    __tablename__ = "attempt_counters"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[int] = mapped_column(BigID, primary_key=True)
    key: Mapped[str] = mapped_column(String(100))
    count: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
