"""Forms: fields and validators only; uniqueness and state are the services' job."""

from __future__ import annotations

import hashlib
from typing import Any

from flask import current_app
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from wtforms import BooleanField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from campaign.services.countries import country_choices

_FORM_SALT = "campaign.sign-form"
# Printable text in any script is welcome; control characters are not.
_CONTROL = {chr(c) for c in range(32)} - {"\n", "\r", "\t"} | {"\x7f"}


def no_control_characters(form: Any, field: Any) -> None:
    value = field.data or ""
    single_line = not isinstance(field, TextAreaField)
    if any(ch in _CONTROL for ch in value) or (single_line and any(ch in "\r\n\t" for ch in value)):
        raise ValidationError("Remove the control characters from this field.")


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class SignForm(FlaskForm):
    """The public sign form. Session CSRF is off: its signed form token stands in for it."""

    class Meta:
        csrf = False

    name = StringField("Full name", filters=[_strip], validators=[
        DataRequired("Enter your full name."), Length(max=200, message="Use at most 200 characters."),
        no_control_characters])
    email = StringField("Email", filters=[_strip], validators=[
        DataRequired("Enter your email address."),
        Length(max=254, message="That email address is too long.")])
    country = SelectField("Country", validators=[DataRequired("Choose your country.")],
                          validate_choice=False)
    postcode = StringField("Postcode", filters=[_strip], validators=[
        Length(max=20, message="Use at most 20 characters."), no_control_characters])
    comment = TextAreaField("Comment", filters=[_strip], validators=[
        Length(max=1000, message="Use at most 1,000 characters."), no_control_characters])
    consent_updates = BooleanField("Keep me updated about this campaign by email")
    form_token = HiddenField()
    source = HiddenField(filters=[_strip])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.country.choices = [("", "Choose your country"), *country_choices()]

    def validate_country(self, field: Any) -> None:
        if field.data not in dict(country_choices()):
            raise ValidationError("Choose a country from the list.")


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_FORM_SALT,
                                  signer_kwargs={"digest_method": hashlib.sha256})


def make_form_token(petition_id: int) -> str:
    """A stateless token naming the petition and when the form was rendered."""
    return _serializer().dumps(petition_id)


def check_form_token(token: str, petition_id: int) -> str | None:
    """None if the token is good for this petition, else why not: 'expired' or 'invalid'."""
    try:
        value = _serializer().loads(token or "", max_age=int(current_app.config["FORM_TOKEN_MAX_AGE"]))
    except SignatureExpired:
        return "expired"
    except BadSignature:
        return "invalid"
    return None if value == petition_id else "invalid"
