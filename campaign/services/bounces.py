"""Bounces and complaints into the suppression list: a webhook signed with a shared secret
(BOUNCE_WEBHOOK_SECRET) and a reader for mailbox files (mbox or Maildir) of delivery status
notifications (RFC 3464) and abuse feedback reports (RFC 5965).

Only the blind index of an address is kept; the address itself is read, hashed and dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import mailbox
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import Message
from email.utils import getaddresses
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import update

from campaign.models import RecipientStatus, SoftBounce, SuppressionReason, UpdateRecipient
from campaign.models.base import utcnow
from campaign.services.emails import InvalidEmail
from campaign.services.suppression import email_index_of, suppress
from campaign.services.types import DbSession

SIGNATURE_HEADER = "X-Campaign-Signature"
TIMESTAMP_HEADER = "X-Campaign-Timestamp"
MAX_EVENTS = 1000


class BadWebhook(ValueError):
    """The request is not signed by the shared secret (401) or is not the documented JSON (400)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """The signature a sender puts in X-Campaign-Signature: sha256=<hex HMAC of "timestamp.body">."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return "sha256=" + digest


def verify_webhook(
    secret: str,
    tolerance: int,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float | None = None,
) -> None:
    """Raise BadWebhook(401) unless the signature matches and the timestamp is recent."""
    if not timestamp or not signature:
        raise BadWebhook("missing signature", 401)
    try:
        sent = int(timestamp)
    except ValueError:
        raise BadWebhook("bad timestamp", 401) from None
    if abs((now if now is not None else time.time()) - sent) > tolerance:
        raise BadWebhook("timestamp outside the tolerance", 401)
    if not hmac.compare_digest(sign_webhook(secret, timestamp, body), signature.strip()):
        raise BadWebhook("bad signature", 401)


@dataclass
class Event:
    kind: str  # bounce (hard), soft_bounce, complaint
    email: str


def parse_events(body: bytes) -> list[Event]:
    """{"events": [{"type": "bounce" | "complaint" | "soft_bounce", "email": "..."}]} (or one event)."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        raise BadWebhook("the body is not JSON", 400) from None
    items = data.get("events") if isinstance(data, dict) and "events" in data else [data]
    if not isinstance(items, list) or len(items) > MAX_EVENTS:
        raise BadWebhook(f"events must be a list of at most {MAX_EVENTS}", 400)
    events = []
    for item in items:
        if (
            not isinstance(item, dict)
            or item.get("type") not in {"bounce", "soft_bounce", "complaint"}
            or not isinstance(item.get("email"), str)
        ):
            raise BadWebhook("each event needs a type (bounce, soft_bounce, complaint) and an email", 400)
        events.append(Event(item["type"], item["email"]))
    return events


def _soft_bounce(session: DbSession, index: str) -> bool:
    """Count one soft bounce; True when it reaches SOFT_BOUNCE_LIMIT within the window."""
    limit = int(current_app.config["SOFT_BOUNCE_LIMIT"])
    if limit <= 0:
        return False
    now = utcnow()
    window = timedelta(days=int(current_app.config["SOFT_BOUNCE_WINDOW_DAYS"]))
    row = session.get(SoftBounce, index)
    if row is None:
        row = SoftBounce(email_index=index, count=0, first_at=now, last_at=now)
        session.add(row)
    if row.first_at < now - window:
        row.count, row.first_at = 0, now
    row.count += 1
    row.last_at = now
    session.flush()
    return row.count >= limit


def apply_events(session: DbSession, events: Iterable[Event]) -> dict[str, int]:
    """Suppress hard bounces and complaints everywhere (every campaign); soft bounces are counted
    and suppress only at SOFT_BOUNCE_LIMIT within SOFT_BOUNCE_WINDOW_DAYS. Queued update emails
    to suppressed mailboxes are dropped. The caller commits. Returns counts by outcome."""
    counts = {"bounce": 0, "complaint": 0, "soft_bounce": 0, "soft_bounce_suppressed": 0, "invalid": 0}
    for event in events:
        try:
            index = email_index_of(event.email)
        except (InvalidEmail, ValueError):
            counts["invalid"] += 1
            continue
        counts[event.kind] += 1
        if event.kind == "soft_bounce":
            if not _soft_bounce(session, index):
                continue
            counts["soft_bounce_suppressed"] += 1
        reason = SuppressionReason.COMPLAINT if event.kind == "complaint" else SuppressionReason.BOUNCE
        suppress_everywhere(session, index, reason)
    return counts


def suppress_everywhere(session: DbSession, index: str,
                        reason: SuppressionReason = SuppressionReason.BOUNCE) -> None:
    """Suppress a mailbox (blind index) for every campaign and drop its queued update emails, in
    the caller's transaction: a hard bounce or a complaint, whether a webhook, a bounce report
    or the SMTP server's own 5xx (the outbox and update batches: campaign.mail.sender.refusal)
    said so."""
    suppress(session, index, reason)
    session.execute(
        update(UpdateRecipient)
        .where(UpdateRecipient.email_index == index, UpdateRecipient.status == RecipientStatus.QUEUED)
        .values(status=RecipientStatus.SUPPRESSED, error=reason.value)
        .execution_options(synchronize_session=False)
    )


# --- mailbox files ------------------------------------------------------------------------------


def _messages(path: Path) -> Iterator[Message]:
    if path.is_dir():
        box: Any = mailbox.Maildir(str(path), factory=None, create=False)
    else:
        box = mailbox.mbox(str(path), create=False)
    try:
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            yield message_from_bytes(raw, policy=policy.default)
    finally:
        box.close()


def _address(value: str) -> str:
    # "rfc822; someone@example.org" -> someone@example.org
    return value.split(";", 1)[-1].strip().strip("<>")


def events_in_message(message: Message) -> list[Event]:
    """Hard bounces from a DSN (Action: failed with a 5.x.x status) and complaints from an ARF
    feedback report; anything else (auto-replies, delays) gives nothing."""
    if message.get_content_type() != "multipart/report":
        return []
    report_type = str(message.get_param("report-type") or "").lower()
    events: list[Event] = []
    if report_type == "delivery-status":
        for part in message.walk():
            if part.get_content_type() != "message/delivery-status":
                continue
            for block in _status_blocks(part):
                action = (block.get("Action") or "").strip().lower()
                status = (block.get("Status") or "").strip()
                recipient = block.get("Final-Recipient") or block.get("Original-Recipient")
                if recipient and action == "failed" and status.startswith("5"):
                    events.append(Event("bounce", _address(str(recipient))))
                elif recipient and action in {"failed", "delayed"} and status.startswith("4"):
                    events.append(Event("soft_bounce", _address(str(recipient))))
    elif report_type == "feedback-report":
        for part in message.walk():
            if part.get_content_type() == "message/feedback-report":
                for block in _status_blocks(part):
                    recipient = block.get("Original-Rcpt-To")
                    if recipient:
                        events.append(Event("complaint", _address(str(recipient))))
            elif part.get_content_type() in {"message/rfc822", "text/rfc822-headers"} and not events:
                inner = _inner_message(part)
                if inner is not None:
                    events += [
                        Event("complaint", address)
                        for _, address in getaddresses(inner.get_all("To", []))
                        if address
                    ]
    return events


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a message/delivery-status or feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):  # the email package parses delivery-status into blocks
        return [p for p in payload if isinstance(p, Message)]
    if isinstance(payload, str):
        text = payload
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    return [
        message_from_bytes(chunk.strip().encode(), policy=policy.default)
        for chunk in text.replace("\r\n", "\n").split("\n\n")
        if chunk.strip()
    ]


def _inner_message(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        return payload[0]
    if isinstance(payload, str):
        return message_from_bytes(payload.encode(), policy=policy.default)
    return None


def import_mailbox(session: DbSession, path: Path) -> dict[str, int]:
    """Read every report in an mbox file or a Maildir folder and apply what it says. The caller
    commits. Returns counts by outcome, plus the number of messages read."""
    events: list[Event] = []
    read = 0
    for message in _messages(path):
        read += 1
        events += events_in_message(message)
    counts = apply_events(session, events)
    counts["messages"] = read
    return counts
