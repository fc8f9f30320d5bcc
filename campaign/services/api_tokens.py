"""Per-campaign API tokens: create (the secret is shown once), revoke, list, and authenticate a
bearer token. Only a SHA-256 of each secret is stored; every change is in the audit log."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from campaign.models import ApiToken, Campaign, MemberRole, User, UserStatus
from campaign.models.base import utcnow
from campaign.services.audit import record
from campaign.services.organizing import NotFound, OrganizingError, campaign_for, role_in
from campaign.services.types import DbSession

SCOPES = ("read", "write")
TOKEN_PREFIX = "cmp_"  # noqa: S105 - a marker that makes leaked tokens greppable, not a secret
# "cmp_" + 43 URL-safe characters (256 bits); anything else is rejected before a look-up.
_TOKEN_SHAPE = re.compile(r"cmp_[A-Za-z0-9_-]{43}")
# last_used_at is written at most this often per token: a busy CRM must not turn reads into writes.
LAST_USED_GRANULARITY = timedelta(seconds=60)


class TokenRejected(LookupError):
    """Missing, malformed, unknown, revoked or expired: the API answers 401 for each alike."""


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def scopes_of(token: ApiToken) -> frozenset[str]:
    return frozenset(token.scopes.split())


def create_api_token(session: DbSession, actor: User, campaign: Campaign, name: str,
                     scopes: list[str], expires_in_days: int | None) -> tuple[ApiToken, str]:
    """A new token for the campaign; returns it with its secret, which is never stored or shown
    again. Raises OrganizingError for a missing name or scope."""
    name = name.strip()
    if not name or len(name) > 100:
        raise OrganizingError("Name the token (at most 100 characters), e.g. after the tool using it.",
                              "name")
    chosen = [s for s in SCOPES if s in scopes]
    if not chosen:
        raise OrganizingError("Choose read, write or both.", "scopes")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(campaign_id=campaign.id, name=name, scopes=" ".join(chosen), prefix=secret[:12],
                     token_hash=hash_token(secret), created_by_id=actor.id, created_at=utcnow(),
                     expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None)
    session.add(token)
    session.flush()
    record(session, actor, "api_token.created", campaign_id=campaign.id, object_type="api_token",
           object_id=token.id, summary=f"{name} ({token.prefix}…), scopes: {token.scopes}"
           + (f", expires {token.expires_at:%Y-%m-%d}" if token.expires_at else ", no expiry"))
    return token, secret


def revoke_api_token(session: DbSession, actor: User, token: ApiToken) -> bool:
    """Revoke at once (the next request with it is a 401). False if it was revoked already."""
    changed = session.execute(
        update(ApiToken).where(ApiToken.id == token.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow()).execution_options(synchronize_session=False)).rowcount  # type: ignore[attr-defined]
    if changed != 1:
        return False
    record(session, actor, "api_token.revoked", campaign_id=token.campaign_id, object_type="api_token",
           object_id=token.id, summary=f"{token.name} ({token.prefix}…)")
    session.refresh(token)
    return True


def token_for(session: DbSession, actor: User, token_id: int) -> ApiToken:
    """The token if the actor may manage its campaign (owners and admins); else NotFound/Forbidden."""
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound
    campaign_for(session, actor, token.campaign_id, owner=True)
    return token


def tokens_of(session: DbSession, campaign_id: int) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).where(ApiToken.campaign_id == campaign_id)
                                .order_by(ApiToken.revoked_at.is_not(None), ApiToken.created_at.desc())))


def _creator_may_still(session: DbSession, token: ApiToken) -> bool:
    """A token never grants more than the person who made it still has: it stops working once
    they are disabled or no longer an owner of the campaign (or an admin)."""
    creator = session.get(User, token.created_by_id) if token.created_by_id is not None else None
    if creator is None or creator.status != UserStatus.ACTIVE:
        return False
    return creator.is_admin or role_in(session, creator, token.campaign_id) == MemberRole.OWNER


def token_actor(session: DbSession, token: ApiToken) -> User:
    """Who the audit log names for what a token does: its creator (authenticate checked them)."""
    creator = session.get(User, token.created_by_id) if token.created_by_id is not None else None
    if creator is None:
        raise TokenRejected
    return creator


def authenticate(session: DbSession, secret: str, now: datetime | None = None) -> ApiToken:
    """The live token with this secret, its last-used time brought up to date. Raises
    TokenRejected. Commits only the last-used time (its own small UPDATE)."""
    if not _TOKEN_SHAPE.fullmatch(secret):
        raise TokenRejected
    now = now or utcnow()
    digest = hash_token(secret)
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    # The look-up is by an exact hash; compare again in constant time all the same.
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        raise TokenRejected
    if token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now):
        raise TokenRejected
    if not _creator_may_still(session, token):
        raise TokenRejected
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_GRANULARITY:
        session.execute(update(ApiToken).where(
            ApiToken.id == token.id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - LAST_USED_GRANULARITY))
            .values(last_used_at=now).execution_options(synchronize_session=False))
        session.commit()
        token = session.get(ApiToken, token.id, populate_existing=True) or token
    return token
