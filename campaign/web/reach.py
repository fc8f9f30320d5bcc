"""Organizer reach (issue 7): the dashboards (petition and campaign), signature exports (streamed,
or prepared as a file by a worker), updates to supporters (compose, preview, test, audience,
schedule, progress, pause, cancel) and the suppression counts.

Thin handlers on the organizer blueprint's footing (its sign-in check, layout context, 404 for
another campaign's objects); the public side (unsubscribe, bounce webhook) is reach_public.py.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    TimeField,
)
from wtforms.validators import Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from campaign.extensions import db
from campaign.models import Petition, SignatureStatus, UpdateStatus
from campaign.services import exports, organizing, updates
from campaign.services.charts import columns, horizontal_bars
from campaign.services.countries import country_choices, country_name
from campaign.services.dashboard import cached_dashboard
from campaign.services.exports import ExportError, ExportRequest
from campaign.services.organizing import NotFound
from campaign.services.updates import MERGE_FIELDS, UpdateError, UpdateInput
from campaign.web import organize
from campaign.web.auth import me

bp = Blueprint("reach", __name__, url_prefix="/organize")
bp.before_request(organize._signed_in_organizers_only)
bp.register_error_handler(NotFound, organize._not_found)
bp.register_error_handler(organizing.Forbidden, organize._forbidden)
bp.context_processor(organize._layout_context)


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def _publish(task: str, queue: str, *args: int) -> bool:
    """Publish a task by name; a broker that is down never fails the request (the reach job on
    beat starts due updates and re-publishes waiting exports)."""
    try:
        current_app.extensions["celery"].send_task(task, args=list(args), queue=queue, retry=False)
    except Exception as error:  # any broker failure: logged, left to the reach job
        current_app.logger.warning("could not publish %s: %s", task, type(error).__name__)
        return False
    return True


def _petitions_of(campaign_id: int) -> list[Petition]:
    return list(
        db.session.scalars(select(Petition).where(Petition.campaign_id == campaign_id).order_by(Petition.id))
    )


# --- dashboards ---------------------------------------------------------------------------------


def _dashboard_page(campaign: Any, petition: Petition | None, petition_ids: list[int]) -> str:
    granularity = request.args.get("by", "day")
    board = cached_dashboard(db.session, petition_ids, granularity)
    scope = petition.title if petition else campaign.name
    country_rows = [(country_name(code) or code, n) for code, n in board.by_country]
    return render_template(
        "organize/reach/dashboard.html",
        campaign=campaign,
        petition=petition,
        board=board,
        country_rows=country_rows,
        series_chart=columns(board.series, f"Confirmed signatures by {board.granularity}: {scope}"),
        country_chart=horizontal_bars(country_rows[:20], f"Confirmed signatures by country: {scope}"),
        source_chart=horizontal_bars(
            [(s or "(none)", n) for s, n in board.by_source[:10]], f"Confirmed signatures by source: {scope}"
        ),
    )


@bp.get("/petitions/<int:petition_id>/dashboard")
def petition_dashboard(petition_id: int) -> str:
    petition = organizing.petition_for(db.session, me(), petition_id)
    return _dashboard_page(petition.campaign, petition, [petition.id])


@bp.get("/campaigns/<int:campaign_id>/dashboard")
def campaign_dashboard(campaign_id: int) -> str:
    campaign = organizing.campaign_for(db.session, me(), campaign_id)
    return _dashboard_page(campaign, None, [p.id for p in _petitions_of(campaign.id)])


# --- exports --------------------------------------------------------------------------------------


class ExportForm(FlaskForm):
    petition_id = SelectField("Petition", choices=[])
    columns = MultiCheckboxField(
        "Columns", choices=dict(exports.COLUMNS), default=list(exports.DEFAULT_COLUMNS)
    )
    statuses = MultiCheckboxField(
        "Status",
        choices={s.value: s.value for s in SignatureStatus},
        default=[SignatureStatus.CONFIRMED.value],
    )
    countries = SelectMultipleField("Countries (none chosen: all)", choices=[])
    since = DateField("Signed from (UTC)", validators=[Optional()])
    until = DateField("Signed until (UTC)", validators=[Optional()])
    consent = RadioField(
        "Consent to updates",
        default="any",
        choices={"any": "Everyone", "yes": "Only those who consented", "no": "Only those who did not"},
    )
    format = RadioField(
        "Format", default="csv", choices={"csv": "CSV (spreadsheets)", "jsonl": "JSON lines"}
    )
    as_file = BooleanField(
        "Prepare a file in the background and give me a download link (for very large exports)"
    )


def _export_form(campaign_id: int) -> ExportForm:
    form = ExportForm()
    form.petition_id.choices = [("", "All petitions of the campaign")] + [
        (str(p.id), p.title) for p in _petitions_of(campaign_id)
    ]
    form.countries.choices = country_choices()
    return form


@bp.route("/campaigns/<int:campaign_id>/export", methods=["GET", "POST"])
def export(campaign_id: int) -> ResponseReturnValue:
    user = me()
    campaign = organizing.campaign_for(db.session, user, campaign_id)
    form = _export_form(campaign.id)
    if request.method == "GET":
        petition = request.args.get("petition", "")
        if petition.isdigit():
            form.petition_id.data = petition
    elif form.validate_on_submit():
        export_request = ExportRequest(
            columns=list(form.columns.data or []),
            format=form.format.data or "csv",
            petition_id=int(form.petition_id.data) if (form.petition_id.data or "").isdigit() else None,
            statuses=list(form.statuses.data or []),
            countries=list(form.countries.data or []),
            since=form.since.data,
            until=form.until.data,
            consent=form.consent.data or "any",
        )
        try:
            if form.as_file.data:
                job = exports.queue_export(db.session, user, campaign.id, export_request)
                db.session.commit()
                _publish("exports.run", "bulk", job.id)
                flash("The export is being prepared. This page shows its link when it is ready.")
                return redirect(url_for("reach.export_status", export_id=job.id), 303)
            exports.start_export(db.session, user, campaign.id, export_request)
        except ExportError as error:
            db.session.rollback()
            organize._form_error(form, error)
        else:
            db.session.commit()
            name = exports.filename_for(campaign, export_request)
            chunks = exports.stream(db.session, campaign, export_request)
            mimetype = "application/x-ndjson" if export_request.format == "jsonl" else "text/csv"
            response = Response(stream_with_context(_encoded(chunks)), mimetype=mimetype)
            response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
            response.headers["Cache-Control"] = "no-store"
            return response
    return organize._render(
        "organize/reach/export.html",
        400 if form.errors else 200,
        campaign=campaign,
        form=form,
        jobs=_recent_exports(campaign.id),
    )


def _encoded(chunks: Any) -> Any:
    for chunk in chunks:
        yield chunk.encode("utf-8")


def _recent_exports(campaign_id: int) -> list[Any]:
    from campaign.models import SignatureExport

    return list(
        db.session.scalars(
            select(SignatureExport)
            .where(SignatureExport.campaign_id == campaign_id)
            .order_by(SignatureExport.id.desc())
            .limit(10)
        )
    )


@bp.get("/exports/<int:export_id>")
def export_status(export_id: int) -> str:
    job, campaign = exports.export_for(db.session, me(), export_id)
    link = None
    if job.status == "done" and job.filename:
        link = url_for("reach.export_download", export_id=job.id, token=exports.download_token(job))
    return render_template(
        "organize/reach/export_status.html",
        campaign=campaign,
        job=job,
        link=link,
        request_text=ExportRequest.from_json(job.request).describe(),
    )


@bp.get("/exports/<int:export_id>/download")
def export_download(export_id: int) -> ResponseReturnValue:
    path, name = exports.file_for_download(db.session, me(), export_id, request.args.get("token", ""))
    db.session.commit()
    response = send_file(
        path,
        as_attachment=True,
        download_name=name,
        mimetype="application/x-ndjson" if name.endswith(".jsonl") else "text/csv",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# --- updates to supporters -------------------------------------------------------------------------


class UpdateForm(FlaskForm):
    subject = StringField("Subject", validators=[Length(max=200, message="At most 200 characters.")])
    body_markdown = TextAreaField("Message (Markdown)", validators=[Length(max=50_000, message="Too long.")])
    petition_id = SelectField("Who gets it", choices=[])
    countries = SelectMultipleField("Only signers from (none chosen: every country)", choices=[])
    language = StringField(
        "Only signers who used the language (code, e.g. de; empty: all)", validators=[Length(max=16)]
    )
    form_key = HiddenField()


def _update_form(campaign_id: int, **data: Any) -> UpdateForm:
    form = UpdateForm(**data)
    form.petition_id.choices = [("", "Consenting signers of every petition of the campaign")] + [
        (str(p.id), f"Consenting signers of “{p.title}”") for p in _petitions_of(campaign_id)
    ]
    form.countries.choices = country_choices()
    return form


def _input(form: UpdateForm) -> UpdateInput:
    petition = form.petition_id.data or ""
    return UpdateInput(
        subject=form.subject.data or "",
        body_markdown=form.body_markdown.data or "",
        petition_id=int(petition) if petition.isdigit() else None,
        countries=list(form.countries.data or []),
        language=(form.language.data or "").strip(),
    )


@bp.get("/campaigns/<int:campaign_id>/updates")
def updates_list(campaign_id: int) -> str:
    campaign = organizing.campaign_for(db.session, me(), campaign_id)
    rows = updates.updates_of(db.session, campaign.id)
    return render_template(
        "organize/reach/updates.html",
        campaign=campaign,
        rows=rows,
        progress={r.id: updates.progress(db.session, r.id) for r in rows[:20]},
        suppressions=updates.suppression_counts(db.session, campaign.id),
    )


@bp.route("/campaigns/<int:campaign_id>/updates/new", methods=["GET", "POST"])
def update_new(campaign_id: int) -> ResponseReturnValue:
    user = me()
    campaign = organizing.campaign_for(db.session, user, campaign_id)
    form = _update_form(campaign.id)
    if request.method == "GET":
        form.form_key.data = secrets.token_urlsafe(24)
    elif form.validate_on_submit():
        try:
            row = updates.create_update(
                db.session, user, campaign.id, _input(form), form_key=(form.form_key.data or "")[:64] or None
            )
        except UpdateError as error:
            db.session.rollback()
            organize._form_error(form, error)
        else:
            db.session.commit()
            return redirect(url_for("reach.update_page", update_id=row.id), 303)
    return organize._render(
        "organize/reach/update_form.html",
        400 if form.errors or form.form_errors else 200,
        campaign=campaign,
        form=form,
        row=None,
        merge_fields=MERGE_FIELDS,
    )


@bp.route("/updates/<int:update_id>/edit", methods=["GET", "POST"])
def update_edit(update_id: int) -> ResponseReturnValue:
    user = me()
    row, campaign = updates.update_for(db.session, user, update_id)
    if row.status != UpdateStatus.DRAFT:
        flash("Only a draft can be edited.")
        return redirect(url_for("reach.update_page", update_id=row.id), 303)
    if request.method == "GET":
        form = _update_form(
            campaign.id,
            subject=row.subject,
            body_markdown=row.body_markdown,
            petition_id=str(row.petition_id or ""),
            language=row.language,
            countries=[c for c in row.countries.split(",") if c],
        )
    else:
        form = _update_form(campaign.id)
        if form.validate_on_submit():
            try:
                updates.edit_update(db.session, user, row.id, _input(form))
            except UpdateError as error:
                db.session.rollback()
                organize._form_error(form, error)
            else:
                db.session.commit()
                return redirect(url_for("reach.update_page", update_id=row.id), 303)
    return organize._render(
        "organize/reach/update_form.html",
        400 if form.errors or form.form_errors else 200,
        campaign=campaign,
        form=form,
        row=row,
        merge_fields=MERGE_FIELDS,
    )


class ScheduleForm(FlaskForm):
    when = RadioField("When", default="now", choices={"now": "Now", "later": "At a set time"})
    send_date = DateField("Date (UTC)", validators=[Optional()])
    send_time = TimeField("Time (UTC)", validators=[Optional()])


@bp.get("/updates/<int:update_id>")
def update_page(update_id: int) -> ResponseReturnValue:
    user = me()
    row, campaign = updates.update_for(db.session, user, update_id)
    preview, preview_error = None, None
    try:
        preview = updates.preview(db.session, row, user)
    except UpdateError as error:
        preview_error = str(error)
    total, suppressed = updates.audience(db.session, row) if row.status == UpdateStatus.DRAFT else (0, 0)
    petition = db.session.get(Petition, row.petition_id) if row.petition_id else None
    return render_template(
        "organize/reach/update.html",
        campaign=campaign,
        row=row,
        preview=preview,
        preview_error=preview_error,
        audience=total,
        suppressed=suppressed,
        petition=petition,
        counts=updates.progress(db.session, row.id),
        schedule_form=ScheduleForm(),
        merge_fields=MERGE_FIELDS,
    )


@bp.post("/updates/<int:update_id>/test")
def update_test(update_id: int) -> ResponseReturnValue:
    user = me()
    row, _campaign = updates.update_for(db.session, user, update_id)
    form = FlaskForm()
    if form.validate_on_submit():
        try:
            updates.preview(db.session, row, user)
        except UpdateError as error:
            flash(str(error))
        else:
            if _publish("reach.test_send", "bulk", row.id, user.id):
                flash(f"A test is on its way to {user.email}.")
            else:
                flash("The test could not be sent just now. Try again in a minute.")
    return redirect(url_for("reach.update_page", update_id=row.id), 303)


@bp.route("/updates/<int:update_id>/send", methods=["GET", "POST"])
def update_send(update_id: int) -> ResponseReturnValue:
    """GET: the confirmation screen (who gets it, how many). POST: schedule it; a second POST
    (a double click) finds it scheduled already and makes nothing new."""
    user = me()
    row, campaign = updates.update_for(db.session, user, update_id)
    form = ScheduleForm()
    if request.method == "POST" and form.validate_on_submit():
        send_after = None
        if form.when.data == "later":
            if form.send_date.data is None or form.send_time.data is None:
                form.send_date.errors = [*form.send_date.errors, "Choose the date and the time."]
            else:
                send_after = datetime.combine(form.send_date.data, form.send_time.data, tzinfo=UTC)
        if not form.errors:
            try:
                outcome = updates.schedule_update(db.session, user, row.id, send_after)
            except UpdateError as error:
                db.session.rollback()
                organize._form_error(form, error)
            else:
                db.session.commit()
                if outcome == "scheduled" and send_after is None:
                    # Start at once rather than at the next beat; the reach job would do the same.
                    _publish("reach.run", "maintenance")
                    flash("Sending has started.")
                elif outcome == "scheduled":
                    flash("Scheduled.")
                return redirect(url_for("reach.update_page", update_id=row.id), 303)
    total, suppressed = updates.audience(db.session, row) if row.status == UpdateStatus.DRAFT else (0, 0)
    return organize._render(
        "organize/reach/update_send.html",
        400 if form.errors or form.form_errors else 200,
        campaign=campaign,
        row=row,
        form=form,
        audience=total,
        suppressed=suppressed,
    )


def _change(update_id: int, action: str) -> ResponseReturnValue:
    user = me()
    row, _campaign = updates.update_for(db.session, user, update_id)
    form = FlaskForm()
    if form.validate_on_submit():
        changed = {
            "pause": updates.pause_update,
            "resume": updates.resume_update,
            "cancel": updates.cancel_update,
        }[action](db.session, user, row.id)
        db.session.commit()
        if changed and action == "resume":
            _publish("reach.run", "maintenance")
        flash(
            {"pause": "Paused.", "resume": "Resumed.", "cancel": "Cancelled."}[action]
            if changed
            else "Nothing to change: the update has moved on."
        )
    return redirect(url_for("reach.update_page", update_id=row.id), 303)


@bp.post("/updates/<int:update_id>/pause")
def update_pause(update_id: int) -> ResponseReturnValue:
    return _change(update_id, "pause")


@bp.post("/updates/<int:update_id>/resume")
def update_resume(update_id: int) -> ResponseReturnValue:
    return _change(update_id, "resume")


@bp.post("/updates/<int:update_id>/cancel")
def update_cancel(update_id: int) -> ResponseReturnValue:
    return _change(update_id, "cancel")


@bp.get("/updates/<int:update_id>/progress")
def update_progress(update_id: int) -> ResponseReturnValue:
    row, _campaign = updates.update_for(db.session, me(), update_id)
    response = make_response(jsonify(status=row.status, **updates.progress(db.session, row.id)))
    response.headers["Cache-Control"] = "no-store"
    return response
