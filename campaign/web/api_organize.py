"""The organizer endpoints of the API (/api/v1/campaign/...), behind per-campaign bearer tokens:
the campaign's petitions (read; create, edit and delete with `write`), their signatures with
filters and cursors, deliveries and the mailings ledger (read).

Authentication is the `Authorization: Bearer` header only: no cookie is read, so a visitor's
browser cannot be made to call these (no CSRF hole), and no CORS header is ever sent. A token
sees its own campaign only: another campaign's petition is a 404, the same as a missing one,
so ids cannot be probed. 401 for a missing, unknown, revoked or expired token; 403 for a scope
the token lacks. Nothing here logs a signer's name or address.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, g, jsonify, request
from werkzeug.datastructures import MultiDict

from campaign.api.cursors import InvalidCursor, decode_cursor, encode_cursor
from campaign.api.organizer import (
    SignatureFilter,
    campaign_shape,
    deliveries_page,
    mailings_shape,
    manage_url,
    managed_petition_shape,
    managed_petitions_page,
    signature_shape,
    signatures_page,
)
from campaign.api.resources import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Urls
from campaign.extensions import db
from campaign.models import ApiToken, Campaign, Petition, PetitionStatus, SignatureStatus
from campaign.services import api_tokens, organizing
from campaign.services.audit import record
from campaign.services.counting import signature_count, signature_counts
from campaign.services.deliveries import ledger
from campaign.services.organizing import OrganizingError, PetitionInput, SlugTaken
from campaign.web.api import _LIMIT, _json_object, bp, problem, rate_limit_scope, typed_problem
from campaign.web.organize_forms import PetitionForm

View = Callable[..., Response]


def _urls() -> Urls:
    return Urls(current_app.config["BASE_URL"])


# --- authentication ---------------------------------------------------------------------------

def _unauthorized(sent: bool) -> Response:
    response = typed_problem("unauthorized", "Send a valid API token: Authorization: Bearer <token>. "
                             "Tokens are created in the organizer pages, under API and webhooks.")
    challenge = 'Bearer realm="campaign"'
    if sent:
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def token_required(scope: str) -> Callable[[View], View]:
    """The view runs with g.api_token set when the request carries a live token with `scope`."""
    def decorate(view: View) -> View:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Response:
            header = request.headers.get("Authorization", "")
            kind, _, secret = header.partition(" ")
            if not header:
                return _unauthorized(False)
            if kind.lower() != "bearer":
                return _unauthorized(True)
            try:
                token = api_tokens.authenticate(db.session, secret.strip())
            except api_tokens.TokenRejected:
                return _unauthorized(True)
            if scope not in api_tokens.scopes_of(token):
                response = typed_problem("insufficient-scope",
                                         f"This token lacks the {scope} scope this request needs.")
                response.headers["WWW-Authenticate"] = (
                    f'Bearer realm="campaign", error="insufficient_scope", scope="{scope}"')
                return response
            g.api_token = token
            return view(*args, **kwargs)
        return guarded
    return decorate


def _token() -> ApiToken:
    token: ApiToken = g.api_token
    return token


def _no_such_petition() -> Response:
    return problem(404, "Not Found", "This campaign has no petition with this id.")


def _own_petition(petition_id: int) -> Petition | None:
    """The petition if it belongs to the token's campaign; None (a 404) for any other."""
    petition = db.session.get(Petition, petition_id)
    if petition is None or petition.campaign_id != _token().campaign_id:
        return None
    return petition


@bp.after_request
def _private_answers(response: Response) -> Response:
    # Organizer answers hold signers' data: no cache may keep them.
    if request.path.startswith("/api/v1/campaign"):
        response.headers["Cache-Control"] = "no-store"
        response.vary.add("Authorization")
    return response


# --- query parameters -------------------------------------------------------------------------

class _Params:
    """Parses query parameters, collecting a message per bad one (a 400 problem)."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.args = request.args

    def limit(self) -> int:
        raw = self.args.get("limit")
        if raw is None:
            return DEFAULT_PAGE_SIZE
        if _LIMIT.fullmatch(raw) and 1 <= int(raw) <= MAX_PAGE_SIZE:
            return int(raw)
        self.errors["limit"] = f"Use a whole number from 1 to {MAX_PAGE_SIZE}."
        return DEFAULT_PAGE_SIZE

    def cursor(self, kind: str) -> int | None:
        raw = self.args.get("cursor")
        if raw is None:
            return None
        try:
            return decode_cursor(kind, raw)
        except InvalidCursor:
            self.errors["cursor"] = "This is not a cursor from this list. Start again without one."
            return None

    def choice(self, name: str, values: set[str]) -> str | None:
        raw = self.args.get(name)
        if raw is not None and raw not in values:
            self.errors[name] = "Use one of " + ", ".join(sorted(values)) + "."
            return None
        return raw

    def boolean(self, name: str) -> bool | None:
        raw = self.choice(name, {"true", "false"})
        return None if raw is None else raw == "true"

    def moment(self, name: str, end_of_day: bool = False) -> datetime | None:
        raw = self.args.get(name)
        if raw is None:
            return None
        try:
            if len(raw) == 10:
                day = date.fromisoformat(raw)
                start = datetime.combine(day, time.min, tzinfo=UTC)
                return start + timedelta(days=1) if end_of_day else start
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            value = None
        if value is None or value.tzinfo is None or len(raw) > 40:
            self.errors[name] = ("Use a date (2026-11-25) or a date and time with a zone "
                                 "(2026-11-25T10:00:00Z).")
            return None
        return value.astimezone(UTC)

    def problem(self) -> Response | None:
        if not self.errors:
            return None
        return typed_problem("invalid-parameters", "Some query parameters are invalid.", errors=self.errors)


def _page_links(base: str, query: dict[str, str], next_cursor: str | None) -> dict[str, Any]:
    query = {k: v for k, v in query.items() if k != "cursor"}
    links: dict[str, Any] = {"self": {"href": base + (f"?{urlencode(request.args)}" if request.args else "")}}
    if next_cursor:
        links["next"] = {"href": f"{base}?{urlencode({**query, 'cursor': next_cursor})}"}
    return links


# --- the campaign and its petitions -----------------------------------------------------------

@bp.get("/campaign")
@rate_limit_scope("read")
@token_required("read")
def campaign() -> Response:
    token = _token()
    found = db.session.get(Campaign, token.campaign_id)
    if found is None:
        return _unauthorized(True)
    return jsonify(campaign_shape(found, api_tokens.scopes_of(token), _urls()))


@bp.get("/campaign/petitions")
@rate_limit_scope("read")
@token_required("read")
def managed_petitions() -> Response:
    params = _Params()
    limit = params.limit()
    status = params.choice("status", {s.value for s in PetitionStatus})
    before = params.cursor("campaign-petitions")
    bad = params.problem()
    if bad is not None:
        return bad
    rows, more = managed_petitions_page(db.session, _token().campaign_id, status, before, limit)
    counts = signature_counts(db.session, [p.id for p in rows])
    urls = _urls()
    items = [managed_petition_shape(p, counts[p.id], urls) for p in rows]
    next_cursor = encode_cursor("campaign-petitions", rows[-1].id) if more and rows else None
    links = _page_links(f"{urls.api}/campaign/petitions", dict(request.args), next_cursor)
    links["osdi:petitions"] = [{"href": item["_links"]["self"]["href"]} for item in items]
    return jsonify({"per_page": limit, "next_cursor": next_cursor, "_links": links,
                    "_embedded": {"osdi:petitions": items}})


@bp.get("/campaign/petitions/<int:petition_id>")
@rate_limit_scope("read")
@token_required("read")
def managed_petition(petition_id: int) -> Response:
    found = _own_petition(petition_id)
    if found is None:
        return _no_such_petition()
    return jsonify(managed_petition_shape(found, signature_count(db.session, found.id), _urls()))


# The members a petition takes, their JSON types, and the form field each feeds.
_PETITION_MEMBERS: dict[str, type] = {
    "title": str, "slug": str, "summary": str, "body_markdown": str, "petition_text": str,
    "goal": int, "language": str, "closes_on": str, "mailing_policy": str, "is_sensitive": bool,
}
_FORM_FIELD = {"petition_text": "letter"}


def _petition_form(body: dict[str, Any], current: Petition | None) -> tuple[PetitionForm, dict[str, str]]:
    """The organizer UI's PetitionForm, fed with the petition's current values (on an edit) and
    the JSON members on top: the UI's rules are the API's rules."""
    errors: dict[str, str] = {}
    data: MultiDict[str, str] = MultiDict()
    if current is not None:
        shape = managed_petition_shape(current, 0, _urls())
        for member in _PETITION_MEMBERS:
            value = shape[member]
            if isinstance(value, bool):
                if value:
                    data[_FORM_FIELD.get(member, member)] = "y"
            elif value is not None:
                data[_FORM_FIELD.get(member, member)] = str(value)
    elif "is_sensitive" not in body or body.get("is_sensitive") is None:
        data["is_sensitive"] = "y"  # the form's default: signers may be in danger if named
    for member, kind in _PETITION_MEMBERS.items():
        if member not in body:
            continue
        value, field = body[member], _FORM_FIELD.get(member, member)
        if value is None:
            if member in {"closes_on", "summary", "body_markdown", "petition_text", "slug"}:
                data.pop(field, None)
                continue
            errors[member] = "This member cannot be null."
        elif kind is bool:
            if not isinstance(value, bool):
                errors[member] = "Use true or false."
            else:
                data.pop(field, None)
                if value:
                    data[field] = "y"
        elif kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                errors[member] = "Use a whole number."
            else:
                data[field] = str(value)
        elif not isinstance(value, str):
            errors[member] = "Use a string."
        elif not _encodable(value):
            errors[member] = "Use valid Unicode text."
        else:
            data[field] = value
    form = PetitionForm(formdata=data, meta={"csrf": False})
    return form, errors


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _petition_input(form: PetitionForm) -> PetitionInput:
    closes_at = None
    if form.closes_on.data:
        closes_at = datetime.combine(form.closes_on.data, time.min, tzinfo=UTC) + timedelta(days=1)
    return PetitionInput(
        title=form.title.data or "", slug=form.slug.data or "", summary=form.summary.data or "",
        body_markdown=form.body_markdown.data or "", letter=form.letter.data or "",
        goal=int(form.goal.data or 0), language=form.language.data or "en", closes_at=closes_at,
        mailing_policy=form.mailing_policy.data or "none", is_sensitive=bool(form.is_sensitive.data))


def _validated_petition(current: Petition | None) -> tuple[PetitionInput | None, Response | None]:
    if request.mimetype != "application/json":
        return None, typed_problem("unsupported-media-type",
                                   "Send the petition as JSON, with Content-Type: application/json.")
    body = _json_object()
    if body is None:
        return None, typed_problem("invalid-body", "The body must be a JSON object in UTF-8.")
    form, errors = _petition_form(body, current)
    form.validate()
    reverse = {v: k for k, v in _FORM_FIELD.items()}
    for name, messages in form.errors.items():
        if isinstance(name, str) and messages:
            errors.setdefault(reverse.get(name, name), str(messages[0]))
    if errors:
        return None, typed_problem("validation-error", "Some fields are invalid. Nothing was saved.",
                                   errors=errors)
    return _petition_input(form), None


def _service_error(error: OrganizingError) -> Response:
    member = {"letter": "petition_text", "closes_at": "closes_on"}.get(error.field or "", error.field)
    errors = {member or "petition": str(error)}
    if isinstance(error, SlugTaken):
        errors["slug"] = str(error)
    return typed_problem("validation-error", "Some fields are invalid. Nothing was saved.", errors=errors)


def _audit_token_write(action: str, petition_id: int, title: str) -> None:
    token = _token()
    record(db.session, api_tokens.token_actor(db.session, token), "api_token.write",
           campaign_id=token.campaign_id, object_type="petition", object_id=petition_id,
           summary=f"{action} “{title}” with API token {token.name} ({token.prefix}…)")


@bp.post("/campaign/petitions")
@rate_limit_scope("write")
@token_required("write")
def create_managed_petition() -> Response:
    data, bad = _validated_petition(None)
    if bad is not None or data is None:
        return bad or _no_such_petition()
    token = _token()
    found = db.session.get(Campaign, token.campaign_id)
    if found is None:
        return _unauthorized(True)
    try:
        actor = api_tokens.token_actor(db.session, token)
        created = organizing.create_petition(db.session, actor, found, data)
    except OrganizingError as error:
        db.session.rollback()
        return _service_error(error)
    db.session.flush()
    _audit_token_write("created", created.id, created.title)
    petition_id = created.id
    db.session.commit()
    petition = db.session.get(Petition, petition_id)
    assert petition is not None
    response = jsonify(managed_petition_shape(petition, 0, _urls()))
    response.status_code = 201
    response.headers["Location"] = manage_url(_urls(), petition_id)
    return response


@bp.patch("/campaign/petitions/<int:petition_id>")
@rate_limit_scope("write")
@token_required("write")
def update_managed_petition(petition_id: int) -> Response:
    found = _own_petition(petition_id)
    if found is None:
        return _no_such_petition()
    data, bad = _validated_petition(found)
    if bad is not None or data is None:
        return bad or _no_such_petition()
    try:
        changed = organizing.update_petition(db.session, api_tokens.token_actor(db.session, _token()),
                                             found, data)
    except OrganizingError as error:
        db.session.rollback()
        return _service_error(error)
    if changed:
        _audit_token_write("edited (" + ", ".join(changed) + ")", found.id, found.title)
    db.session.commit()
    petition = db.session.get(Petition, petition_id)
    assert petition is not None
    return jsonify(managed_petition_shape(petition, signature_count(db.session, petition_id), _urls()))


@bp.delete("/campaign/petitions/<int:petition_id>")
@rate_limit_scope("write")
@token_required("write")
def delete_managed_petition(petition_id: int) -> Response:
    found = _own_petition(petition_id)
    if found is None:
        return _no_such_petition()
    # A token deletes drafts only: a petition that had supporters is deleted by a person, in the
    # organizer pages, after a screen that says what goes with it.
    if found.status != PetitionStatus.DRAFT:
        return typed_problem("petition-not-draft", "Only drafts can be deleted through the API.")
    _audit_token_write("deleted", found.id, found.title)
    organizing.delete_petition(db.session, api_tokens.token_actor(db.session, _token()), found)
    db.session.commit()
    return Response(status=204)


# --- signatures, deliveries, mailings ---------------------------------------------------------

@bp.get("/campaign/petitions/<int:petition_id>/signatures")
@rate_limit_scope("read")
@token_required("read")
def managed_signatures(petition_id: int) -> Response:
    found = _own_petition(petition_id)
    if found is None:
        return _no_such_petition()
    params = _Params()
    limit = params.limit()
    country = params.args.get("country")
    if country is not None and not (len(country) == 2 and country.isascii() and country.isalpha()):
        params.errors["country"] = "Use an ISO 3166-1 alpha-2 code, e.g. DE."
        country = None
    where = SignatureFilter(
        status=params.choice("status", {s.value for s in SignatureStatus}),
        country=country.upper() if country else None,
        created_after=params.moment("created_after"),
        created_before=params.moment("created_before", end_of_day=True),
        consent_updates=params.boolean("consent_updates"))
    before = params.cursor(f"signatures-{found.id}")
    bad = params.problem()
    if bad is not None:
        return bad
    rows, more = signatures_page(db.session, found.id, where, before, limit)
    urls = _urls()
    petition_url = manage_url(urls, found.id)
    items = [signature_shape(s, petition_url) for s in rows]
    next_cursor = encode_cursor(f"signatures-{found.id}", rows[-1].id) if more and rows else None
    links = _page_links(f"{petition_url}/signatures", dict(request.args), next_cursor)
    links["osdi:petition"] = {"href": petition_url}
    return jsonify({"per_page": limit, "next_cursor": next_cursor, "_links": links,
                    "_embedded": {"osdi:signatures": items}})


@bp.get("/campaign/petitions/<int:petition_id>/deliveries")
@rate_limit_scope("read")
@token_required("read")
def managed_deliveries(petition_id: int) -> Response:
    found = _own_petition(petition_id)
    if found is None:
        return _no_such_petition()
    params = _Params()
    limit = params.limit()
    before = params.cursor(f"deliveries-{found.id}")
    bad = params.problem()
    if bad is not None:
        return bad
    items, position = deliveries_page(db.session, found.id, before, limit)
    next_cursor = encode_cursor(f"deliveries-{found.id}", position) if position else None
    petition_url = manage_url(_urls(), found.id)
    links = _page_links(f"{petition_url}/deliveries", dict(request.args), next_cursor)
    links["osdi:petition"] = {"href": petition_url}
    return jsonify({"per_page": limit, "next_cursor": next_cursor, "_links": links,
                    "_embedded": {"campaign:deliveries": items}})


@bp.get("/campaign/petitions/<int:petition_id>/mailings")
@rate_limit_scope("read")
@token_required("read")
def managed_mailings(petition_id: int) -> Response:
    found = _own_petition(petition_id)
    if found is None:
        return _no_such_petition()
    return jsonify(mailings_shape(found, ledger(db.session, found, deliveries_per_target=0), _urls()))
