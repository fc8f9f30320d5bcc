"""Emails to organizers: verify an address, "you already have an account", reset a password,
and an invitation to co-organize. Built at send time; the outbox row names the account (or the
invitation) in its idempotency key, and the link's token is made here, never stored."""

from __future__ import annotations

from email.utils import parseaddr

from flask import current_app

from campaign.mail.messages import Draft
from campaign.models import Campaign, Invitation, InvitationStatus, OutboundEmail, User, UserStatus
from campaign.services.accounts import (
    ACCOUNT_EXISTS,
    ACCOUNT_VERIFICATION,
    PASSWORD_RESET,
    reset_token,
    user_id_of,
    verification_token,
)
from campaign.services.organizing import ORGANIZER_INVITATION, invitation_token
from campaign.services.outbox import message_kind
from campaign.services.petitions import absolute_url
from campaign.services.types import DbSession


def _platform() -> str:
    name, _address = parseaddr(current_app.config["MAIL_DEFAULT_SENDER"])
    return name or "Campaign"


def _user(session: DbSession, row: OutboundEmail) -> User | None:
    user_id = user_id_of(row.idempotency_key)
    return session.get(User, user_id) if user_id is not None else None


def _draft(kind: str, user_email: str, subject: str, **context: object) -> Draft:
    platform = _platform()
    return Draft(kind=kind, to_name="", to_address=user_email, subject=subject, sender_name=platform,
                 context={"platform": platform, "subject": subject, **context})


@message_kind(ACCOUNT_VERIFICATION)
def account_verification(session: DbSession, row: OutboundEmail) -> Draft | None:
    user = _user(session, row)
    if user is None or user.status != UserStatus.UNVERIFIED:
        return None
    return _draft(ACCOUNT_VERIFICATION, user.email, "Confirm your email address",
                  url=absolute_url(f"/account/confirm/{verification_token(user)}"),
                  hours=int(current_app.config["SIGNUP_TOKEN_MAX_AGE"]) // 3600)


@message_kind(ACCOUNT_EXISTS)
def account_exists(session: DbSession, row: OutboundEmail) -> Draft | None:
    user = _user(session, row)
    if user is None or user.status == UserStatus.DISABLED:
        return None
    return _draft(ACCOUNT_EXISTS, user.email, "About your organizer account",
                  login_url=absolute_url("/account/login"),
                  reset_url=absolute_url("/account/forgot"))


@message_kind(PASSWORD_RESET)
def password_reset(session: DbSession, row: OutboundEmail) -> Draft | None:
    user = _user(session, row)
    if user is None or user.status == UserStatus.DISABLED:
        return None
    minutes = int(current_app.config["RESET_TOKEN_MAX_AGE"]) // 60
    return _draft(PASSWORD_RESET, user.email, "Reset your password",
                  url=absolute_url(f"/account/reset/{reset_token(user)}"), minutes=minutes)


@message_kind(ORGANIZER_INVITATION)
def organizer_invitation(session: DbSession, row: OutboundEmail) -> Draft | None:
    invitation_id = user_id_of(row.idempotency_key)
    invitation = session.get(Invitation, invitation_id) if invitation_id is not None else None
    if invitation is None or invitation.status != InvitationStatus.PENDING:
        return None
    campaign = session.get(Campaign, invitation.campaign_id)
    inviter = session.get(User, invitation.invited_by_id) if invitation.invited_by_id else None
    if campaign is None:
        return None
    return _draft(ORGANIZER_INVITATION, invitation.email, "You are invited to organize a campaign",
                  campaign=campaign, inviter=inviter.email if inviter else "",
                  url=absolute_url(f"/invitations/confirm/{invitation_token(invitation)}"),
                  days=int(current_app.config["INVITATION_MAX_AGE"]) // 86400)
