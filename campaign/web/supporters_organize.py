"""Organizer pages of issue 5 (English, like every organizer page): a petition's translations
(add, edit, delete), the switch for the public list of recent signers, and which signers'
share links brought signatures.

On the organizer blueprint's footing: the same sign-in check and layout, 404 for another
campaign's petition (organizing.petition_for raises NotFound), session CSRF on every form.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from wtforms import BooleanField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from campaign.extensions import db
from campaign.services import organizing
from campaign.services.organizing import NotFound
from campaign.services.supporters import (
    TranslationError,
    delete_translation,
    referral_counts,
    save_translation,
    set_recent_signers,
    translation_for,
    translations_of,
)
from campaign.web import organize
from campaign.web.auth import me
from campaign.web.i18n import NATIVE_NAMES, languages

bp = Blueprint("translations", __name__, url_prefix="/organize")
bp.before_request(organize._signed_in_organizers_only)
bp.register_error_handler(NotFound, organize._not_found)
bp.register_error_handler(organizing.Forbidden, organize._forbidden)
bp.context_processor(organize._layout_context)


class TranslationForm(FlaskForm):
    language = SelectField("Language", validate_choice=False)
    title = StringField("Title", validators=[DataRequired("Enter the translated title."), Length(max=300)])
    summary = TextAreaField("Summary", validators=[Length(max=2000)])
    body_markdown = TextAreaField("Text (Markdown)", validators=[Length(max=100_000)])


class LanguageForm(FlaskForm):
    language = StringField(validators=[DataRequired(), Length(max=16)])


class RecentSignersForm(FlaskForm):
    show_recent_signers = BooleanField(
        "Show recent signers (first name and country, only of signers who ticked the box for it)")


@bp.route("/petitions/<int:petition_id>/translations", methods=["GET", "POST"])
def translations(petition_id: int) -> ResponseReturnValue:
    user = me()
    petition = organizing.petition_for(db.session, user, petition_id)
    choices = [(code, f"{NATIVE_NAMES.get(code, code)} ({code})") for code in languages()
               if code != petition.language]
    editing = translation_for(db.session, petition.id, request.args.get("language", "")[:16])
    form = TranslationForm(obj=editing) if request.method == "GET" else TranslationForm()
    form.language.choices = choices
    status = 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                save_translation(db.session, user, petition, form.language.data or "", form.title.data or "",
                                 form.summary.data or "", form.body_markdown.data or "",
                                 [code for code, _label in choices])
            except TranslationError as error:
                db.session.rollback()
                field = getattr(form, error.field or "", None)
                if field is not None:
                    field.errors = [*field.errors, str(error)]
                status = 400
            else:
                db.session.commit()
                flash("Translation saved.")
                return redirect(url_for("translations.translations", petition_id=petition.id), 303)
        else:
            status = 400
    switch = RecentSignersForm(formdata=None, show_recent_signers=petition.show_recent_signers)
    return render_template(
        "organize/translations.html", petition=petition, campaign=petition.campaign, form=form,
        editing=editing, translations=translations_of(db.session, petition.id), switch=switch,
        delete_form=LanguageForm(formdata=None), referrals=referral_counts(db.session, petition.id),
        native_names=NATIVE_NAMES), status


@bp.post("/petitions/<int:petition_id>/translations/delete")
def translation_delete(petition_id: int) -> ResponseReturnValue:
    user = me()
    petition = organizing.petition_for(db.session, user, petition_id)
    form = LanguageForm()
    if form.validate_on_submit() and delete_translation(db.session, user, petition, form.language.data or ""):
        db.session.commit()
        flash("Translation deleted.")
    return redirect(url_for("translations.translations", petition_id=petition.id), 303)


@bp.post("/petitions/<int:petition_id>/recent-signers")
def recent_signers_switch(petition_id: int) -> ResponseReturnValue:
    user = me()
    petition = organizing.petition_for(db.session, user, petition_id)
    form = RecentSignersForm()
    if form.validate_on_submit():
        set_recent_signers(db.session, user, petition, bool(form.show_recent_signers.data))
        db.session.commit()
        flash("Saved.")
    return redirect(url_for("translations.translations", petition_id=petition.id), 303)
