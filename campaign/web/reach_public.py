"""The public side of organizer reach: one-click unsubscribe (RFC 8058) from supporter updates and
the bounce and complaint webhook. Both are exempt from session CSRF: the unsubscribe link carries
its own signed token, the webhook an HMAC of its body (both on the reviewed exemption list)."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, jsonify, make_response, render_template, request
from flask.typing import ResponseReturnValue

from campaign.extensions import db
from campaign.services import bounces, updates
from campaign.services.organizing import NotFound

bp = Blueprint("reach_public", __name__)


def _private(response: ResponseReturnValue) -> ResponseReturnValue:
    response = make_response(response)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    return response


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
def unsubscribe(token: str) -> ResponseReturnValue:
    """GET shows a button and changes nothing (mail scanners open links). POST unsubscribes: the
    button, or a mail program's one-click POST (List-Unsubscribe=One-Click) without cookies."""
    try:
        link = updates.read_unsubscribe_token(db.session, token)
    except NotFound:
        return _private(
            (render_template("public/unsubscribe.html", state="bad", campaign=None, token=token), 404)
        )
    if request.method == "POST":
        updates.unsubscribe(db.session, link)
        db.session.commit()
        return _private(
            render_template("public/unsubscribe.html", state="done", campaign=link.campaign, token=token)
        )
    state = "already" if updates.is_unsubscribed(db.session, link) else "ask"
    return _private(
        render_template("public/unsubscribe.html", state=state, campaign=link.campaign, token=token)
    )


def problem(status: int, title: str, detail: str) -> Response:
    """RFC 9457 problem details, like the API's errors."""
    response = jsonify({"type": "about:blank", "title": title, "status": status, "detail": detail})
    response.status_code = status
    response.content_type = "application/problem+json"
    return response


@bp.post("/webhooks/bounces")
def bounce_webhook() -> ResponseReturnValue:
    """Bounces and complaints from the mail provider, signed with BOUNCE_WEBHOOK_SECRET.
    A bad or missing signature is 401 and changes nothing."""
    secret = current_app.config["BOUNCE_WEBHOOK_SECRET"]
    if not secret:
        abort(404)
    body = request.get_data(cache=False)
    try:
        bounces.verify_webhook(
            secret,
            int(current_app.config["BOUNCE_WEBHOOK_TOLERANCE"]),
            request.headers.get(bounces.TIMESTAMP_HEADER),
            request.headers.get(bounces.SIGNATURE_HEADER),
            body,
        )
        events = bounces.parse_events(body)
    except bounces.BadWebhook as error:
        title = "Unauthorized" if error.status == 401 else "Bad request"
        return problem(error.status, title, str(error))
    counts = bounces.apply_events(db.session, events)
    db.session.commit()
    return {"accepted": counts}
