"""The JSON API (/api/v1): public reads of petitions and signing. Errors are RFC 9457 problem details.

Thin views: parse the request, call one service or read, shape the answer with campaign.api
(resources, and the OpenAPI document that describes every route here). The API reads and sets no
cookies; it is exempt from session CSRF (campaign/__init__.py). Signing takes
`Content-Type: application/json` only and no CORS preflight is ever allowed, so a page on another
site cannot make a visitor's browser sign (see docs/api.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.datastructures import MultiDict

from campaign.api.cursors import InvalidCursor, decode_cursor, encode_cursor
from campaign.api.openapi import openapi_document, operations, schema_rows
from campaign.api.problems import PROBLEM_TYPES
from campaign.api.resources import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Urls,
    collection_shape,
    count_shape,
    petition_shape,
    petitions_page,
    signing_accepted_shape,
    targets_by_petition,
    targets_shape,
    visible_petition,
)
from campaign.extensions import db
from campaign.metrics import count_signature_created
from campaign.models import Petition
from campaign.services import killswitch
from campaign.services.counting import signature_count, signature_counts
from campaign.services.emails import InvalidEmail, parse_email
from campaign.services.petitions import petition_targets
from campaign.services.signing import SignerInput, SignOutcome, sign_petition
from campaign.web.forms import SignForm

bp = Blueprint("api", __name__, url_prefix="/api/v1")

View = TypeVar("View", bound=Callable[..., Any])

# --- rate limits: the hook ------------------------------------------------------------------------
# Rate limits are their own issue's: campaign/web/ratelimit.py limits this whole blueprint per
# client address (or per API token, once there are tokens) with RATELIMIT_API, and a
# RateLimitExceeded becomes a 429 problem through errors.register, as every error under /api/
# does. Each view is also marked with a scope here ("read", "sign"), so separate limits for
# reads and for signing can be attached per endpoint without touching the views, e.g.
#     for endpoint, scope in RATE_LIMIT_SCOPES.items():
#         app.view_functions[endpoint] = limiter.limit(LIMITS[scope])(app.view_functions[endpoint])
# The public sign form and the widget never answer 429 (DESIGN.md); the API may.
RATE_LIMIT_SCOPES: dict[str, str] = {}


def rate_limit_scope(scope: str) -> Callable[[View], View]:
    """Mark an API view with its rate-limit scope ("read" or "sign"); the view is unchanged."""
    def mark(view: View) -> View:
        RATE_LIMIT_SCOPES[f"{bp.name}.{view.__name__}"] = scope
        return view
    return mark


# Public reads: any website may fetch them (no credentials), and caches may keep them briefly.
_PUBLIC_READS = {"api.petitions", "api.petition", "api.petition_count", "api.targets", "api.openapi"}


# --- problem details (RFC 9457) -------------------------------------------------------------------

def problem(status: int, title: str, detail: str = "", *, type_: str = "about:blank",
            **members: Any) -> Response:
    """An application/problem+json response; errors.register uses it for every error under /api/."""
    response = jsonify({"type": type_, "title": title, "status": status, "detail": detail, **members})
    response.status_code = status
    response.content_type = "application/problem+json"
    return response


def typed_problem(name: str, detail: str, **members: Any) -> Response:
    """A problem of one of the API's own types, whose `type` links to its entry in the docs."""
    kind = PROBLEM_TYPES[name]
    return problem(kind.status, kind.title, detail, type_=f"{_urls().api}/docs#problem-{name}", **members)


def _not_found() -> Response:
    return problem(404, "Not Found", "No published petition has this slug.")


def _urls() -> Urls:
    return Urls(current_app.config["BASE_URL"])


# --- reads ----------------------------------------------------------------------------------------

_LIMIT = re.compile(r"[0-9]{1,4}")


@bp.get("/petitions")
@rate_limit_scope("read")
def petitions() -> Response:
    args = request.args
    errors: dict[str, str] = {}
    limit = DEFAULT_PAGE_SIZE
    raw_limit = args.get("limit")
    if raw_limit is not None:
        if _LIMIT.fullmatch(raw_limit) and 1 <= int(raw_limit) <= MAX_PAGE_SIZE:
            limit = int(raw_limit)
        else:
            errors["limit"] = f"Use a whole number from 1 to {MAX_PAGE_SIZE}."
    status = args.get("status")
    if status is not None and status not in {"published", "closed"}:
        errors["status"] = "Use published or closed, or leave it out for both."
    before = None
    cursor = args.get("cursor")
    if cursor is not None:
        try:
            before = decode_cursor("petitions", cursor)
        except InvalidCursor:
            errors["cursor"] = "This is not a cursor from this list. Start again without one."
    if errors:
        return typed_problem("invalid-parameters", "Some query parameters are invalid.", errors=errors)

    rows, more = petitions_page(db.session, [status] if status else ["published", "closed"], before, limit)
    ids = [p.id for p in rows]
    counts = signature_counts(db.session, ids)
    targets = targets_by_petition(db.session, ids)
    urls = _urls()
    items = [petition_shape(p, counts[p.id], targets[p.id], urls) for p in rows]
    next_cursor = encode_cursor("petitions", rows[-1].id) if more and rows else None
    return jsonify(collection_shape(
        items, limit, _list_url(urls, raw_limit, status, cursor),
        _list_url(urls, raw_limit, status, next_cursor) if next_cursor else None, next_cursor))


def _list_url(urls: Urls, limit: str | None, status: str | None, cursor: str | None) -> str:
    query = {k: v for k, v in (("limit", limit), ("status", status), ("cursor", cursor)) if v is not None}
    return f"{urls.api}/petitions" + (f"?{urlencode(query)}" if query else "")


@bp.get("/petitions/<slug>")
@rate_limit_scope("read")
def petition(slug: str) -> Response:
    found = visible_petition(db.session, slug)
    if found is None:
        return _not_found()
    return jsonify(petition_shape(found, signature_count(db.session, found.id),
                                  petition_targets(db.session, found.id), _urls()))


@bp.get("/petitions/<slug>/count")
@rate_limit_scope("read")
def petition_count(slug: str) -> Response:
    found = visible_petition(db.session, slug)
    if found is None:
        return _not_found()
    return jsonify(count_shape(found, signature_count(db.session, found.id), _urls()))


@bp.get("/petitions/<slug>/targets")
@rate_limit_scope("read")
def targets(slug: str) -> Response:
    found = visible_petition(db.session, slug)
    if found is None:
        return _not_found()
    return jsonify(targets_shape(found, petition_targets(db.session, found.id), _urls()))



@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(_document())


@bp.get("/docs")
def docs() -> str:
    document = _document()
    return render_template("api/docs.html", document=document, operations=operations(document),
                           problems=document["x-problem-types"], schema_rows=schema_rows)


def _document() -> dict[str, Any]:
    # Built once per app: it depends only on BASE_URL and the code.
    cache: dict[str, Any] = current_app.extensions.setdefault("campaign.openapi", {})
    if "document" not in cache:
        cache["document"] = openapi_document(current_app.config["BASE_URL"])
    document: dict[str, Any] = cache["document"]
    return document


@bp.after_request
def _public_read_headers(response: Response) -> Response:
    if (request.method in {"GET", "HEAD"} and response.status_code == 200
            and request.endpoint in _PUBLIC_READS):
        config = current_app.config
        # Public data, no credentials: any site may read it. Never on POST, never a preflight.
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cache-Control"] = (
            f"public, max-age={int(config['PAGE_MAX_AGE'])}, "
            f"stale-while-revalidate={int(config['PAGE_STALE_WHILE_REVALIDATE'])}")
        response.add_etag()
        response.make_conditional(request)
    return response


# --- signing --------------------------------------------------------------------------------------

# The JSON members a signature takes, and the type each must have before the form's rules apply.
_SIGNER_FIELDS: dict[str, type] = {
    "name": str, "email": str, "country": str, "postcode": str, "comment": str, "source": str,
    "consent_updates": bool,
    "consent_name_to_targets": bool, "consent_reply_to": bool, "consent_public_name": bool,
}


def signer_from_form(form: SignForm, petition: Petition) -> SignerInput | None:
    """The validated signer, or None with messages on the form's fields. The sign form's rules
    (SignForm's validators, then parse_email) are the only rules; the widget and the API share
    this with the petition page."""
    valid = form.validate()
    email = None
    if not form.email.errors:
        try:
            email = parse_email(form.email.data or "",
                                check_deliverability=current_app.config["EMAIL_CHECK_DELIVERABILITY"])
        except InvalidEmail as error:
            form.email.errors = [str(error)]
    if not valid or email is None:
        return None
    return SignerInput(
        name=form.name.data or "", email=email, country=form.country.data or "",
        postcode=form.postcode.data or "", comment=form.comment.data or "",
        consent_updates=bool(form.consent_updates.data), source=form.source.data or "",
        consent_name_to_targets=bool(form.consent_name_to_targets.data),
        consent_reply_to=bool(form.consent_reply_to.data),
        consent_public_name=bool(form.consent_public_name.data),
        locale=petition.language)


def _json_object() -> dict[str, Any] | None:
    """The body as a JSON object, or None if it is not one. Too large a body is a 413 (Werkzeug)."""
    try:
        value = json.loads(request.get_data(cache=True).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _form_from_json(body: dict[str, Any]) -> tuple[SignForm, dict[str, str]]:
    """SignForm fed with the JSON members, and the members whose JSON type is wrong."""
    errors: dict[str, str] = {}
    data: MultiDict[str, str] = MultiDict()
    for name, kind in _SIGNER_FIELDS.items():
        value = body.get(name)
        if value is None:
            continue
        if kind is bool:
            if not isinstance(value, bool):
                errors[name] = "Use true or false."
            elif value:
                data[name] = "y"
        elif not isinstance(value, str):
            errors[name] = "Use a string."
        elif not _is_unicode_text(value):
            errors[name] = "Use valid Unicode text."
        else:
            data[name] = value
    return SignForm(formdata=data), errors


def _is_unicode_text(value: str) -> bool:
    # JSON can carry lone surrogates ("\ud800"), which no database or email can store.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@bp.post("/petitions/<slug>/signatures")
@rate_limit_scope("sign")
def sign(slug: str) -> Response:
    """Sign as the form does: same rules, same service, and the same answer for every address."""
    if request.mimetype != "application/json":
        return typed_problem("unsupported-media-type",
                             "Send the signature as JSON, with Content-Type: application/json.")
    body = _json_object()
    if body is None:
        return typed_problem("invalid-body", "The body must be a JSON object in UTF-8.")
    petition = visible_petition(db.session, slug)
    if petition is None:
        return _not_found()
    if not petition.is_signable:
        return typed_problem("petition-closed", "This petition no longer takes signatures.")
    pause = killswitch.switches(db.session).signing_pause_message(petition.id)
    if pause is not None:
        response = typed_problem("signing-paused", pause)
        response.headers["Retry-After"] = "300"
        return response
    form, errors = _form_from_json(body)
    signer = signer_from_form(form, petition)
    for name, messages in form.errors.items():
        if isinstance(name, str) and name in _SIGNER_FIELDS and messages:
            errors.setdefault(name, str(messages[0]))
    if signer is None or errors:
        return typed_problem("validation-error", "Some fields are invalid. Nothing was recorded.",
                             errors=errors)
    outcome = sign_petition(db.session, petition, signer, ip=request.remote_addr)
    # Built before the commit, which expires the petition.
    petition_url = _urls().petition(petition.slug)
    db.session.commit()
    if outcome == SignOutcome.NEW:
        count_signature_created()
    # The same bytes whatever the outcome: nothing here may tell whether the address had signed.
    response = jsonify(signing_accepted_shape(petition_url))
    response.status_code = 202
    response.headers["Cache-Control"] = "no-store"
    return response


# The organizer endpoints (token-authenticated) live on this blueprint too.
from campaign.web import api_organize  # noqa: E402,F401
