"""Message builders: one per kind, plain text and HTML with the same words."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.headerregistry import Address
from email.utils import parseaddr
from typing import Any

from flask import render_template
from flask_babel import force_locale
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
    # Short enough that the header never folds inside the quoted name.
    return " ".join(cleaned.split())[:60]


class _Message(Message):
    """Flask-Mail's message with address headers written by the email package.

    Flask-Mail encodes display names itself and the SMTP policy's refolding then drops their
    quotes, so a name like "a, b: c" could become a group or a broken list. The sender's name is
    written here, short and quoted; recipients get a bare address, since a signer's name in a
    header is both a privacy cost and, once folded, a parsing hazard.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sender = kwargs.get("sender")
        if isinstance(sender, tuple):
            # Flask-Mail turns a tuple into "name <address>" unquoted, and a name holding "<",
            # "," or ":" then parses as another address (issue 6's R23 fuzz: "Org <x>" failed
            # every email of its campaign). Its own header and envelope code take the tuple.
            self.sender = sender

    def _message(self) -> Any:
        msg = super()._message()
        del msg["From"]
        msg["From"] = str(_address(self.sender))
        del msg["To"]
        msg["To"] = ", ".join(_address(r).addr_spec for r in self.recipients)
        if self.reply_to:
            del msg["Reply-To"]
            msg["Reply-To"] = _address(self.reply_to).addr_spec
        return msg


def _address(value: Any) -> Address:
    name, address = value if isinstance(value, tuple) else parseaddr(value)
    return Address(display_name=name, addr_spec=address)


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
    # (filename, content type, data): e.g. the CSV of a delivery to an official.
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)
    # A Message-ID that stays the same across retries of one outbox row, so a copy sent twice
    # (a worker killed between the SMTP reply and its commit) can be recognised as one.
    message_id: str | None = None
    # The language of the templates (issue 5): a supporter's email speaks the language they
    # signed in; None keeps the app's default.
    locale: str | None = None


def build_message(draft: Draft, default_sender: str) -> Message:
    """Render templates/mail/<kind>.txt and .html into a Flask-Mail message."""
    with force_locale(draft.locale or "en"):
        text = render_template(f"mail/{draft.kind}.txt", **draft.context)
        html = render_template(f"mail/{draft.kind}.html", **draft.context)
    _, sender_address = parseaddr(default_sender)
    # Tuples, not strings: Flask-Mail re-parses string addresses, and a display name with
    # quotes, commas or colons would come out as a different (or broken) address list.
    sender = (display_name(draft.sender_name), header_safe(sender_address))
    recipient = (display_name(draft.to_name), header_safe(draft.to_address))
    headers = {header_safe(k): header_safe(v) for k, v in draft.headers.items()}
    message = _Message(
        subject=header_safe(draft.subject),
        sender=sender,
        recipients=[recipient],
        body=text,
        html=html,
        extra_headers=headers or None,
        reply_to=header_safe(draft.reply_to) if draft.reply_to else None,
    )
    for filename, content_type, data in draft.attachments:
        message.attach(filename=header_safe(filename), content_type=content_type, data=data,
                       disposition="attachment")
    if draft.message_id:
        message.msgId = header_safe(draft.message_id)
    return message
