"""Organizer pages (/organize): campaigns, members, petitions and their lifecycle, targets,
paper signatures, the signature list, the audit log, and the admins' review queue and users.

Thin handlers: parse, call one service, commit, render. Every object comes through a service
that checks the signed-in user (organizing.campaign_for and friends): an object of another
campaign raises NotFound, which this blueprint answers with 404, the same as a missing one.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from werkzeug import exceptions as werkzeug_exceptions

from campaign.extensions import db, login_manager
from campaign.models import MemberRole, Petition, PetitionStatus, SignatureStatus, User, UserStatus
from campaign.services import accounts, organizing, target_lists
from campaign.services.audit import audit_events
from campaign.services.counting import signature_counts
from campaign.services.countries import country_name
from campaign.services.emails import InvalidEmail
from campaign.services.markdown import render_markdown
from campaign.services.organizing import (
    CampaignInput,
    Forbidden,
    NotFound,
    OrganizingError,
    PetitionInput,
    SignatureSearch,
    SlugTaken,
)
from campaign.services.target_lists import CsvImportError, TargetInput, TargetInvalid
from campaign.web.auth import me
from campaign.web.auth_forms import ButtonForm
from campaign.web.organize_forms import (
    AddTargetForm,
    CampaignForm,
    CsvImportForm,
    DuplicateForm,
    GroupForm,
    InviteForm,
    OfflineForm,
    PetitionForm,
    PreviewForm,
    ReasonForm,
    TargetForm,
)

bp = Blueprint("organize", __name__, url_prefix="/organize")

PER_PAGE = 50


@bp.before_request
def _signed_in_organizers_only() -> ResponseReturnValue | None:
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    user = me()
    if accounts.totp_mandatory(user) and not user.has_totp:
        flash("Set up two-step sign-in to continue: it is required for your account.")
        return redirect(url_for("auth.totp_setup"))
    return None


@bp.errorhandler(NotFound)
def _not_found(error: NotFound) -> ResponseReturnValue:
    # Through the app's own 404 handler: the same page as for an address that does not exist.
    return current_app.handle_http_exception(werkzeug_exceptions.NotFound())


@bp.errorhandler(Forbidden)
def _forbidden(error: Forbidden) -> ResponseReturnValue:
    return current_app.handle_http_exception(werkzeug_exceptions.Forbidden())


@bp.context_processor
def _layout_context() -> dict[str, Any]:
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


def _page() -> int:
    value = request.args.get("page", "1")
    return max(1, int(value)) if value.isdigit() and len(value) < 7 else 1


def _form_error(form: Any, error: OrganizingError) -> None:
    field = getattr(form, error.field, None) if error.field else None
    if field is not None:
        field.errors = [*field.errors, str(error)]
    else:
        form.form_errors.append(str(error))


def _render(template_name: str, status: int = 200, **context: Any) -> Response:
    return make_response(render_template(template_name, **context), status)


# --- home and campaigns -----------------------------------------------------------------------

@bp.get("/")
def index() -> ResponseReturnValue:
    campaigns = organizing.campaigns_of(db.session, me())
    return render_template("organize/index.html", campaigns=campaigns)


def _campaign_input(form: CampaignForm) -> CampaignInput:
    return CampaignInput(name=form.name.data or "", slug=form.slug.data or "",
                         organization=form.organization.data or "", sender_name=form.sender_name.data or "",
                         description=form.description.data or "")


@bp.route("/campaigns/new", methods=["GET", "POST"])
def campaign_new() -> ResponseReturnValue:
    form = CampaignForm()
    if form.validate_on_submit():
        try:
            created = organizing.create_campaign(db.session, me(), _campaign_input(form))
        except OrganizingError as error:
            _form_error(form, error)
        else:
            db.session.commit()
            flash(f"Campaign “{created.name}” created.")
            return redirect(url_for("organize.campaign", campaign_id=created.id), 303)
    return _render("organize/campaign_form.html", 400 if form.errors or form.form_errors else 200,
                   form=form, campaign=None)


@bp.get("/campaigns/<int:campaign_id>")
def campaign(campaign_id: int) -> str:
    user = me()
    found = organizing.campaign_for(db.session, user, campaign_id)
    petitions = list(db.session.scalars(
        db.select(Petition).where(Petition.campaign_id == found.id).order_by(Petition.created_at.desc())))
    return render_template("organize/campaign.html", campaign=found, petitions=petitions,
                           counts=signature_counts(db.session, [p.id for p in petitions]),
                           role=organizing.role_in(db.session, user, found.id),
                           templates=organizing.TEMPLATES,
                           can_audit=organizing.campaign_audit_visible(db.session, user, found.id))


@bp.route("/campaigns/<int:campaign_id>/edit", methods=["GET", "POST"])
def campaign_edit(campaign_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.campaign_for(db.session, user, campaign_id, owner=True)
    form = CampaignForm(obj=found)
    if form.validate_on_submit():
        try:
            organizing.update_campaign(db.session, user, found, _campaign_input(form))
        except OrganizingError as error:
            _form_error(form, error)
        else:
            db.session.commit()
            flash("Saved.")
            return redirect(url_for("organize.campaign", campaign_id=found.id), 303)
    return _render("organize/campaign_form.html", 400 if form.errors or form.form_errors else 200,
                   form=form, campaign=found)


@bp.route("/campaigns/<int:campaign_id>/delete", methods=["GET", "POST"])
def campaign_delete(campaign_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.campaign_for(db.session, user, campaign_id, owner=True)
    form = ButtonForm()
    if form.validate_on_submit():
        name = found.name
        organizing.delete_campaign(db.session, user, found)
        db.session.commit()
        flash(f"Campaign “{name}” deleted.")
        return redirect(url_for("organize.index"), 303)
    return render_template("organize/confirm_delete.html", form=form, what="campaign", name=found.name,
                           footprint=organizing.campaign_footprint(db.session, found),
                           back=url_for("organize.campaign", campaign_id=found.id))


# --- members ------------------------------------------------------------------------------

@bp.route("/campaigns/<int:campaign_id>/members", methods=["GET", "POST"])
def members(campaign_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.campaign_for(db.session, user, campaign_id)
    is_owner = user.is_admin or organizing.role_in(db.session, user, found.id) == MemberRole.OWNER
    form = InviteForm()
    if request.method == "POST":
        if not is_owner:
            abort(403)
        if form.validate_on_submit():
            try:
                organizing.invite_organizer(db.session, user, found, form.email.data or "")
            except InvalidEmail as error:
                form.email.errors = [str(error)]
            except OrganizingError as error:
                _form_error(form, error)
            else:
                db.session.commit()
                flash(f"Invitation sent to {form.email.data}.")
                return redirect(url_for("organize.members", campaign_id=found.id), 303)
    return _render("organize/members.html", 400 if form.errors else 200, campaign=found, form=form,
                   members=organizing.members_of(db.session, found.id), is_owner=is_owner,
                   invitations=organizing.pending_invitations(db.session, found.id))


@bp.post("/campaigns/<int:campaign_id>/members/<int:user_id>/remove")
def member_remove(campaign_id: int, user_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.campaign_for(db.session, user, campaign_id, owner=True)
    if ButtonForm().validate_on_submit():
        try:
            organizing.remove_member(db.session, user, found, user_id)
        except OrganizingError as error:
            flash(str(error))
        else:
            db.session.commit()
            flash("Removed from the campaign.")
    return redirect(url_for("organize.members", campaign_id=found.id), 303)


@bp.post("/invitations/<int:invitation_id>/revoke")
def invitation_revoke(invitation_id: int) -> ResponseReturnValue:
    user = me()
    invitation, found = organizing.invitation_for(db.session, user, invitation_id)
    if ButtonForm().validate_on_submit():
        organizing.revoke_invitation(db.session, user, invitation)
        db.session.commit()
        flash("Invitation withdrawn.")
    return redirect(url_for("organize.members", campaign_id=found.id), 303)


@bp.get("/campaigns/<int:campaign_id>/audit")
def campaign_audit(campaign_id: int) -> str:
    user = me()
    found = organizing.campaign_for(db.session, user, campaign_id, owner=True)
    page = _page()
    events, total = audit_events(db.session, found.id, page=page, per_page=PER_PAGE)
    return render_template("organize/audit.html", campaign=found, events=events, page=page,
                           pages=max(1, -(-total // PER_PAGE)), total=total)


# --- targets ------------------------------------------------------------------------------

def _target_input(form: TargetForm) -> TargetInput:
    return TargetInput(name=form.name.data or "", title=form.title.data or "",
                       country=form.country.data or "", email=form.email.data or "",
                       group=form.group.data or "")


def _target_errors(form: TargetForm, error: TargetInvalid) -> None:
    for name, message in error.errors.items():
        getattr(form, name).errors = [message[:1].upper() + message[1:] + "."]


@bp.get("/campaigns/<int:campaign_id>/targets")
def targets(campaign_id: int) -> str:
    found = organizing.campaign_for(db.session, me(), campaign_id)
    return render_template("organize/targets.html", campaign=found,
                           targets=target_lists.campaign_targets(db.session, found.id),
                           groups=target_lists.target_groups(db.session, found.id))


@bp.route("/campaigns/<int:campaign_id>/targets/new", methods=["GET", "POST"])
def target_new(campaign_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.campaign_for(db.session, user, campaign_id)
    form = TargetForm()
    if form.validate_on_submit():
        try:
            target_lists.create_target(db.session, user, found.id, _target_input(form))
        except TargetInvalid as error:
            _target_errors(form, error)
        else:
            db.session.commit()
            flash("Target added.")
            return redirect(url_for("organize.targets", campaign_id=found.id), 303)
    return _render("organize/target_form.html", 400 if form.errors else 200, form=form, campaign=found,
                   target=None)


@bp.route("/targets/<int:target_id>/edit", methods=["GET", "POST"])
def target_edit(target_id: int) -> ResponseReturnValue:
    user = me()
    target, campaign_id = target_lists.target_for(db.session, user, target_id)
    found = organizing.campaign_for(db.session, user, campaign_id) if campaign_id else None
    form = TargetForm(obj=target, group=target.group_name) if request.method == "GET" else TargetForm()
    if form.validate_on_submit():
        try:
            target_lists.update_target(db.session, user, target, campaign_id, _target_input(form))
        except TargetInvalid as error:
            _target_errors(form, error)
        else:
            db.session.commit()
            flash("Target saved.")
            back = url_for("organize.targets", campaign_id=campaign_id) if campaign_id else url_for(
                "organize.admin_targets")
            return redirect(back, 303)
    return _render("organize/target_form.html", 400 if form.errors else 200, form=form, campaign=found,
                   target=target)


@bp.post("/targets/<int:target_id>/delete")
def target_delete(target_id: int) -> ResponseReturnValue:
    user = me()
    target, campaign_id = target_lists.target_for(db.session, user, target_id)
    if ButtonForm().validate_on_submit():
        target_lists.delete_target(db.session, user, target, campaign_id)
        db.session.commit()
        flash("Target deleted.")
    return redirect(url_for("organize.targets", campaign_id=campaign_id) if campaign_id
                    else url_for("organize.admin_targets"), 303)


@bp.route("/campaigns/<int:campaign_id>/targets/import", methods=["GET", "POST"])
def targets_import(campaign_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.campaign_for(db.session, user, campaign_id)
    return _import(user, found.id, url_for("organize.targets", campaign_id=found.id), found)


def _import(user: User, campaign_id: int | None, back: str, campaign: Any) -> ResponseReturnValue:
    form = CsvImportForm()
    problems: list[str] = []
    if form.validate_on_submit():
        data = form.file.data.read(1024 * 1024 + 1)
        try:
            imported = target_lists.import_targets_csv(db.session, user, campaign_id, data)
        except CsvImportError as error:
            db.session.rollback()
            problems = error.errors
        else:
            db.session.commit()
            flash(f"Imported {len(imported)} targets.")
            return redirect(back, 303)
    status = 400 if problems or form.errors else 200
    return _render("organize/targets_import.html", status, form=form, campaign=campaign, problems=problems,
                   columns=target_lists.CSV_COLUMNS, back=back)


# --- petitions ------------------------------------------------------------------------------

def _petition_input(form: PetitionForm) -> PetitionInput:
    closes_at = None
    if form.closes_on.data:
        # Signatures are taken until the end of the chosen day (UTC).
        closes_at = datetime.combine(form.closes_on.data, time.min, tzinfo=UTC) + timedelta(days=1)
    return PetitionInput(
        title=form.title.data or "", slug=form.slug.data or "", summary=form.summary.data or "",
        body_markdown=form.body_markdown.data or "", letter=form.letter.data or "",
        goal=int(form.goal.data or 0), language=form.language.data or "en", closes_at=closes_at,
        mailing_policy=form.mailing_policy.data or "none", is_sensitive=bool(form.is_sensitive.data))


def _preview(form: PetitionForm) -> str | None:
    return render_markdown(form.body_markdown.data or "") if request.form.get("action") == "preview" else None


@bp.route("/campaigns/<int:campaign_id>/petitions/new", methods=["GET", "POST"])
def petition_new(campaign_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.campaign_for(db.session, user, campaign_id)
    template = organizing.petition_template(request.args.get("template", ""))
    form = PetitionForm(data=dict(template.fields) if template and request.method == "GET" else None)
    preview = _preview(form) if request.method == "POST" else None
    if preview is None and form.validate_on_submit():
        try:
            created = organizing.create_petition(db.session, user, found, _petition_input(form))
        except OrganizingError as error:
            if isinstance(error, SlugTaken):
                form.slug.data = error.suggestion
            _form_error(form, error)
        else:
            db.session.commit()
            flash("Petition saved as a draft.")
            return redirect(url_for("organize.petition", petition_id=created.id), 303)
    return _render("organize/petition_form.html", 400 if form.errors or form.form_errors else 200,
                   form=form, campaign=found, petition=None, preview=preview, template=template)


@bp.get("/petitions/<int:petition_id>")
def petition(petition_id: int) -> str:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    return render_template(
        "organize/petition.html", petition=found, campaign=found.campaign,
        stats=organizing.petition_stats(db.session, found.id),
        offline=organizing.offline_entries(db.session, found.id), offline_form=OfflineForm(),
        problems=(organizing.publish_problems(db.session, found)
                  if found.status == PetitionStatus.DRAFT else []),
        review_required=bool(current_app.config["REVIEW_REQUIRED"]),
        is_owner=user.is_admin or organizing.role_in(db.session, user, found.campaign_id) == MemberRole.OWNER,
        targets=target_lists.petition_target_links(db.session, found.id))


@bp.route("/petitions/<int:petition_id>/edit", methods=["GET", "POST"])
def petition_edit(petition_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    if request.method == "GET":
        form = PetitionForm(obj=found)
        if found.closes_at:
            form.closes_on.data = (found.closes_at - timedelta(seconds=1)).date()
    else:
        form = PetitionForm()
    preview = _preview(form) if request.method == "POST" else None
    if preview is None and form.validate_on_submit():
        try:
            organizing.update_petition(db.session, user, found, _petition_input(form))
        except OrganizingError as error:
            db.session.rollback()
            if isinstance(error, SlugTaken):
                form.slug.data = error.suggestion
            _form_error(form, error)
        else:
            db.session.commit()
            flash("Saved.")
            return redirect(url_for("organize.petition", petition_id=found.id), 303)
    return _render("organize/petition_form.html", 400 if form.errors or form.form_errors else 200,
                   form=form, campaign=found.campaign, petition=found, preview=preview, template=None)


@bp.post("/preview")
def preview() -> ResponseReturnValue:
    """The editor's live preview: the same sanitizing renderer the saved page uses."""
    form = PreviewForm()
    if not form.validate_on_submit():
        return make_response(jsonify({"error": "The text is too long to preview."}), 400)
    response = jsonify({"html": render_markdown(form.body_markdown.data or "")})
    response.headers["Cache-Control"] = "no-store"
    return response


def _lifecycle(petition_id: int, action: str) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    if ButtonForm().validate_on_submit():
        try:
            if action == "publish":
                status = organizing.publish_petition(db.session, user, found)
                message = ("Sent to the review queue: an administrator will publish it."
                           if status == PetitionStatus.IN_REVIEW else "Published.")
            elif action == "withdraw":
                organizing.withdraw_from_review(db.session, user, found)
                message = "Withdrawn from review: it is a draft again."
            else:
                organizing.close_petition(db.session, user, found)
                message = "Closed: it no longer takes signatures."
        except OrganizingError as error:
            db.session.rollback()
            flash(str(error))
        else:
            db.session.commit()
            flash(message)
    return redirect(url_for("organize.petition", petition_id=petition_id), 303)


@bp.post("/petitions/<int:petition_id>/publish")
def petition_publish(petition_id: int) -> ResponseReturnValue:
    return _lifecycle(petition_id, "publish")


@bp.post("/petitions/<int:petition_id>/withdraw")
def petition_withdraw(petition_id: int) -> ResponseReturnValue:
    return _lifecycle(petition_id, "withdraw")


@bp.post("/petitions/<int:petition_id>/close")
def petition_close(petition_id: int) -> ResponseReturnValue:
    return _lifecycle(petition_id, "close")


@bp.route("/petitions/<int:petition_id>/delete", methods=["GET", "POST"])
def petition_delete(petition_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    form = ButtonForm()
    if form.validate_on_submit():
        campaign_id, title = found.campaign_id, found.title
        organizing.delete_petition(db.session, user, found)
        db.session.commit()
        flash(f"Petition “{title}” deleted.")
        return redirect(url_for("organize.campaign", campaign_id=campaign_id), 303)
    stats = organizing.petition_stats(db.session, found.id)
    return render_template("organize/confirm_delete.html", form=form, what="petition", name=found.title,
                           footprint={"signatures": stats.confirmed + stats.pending + stats.held
                                      + stats.invalidated, "paper signatures": stats.offline},
                           back=url_for("organize.petition", petition_id=found.id))


@bp.route("/petitions/<int:petition_id>/duplicate", methods=["GET", "POST"])
def petition_duplicate(petition_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    destinations = [(c.id, c.name) for c, _role in organizing.campaigns_of(db.session, user)
                    if c.id != found.campaign_id]
    form = DuplicateForm()
    form.campaign.choices = destinations
    if destinations and form.validate_on_submit():
        try:
            destination = organizing.campaign_for(db.session, user, int(form.campaign.data))
            copy = organizing.duplicate_petition(db.session, user, found, destination, form.slug.data or "")
        except OrganizingError as error:
            db.session.rollback()
            _form_error(form, error)
        else:
            db.session.commit()
            flash("Copied as a new draft, without signatures.")
            return redirect(url_for("organize.petition", petition_id=copy.id), 303)
    return _render("organize/duplicate.html", 400 if form.errors or form.form_errors else 200,
                   form=form, petition=found, campaign=found.campaign, destinations=destinations)


# --- a petition's targets -------------------------------------------------------------------

@bp.get("/petitions/<int:petition_id>/targets")
def petition_targets(petition_id: int) -> str:
    found = organizing.petition_for(db.session, me(), petition_id)
    group_form, add_form = GroupForm(), AddTargetForm()
    groups = target_lists.target_groups(db.session, found.campaign_id)
    group_form.group.choices = [(g, f"{g} ({n}{'' if shared else ', this campaign'})")
                                for g, n, shared in groups]
    usable = target_lists.usable_targets(db.session, found.campaign_id)
    add_form.target.choices = [(t.id, f"{t.name} — {t.title} ({t.country})") for t in usable]
    return render_template("organize/petition_targets.html", petition=found, campaign=found.campaign,
                           links=target_lists.petition_target_links(db.session, found.id),
                           group_form=group_form, add_form=add_form)


@bp.post("/petitions/<int:petition_id>/targets/group")
def petition_targets_group(petition_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    form = GroupForm()
    if form.validate_on_submit():
        added = target_lists.add_group_to_petition(db.session, user, found, form.group.data or "")
        db.session.commit()
        flash(f"Added {added} targets.")
    return redirect(url_for("organize.petition_targets", petition_id=found.id), 303)


@bp.post("/petitions/<int:petition_id>/targets/add")
def petition_targets_add(petition_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    form = AddTargetForm()
    if form.validate_on_submit():
        target_lists.add_target_to_petition(db.session, user, found, int(form.target.data or 0))
        db.session.commit()
        flash("Target added.")
    return redirect(url_for("organize.petition_targets", petition_id=found.id), 303)


@bp.post("/petitions/<int:petition_id>/targets/<int:target_id>/remove")
def petition_target_remove(petition_id: int, target_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    if ButtonForm().validate_on_submit():
        target_lists.remove_target_from_petition(db.session, user, found, target_id)
        db.session.commit()
        flash("Target removed from this petition.")
    return redirect(url_for("organize.petition_targets", petition_id=found.id), 303)


@bp.post("/petitions/<int:petition_id>/targets/<int:target_id>/default")
def petition_target_default(petition_id: int, target_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    if ButtonForm().validate_on_submit():
        target_lists.set_default_target(db.session, user, found, target_id,
                                        request.form.get("default") == "1")
        db.session.commit()
    return redirect(url_for("organize.petition_targets", petition_id=found.id), 303)


@bp.route("/petitions/<int:petition_id>/targets/import", methods=["GET", "POST"])
def petition_targets_import(petition_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    form = CsvImportForm()
    problems: list[str] = []
    if form.validate_on_submit():
        data = form.file.data.read(1024 * 1024 + 1)
        try:
            imported = target_lists.import_targets_csv(db.session, user, found.campaign_id, data,
                                                       petition=found)
        except CsvImportError as error:
            db.session.rollback()
            problems = error.errors
        else:
            db.session.commit()
            flash(f"Imported {len(imported)} targets and added them to this petition.")
            return redirect(url_for("organize.petition_targets", petition_id=found.id), 303)
    return _render("organize/targets_import.html", 400 if problems or form.errors else 200, form=form,
                   campaign=found.campaign, problems=problems, columns=target_lists.CSV_COLUMNS,
                   back=url_for("organize.petition_targets", petition_id=found.id), petition=found)


# --- paper signatures -----------------------------------------------------------------------

@bp.post("/petitions/<int:petition_id>/offline")
def offline_add(petition_id: int) -> ResponseReturnValue:
    user = me()
    found = organizing.petition_for(db.session, user, petition_id)
    form = OfflineForm()
    if form.validate_on_submit():
        try:
            organizing.add_offline_signatures(db.session, user, found, int(form.count.data or 0),
                                              form.note.data or "")
        except OrganizingError as error:
            flash(str(error))
        else:
            db.session.commit()
            flash(f"Added {form.count.data:,} paper signatures.")
    else:
        for errors in form.errors.values():
            flash(str(errors[0]))
    return redirect(url_for("organize.petition", petition_id=found.id) + "#paper", 303)


@bp.post("/offline/<int:entry_id>/delete")
def offline_delete(entry_id: int) -> ResponseReturnValue:
    user = me()
    entry, found = organizing.offline_entry_for(db.session, user, entry_id)
    if ButtonForm().validate_on_submit() and organizing.remove_offline_signatures(db.session, user, entry,
                                                                                   found):
        db.session.commit()
        flash("Paper signatures removed from the count.")
    return redirect(url_for("organize.petition", petition_id=found.id) + "#paper", 303)


# --- signatures -----------------------------------------------------------------------------

@bp.get("/petitions/<int:petition_id>/signatures")
def signatures(petition_id: int) -> str:
    found = organizing.petition_for(db.session, me(), petition_id)
    args = request.args
    search = SignatureSearch(
        status=args.get("status", "")[:16], email=args.get("email", "").strip()[:320],
        name=args.get("name", "").strip()[:200], country=args.get("country", "").strip()[:8],
        page=_page(), per_page=PER_PAGE)
    result = organizing.search_signatures(db.session, found, search)
    return render_template("organize/signatures.html", petition=found, campaign=found.campaign,
                           result=result, search=search, statuses=list(SignatureStatus),
                           stats=organizing.petition_stats(db.session, found.id))


@bp.route("/signatures/<int:signature_id>/invalidate", methods=["GET", "POST"])
def signature_invalidate(signature_id: int) -> ResponseReturnValue:
    user = me()
    signature, found = organizing.signature_for(db.session, user, signature_id)
    form = ReasonForm()
    if form.validate_on_submit():
        try:
            changed = organizing.invalidate_signature(db.session, user, signature, form.reason.data or "")
        except OrganizingError as error:
            _form_error(form, error)
        else:
            db.session.commit()
            flash("Signature invalidated: it no longer counts and gets no email." if changed
                  else "That signature was invalidated already.")
            return redirect(url_for("organize.signatures", petition_id=found.id), 303)
    return _render("organize/invalidate.html", 400 if form.errors else 200, form=form, petition=found,
                   campaign=found.campaign, row=organizing.signature_row(signature))


# --- admins ---------------------------------------------------------------------------------

@bp.get("/admin/review")
def admin_review() -> str:
    _admin()
    return render_template("organize/review.html", petitions=organizing.review_queue(db.session),
                           form=ReasonForm())


@bp.post("/admin/review/<int:petition_id>/approve")
def admin_approve(petition_id: int) -> ResponseReturnValue:
    admin = _admin()
    found = organizing.petition_for(db.session, admin, petition_id)
    if ButtonForm().validate_on_submit():
        try:
            organizing.approve_petition(db.session, admin, found)
        except OrganizingError as error:
            flash(str(error))
        else:
            db.session.commit()
            flash(f"Published “{found.title}”.")
    return redirect(url_for("organize.admin_review"), 303)


@bp.post("/admin/review/<int:petition_id>/return")
def admin_return(petition_id: int) -> ResponseReturnValue:
    admin = _admin()
    found = organizing.petition_for(db.session, admin, petition_id)
    form = ReasonForm()
    if form.validate_on_submit():
        try:
            organizing.reject_petition(db.session, admin, found, form.reason.data or "")
        except OrganizingError as error:
            flash(str(error))
        else:
            db.session.commit()
            flash(f"Returned “{found.title}” to its organizers.")
    else:
        flash("Say what the organizers should change.")
    return redirect(url_for("organize.admin_review"), 303)


@bp.get("/admin/users")
def admin_users() -> str:
    _admin()
    status = request.args.get("status", "")
    chosen = status if status in set(UserStatus) else None
    return render_template("organize/users.html", users=accounts.list_users(db.session, chosen),
                           status=status, statuses=list(UserStatus))


def _user_or_404(user_id: int) -> User:
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    return user


@bp.post("/admin/users/<int:user_id>/status")
def admin_user_status(user_id: int) -> ResponseReturnValue:
    admin = _admin()
    user = _user_or_404(user_id)
    status = request.form.get("status", "")
    if ButtonForm().validate_on_submit() and status in {UserStatus.ACTIVE, UserStatus.DISABLED}:
        try:
            accounts.set_user_status(db.session, admin, user, UserStatus(status))
        except accounts.AccountError as error:
            flash(str(error))
        else:
            db.session.commit()
            flash(f"{user.email}: {status}.")
    return redirect(url_for("organize.admin_users"), 303)


@bp.post("/admin/users/<int:user_id>/totp")
def admin_user_totp(user_id: int) -> ResponseReturnValue:
    admin = _admin()
    user = _user_or_404(user_id)
    if ButtonForm().validate_on_submit():
        accounts.set_totp_required(db.session, admin, user, request.form.get("required") == "1")
        db.session.commit()
        flash(f"{user.email}: second factor {'required' if user.totp_required else 'optional'}.")
    return redirect(url_for("organize.admin_users"), 303)


@bp.get("/admin/audit")
def admin_audit() -> str:
    _admin()
    page = _page()
    events, total = audit_events(db.session, None, page=page, per_page=PER_PAGE)
    return render_template("organize/audit.html", campaign=None, events=events, page=page,
                           pages=max(1, -(-total // PER_PAGE)), total=total)


@bp.get("/admin/targets")
def admin_targets() -> str:
    _admin()
    return render_template("organize/admin_targets.html", targets=target_lists.shared_targets(db.session))


@bp.route("/admin/targets/import", methods=["GET", "POST"])
def admin_targets_import() -> ResponseReturnValue:
    admin = _admin()
    return _import(admin, None, url_for("organize.admin_targets"), None)
