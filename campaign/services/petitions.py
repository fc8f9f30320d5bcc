"""Reading petitions for the public: look-ups, targets, and absolute links."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from campaign.models import Petition, PetitionCounter, PetitionTarget, Target
from campaign.services.types import DbSession


def absolute_url(path: str) -> str:
    """A link for emails and feeds: always BASE_URL, never the request's Host header."""
    return f"{current_app.config['BASE_URL']}{path}"


def petition_by_slug(session: DbSession, slug: str) -> Petition | None:
    return session.scalar(select(Petition).where(Petition.slug == slug))


def petition_targets(session: DbSession, petition_id: int) -> list[Target]:
    return list(session.scalars(
        select(Target).join(PetitionTarget, PetitionTarget.target_id == Target.id)
        .where(PetitionTarget.petition_id == petition_id)
        .order_by(PetitionTarget.position, Target.name)))


def create_counter_shards(session: DbSession, petition: Petition) -> None:
    """Pre-create the counter rows so the first confirmations update rather than insert."""
    session.flush()
    for shard in range(int(current_app.config["COUNTER_SHARDS"])):
        session.add(PetitionCounter(petition_id=petition.id, shard=shard, confirmed=0))
