"""The audit log: record what organizers and admins did, and read it back by campaign."""

from __future__ import annotations

from sqlalchemy import func, select

from campaign.models import AuditEvent, User
from campaign.services.types import DbSession


def record(session: DbSession, actor: User | None, action: str, *, campaign_id: int | None = None,
           object_type: str = "", object_id: int | None = None, summary: str = "") -> AuditEvent:
    """Add one event in the caller's transaction. `summary` must never name a signer."""
    event = AuditEvent(
        actor_id=actor.id if actor is not None else None,
        actor_email=actor.email if actor is not None else "",
        campaign_id=campaign_id, action=action, object_type=object_type, object_id=object_id,
        summary=summary[:2000])
    session.add(event)
    return event


def audit_events(session: DbSession, campaign_id: int | None, *, page: int = 1,
                 per_page: int = 50) -> tuple[list[AuditEvent], int]:
    """Newest first: one campaign's events, or every event when campaign_id is None (admins)."""
    query = select(AuditEvent)
    count = select(func.count()).select_from(AuditEvent)
    if campaign_id is not None:
        query = query.where(AuditEvent.campaign_id == campaign_id)
        count = count.where(AuditEvent.campaign_id == campaign_id)
    total = int(session.scalar(count) or 0)
    events = list(session.scalars(
        query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        .limit(per_page).offset((max(page, 1) - 1) * per_page)))
    return events, total
