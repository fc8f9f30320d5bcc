"""Organizer pages for integrations (/organize/...): a campaign's API tokens (created, shown once,
revoked) and webhooks (registered, switched on and off, deleted, with their delivery log).

Owners and admins only: a token can read every signer of the campaign. The organizer
blueprint's guards apply (signed in, second factor, 404 for another campaign's objects). A new
secret is rendered in the answer to the POST that made it, never flashed: flashes live in the
session cookie.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from wtforms import SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from campaign.extensions import db
from campaign.models import Campaign
from campaign.services import api_tokens, organizing, webhooks
from campaign.services.organizing import NotFound, OrganizingError
from campaign.web import organize
from campaign.web.auth import me
from campaign.web.auth_forms import ButtonForm

bp = Blueprint("integrations", __name__, url_prefix="/organize")
bp.before_request(organize._signed_in_organizers_only)
bp.register_error_handler(NotFound, organize._not_found)
bp.register_error_handler(organizing.Forbidden, organize._forbidden)
bp.context_processor(organize._layout_context)

EXPIRY_CHOICES = {"90": "In 90 days", "30": "In 30 days", "365": "In a year", "0": "Never"}
EVENT_LABELS = {
    "signature.confirmed": "A signature is confirmed (ids and the count only, unless you add fields below)",
    "petition.milestone": "A petition reaches a milestone or its goal",
    "delivery.sent": "A delivery to a target was sent",
}
FIELD_LABELS = {
    "name": "Signer's name",
    "email": "Signer's email (only of signers who agreed to hear from you)",
    "country": "Signer's country",
}


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class TokenForm(FlaskForm):
    name = StringField("Token name", validators=[DataRequired("Name the token."), Length(max=100)])
    scopes = MultiCheckboxField("Scopes", choices={
        "read": "read: petitions, signatures with names and emails, deliveries, mailings",
        "write": "write: create, edit and delete draft petitions"}, default=["read"])
    expires = SelectField("Expires", choices=EXPIRY_CHOICES, default="90")


class WebhookForm(FlaskForm):
    url = StringField("URL", validators=[DataRequired("Enter the address to call."), Length(max=2000)])
    events = MultiCheckboxField("Events", choices=EVENT_LABELS,
                                default=["signature.confirmed"])
    signer_fields = MultiCheckboxField("Add to signature.confirmed (recorded in the audit log)",
                                       choices=FIELD_LABELS, default=[])


def _campaign(campaign_id: int) -> Campaign:
    return organizing.campaign_for(db.session, me(), campaign_id, owner=True)


def _page(campaign: Campaign, status: int = 200, *, token_form: TokenForm | None = None,
          webhook_form: WebhookForm | None = None, new_secret: dict[str, str] | None = None) -> Response:
    response = make_response(render_template(
        "organize/integrations.html", campaign=campaign,
        tokens=api_tokens.tokens_of(db.session, campaign.id),
        hooks=webhooks.webhooks_of(db.session, campaign.id),
        token_form=token_form or TokenForm(formdata=None),
        webhook_form=webhook_form or WebhookForm(formdata=None),
        new_secret=new_secret, event_labels=EVENT_LABELS), status)
    response.headers["Cache-Control"] = "no-store"
    return response


def _form_error(form: Any, error: OrganizingError) -> None:
    field = getattr(form, error.field or "", None)
    if field is not None:
        field.errors = [*field.errors, str(error)]
    else:
        form.form_errors.append(str(error))


@bp.get("/campaigns/<int:campaign_id>/integrations")
def page(campaign_id: int) -> ResponseReturnValue:
    return _page(_campaign(campaign_id))


@bp.post("/campaigns/<int:campaign_id>/api-tokens")
def token_new(campaign_id: int) -> ResponseReturnValue:
    campaign = _campaign(campaign_id)
    form = TokenForm()
    if form.validate_on_submit():
        try:
            token, secret = api_tokens.create_api_token(
                db.session, me(), campaign, form.name.data or "", list(form.scopes.data or []),
                int(form.expires.data or 0) or None)
        except OrganizingError as error:
            _form_error(form, error)
        else:
            name = token.name
            db.session.commit()
            return _page(campaign, 201, new_secret={"kind": "API token", "name": name, "secret": secret})
    return _page(campaign, 400, token_form=form)


@bp.post("/api-tokens/<int:token_id>/revoke")
def token_revoke(token_id: int) -> ResponseReturnValue:
    token = api_tokens.token_for(db.session, me(), token_id)
    campaign_id = token.campaign_id
    if ButtonForm().validate_on_submit():
        if api_tokens.revoke_api_token(db.session, me(), token):
            flash(f"Token “{token.name}” revoked: it no longer works.")
        db.session.commit()
    return redirect(url_for("integrations.page", campaign_id=campaign_id), 303)


@bp.post("/campaigns/<int:campaign_id>/webhooks")
def webhook_new(campaign_id: int) -> ResponseReturnValue:
    campaign = _campaign(campaign_id)
    form = WebhookForm()
    if form.validate_on_submit():
        try:
            hook, secret = webhooks.register_webhook(db.session, me(), campaign, form.url.data or "",
                                                     form.events.data or [], form.signer_fields.data or [])
        except OrganizingError as error:
            db.session.rollback()
            _form_error(form, error)
        else:
            url = hook.url
            db.session.commit()
            return _page(campaign, 201, new_secret={"kind": "webhook signing secret", "name": url,
                                                    "secret": secret})
    return _page(campaign, 400, webhook_form=form)


@bp.get("/webhooks/<int:webhook_id>")
def webhook(webhook_id: int) -> ResponseReturnValue:
    hook = webhooks.webhook_for(db.session, me(), webhook_id)
    campaign = db.session.get(Campaign, hook.campaign_id)
    return render_template("organize/webhook.html", hook=hook, campaign=campaign,
                           calls=webhooks.calls_of(db.session, hook.id), event_labels=EVENT_LABELS)


@bp.post("/webhooks/<int:webhook_id>/enable")
def webhook_enable(webhook_id: int) -> ResponseReturnValue:
    return _switch(webhook_id, True)


@bp.post("/webhooks/<int:webhook_id>/disable")
def webhook_disable(webhook_id: int) -> ResponseReturnValue:
    return _switch(webhook_id, False)


def _switch(webhook_id: int, active: bool) -> ResponseReturnValue:
    hook = webhooks.webhook_for(db.session, me(), webhook_id)
    if ButtonForm().validate_on_submit():
        webhooks.set_active(db.session, me(), hook, active)
        db.session.commit()
        flash("Webhook switched on." if active else "Webhook switched off.")
    return redirect(url_for("integrations.webhook", webhook_id=webhook_id), 303)


@bp.post("/webhooks/<int:webhook_id>/delete")
def webhook_delete(webhook_id: int) -> ResponseReturnValue:
    hook = webhooks.webhook_for(db.session, me(), webhook_id)
    campaign_id = hook.campaign_id
    if ButtonForm().validate_on_submit():
        webhooks.delete_webhook(db.session, me(), hook)
        db.session.commit()
        flash("Webhook deleted.")
    return redirect(url_for("integrations.page", campaign_id=campaign_id), 303)
