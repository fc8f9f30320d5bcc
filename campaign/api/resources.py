"""What the API says about petitions and their targets: OSDI-shaped dictionaries, and the reads
behind them. Nothing about a signer is in any shape, and no target's email address either.

The shapes follow the Open Supporter Data Interface where it fits (identifiers, origin_system,
created_date, modified_date, browser_url, total_signatures, target, HAL `_links` with `osdi:`
relations) and keep the fields this API had before it (slug, url, signature_count, targets).
docs/api.md lists where they differ from OSDI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from campaign.models import Petition, PetitionTarget, Target
from campaign.models.petitions import VISIBLE
from campaign.services.countries import country_name
from campaign.services.types import DbSession

# OSDI's "[system name]:[id]" identifiers and origin_system name this platform.
ORIGIN_SYSTEM = "campaign"
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class Urls:
    """Absolute links: always from BASE_URL, never from the request's Host header."""

    base: str

    @property
    def api(self) -> str:
        return f"{self.base}/api/v1"

    def petition_page(self, slug: str) -> str:
        return f"{self.base}/petitions/{slug}"

    def petition(self, slug: str) -> str:
        return f"{self.api}/petitions/{slug}"

    def embed(self, slug: str) -> str:
        return f"{self.base}/embed/{slug}"


def iso_datetime(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def target_shape(target: Target) -> dict[str, str]:
    # Officials' addresses are never published: name, title and where they are from only.
    return {"name": target.name, "title": target.title, "country": target.country,
            "country_name": country_name(target.country)}


def petition_shape(petition: Petition, count: int, targets: Sequence[Target], urls: Urls) -> dict[str, Any]:
    """One petition, as the single resource and as an item of the collection."""
    slug = petition.slug
    self_url = urls.petition(slug)
    modified = petition.updated_at or petition.published_at or petition.created_at
    return {
        "identifiers": [f"{ORIGIN_SYSTEM}:{petition.id}"],
        "origin_system": ORIGIN_SYSTEM,
        "created_date": iso_datetime(petition.created_at),
        "modified_date": iso_datetime(modified),
        "slug": slug,
        "title": petition.title,
        "summary": petition.summary,
        "description": petition.body_html,
        "status": str(petition.status),
        "language": petition.language,
        "goal": petition.goal,
        "accepting_signatures": petition.is_signable,
        "signature_count": count,
        "total_signatures": count,
        "url": urls.petition_page(slug),
        "browser_url": urls.petition_page(slug),
        "targets": [target_shape(t) for t in targets],
        "target": [{"name": t.name, "title": t.title} for t in targets],
        "_links": {
            "self": {"href": self_url},
            "osdi:record_signature_helper": {"href": f"{self_url}/signatures"},
            "campaign:count": {"href": f"{self_url}/count"},
            "campaign:targets": {"href": f"{self_url}/targets"},
            "campaign:embed": {"href": urls.embed(slug)},
            "browser": {"href": urls.petition_page(slug)},
        },
    }


def count_shape(petition: Petition, count: int, urls: Urls) -> dict[str, Any]:
    return {
        "slug": petition.slug,
        "signature_count": count,
        "total_signatures": count,
        "goal": petition.goal,
        "accepting_signatures": petition.is_signable,
        "_links": {"self": {"href": f"{urls.petition(petition.slug)}/count"},
                   "osdi:petition": {"href": urls.petition(petition.slug)}},
    }


def targets_shape(petition: Petition, targets: Sequence[Target], urls: Urls) -> dict[str, Any]:
    return {
        "slug": petition.slug,
        "targets": [target_shape(t) for t in targets],
        "_links": {"self": {"href": f"{urls.petition(petition.slug)}/targets"},
                   "osdi:petition": {"href": urls.petition(petition.slug)}},
    }


def collection_shape(items: list[dict[str, Any]], per_page: int, self_url: str,
                     next_url: str | None, next_cursor: str | None) -> dict[str, Any]:
    links: dict[str, Any] = {"self": {"href": self_url}}
    if next_url is not None:
        links["next"] = {"href": next_url}
    links["osdi:petitions"] = [{"href": item["_links"]["self"]["href"]} for item in items]
    return {"per_page": per_page, "next_cursor": next_cursor, "_links": links,
            "_embedded": {"osdi:petitions": items}}


def signing_accepted_shape(petition_url: str) -> dict[str, Any]:
    """The one answer to every accepted signing request, whoever the address belongs to.

    No signature id and no state: whether the address was new, pending, already confirmed or
    over its email cap must not show (the email itself tells the mailbox's owner).
    """
    return {
        "status": "accepted",
        "detail": "If the address can receive email, a message is on its way to it. A new signature "
                  "counts once it is confirmed through the link in that message.",
        "_links": {"osdi:petition": {"href": petition_url}},
    }


# --- reads ---------------------------------------------------------------------------------------

def visible_petition(session: DbSession, slug: str) -> Petition | None:
    """The published or closed petition with this slug; drafts and petitions in review are unknown."""
    petition = session.scalar(select(Petition).where(Petition.slug == slug))
    if petition is None or petition.status not in VISIBLE:
        return None
    return petition


def petitions_page(session: DbSession, statuses: Iterable[str], before: int | None,
                   limit: int) -> tuple[list[Petition], bool]:
    """Up to `limit` visible petitions, newest first, with ids below `before`; and whether more follow."""
    wanted = [s for s in statuses if s in VISIBLE]
    query = (select(Petition).where(Petition.status.in_(wanted))
             .order_by(Petition.id.desc()).limit(limit + 1))
    if before is not None:
        query = query.where(Petition.id < before)
    rows = list(session.scalars(query))
    return rows[:limit], len(rows) > limit


def targets_by_petition(session: DbSession, petition_ids: list[int]) -> dict[int, list[Target]]:
    """Every listed petition's targets in their order, in one query."""
    found: dict[int, list[Target]] = {pid: [] for pid in petition_ids}
    if not petition_ids:
        return found
    rows = session.execute(
        select(PetitionTarget.petition_id, Target)
        .join(Target, PetitionTarget.target_id == Target.id)
        .where(PetitionTarget.petition_id.in_(petition_ids))
        .order_by(PetitionTarget.petition_id, PetitionTarget.position, Target.name))
    for petition_id, target in rows:
        found[petition_id].append(target)
    return found
