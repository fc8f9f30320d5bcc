"""Message builders: one per kind, plain text and HTML with the same words."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import formataddr, parseaddr

from flask import render_template
from flask_mail import Message


class HeaderInjection(ValueError):
    """A header value carries a line break: refused rather than sent."""


_BREAKS = ("\r", "\n", "\0", "\u2028", "\u2029", "\x0b", "\x0c", "\x85")


def header_safe(value: str) -> str:
    """Return value if it cannot add or alter a header line; raise otherwise.

    Flask-Mail checks subject, sender and recipients, but not extra headers or display names.
    """
    if any(mark in value for mark in _BREAKS):
        raise HeaderInjection("line break in a header value")
    return value


def display_name(value: str) -> str:
    """A user-written name made fit for a From/To display name: breaks become spaces."""
    cleaned = "".join(" " if ch in _BREAKS or ord(ch) < 32 else ch for ch in value)
    return " ".join(cleaned.split())[:200]


@dataclass
class Draft:
    kind: str
    to_name: str
    to_address: str
    subject: str
    sender_name: str
    context: dict[str, object]
    headers: dict[str, str] = field(default_factory=dict)
    reply_to: str | None = None


def build_message(draft: Draft, default_sender: str) -> Message:
    """Render templates/mail/<kind>.txt and .html into a Flask-Mail message."""
    text = render_template(f"mail/{draft.kind}.txt", **draft.context)
    html = render_template(f"mail/{draft.kind}.html", **draft.context)
    _, sender_address = parseaddr(default_sender)
    sender = formataddr((display_name(draft.sender_name), sender_address))
    recipient = formataddr((display_name(draft.to_name), header_safe(draft.to_address)))
    headers = {header_safe(k): header_safe(v) for k, v in draft.headers.items()}
    return Message(
        subject=header_safe(draft.subject),
        sender=header_safe(sender),
        recipients=[recipient],
        body=text,
        html=html,
        extra_headers=headers or None,
        reply_to=header_safe(draft.reply_to) if draft.reply_to else None,
    )
