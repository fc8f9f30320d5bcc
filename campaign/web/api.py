"""The JSON API (/api/v1): public reads. Errors are RFC 9457 problem details."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from campaign.extensions import db
from campaign.models.petitions import VISIBLE
from campaign.services.counting import signature_count
from campaign.services.countries import country_name
from campaign.services.petitions import absolute_url, petition_by_slug, petition_targets

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def problem(status: int, title: str, detail: str = "") -> Any:
    response = jsonify({"type": "about:blank", "title": title, "status": status, "detail": detail})
    response.status_code = status
    response.content_type = "application/problem+json"
    return response


@bp.get("/petitions/<slug>")
def petition(slug: str) -> Any:
    found = petition_by_slug(db.session, slug)
    if found is None or found.status not in VISIBLE:
        return problem(404, "Not Found", "No published petition has this slug.")
    targets = petition_targets(db.session, found.id)
    return jsonify({
        "slug": found.slug,
        "title": found.title,
        "summary": found.summary,
        "status": found.status,
        "language": found.language,
        "goal": found.goal,
        "signature_count": signature_count(db.session, found.id),
        "url": absolute_url(f"/petitions/{found.slug}"),
        # Officials' addresses are never published.
        "targets": [{"name": t.name, "title": t.title, "country": t.country,
                     "country_name": country_name(t.country)} for t in targets],
    })
