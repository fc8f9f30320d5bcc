"""The embeddable sign widget: /embed/<slug> in an iframe on a partner's site, its POST, the
"check your email" step inside the iframe, and the snippet page organizers copy from.

Only the widget's own pages may be framed by other sites (EMBED_FRAME_ANCESTORS; the snippet page
may not). They set no cookies: the form carries the sign form's stateless signed token and passes
the same Origin / Sec-Fetch-Site check (the iframe is our page, so its POST is same-origin to us).
The partner is recorded as the signature's source: the snippet's code plus the host of the page
that framed the widget (its Referer).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, current_app, make_response, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Response as WerkzeugResponse

from campaign.api.resources import visible_petition
from campaign.config import ConfigError
from campaign.extensions import db
from campaign.metrics import count_signature_created
from campaign.models import Petition
from campaign.services import killswitch
from campaign.services.counting import signature_count
from campaign.services.signing import SignOutcome, sign_petition
from campaign.web.api import signer_from_form
from campaign.web.forms import SignForm, check_form_token, make_form_token
from campaign.web.public import HONEYPOT_FIELD
from campaign.web.public import _signals as signing_signals
from campaign.web.security import framable_csp, same_origin_post

bp = Blueprint("embed", __name__, url_prefix="/embed")
AnyResponse = TypeVar("AnyResponse", bound=WerkzeugResponse)

# One CSP source expression: *, 'self', 'none', a scheme (https:) or a host source with an
# optional scheme, wildcard subdomain and port. Nothing that could end the directive (; or ,).
_SOURCE = re.compile(r"\*|'self'|'none'|https?:|(https?://)?(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:(\d{1,5}|\*))?")
DEFAULT_SOURCE = "embed"


def frame_ancestors(value: str) -> str:
    """EMBED_FRAME_ANCESTORS as a frame-ancestors source list. Raises ConfigError."""
    sources = (value or "").split()
    if not sources or not all(_SOURCE.fullmatch(s) for s in sources) or (
            "'none'" in sources and len(sources) > 1):
        raise ConfigError("EMBED_FRAME_ANCESTORS must be a space-separated list of CSP sources such as "
                          f"* or 'self' or https://partner.example, not {value!r}")
    return " ".join(sources)


@bp.record_once
def _check_settings(state: BlueprintSetupState) -> None:
    frame_ancestors(state.app.config["EMBED_FRAME_ANCESTORS"])


def partner_source(code: str, referrer: str | None, base_url: str) -> str:
    """The source recorded for a widget signature: the snippet's code, then @ and the host of the
    page that framed the widget, e.g. "newsletter@www.partner.example". Our own pages (the
    widget reloaded inside its iframe) add nothing; the code is cut where the form cuts it."""
    code = (code or "").strip() or DEFAULT_SOURCE
    host = ""
    if referrer:
        parts = urlsplit(referrer)
        if parts.scheme in {"http", "https"} and parts.hostname:
            host = parts.hostname + (f":{parts.port}" if parts.port else "")
    own = urlsplit(base_url)
    own_host = (own.hostname or "") + (f":{own.port}" if own.port else "")
    if host and host != own_host and not code.endswith("@" + host):
        code = f"{code}@{host}"
    return code


def _framable(response: AnyResponse) -> AnyResponse:
    response.headers["Content-Security-Policy"] = framable_csp(
        frame_ancestors(current_app.config["EMBED_FRAME_ANCESTORS"]))
    # The form's token and the partner's host are in the page: no shared or stored copies.
    response.headers["Cache-Control"] = "no-store"
    return response


def _page(template: str, status: int = 200, **context: Any) -> Response:
    return _framable(make_response(render_template(template, **context), status))


def _unavailable() -> Response:
    return _page("embed/unavailable.html", 404)


def _widget(petition: Petition, form: SignForm, status: int = 200, form_error: str | None = None,
            pause_message: str | None = None) -> Response:
    form.form_token.data = make_form_token(petition.id)
    return _page("embed/widget.html", status, petition=petition, form=form, form_error=form_error,
                 count=signature_count(db.session, petition.id), pause_message=pause_message,
                 honeypot_field=HONEYPOT_FIELD, source=form.source.data or DEFAULT_SOURCE)


@bp.get("/<slug>")
def widget(slug: str) -> Response:
    petition = visible_petition(db.session, slug)
    if petition is None:
        return _unavailable()
    # Through the form, so the source gets the form's cleaning (no control characters, 64 at most).
    form = SignForm(formdata=MultiDict({"source": partner_source(
        request.args.get("source", "")[:200], request.referrer, current_app.config["BASE_URL"])}))
    pause = killswitch.switches(db.session).signing_pause_message(petition.id)
    return _widget(petition, form, pause_message=pause)


@bp.post("/<slug>/sign")
def sign(slug: str) -> WerkzeugResponse:
    """The widget's POST: the sign form's checks and service, answered inside the iframe."""
    petition = visible_petition(db.session, slug)
    if petition is None:
        return _unavailable()
    form = SignForm()
    if not petition.is_signable:
        return _widget(petition, form, 410)
    if not same_origin_post():
        # Nothing of what another site posted is shown back: an empty form.
        return _widget(petition, SignForm(formdata=None), 400,
                       form_error="This form can only be sent from its own page.")
    pause = killswitch.switches(db.session).signing_pause_message(petition.id)
    if pause is not None:
        response = _widget(petition, form, 503, pause_message=pause)
        response.headers["Retry-After"] = "300"
        return response
    token = request.form.get("form_token", "")
    form_problem = check_form_token(token, petition.id)
    if form_problem == "invalid":
        return _widget(petition, form, 400,
                       form_error="The form was incomplete or altered. Please check it and send it again.")
    signer = signer_from_form(form, petition)
    if signer is None:
        return _widget(petition, form, 400)
    if form_problem == "expired":
        return _widget(petition, form, 400,
                       form_error="This form was open for a long time. Please check it and send it again.")
    outcome = sign_petition(db.session, petition, signer, ip=request.remote_addr,
                            signals=signing_signals(token))
    # Built before the commit, which expires the petition.
    location = url_for("embed.check_email", slug=petition.slug, source=signer.source or None)
    db.session.commit()
    if outcome == SignOutcome.NEW:
        count_signature_created()
    # The same answer whatever happened: the widget never tells whether an address had signed.
    return _framable(redirect(location, 303))


@bp.get("/<slug>/check-email")
def check_email(slug: str) -> Response:
    petition = visible_petition(db.session, slug)
    if petition is None:
        return _unavailable()
    source = (request.args.get("source") or "")[:200]
    again = url_for("embed.widget", slug=petition.slug, source=source or None)
    return _page("embed/check_email.html", petition=petition, again_url=again)


@bp.get("/<slug>/snippet")
def snippet(slug: str) -> Any:
    """The two snippets (iframe, script) for organizers to copy; an ordinary page, not framable.
    The organizer's petition page links here."""
    petition = visible_petition(db.session, slug)
    if petition is None:
        return render_template("errors/error.html", code=404, name="Not Found", description=None), 404
    # A code to tell partners apart: letters, digits, - _ . only, so it reads the same everywhere.
    code = "".join(ch for ch in request.args.get("source", "")[:40]
                   if ch.isascii() and (ch.isalnum() or ch in "-_."))
    return render_template("embed/snippet.html", petition=petition,
                           **snippets(petition, code or DEFAULT_SOURCE))


def snippets(petition: Petition, source: str) -> dict[str, str]:
    """The iframe and the script snippet for a petition and a source code, with absolute URLs."""
    base = current_app.config["BASE_URL"]
    query = urlencode({"source": source})
    page = f"{base}/petitions/{petition.slug}?{query}"
    widget_url = f"{base}/embed/{petition.slug}?{query}"
    script_url = base + url_for("static", filename="js/embed.js")
    return {
        "source": source,
        "widget_url": widget_url,
        "iframe_snippet": render_template("embed/_iframe_snippet.html", petition=petition,
                                          widget_url=widget_url, page_url=page).strip(),
        "script_snippet": render_template("embed/_script_snippet.html", petition=petition,
                                          page_url=page, script_url=script_url, source=source).strip(),
    }
