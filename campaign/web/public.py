"""Public pages: the petition, signing, "check your email", and confirming."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select

from campaign.extensions import db
from campaign.models import Petition, SignatureStatus
from campaign.models.petitions import VISIBLE
from campaign.services.counting import signature_count, signature_counts
from campaign.services.countries import country_name, flag, is_country
from campaign.services.emails import InvalidEmail, parse_email
from campaign.services.petitions import petition_by_slug, petition_targets
from campaign.services.signing import (
    SignerInput,
    TokenError,
    confirm_signature,
    sign_petition,
    signature_for_token,
)
from campaign.web.forms import SignForm, check_form_token, make_form_token
from campaign.web.security import same_origin_post

bp = Blueprint("public", __name__)


@bp.app_template_global()
def country_label(code: str) -> str:
    return country_name(code)


@bp.app_template_global()
def country_flag(code: str) -> str:
    return flag(code)


def _visible_petition(slug: str) -> Petition:
    petition = petition_by_slug(db.session, slug)
    if petition is None or petition.status not in VISIBLE:
        abort(404)
    return petition


def _preselected_country() -> str:
    for language, _quality in request.accept_languages:
        parts = language.replace("_", "-").split("-")
        if len(parts) > 1 and is_country(parts[-1].upper()):
            return parts[-1].upper()
    return ""


def _render_petition(petition: Petition, form: SignForm, status: int = 200,
                     form_error: str | None = None) -> Response:
    form.form_token.data = make_form_token(petition.id)
    count = signature_count(db.session, petition.id)
    html = render_template(
        "public/petition.html", petition=petition, form=form, count=count,
        targets=petition_targets(db.session, petition.id), form_error=form_error)
    return make_response(html, status)


@bp.get("/")
def index() -> str:
    petitions = list(db.session.scalars(
        select(Petition).where(Petition.status.in_(list(VISIBLE))).order_by(Petition.published_at.desc())))
    counts = signature_counts(db.session, [p.id for p in petitions])
    return render_template("public/index.html", petitions=petitions, counts=counts)


@bp.get("/petitions/<slug>")
def petition(slug: str) -> Response:
    petition = _visible_petition(slug)
    form = SignForm(formdata=None)
    form.country.data = _preselected_country()
    form.source.data = (request.args.get("source") or "")[:64]
    return _render_petition(petition, form)


@bp.post("/petitions/<slug>/sign")
def sign(slug: str) -> Any:
    petition = _visible_petition(slug)
    if not petition.is_signable:
        return render_template("public/closed.html", petition=petition,
                               count=signature_count(db.session, petition.id)), 410
    if not same_origin_post():
        abort(400, description="This form can only be sent from this site's own page.")
    form = SignForm()
    form_problem = check_form_token(request.form.get("form_token", ""), petition.id)
    if form_problem == "invalid":
        abort(400, description="The form was incomplete or altered. Reload the page and sign again.")
    if not form.validate():
        return _render_petition(petition, form, 400)
    try:
        email = parse_email(form.email.data or "",
                            check_deliverability=current_app.config["EMAIL_CHECK_DELIVERABILITY"])
    except InvalidEmail as error:
        form.email.errors = [str(error)]
        return _render_petition(petition, form, 400)
    if form_problem == "expired":
        # Keep what they typed; a fresh token comes with the re-rendered form.
        return _render_petition(petition, form, 400,
                                form_error="This page was open for a long time. Please check and send again.")
    signer = SignerInput(
        name=form.name.data or "", email=email, country=form.country.data or "",
        postcode=form.postcode.data or "", comment=form.comment.data or "",
        consent_updates=bool(form.consent_updates.data), source=form.source.data or "",
        locale=petition.language)
    sign_petition(db.session, petition, signer, ip=request.remote_addr)
    db.session.commit()
    # The same answer whatever happened: the page never tells whether an address had signed.
    return redirect(url_for("public.check_email", slug=petition.slug), 303)


@bp.get("/petitions/<slug>/check-email")
def check_email(slug: str) -> str:
    petition = _visible_petition(slug)
    return render_template("public/check_email.html", petition=petition,
                           dev_mailbox=current_app.config["DEV_MAILBOX"])


def _signature_or_error(token: str) -> Any:
    try:
        return signature_for_token(db.session, token)
    except TokenError as error:
        status = 410 if error.reason == "expired" else 404
        abort(make_response(render_template("public/bad_link.html", reason=error.reason), status))


def _private(response: Any) -> Any:
    # The URL carries a token: keep it out of caches and other sites' Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/confirm/<token>")
def confirm(token: str) -> Response:
    signature = _signature_or_error(token)
    petition = db.session.get(Petition, signature.petition_id)
    if petition is None:
        abort(404)
    html = render_template(
        "public/confirm.html", petition=petition, token=token,
        state=signature.status, just_confirmed=request.args.get("done") == "1",
        count=signature_count(db.session, petition.id),
        targets=petition_targets(db.session, petition.id))
    return _private(make_response(html))


@bp.post("/confirm/<token>")
def confirm_post(token: str) -> Response:
    signature = _signature_or_error(token)
    if signature.status == SignatureStatus.PENDING:
        confirm_signature(db.session, signature)
        db.session.commit()
    return _private(redirect(url_for("public.confirm", token=token, done=1), 303))


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
