"""The organizer dashboard's figures for a petition or a whole campaign: counts by status, the
confirmation rate, signatures over time, by country and by source, each one aggregate query on
an indexed column (never a row per signature in Python)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import func, select

from campaign.models import Signature, SignatureStatus
from campaign.models.base import utcnow
from campaign.services.types import DbSession

GRANULARITIES = {"day": (timedelta(days=1), 30), "hour": (timedelta(hours=1), 48)}
TOP = 20


@dataclass
class Dashboard:
    by_status: dict[str, int]
    series: list[tuple[str, int]]
    granularity: str
    by_country: list[tuple[str, int]]
    by_source: list[tuple[str, int]]
    countries_total: int = 0
    sources_total: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def confirmed(self) -> int:
        return self.by_status.get(SignatureStatus.CONFIRMED, 0)

    @property
    def pending(self) -> int:
        return self.by_status.get(SignatureStatus.PENDING, 0)

    @property
    def confirmation_rate(self) -> float | None:
        """Confirmed out of confirmed + pending (held and invalidated left out); None without any."""
        base = self.confirmed + self.pending
        return self.confirmed / base if base else None


def _bucket(granularity: str, dialect: str) -> Any:
    """The start of a signature's hour or day (UTC), for GROUP BY on either database."""
    if dialect == "postgresql":
        # date_trunc on the UTC wall time: cheaper per row than formatting text.
        return func.date_trunc(granularity, func.timezone("UTC", Signature.created_at))
    pattern = "%Y-%m-%d %H:00" if granularity == "hour" else "%Y-%m-%d"
    return func.strftime(pattern, Signature.created_at)


def _key(value: Any, granularity: str) -> str:
    return _label(value, granularity) if isinstance(value, datetime) else str(value)


def _label(moment: datetime, granularity: str) -> str:
    return moment.strftime("%Y-%m-%d %H:00" if granularity == "hour" else "%Y-%m-%d")


def cached_dashboard(session: DbSession, petition_ids: list[int], granularity: str = "day") -> Dashboard:
    """build_dashboard, kept DASHBOARD_CACHE_SECONDS per process: at a million signatures each
    view costs a few aggregate scans, and organizers reload the page often."""
    ttl = float(current_app.config["DASHBOARD_CACHE_SECONDS"])
    if ttl <= 0:
        return build_dashboard(session, petition_ids, granularity)
    cache: dict[tuple[Any, ...], tuple[float, Dashboard]] = current_app.extensions.setdefault(
        "campaign.dashboards", {})
    key = (tuple(sorted(petition_ids)), granularity)
    hit = cache.get(key)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    board = build_dashboard(session, petition_ids, granularity)
    if len(cache) > 500:
        cache.clear()
    cache[key] = (time.monotonic() + ttl, board)
    return board


def build_dashboard(
    session: DbSession, petition_ids: list[int], granularity: str = "day", now: datetime | None = None
) -> Dashboard:
    """Figures over the given petitions (one, or a campaign's). Reads only; the caller checked
    that the actor may see them.

    The time series counts confirmed signatures by the hour or day they were signed: the last
    48 hours or 30 days, with empty buckets filled in.
    """
    if granularity not in GRANULARITIES:
        granularity = "day"
    if not petition_ids:
        return Dashboard({}, [], granularity, [], [])
    in_scope = Signature.petition_id.in_(petition_ids)
    confirmed = Signature.status == SignatureStatus.CONFIRMED
    by_status = {
        status: int(n)
        for status, n in session.execute(
            select(Signature.status, func.count()).where(in_scope).group_by(Signature.status)
        )
    }

    step, buckets = GRANULARITIES[granularity]
    now = now or utcnow()
    if granularity == "hour":
        last = now.replace(minute=0, second=0, microsecond=0)
    else:
        last = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first = last - step * (buckets - 1)
    dialect = session.get_bind().dialect.name
    bucket = _bucket(granularity, dialect).label("bucket")
    counted: dict[str, int] = {
        _key(moment, granularity): int(n)
        for moment, n in session.execute(
            select(bucket, func.count())
            .where(in_scope, confirmed, Signature.created_at >= first)
            .group_by(bucket)
        )
    }
    series = [
        (_label(first + step * i, granularity), int(counted.get(_label(first + step * i, granularity), 0)))
        for i in range(buckets)
    ]

    countries = [
        (str(c), int(n))
        for c, n in session.execute(
            select(Signature.country, func.count().label("n"))
            .where(in_scope, confirmed)
            .group_by(Signature.country)
            .order_by(func.count().desc(), Signature.country)
        )
    ]
    sources = [
        (str(s or ""), int(n))
        for s, n in session.execute(
            select(Signature.source, func.count().label("n"))
            .where(in_scope, confirmed)
            .group_by(Signature.source)
            .order_by(func.count().desc(), Signature.source)
        )
    ]
    return Dashboard(
        by_status=by_status,
        series=series,
        granularity=granularity,
        by_country=countries,
        by_source=sources[:TOP],
        countries_total=len(countries),
        sources_total=len(sources),
    )
