"""Forms of the organizer pages: fields and validators only, each with session CSRF.

Only declared fields are read, so extra fields in a request (id, campaign_id, status,
is_admin, signature_count, ...) are ignored: the services take explicit dataclasses.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pycountry
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, DateField, EmailField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from campaign.models import MailingPolicy
from campaign.web.forms import no_control_characters


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


@cache
def language_choices() -> list[tuple[str, str]]:
    languages = [(lang.alpha_2, lang.name) for lang in pycountry.languages if hasattr(lang, "alpha_2")]
    return sorted(languages, key=lambda item: item[1])


@cache
def _language_codes() -> frozenset[str]:
    return frozenset(code for code, _name in language_choices())


MAILING_CHOICES = {
    MailingPolicy.NONE.value: "None: collect signatures only",
    MailingPolicy.LETTERS.value: "Letters: each signer's letter goes to their own target",
    MailingPolicy.DELIVERIES.value: "Deliveries: the list and count go to the targets in batches",
    MailingPolicy.BOTH.value: "Both letters and deliveries",
}


class CampaignForm(FlaskForm):
    name = StringField("Campaign name", filters=[_strip], validators=[
        DataRequired("Give the campaign a name."), Length(max=200), no_control_characters])
    slug = StringField("Short name for links", filters=[_lower], validators=[Optional(), Length(max=80)])
    organization = StringField("Organization", filters=[_strip], validators=[
        DataRequired("Name the organization."), Length(max=200), no_control_characters])
    sender_name = StringField("Sender name on emails", filters=[_strip], validators=[
        Optional(), Length(max=200), no_control_characters])
    description = TextAreaField("Description", filters=[_strip], validators=[
        Length(max=5000), no_control_characters])


class PetitionForm(FlaskForm):
    title = StringField("Title: the ask", filters=[_strip], validators=[
        DataRequired("Give the petition a title."), Length(max=300), no_control_characters])
    slug = StringField("Address", filters=[_lower], validators=[Optional(), Length(max=120)])
    summary = TextAreaField("Summary", filters=[_strip], validators=[Length(max=1000), no_control_characters])
    body_markdown = TextAreaField("Text (Markdown)", validators=[Length(max=50_000), no_control_characters])
    letter = TextAreaField("Letter to the targets", validators=[Length(max=20_000), no_control_characters])
    goal = IntegerField("Goal", default=1000, validators=[
        DataRequired("Set a goal."), NumberRange(1, 100_000_000, "Use a number from 1 to 100,000,000.")])
    # Checked against a set below: WTForms' own check walks all ~180 choices on every save.
    language = SelectField("Language", default="en", validate_choice=False)
    closes_on = DateField("Closing date", validators=[Optional()])
    mailing_policy = SelectField("Mailing policy", choices=MAILING_CHOICES, default=MailingPolicy.NONE.value)
    is_sensitive = BooleanField("Sensitive: signers could be in danger if named", default=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.language.choices = language_choices()

    def validate_language(self, field: Any) -> None:
        if field.data not in _language_codes():
            raise ValidationError("Choose a language from the list.")


class PreviewForm(FlaskForm):
    body_markdown = TextAreaField(validators=[Length(max=50_000)])


class TargetForm(FlaskForm):
    name = StringField("Name", filters=[_strip], validators=[Length(max=400)])
    title = StringField("Title", filters=[_strip], validators=[Length(max=600)])
    country = StringField("Country code", filters=[_strip], validators=[Length(max=8)])
    email = EmailField("Email", filters=[_strip], validators=[Length(max=320)])
    group = StringField("Group", filters=[_strip], validators=[Length(max=160)])


class CsvImportForm(FlaskForm):
    file = FileField("CSV file", validators=[FileRequired("Choose a CSV file.")])


class InviteForm(FlaskForm):
    email = EmailField("Email address", filters=[_strip], validators=[
        DataRequired("Enter an email address."), Length(max=320)])


class OfflineForm(FlaskForm):
    count = IntegerField("Paper signatures", validators=[
        DataRequired("Enter how many."), NumberRange(1, 10_000_000, "Use a number from 1 to 10,000,000.")])
    note = StringField("Note", filters=[_strip], validators=[
        DataRequired("Say where they come from (e.g. 'stall at Pride, 3 June')."), Length(max=1000),
        no_control_characters])


class ReasonForm(FlaskForm):
    reason = TextAreaField("Reason", filters=[_strip], validators=[
        DataRequired("Say why."), Length(max=1000), no_control_characters])


class DuplicateForm(FlaskForm):
    campaign = SelectField("Copy into the campaign", coerce=int)
    slug = StringField("Address of the copy", filters=[_lower], validators=[Optional(), Length(max=120)])


class GroupForm(FlaskForm):
    group = SelectField("Target list", validate_choice=False)


class AddTargetForm(FlaskForm):
    target = SelectField("Target", coerce=int, validate_choice=False)

