"""Message builders: one per kind, plain text and HTML with the same words."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from email.header import Header
from email.headerregistry import Address
from email.policy import SMTP, compat32
from email.utils import parseaddr
from typing import Any

from flask import render_template
from flask_babel import force_locale
from flask_mail import Message


class HeaderInjection(ValueError):
    """A header value carries a line break: refused rather than sent."""


# Everything str.splitlines() breaks on (the email package uses it), and NUL.
_BREAKS = ("\r", "\n", "\0", "\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85")


def header_safe(value: str) -> str:
    """Return value if it cannot add or alter a header line; raise otherwise.

    Flask-Mail checks subject, sender and recipients, but not extra headers or display names.
    """
    if any(mark in value for mark in _BREAKS):
        raise HeaderInjection("line break in a header value")
    return value


def no_encoded_words(value: str) -> str:
    """Text in which nothing looks like an RFC 2047 encoded-word ("=?utf-8?q?...?=").

    The email package decodes such lookalikes when it parses a header, and again when it refolds
    one: "=?utf-8?q?=0D=0ABcc:_x?=" in a name or subject would come back as a line break and a
    new header line (or a ValueError for an address). A space between "=" and "?" keeps the words.
    """
    while "=?" in value or "?=" in value:
        value = value.replace("=?", "= ?").replace("?=", "? =")
    return value


# Address specials (RFC 5322) and the quoting backslash: a display name holding one must be
# quoted, and refolding has been seen to lose the quotes; dropping them keeps names plain atoms.
_SPECIALS = frozenset('()<>[]:;@\\,."')


def display_name(value: str) -> str:
    """A user-written name made fit for a From/To display name.

    Line breaks and control characters become spaces, address specials and invisible format
    characters (bidi overrides that could make "<" appear where it is not) are dropped, encoded-word
    lookalikes are broken up, and the result is short enough that the header never folds inside it.
    """
    cleaned = "".join(
        " " if ch in _BREAKS or ord(ch) < 32 or unicodedata.category(ch) in {"Cc", "Zl", "Zp"}
        else "" if ch in _SPECIALS or unicodedata.category(ch) in {"Cf", "Cs", "Co", "Cn"}
        else ch
        for ch in value)
    name = no_encoded_words(" ".join(cleaned.split())[:60])
    # A non-ASCII name is written as one encoded-word; split over two lines it would not read
    # back the same, so it is cut to what fits on one line (40 UTF-8 bytes, base64 under 72).
    while len(name.encode()) > 40 and not name.isascii():
        name = name[:-1]
    return name.strip()


def subject_text(value: str) -> str:
    """A subject as it is meant to be read back: refused if it carries a line break, encoded-word
    lookalikes broken up, other control characters and runs of white space made one space (the
    email package's folding would change them anyway)."""
    cleaned = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in header_safe(value))
    return no_encoded_words(" ".join(cleaned.split()))


def address_safe(value: str) -> str:
    """An address fit for an address header: no line break and no encoded-word lookalike (a
    local part such as "=?utf-8?q?=0A?=" is valid syntax, but the email package decodes it)."""
    if "=?" in header_safe(value) or "?=" in value:
        raise HeaderInjection("encoded-word in an address")
    return value


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
        if self.subject:
            del msg["Subject"]
            # Stored as written (compat32): the SMTP policy would parse it and refold it, and
            # its folder mixes plain words and encoded-words in ways that do not read back the
            # same. Either one short ASCII line, or encoded-words only, each line under 78.
            msg.policy = compat32
            if self.subject.isascii() and len(self.subject) <= 68:
                msg["Subject"] = self.subject
            else:
                msg["Subject"] = Header(self.subject, "utf-8", header_name="Subject").encode()
            msg.policy = SMTP
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
    sender = (display_name(draft.sender_name), address_safe(sender_address))
    recipient = (display_name(draft.to_name), address_safe(draft.to_address))
    headers = {header_safe(k): header_safe(v) for k, v in draft.headers.items()}
    message = _Message(
        subject=subject_text(draft.subject),
        sender=sender,
        recipients=[recipient],
        body=text,
        html=html,
        extra_headers=headers or None,
        reply_to=address_safe(draft.reply_to) if draft.reply_to else None,
    )
    for filename, content_type, data in draft.attachments:
        message.attach(filename=header_safe(filename), content_type=content_type, data=data,
                       disposition="attachment")
    if draft.message_id:
        message.msgId = header_safe(draft.message_id)
    return message
