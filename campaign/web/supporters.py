"""Manage my data (issue 5): from a link in any supporter email, see what the platform holds
about a mailbox, download it as JSON, withdraw consent or delete signatures; and the
"send me a link" form, which answers the same whether or not an address has signed.

Every page here carries a token in its URL or personal data in its body: no-store, no referrer.
POSTs carry Flask-WTF's session CSRF token.
"""

from __future__ import annotations

import json
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response
from wtforms import BooleanField, HiddenField, StringField
from wtforms.validators import DataRequired, Length

from campaign.extensions import db
from campaign.services.emails import InvalidEmail, parse_email
from campaign.services.supporters import (
    CONSENTS,
    MyDataTokenError,
    delete_my_signature,
    export_my_data,
    index_for_token,
    request_my_data_link,
    signatures_of,
    withdraw_consents,
)

bp = Blueprint("supporters", __name__)


class LinkForm(FlaskForm):
    email = StringField(_l("Email"), filters=[lambda v: v.strip() if isinstance(v, str) else v],
                        validators=[DataRequired(_l("Enter your email address.")),
                                    Length(max=254, message=_l("That email address is too long."))])


class ConsentForm(FlaskForm):
    signature = HiddenField()
    consent_updates = BooleanField(_l("Keep me updated about this campaign by email"))
    consent_name_to_targets = BooleanField(_l("My name on the letter to the leaders"))
    consent_public_name = BooleanField(_l("My first name in the list of recent signers"))
    consent_reply_to = BooleanField(_l("Let the leader reply to me by email"))


class DeleteForm(FlaskForm):
    signature = HiddenField()


def _private(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _index(token: str) -> str:
    try:
        return index_for_token(token)
    except MyDataTokenError as error:
        status = 410 if error.reason == "expired" else 404
        abort(_private(make_response(render_template("public/bad_link.html", reason=error.reason,
                                                     my_data=True), status)))


def _signature_id(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 19 else None


@bp.route("/my-data", methods=["GET", "POST"])
def request_link() -> Response:
    form = LinkForm()
    if form.validate_on_submit():
        try:
            email = parse_email(form.email.data or "",
                                check_deliverability=current_app.config["EMAIL_CHECK_DELIVERABILITY"])
        except InvalidEmail as error:
            form.email.errors = [str(error)]
        else:
            request_my_data_link(db.session, email)
            db.session.commit()
            # The same answer whether or not the address has signed, or was capped.
            return _private(redirect(url_for("supporters.link_sent"), 303))
    status = 400 if form.errors else 200
    return _private(make_response(render_template("public/my_data_request.html", form=form), status))


@bp.get("/my-data/sent")
def link_sent() -> Response:
    return _private(make_response(render_template("public/my_data_sent.html")))


@bp.get("/my-data/<token>")
def my_data(token: str) -> Response:
    index = _index(token)
    held = signatures_of(db.session, index)
    forms = {}
    for signature in held:
        form = ConsentForm(formdata=None, signature=str(signature.id), **signature.consents)
        forms[signature.id] = form
    done = request.args.get("done", "")
    return _private(make_response(render_template(
        "public/my_data.html", token=token, signatures=held, consent_forms=forms,
        delete_form=DeleteForm(formdata=None), done=done if done in {"consents", "deleted"} else "")))


@bp.get("/my-data/<token>/export.json")
def export(token: str) -> Response:
    index = _index(token)
    body = json.dumps(export_my_data(db.session, index), ensure_ascii=False, indent=2)
    response = make_response(body)
    response.mimetype = "application/json"
    response.headers["Content-Disposition"] = 'attachment; filename="my-data.json"'
    return _private(response)


@bp.post("/my-data/<token>/consents")
def consents(token: str) -> Response:
    index = _index(token)
    form = ConsentForm()
    signature_id = _signature_id(form.signature.data)
    if not form.validate() or signature_id is None:
        abort(400)
    keep = {name for name in CONSENTS if getattr(form, name).data}
    withdraw_consents(db.session, index, signature_id, keep)
    db.session.commit()
    return _private(redirect(url_for("supporters.my_data", token=token, done="consents"), 303))


@bp.route("/my-data/<token>/delete", methods=["GET", "POST"])
def delete(token: str) -> Any:
    """GET: say exactly what deleting does; POST (from that page): delete."""
    index = _index(token)
    form = DeleteForm()
    chosen = _signature_id(request.values.get("signature"))
    held = [s for s in signatures_of(db.session, index) if chosen is None or s.id == chosen]
    if request.method == "POST":
        if not form.validate():
            abort(400)
        for signature in held:
            delete_my_signature(db.session, index, signature.id)
        db.session.commit()
        return _private(redirect(url_for("supporters.my_data", token=token, done="deleted"), 303))
    if not held:
        return _private(redirect(url_for("supporters.my_data", token=token), 303))
    form.signature.data = str(chosen) if chosen is not None else ""
    return _private(make_response(render_template(
        "public/my_data_delete.html", token=token, signatures=held, form=form)))
