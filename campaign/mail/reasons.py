"""Why an email is waiting or did not go: a short category stored on the outbox row, its words for
an organizer, and the scrubbing of SMTP replies before they are stored.

SMTP servers quote the recipient in their replies ("550 5.1.1 <ada@example.org>: no such user"),
and some quote message ids or tracking tokens: the outbox keeps the reply for engineers, but never
an address or a token, so a database reader or the status page learns nothing about a signer.
"""

from __future__ import annotations

import re

# Category -> plain words for the organizer's email status page. The keys are stored.
REASONS: dict[str, str] = {
    "server_busy": "Our mail server asked us to try again a little later. This is normal when a lot of mail "
                   "goes out at once; it is tried again automatically.",
    "unreachable": "We could not reach our mail server (a network problem or a timeout). It is tried again "
                   "automatically.",
    "recipient_deferred": "The recipient's mail provider is not taking mail for this address right now "
                          "(for example a full mailbox). It is tried again automatically.",
    "recipient_refused": "The recipient's mail provider refused this address: it may be mistyped or no "
                         "longer exist. It is not tried again, and the platform sends this address no "
                         "more mail.",
    "message_refused": "The mail server refused this message. It is not tried again; if many messages show "
                       "this, tell whoever runs the platform.",
    "bad_message": "The message could not be written safely (something in it is not allowed in an email), "
                   "so it was not sent.",
    "gave_up": "It was tried the greatest number of times allowed without success, and is not tried again.",
    "worker_stopped": "The sending program stopped every time it tried this message; it is not tried again.",
    "suppressed": "This address unsubscribed, bounced or complained earlier, so we never mail it again.",
    "bounced": "The recipient's mail provider refused this address before (it may be mistyped or no longer "
               "exist), so nothing is sent to it any more, not even a request to confirm.",
    "not_needed": "It was no longer needed when its turn came (for example the signature was already "
                  "confirmed or removed), so it was not sent.",
}

# An enhanced status code (RFC 3463) at the start of a reply: "5.1.1 no such user".
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.\d{1,3}\b")


def refuses_mailbox(code: int, text: str | bytes, at_rcpt: bool) -> bool:
    """True when a 5xx reply says the recipient's mailbox will never take mail (a hard bounce), so
    the address is suppressed; False for refusals of the message or of us (policy, spam, relay
    denied: 5.7.x, or a sender refused), which say nothing about the address.

    With an enhanced code: 5.1.x (bad address) and 5.2.x (mailbox disabled). Without one, only
    550, 551 and 553 at RCPT: the same numbers after DATA are as often about the content.
    """
    if not 500 <= code < 600:
        return False
    if isinstance(text, bytes):  # smtplib keeps replies as bytes
        text = text.decode("utf-8", "replace")
    enhanced = _ENHANCED.match(text)
    if enhanced:
        return enhanced.group(1) == "5" and enhanced.group(2) in {"1", "2"}
    return at_rcpt and code in {550, 551, 553}


_ADDRESS = re.compile(r"[^\s<>()\[\]\"',;:]+@[^\s<>()\[\]\"',;:]+")
# Long runs of letters and digits that hold a digit, or hex: ids, tokens, signed links.
_TOKEN = re.compile(r"(?<![\w.+/-])(?=[\w.+/-]*\d)[\w.+/-]{20,}=*")


def scrub_error(text: str, limit: int = 2000) -> str:
    """An SMTP reply or error text without email addresses or token-like strings."""
    text = _ADDRESS.sub("[address]", text)
    return _TOKEN.sub("[token]", text)[:limit]


def reason_words(reason: str, status: str) -> str:
    """The plain-language explanation for an organizer, from a row's category and status."""
    if reason in REASONS:
        return REASONS[reason]
    if status == "cancelled":
        return REASONS["not_needed"]
    return ""
