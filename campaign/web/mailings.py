"""Organizer pages for mail to officials (/organize/petitions/<id>/mailings ...): the delivery
ledger per target with cadences and failing addresses, routing (fallback and the countries a
target covers), "deliver now" behind a confirmation screen that says who gets what, and the
targets' responses.

Thin handlers on the organizer blueprint's footing: the same sign-in check, layout context and
404 for another campaign's objects (organizing.petition_for / target_lists.target_for raise
NotFound); every form carries Flask-WTF's session CSRF token.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from wtforms import (
    DateField,
    HiddenField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    TimeField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from campaign.extensions import db
from campaign.models import Cadence, RoutingFallback, TargetResponse
from campaign.models.base import utcnow
from campaign.services import organizing, target_lists
from campaign.services.countries import country_name
from campaign.services.deliveries import (
    MailingError,
    deliver_now,
    ledger,
    preview_deliver_now,
    set_cadence,
)
from campaign.services.organizing import NotFound
from campaign.services.petitions import petition_targets
from campaign.services.responses import (
    STANCE_LABELS,
    ResponseError,
    delete_response,
    record_response,
    responses_of,
    scoreboard,
)
from campaign.services.routing import covered_countries, mailing_settings, route, set_covered_countries
from campaign.web import organize
from campaign.web.auth import me
from campaign.web.auth_forms import ButtonForm

bp = Blueprint("mailings", __name__, url_prefix="/organize")
# The organizer blueprint's own guards and layout: signed-in organizers only (with their second
# factor where required), NotFound and Forbidden answered as 404 and 403, the layout's context.
bp.before_request(organize._signed_in_organizers_only)
bp.register_error_handler(NotFound, organize._not_found)
bp.register_error_handler(organizing.Forbidden, organize._forbidden)
bp.context_processor(organize._layout_context)

CADENCE_CHOICES = {
    Cadence.DAILY.value: "Daily digest",
    Cadence.WEEKLY.value: "Weekly digest",
    Cadence.EVERY_N.value: "Every N new signatures",
    Cadence.FINAL.value: "Only a final delivery, when the petition closes",
}
FALLBACK_CHOICES = {
    RoutingFallback.DEFAULTS.value: "The petition's default targets",
    RoutingFallback.ALL.value: "All the petition's targets",
    RoutingFallback.NOBODY.value: "Nobody: their signature counts, but no letter goes",
}


class CadenceForm(FlaskForm):
    cadence = SelectField("Deliveries", choices=CADENCE_CHOICES)
    every_n = IntegerField("N (for “every N new signatures”)", default=100,
                           validators=[Optional(), NumberRange(1, 1_000_000, "Between 1 and 1,000,000.")])
    first_date = DateField("First delivery on (UTC)", validators=[Optional()])
    first_time = TimeField("at (UTC)", validators=[Optional()])


class FallbackForm(FlaskForm):
    routing_fallback = SelectField("Signers from a country no target covers go to", choices=FALLBACK_CHOICES)


class CoversForm(FlaskForm):
    countries = StringField("Further countries this target covers",
                            validators=[Length(max=2000, message="Too long.")])


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class DeliverForm(FlaskForm):
    targets = MultiCheckboxField("Targets", coerce=int)
    nonce = HiddenField()


class ResponseForm(FlaskForm):
    target = SelectField("Target", coerce=int)
    responded_on = DateField("Date of the answer", validators=[DataRequired("Enter the date of the answer.")])
    stance = SelectField("What it says", choices={s.value: label for s, label in STANCE_LABELS.items()})
    text = TextAreaField("The answer, or an excerpt",
                         validators=[Length(max=5000, message="At most 5,000 characters.")])
    link = StringField("Link to the answer", validators=[Length(max=500, message="At most 500 characters.")])


def _petition(petition_id: int) -> Any:
    return organizing.petition_for(db.session, me(), petition_id)


def _target_of(petition: Any, target_id: int) -> Any:
    for target in petition_targets(db.session, petition.id):
        if target.id == target_id:
            return target
    raise NotFound


# --- the ledger and settings ------------------------------------------------------------------------

@bp.get("/petitions/<int:petition_id>/mailings")
def ledger_page(petition_id: int) -> str:
    petition = _petition(petition_id)
    lines = ledger(db.session, petition)
    settings = mailing_settings(db.session, petition.id)
    fallback_form = FallbackForm(routing_fallback=settings.routing_fallback)
    cadence_forms = {}
    for line in lines:
        first = line.mailing.next_run_at
        cadence_forms[line.target.id] = CadenceForm(
            prefix=f"t{line.target.id}", cadence=line.mailing.cadence, every_n=line.mailing.every_n,
            first_date=first.date() if first else None,
            first_time=first.time().replace(microsecond=0) if first else None)
    countries = sorted({line.target.country for line in lines})
    routes = {code: route(db.session, petition.id, code) for code in countries}
    return render_template(
        "organize/mailings/ledger.html", petition=petition, campaign=petition.campaign, lines=lines,
        fallback_form=fallback_form, cadence_forms=cadence_forms, routes=routes,
        uncovered=route(db.session, petition.id, "--"),
        covers={line.target.id: covered_countries(db.session, line.target.id) for line in lines},
        covers_form=CoversForm(), scoreboard=scoreboard(db.session, petition.id),
        cadence_labels=CADENCE_CHOICES)


@bp.post("/petitions/<int:petition_id>/mailings/routing")
def routing(petition_id: int) -> ResponseReturnValue:
    from campaign.services.routing import set_routing_fallback

    petition = _petition(petition_id)
    form = FallbackForm()
    if form.validate_on_submit():
        set_routing_fallback(db.session, petition, form.routing_fallback.data or RoutingFallback.DEFAULTS)
        db.session.commit()
        flash("Routing saved.")
    else:
        flash("Choose where those signers go.")
    return redirect(url_for("mailings.ledger_page", petition_id=petition.id), 303)


@bp.post("/petitions/<int:petition_id>/mailings/targets/<int:target_id>/cadence")
def cadence(petition_id: int, target_id: int) -> ResponseReturnValue:
    petition = _petition(petition_id)
    target = _target_of(petition, target_id)
    form = CadenceForm(prefix=f"t{target.id}")
    if not form.validate_on_submit():
        flash(f"{target.name}: " + "; ".join(str(e[0]) for e in form.errors.values()))
        return redirect(url_for("mailings.ledger_page", petition_id=petition.id), 303)
    first_at = None
    if form.first_date.data is not None:
        first_at = datetime.combine(form.first_date.data, form.first_time.data or datetime.min.time(),
                                    tzinfo=UTC)
    try:
        row = set_cadence(db.session, petition, target.id, form.cadence.data or Cadence.DAILY,
                          every_n=form.every_n.data, first_at=first_at)
    except MailingError as error:
        db.session.rollback()
        flash(f"{target.name}: {error}")
        return redirect(url_for("mailings.ledger_page", petition_id=petition.id), 303)
    db.session.commit()
    message = f"{target.name}: deliveries saved."
    interval = row.cadence in {Cadence.DAILY, Cadence.WEEKLY}
    if interval and row.next_run_at is not None and row.next_run_at <= utcnow():
        message += " The first time is in the past: the first delivery goes at the next run, within a minute."
    flash(message)
    return redirect(url_for("mailings.ledger_page", petition_id=petition.id), 303)


@bp.post("/petitions/<int:petition_id>/mailings/targets/<int:target_id>/countries")
def countries(petition_id: int, target_id: int) -> ResponseReturnValue:
    petition = _petition(petition_id)
    _target_of(petition, target_id)
    # Changing a target changes it for every petition that uses it: the campaign's own targets
    # only, or (admins) the shared lists; otherwise 404, like any object of another campaign.
    target, _campaign_id = target_lists.target_for(db.session, me(), target_id)
    form = CoversForm()
    if form.validate_on_submit():
        try:
            stored = set_covered_countries(db.session, target,
                                           (form.countries.data or "").replace(";", ",").split(","))
        except ValueError as error:
            db.session.rollback()
            flash(f"{target.name}: {error}")
        else:
            db.session.commit()
            flash(f"{target.name} now also covers: {', '.join(stored) or 'no other country'}.")
    return redirect(url_for("mailings.ledger_page", petition_id=petition.id), 303)


# --- deliver now ----------------------------------------------------------------------------------------

def _deliver_page(petition: Any, form: DeliverForm, targets: list[Any], preview: Any) -> str:
    return render_template("organize/mailings/deliver.html", petition=petition, campaign=petition.campaign,
                           form=form, targets=targets, preview=preview)


@bp.route("/petitions/<int:petition_id>/deliver", methods=["GET", "POST"])
def deliver(petition_id: int) -> ResponseReturnValue:
    """Step 1: choose the targets. Step 2 (POST): the confirmation screen, which says for each
    target exactly what it will receive. Step 3 (POST with confirm): queue the deliveries."""
    petition = _petition(petition_id)
    targets = petition_targets(db.session, petition.id)
    form = DeliverForm()
    form.targets.choices = {t.id: f"{t.name}, {t.title}" for t in targets}
    if request.method == "GET":
        form.targets.data = [t.id for t in targets]
        return _deliver_page(petition, form, targets, None)
    if not form.validate_on_submit() or not form.targets.data:
        form.targets.errors = [*form.targets.errors, "Choose at least one target."]
        return _deliver_page(petition, form, targets, None), 400
    chosen = list(form.targets.data)
    if request.form.get("confirm") != "1":
        preview = preview_deliver_now(db.session, petition, chosen)
        form.nonce.data = secrets.token_urlsafe(24)
        return _deliver_page(petition, form, targets, preview)
    try:
        made = deliver_now(db.session, me(), petition, chosen, form.nonce.data or "")
    except MailingError as error:
        db.session.rollback()
        flash(str(error))
        return redirect(url_for("mailings.deliver", petition_id=petition.id), 303)
    db.session.commit()
    if made:
        flash(f"The petition is on its way to {len(made)} target{'s' if len(made) != 1 else ''}. "
              "Follow each delivery below.")
    else:
        flash("Nothing new was queued: this confirmation had been sent already.")
    return redirect(url_for("mailings.ledger_page", petition_id=petition.id), 303)


# --- responses ------------------------------------------------------------------------------------------

@bp.route("/petitions/<int:petition_id>/responses", methods=["GET", "POST"])
def responses(petition_id: int) -> ResponseReturnValue:
    petition = _petition(petition_id)
    targets = petition_targets(db.session, petition.id)
    form = ResponseForm()
    form.target.choices = {t.id: f"{t.name}, {t.title}" for t in targets}
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                record_response(db.session, me(), petition, int(form.target.data or 0),
                                responded_on=form.responded_on.data, stance=form.stance.data or "",
                                text=form.text.data or "", link=form.link.data or "")
            except ResponseError as error:
                db.session.rollback()
                field = getattr(form, error.field or "text", form.text)
                field.errors = [*field.errors, str(error)]
                status = 400
            except LookupError:
                abort(404)
            else:
                db.session.commit()
                flash("Response recorded. Signers routed to this target who asked for updates are told "
                      "within a few minutes.")
                return redirect(url_for("mailings.responses", petition_id=petition.id), 303)
        else:
            status = 400
    elif not form.responded_on.data:
        form.responded_on.data = utcnow().date()
    return render_template(
        "organize/mailings/responses.html", petition=petition, campaign=petition.campaign, form=form,
        responses=responses_of(db.session, petition.id), targets={t.id: t for t in targets},
        stance_labels=STANCE_LABELS, country_name=country_name), status


@bp.post("/responses/<int:response_id>/delete")
def response_delete(response_id: int) -> ResponseReturnValue:
    response = db.session.get(TargetResponse, response_id)
    if response is None:
        abort(404)
    petition = _petition(response.petition_id)  # NotFound for another campaign's response
    if ButtonForm().validate_on_submit():
        delete_response(db.session, me(), response)
        db.session.commit()
        flash("Response removed.")
    return redirect(url_for("mailings.responses", petition_id=petition.id), 303)

