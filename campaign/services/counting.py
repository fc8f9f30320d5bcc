"""signature_count: the one definition of a petition's count, read in O(1) from counter shards."""

from __future__ import annotations

import random

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite

from campaign.models import PetitionCounter
from campaign.services.types import DbSession


def signature_count(session: DbSession, petition_id: int) -> int:
    """Confirmed signatures that count: the sum of the petition's counter shards."""
    total = session.scalar(
        select(func.coalesce(func.sum(PetitionCounter.confirmed), 0)).where(
            PetitionCounter.petition_id == petition_id))
    return int(total or 0)


def signature_counts(session: DbSession, petition_ids: list[int]) -> dict[int, int]:
    rows = session.execute(
        select(PetitionCounter.petition_id, func.sum(PetitionCounter.confirmed))
        .where(PetitionCounter.petition_id.in_(petition_ids))
        .group_by(PetitionCounter.petition_id))
    counts = dict.fromkeys(petition_ids, 0)
    counts.update({pid: int(total or 0) for pid, total in rows})
    return counts


def add_to_count(session: DbSession, petition_id: int, delta: int) -> None:
    """Add delta to one random shard, in the caller's transaction.

    Concurrent confirmations land on different rows, so they rarely wait for each other;
    the upsert makes a missing shard row harmless.
    """
    shards = int(current_app.config["COUNTER_SHARDS"])
    shard = random.randrange(shards)  # noqa: S311 - spreading load, not security
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(PetitionCounter).values(petition_id=petition_id, shard=shard, confirmed=delta)
    statement = statement.on_conflict_do_update(
        index_elements=[PetitionCounter.petition_id, PetitionCounter.shard],
        set_={"confirmed": PetitionCounter.confirmed + delta},
    )
    session.execute(statement)
