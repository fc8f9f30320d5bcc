"""Moderation pages (issue 6): a petition's held signatures with bulk release and invalidation
(preview first; the change is applied only if it still matches the preview), trending alerts,
and the admins' kill switches. Same access checks and layout as the organizer pages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, DateTimeLocalField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from campaign.extensions import db, login_manager
from campaign.models import HoldReason, Petition, PetitionStatus, User
from campaign.services import abuse, accounts, killswitch, organizing
from campaign.services.countries import country_name
from campaign.services.organizing import Forbidden, NotFound
from campaign.web.auth import me
from campaign.web.auth_forms import ButtonForm
from campaign.web.forms import no_control_characters

bp = Blueprint("moderation", __name__, url_prefix="/organize")

# Organizer actions that put a new petition in front of the public: refused (503) while an
# admin has paused new petitions. Admins themselves are not stopped.
NEW_PETITION_ENDPOINTS = frozenset({"organize.petition_new", "organize.petition_duplicate",
                                    "organize.petition_publish", "organize.campaign_new"})


def install(app: Flask) -> None:
    app.register_blueprint(bp)
    app.before_request(_new_petitions_switch)


def _new_petitions_switch() -> ResponseReturnValue | None:
    if request.method != "POST" or request.endpoint not in NEW_PETITION_ENDPOINTS:
        return None
    switches = killswitch.switches(db.session)
    if not switches.on(killswitch.NEW_PETITIONS):
        return None
    if current_user.is_authenticated and me().is_admin:
        return None
    message = switches.message(killswitch.NEW_PETITIONS) or "Creating and publishing petitions is paused " \
                                                             "for a short while. Please try again later."
    response = make_response(render_template("errors/error.html", code=503, name="Paused",
                                             description=message), 503)
    response.headers["Retry-After"] = "600"
    return response


@bp.before_request
def _signed_in_organizers_only() -> ResponseReturnValue | None:
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    user = me()
    if accounts.totp_mandatory(user) and not user.has_totp:
        return redirect(url_for("auth.totp_setup"))
    return None


# Rendered here: an HTTPException raised inside an error handler is not handled again.
@bp.errorhandler(NotFound)
def _not_found(error: NotFound) -> Any:
    return render_template("errors/error.html", code=404, name="Not Found", description=None), 404


@bp.errorhandler(Forbidden)
def _forbidden(error: Forbidden) -> Any:
    return render_template("errors/error.html", code=403, name="Forbidden", description=None), 403


@bp.context_processor
def _layout_context() -> dict[str, Any]:
    # What organize/_layout.html expects (the organizer pages' own context processor is theirs).
    user = me() if current_user.is_authenticated else None
    return {
        "me": user,
        "my_campaigns": organizing.campaigns_of(db.session, user) if user else [],
        "button_form": ButtonForm(),
        "country_label": country_name,
    }


def _admin() -> User:
    user = me()
    if not user.is_admin:
        abort(404)  # an organizer is not told that admin pages exist
    return user


# --- forms ----------------------------------------------------------------------------------

_REASONS = [("", "Any reason"), *((r.value, r.value.replace("_", " ")) for r in HoldReason)]


class SelectionForm(FlaskForm):
    ip = StringField("IP address or network", validators=[Optional(), Length(max=64), no_control_characters])
    domain = StringField("Email domain", validators=[Optional(), Length(max=255), no_control_characters])
    country = StringField("Country code", validators=[Optional(), Length(max=8), no_control_characters])
    since = DateTimeLocalField("Signed from (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()])
    until = DateTimeLocalField("Signed before (UTC)", format="%Y-%m-%dT%H:%M", validators=[Optional()])
    reason = SelectField("Held for", validators=[Optional()])
    action = SelectField("Action")
    reason_text = TextAreaField("Why (for invalidation; kept in the audit log)", validators=[
        Optional(), Length(max=1000), no_control_characters])
    # Set by the preview page: the change is applied only if this many still match.
    expected = StringField(validators=[Optional(), Length(max=12)])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Set here, not as choices=: WTForms 3.3 deprecates tuples passed to the field.
        self.reason.choices = _REASONS
        self.action.choices = [("release", "Release (count them)"),
                               ("invalidate", "Invalidate (remove them)")]

    def carried(self) -> list[tuple[str, str]]:
        """The filters as hidden (name, value) pairs, for the apply form after a preview."""
        values = []
        for field in (self.ip, self.domain, self.country, self.since, self.until, self.reason,
                      self.action, self.reason_text, self.expected):
            value = field.data if isinstance(field, SelectField) else field._value()
            values.append((field.name, str(value or "")))
        return values

    def selection(self) -> abuse.Selection:
        def utc(value: datetime | None) -> datetime | None:
            return value.replace(tzinfo=UTC) if value else None
        return abuse.Selection(ip=(self.ip.data or "").strip(), domain=(self.domain.data or "").strip(),
                               country=(self.country.data or "").strip().upper(),
                               since=utc(self.since.data), until=utc(self.until.data),
                               reason=self.reason.data or "")


class SwitchForm(FlaskForm):
    key = SelectField("Switch")
    on = BooleanField("On")
    message = StringField("Message shown to the public", validators=[
        Optional(), Length(max=killswitch.MAX_TEXT), no_control_characters])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key.choices = [
            (killswitch.SIGNING, "Pause signing on every petition"),
            (killswitch.NEW_PETITIONS, "Pause new petitions (creating and publishing)"),
            (killswitch.BULK_MAIL, "Pause bulk mail (letters, deliveries, mailings)"),
            (killswitch.CONFIRMATIONS, "Pause confirmation emails too"),
            (killswitch.BANNER, "Site banner"),
        ]


class PetitionPauseForm(FlaskForm):
    slug = StringField("Petition address (slug)", validators=[DataRequired("Enter the petition's slug."),
                                                               Length(max=120), no_control_characters])
    on = BooleanField("Paused")
    message = StringField("Message shown instead of the form", validators=[
        Optional(), Length(max=killswitch.MAX_TEXT), no_control_characters])


# --- a petition's held signatures -------------------------------------------------------------

def _petition(petition_id: int) -> Petition:
    return organizing.petition_for(db.session, me(), petition_id)


def _overview(petition: Petition, form: SelectionForm, status: int = 200, **extra: Any) -> Response:
    html = render_template(
        "organize/moderation/petition.html", petition=petition, campaign=petition.campaign, form=form,
        summary=abuse.held_summary(db.session, petition.id),
        integrity=abuse.integrity_note(db.session, petition.id),
        alerts=abuse.recent_alerts(db.session, [petition.id], limit=20), **extra)
    return make_response(html, status)


@bp.get("/petitions/<int:petition_id>/moderation")
def petition(petition_id: int) -> ResponseReturnValue:
    found = _petition(petition_id)
    abuse.forget_integrity(found.id)
    return _overview(found, SelectionForm(formdata=None, reason=request.args.get("reason", "")[:32]))


def _preview(found: Petition, form: SelectionForm) -> int:
    selection = form.selection()
    if form.action.data == "release":
        return abuse.preview_release(db.session, found, selection)
    return abuse.preview_invalidation(db.session, found, selection)


@bp.post("/petitions/<int:petition_id>/moderation/preview")
def preview(petition_id: int) -> ResponseReturnValue:
    """Counts what the action would change; changes nothing."""
    found = _petition(petition_id)
    form = SelectionForm()
    if not form.validate():
        return _overview(found, form, 400)
    try:
        count = _preview(found, form)
    except abuse.SelectionError as error:
        _field_error(form, error)
        return _overview(found, form, 400)
    form.expected.data = str(count)
    return _overview(found, form, preview_count=count, selection=form.selection())


@bp.post("/petitions/<int:petition_id>/moderation/apply")
def apply(petition_id: int) -> ResponseReturnValue:
    """Apply the previewed action, only if it changes exactly the previewed number of rows."""
    found = _petition(petition_id)
    form = SelectionForm()
    if not form.validate() or not (form.expected.data or "").isdigit():
        return _overview(found, form, 400)
    expected = int(form.expected.data or "0")
    selection = form.selection()
    try:
        if form.action.data == "release":
            result = abuse.release_held(db.session, me(), found, selection)
        else:
            result = abuse.invalidate_matching(db.session, me(), found, selection,
                                               form.reason_text.data or "")
    except abuse.SelectionError as error:
        db.session.rollback()
        _field_error(form, error)
        return _overview(found, form, 400)
    if result.changed != expected:
        # Signatures arrived or changed since the preview: apply nothing, show the new figure.
        db.session.rollback()
        found = _petition(petition_id)
        count = _preview(found, form)
        form.expected.data = str(count)
        return _overview(found, form, 409, preview_count=count, selection=selection,
                         changed_since=expected)
    db.session.commit()
    abuse.forget_integrity(found.id)
    verb = "released" if form.action.data == "release" else "invalidated"
    flash(f"{result.changed:,} signature{'s' if result.changed != 1 else ''} {verb}.")
    return redirect(url_for("moderation.petition", petition_id=petition_id), 303)


def _field_error(form: SelectionForm, error: abuse.SelectionError) -> None:
    field = getattr(form, error.field, None) if error.field else None
    if field is not None:
        field.errors = [*field.errors, str(error)]
    else:
        form.form_errors.append(str(error))


# --- trending alerts ----------------------------------------------------------------------------

@bp.get("/alerts")
def alerts() -> str:
    user = me()
    petition_ids = [p.id for campaign, _role in organizing.campaigns_of(db.session, user)
                    for p in db.session.scalars(select(Petition).where(Petition.campaign_id == campaign.id))]
    rows = abuse.recent_alerts(db.session, petition_ids)
    petitions = {p.id: p for p in db.session.scalars(select(Petition).where(
        Petition.id.in_({row.petition_id for row in rows})))} if rows else {}
    return render_template("organize/moderation/alerts.html", alerts=rows, petitions=petitions, campaign=None)


# --- kill switches (admins) ---------------------------------------------------------------------

def _switches_page(form: SwitchForm | None = None, pause_form: PetitionPauseForm | None = None,
                   status: int = 200) -> Response:
    killswitch.forget_cached()
    state = killswitch.switches(db.session)
    paused = [(p, state.message(killswitch.petition_key(p.id)))
              for p in db.session.scalars(select(Petition).where(Petition.status == PetitionStatus.PUBLISHED))
              if state.on(killswitch.petition_key(p.id))]
    html = render_template("admin/switches.html", state=state, switches=killswitch.SWITCHES,
                           banner_key=killswitch.BANNER, paused=paused,
                           form=form or SwitchForm(formdata=None),
                           pause_form=pause_form or PetitionPauseForm(formdata=None), campaign=None)
    return make_response(html, status)


@bp.get("/admin/switches")
def switches() -> ResponseReturnValue:
    _admin()
    return _switches_page()


@bp.post("/admin/switches")
def switch_set() -> ResponseReturnValue:
    admin = _admin()
    form = SwitchForm()
    if not form.validate():
        return _switches_page(form=form, status=400)
    try:
        killswitch.set_switch(db.session, admin, form.key.data or "", bool(form.on.data),
                              form.message.data or "")
    except ValueError as error:
        form.message.errors = [*form.message.errors, str(error)]
        return _switches_page(form=form, status=400)
    db.session.commit()
    flash("Switch updated. Every process follows within a few seconds.")
    return redirect(url_for("moderation.switches"), 303)


@bp.post("/admin/switches/petition")
def petition_pause() -> ResponseReturnValue:
    admin = _admin()
    form = PetitionPauseForm()
    if not form.validate():
        return _switches_page(pause_form=form, status=400)
    found = db.session.scalar(select(Petition).where(Petition.slug == (form.slug.data or "").strip()))
    if found is None:
        form.slug.errors = [*form.slug.errors, "No petition has this address."]
        return _switches_page(pause_form=form, status=400)
    killswitch.set_switch(db.session, admin, killswitch.petition_key(found.id), bool(form.on.data),
                          form.message.data or "")
    db.session.commit()
    flash(f"Signing on “{found.title}” is {'paused' if form.on.data else 'open again'}.")
    return redirect(url_for("moderation.switches"), 303)
