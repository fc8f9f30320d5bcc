"""Forms: fields and validators only; uniqueness and state are the services' job."""

from __future__ import annotations

import functools
import hashlib
import time
from typing import Any

from babel import support
from flask import current_app
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes, want_bytes
from wtforms import BooleanField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.i18n import messages_path
from wtforms.validators import DataRequired, Length, ValidationError

from campaign.services.countries import country_choices, localized_country_choices

_FORM_SALT = "campaign.sign-form"
_STARTED_SALT = "campaign.sign-form-started"
STARTED_FIELD = "form_started"
# Printable text in any script is welcome; control characters are not.
_CONTROL = {chr(c) for c in range(32)} - {"\n", "\r", "\t"} | {"\x7f"}


def no_control_characters(form: Any, field: Any) -> None:
    value = field.data or ""
    single_line = not isinstance(field, TextAreaField)
    if any(ch in _CONTROL for ch in value) or (single_line and any(ch in "\r\n\t" for ch in value)):
        raise ValidationError(_l("Remove the control characters from this field."))


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _source_code(value: Any) -> Any:
    # A hidden field the signer cannot correct: clean it instead of refusing it. PostgreSQL
    # cannot store NUL, and Signature.source holds 64 characters.
    if not isinstance(value, str):
        return value
    return "".join(ch for ch in value if ch >= " " and ch != "\x7f")[:64].strip()


def _referral_code(value: Any) -> Any:
    from campaign.services.supporters import clean_referral_code

    return clean_referral_code(value) if isinstance(value, str) else value


@functools.lru_cache(maxsize=64)
def _wtforms_translations(locale: str) -> Any:
    return support.Translations.load(messages_path(), [locale], domain="wtforms")


class SignForm(FlaskForm):
    """The public sign form. Session CSRF is off: its signed form token stands in for it."""

    class Meta:
        csrf = False

        def get_translations(self, form: Any) -> Any:
            # Flask-WTF reads WTForms' catalog from disk on every request; the sign path
            # keeps one per language instead (issue 9).
            return _wtforms_translations(str(get_locale() or "en"))

    name = StringField(_l("Full name"), filters=[_strip], validators=[
        DataRequired(_l("Enter your full name.")), Length(max=200, message=_l("Use at most 200 characters.")),
        no_control_characters])
    email = StringField(_l("Email"), filters=[_strip], validators=[
        DataRequired(_l("Enter your email address.")),
        Length(max=254, message=_l("That email address is too long."))])
    country = SelectField(_l("Country"), validators=[DataRequired(_l("Choose your country."))],
                          validate_choice=False)
    postcode = StringField(_l("Postcode"), filters=[_strip], validators=[
        Length(max=20, message=_l("Use at most 20 characters.")), no_control_characters])
    comment = TextAreaField(_l("Comment"), filters=[_strip], validators=[
        Length(max=1000, message=_l("Use at most 1,000 characters.")), no_control_characters])
    consent_updates = BooleanField(_l("Keep me updated about this campaign by email"))
    # Issue 4: what officials may learn. The first is ticked by default only on petitions not
    # marked sensitive (the view sets it); the others are never ticked in advance.
    consent_name_to_targets = BooleanField(_l("Add my name to the letter to the leaders"))
    consent_reply_to = BooleanField(_l("Let the leader reply to me by email"))
    consent_public_name = BooleanField(_l("Show my first name in the list of recent signers"))
    form_token = HiddenField()
    source = HiddenField(filters=[_strip, _source_code])
    # Issue 5: the referral code of the share link that brought this signer (junk is dropped).
    ref = HiddenField(filters=[_referral_code])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Country names in the page's language (issue 5); the codes are the same in every one.
        language = str(get_locale() or "en").split("_")[0]
        self.country.choices = [("", _l("Choose your country")), *localized_country_choices(language)]

    def validate_country(self, field: Any) -> None:
        if field.data not in dict(country_choices()):
            raise ValidationError(_l("Choose a country from the list."))


class _WindowSigner(TimestampSigner):
    """A timestamp signer whose issue time is rounded down to a window (FORM_TOKEN_BUCKET).

    Every page rendered within one window carries the same token, so the petition page's body,
    and its ETag, stay stable and a shared cache can serve it. The token is still signed and
    still names the petition; its age is counted from the start of its window.
    """

    def __init__(self, *args: Any, window: int = 1, issued_at: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.window = max(1, int(window))
        self.issued_at = issued_at

    def sign(self, value: str | bytes) -> bytes:
        # TimestampSigner.sign with the window's start as the issue time; checking an age
        # (unsign) still uses the real clock.
        value = want_bytes(value)
        now = int(time.time())
        issued = self.issued_at if self.issued_at is not None else now - now % self.window
        timestamp = base64_encode(int_to_bytes(issued))
        sep = want_bytes(self.sep)
        value = value + sep + timestamp
        return value + sep + self.get_signature(value)


def _serializer(issued_at: int | None = None) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        current_app.config["SECRET_KEY"], salt=_FORM_SALT, signer=_WindowSigner,
        signer_kwargs={"digest_method": hashlib.sha256, "issued_at": issued_at,
                       "window": int(current_app.config.get("FORM_TOKEN_BUCKET") or 1)})


def form_token_window() -> int:
    """The start of the current token window (Unix seconds): what the token's issue time says."""
    window = max(1, int(current_app.config.get("FORM_TOKEN_BUCKET") or 1))
    now = int(time.time())
    return now - now % window


def make_form_token(petition_id: int, window_start: int | None = None) -> str:
    """A stateless token naming the petition and the window in which the form was rendered.

    window_start (from form_token_window()) pins the window, so a caller that keys a cache on
    it gets the token of that very window even if the clock crossed into the next one.
    """
    return _serializer(window_start).dumps(petition_id)


def check_form_token(token: str, petition_id: int) -> str | None:
    """None if the token is good for this petition, else why not: 'expired' or 'invalid'."""
    try:
        value = _serializer().loads(token or "", max_age=int(current_app.config["FORM_TOKEN_MAX_AGE"]))
    except SignatureExpired:
        return "expired"
    except BadSignature:
        return "invalid"
    return None if value == petition_id else "invalid"


def _started_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_STARTED_SALT,
                                  signer_kwargs={"digest_method": hashlib.sha256})


def make_started_token(slug: str) -> str:
    """A token saying "the sign form of this petition was opened now", to the second."""
    return _started_serializer().dumps(slug)


def started_at(token: str, slug: str) -> int | None:
    """When the form was opened (Unix seconds), if the token is genuine, for this petition and
    not older than FORM_TOKEN_MAX_AGE; else None (no JavaScript, or tampered: the form token's
    window is all we know)."""
    if not token or len(token) > 500:
        return None
    try:
        value, stamp = _started_serializer().loads(
            token, max_age=int(current_app.config["FORM_TOKEN_MAX_AGE"]), return_timestamp=True)
    except BadSignature:  # SignatureExpired included
        return None
    return int(stamp.timestamp()) if value == slug else None
