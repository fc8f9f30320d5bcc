"""The dev mailbox: read what the local SMTP sink received. Registered only in development."""

from __future__ import annotations

import mailbox
import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from flask import Blueprint, abort, current_app, make_response, render_template
from markupsafe import Markup, escape

bp = Blueprint("dev", __name__, url_prefix="/dev")

_URL = re.compile(r"https?://[^\s<>\"]+")


def _box() -> mailbox.Maildir:
    return mailbox.Maildir(current_app.config["DEV_MAILBOX_DIR"], create=True)


def _load(key: str) -> EmailMessage:
    box = _box()
    try:
        raw = box.get_bytes(key)
    except KeyError:
        abort(404)
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _linkify(text: str) -> Markup:
    escaped = str(escape(text))
    return Markup(_URL.sub(lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>', escaped))  # noqa: S704 - input escaped above


@bp.get("/mailbox")
def mailbox_index() -> str:
    box = _box()
    messages: list[dict[str, Any]] = []
    for key in box.iterkeys():
        message = message_from_bytes(box.get_bytes(key), policy=policy.default)
        messages.append({"key": key, "to": message["To"], "subject": message["Subject"],
                         "date": message["Date"], "when": box.get_message(key).get_date()})
    messages.sort(key=lambda m: m["when"], reverse=True)
    return render_template("dev/mailbox.html", messages=messages[:200])


@bp.get("/mailbox/<key>")
def mailbox_message(key: str) -> str:
    message = _load(key)
    text_part = message.get_body(("plain",))
    text = text_part.get_content() if text_part is not None else ""
    return render_template("dev/message.html", key=key, message=message, body=_linkify(text),
                           has_html=message.get_body(("html",)) is not None)


@bp.get("/mailbox/<key>/html")
def mailbox_html(key: str) -> Any:
    part = _load(key).get_body(("html",))
    if part is None:
        abort(404)
    response = make_response(part.get_content())
    # Shown as the sender made it, but sandboxed: no script, no requests to anywhere.
    response.headers["Content-Security-Policy"] = (
        "sandbox allow-top-navigation-by-user-activation; default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:")
    return response
