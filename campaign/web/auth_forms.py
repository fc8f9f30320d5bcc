"""Forms of the account pages: fields and validators only, each with session CSRF."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from campaign.web.forms import no_control_characters


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


class ButtonForm(FlaskForm):
    """A form with no fields: a button whose POST carries the CSRF token."""


class LoginForm(FlaskForm):
    email = EmailField("Email", filters=[_strip], validators=[
        DataRequired("Enter your email address."), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired("Enter your password."), Length(max=256)])


class CodeForm(FlaskForm):
    code = StringField("Code from your authenticator app", filters=[_strip], validators=[
        DataRequired("Enter the 6-digit code."), Length(max=12)])


class SignupForm(FlaskForm):
    name = StringField("Your name", filters=[_strip], validators=[
        DataRequired("Enter your name."), Length(max=200), no_control_characters])
    email = EmailField("Email", filters=[_strip], validators=[
        DataRequired("Enter your email address."), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired("Choose a password."), Length(max=256)])
    password_again = PasswordField("Password again", validators=[
        DataRequired("Type the password again."), EqualTo("password", "The two passwords differ.")])


class ForgotForm(FlaskForm):
    email = EmailField("Email", filters=[_strip], validators=[
        DataRequired("Enter your email address."), Length(max=320)])


class NewPasswordForm(FlaskForm):
    password = PasswordField("New password", validators=[DataRequired("Choose a password."), Length(max=256)])
    password_again = PasswordField("New password again", validators=[
        DataRequired("Type the password again."), EqualTo("password", "The two passwords differ.")])


class ChangePasswordForm(NewPasswordForm):
    current = PasswordField("Current password", validators=[DataRequired("Enter your current password.")])


class DisableTotpForm(FlaskForm):
    password = PasswordField("Your password", validators=[DataRequired("Enter your password.")])


class InvitedSignupForm(FlaskForm):
    name = StringField("Your name", filters=[_strip], validators=[
        DataRequired("Enter your name."), Length(max=200), no_control_characters])
    password = PasswordField("Choose a password", validators=[DataRequired("Choose a password."),
                                                              Length(max=256)])
    password_again = PasswordField("Password again", validators=[
        DataRequired("Type the password again."), EqualTo("password", "The two passwords differ.")])


class InvitedLoginForm(FlaskForm):
    password = PasswordField("Your password", validators=[DataRequired("Enter your password."),
                                                           Length(max=256)])
