"""SMTP sending with a timeout, one connection reused for consecutive messages, and the split
between failures worth retrying and final ones."""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import current_app
from flask_mail import BadHeaderError, Connection, Message

from campaign.mail.reasons import refuses_mailbox


class TemporaryFailure(Exception):
    """Try again later: the server is busy, unreachable or said 4xx."""

    def __init__(self, text: str, reason: str = "server_busy") -> None:
        super().__init__(text)
        self.reason = reason  # a key of campaign.mail.reasons.REASONS


class PermanentFailure(Exception):
    """Do not try again: the server refused the message or the address (5xx).

    mailbox is True when the refusal is about the recipient's mailbox (a hard bounce:
    campaign.mail.reasons.refuses_mailbox), which puts the address on the suppression list."""

    def __init__(self, text: str, reason: str = "message_refused", mailbox: bool = False) -> None:
        super().__init__(text)
        self.reason = reason
        self.mailbox = mailbox


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # smtplib verifies no certificate unless given a context. Built once per process: loading
    # the system's CA certificates takes tens of milliseconds, which every email used to pay
    # (even without TLS) before this was cached.
    return ssl.create_default_context()


class _TimedConnection(Connection):
    # Flask-Mail opens smtplib connections without a timeout; a stuck server would hang a worker.
    def configure_host(self) -> smtplib.SMTP | smtplib.SMTP_SSL:
        timeout = float(current_app.config["MAIL_TIMEOUT"])
        host: smtplib.SMTP | smtplib.SMTP_SSL
        if self.mail.use_ssl:
            host = smtplib.SMTP_SSL(self.mail.server, self.mail.port, timeout=timeout, context=_tls_context())
        else:
            host = smtplib.SMTP(self.mail.server, self.mail.port, timeout=timeout)
        if self.mail.use_tls:
            host.starttls(context=_tls_context())
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host

    def __exit__(self, *exc_info: object) -> None:
        # A failing QUIT must not hide the answer that mattered (a 550 would turn into a retry).
        with contextlib.suppress(smtplib.SMTPException, OSError):
            super().__exit__(*exc_info)  # type: ignore[arg-type]


@dataclass
class _Held:
    key: tuple[Any, ...]
    connection: _TimedConnection
    pid: int
    sent: int = 0
    last_used: float = 0.0


# The open connection of this process: a Celery worker process sends one message after another,
# and a new connection per message (TCP, greeting, EHLO, STARTTLS, AUTH, QUIT) cost more than the
# message itself (issue 9's surge profile). One per process, not per thread: a thread's own would
# be dropped unclosed when the thread ends. A thread that finds it in use sends on a new one.
_lock = threading.Lock()


class _Slot:
    held: _Held | None = None


_local = _Slot()
# Idle longer than this, the server may have closed it: a NOOP checks before it is used.
_CHECK_AFTER_IDLE = 1.0


def _close(held: _Held | None) -> None:
    _local.held = None
    if held is not None and held.pid == os.getpid():  # never QUIT a connection a parent opened
        held.connection.__exit__(None, None, None)
        if held.connection.host is not None:
            # QUIT fails on a dead connection before smtplib closes the socket: close it here.
            held.connection.host.close()


atexit.register(lambda: _close(_local.held))


def _alive(held: _Held) -> bool:
    host = held.connection.host
    if host is None or time.monotonic() - held.last_used < _CHECK_AFTER_IDLE:
        return True
    try:
        return host.noop()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _connection(state: Any) -> _Held:
    """This process's open connection for the current mail settings, opened if need be.

    Reused for up to MAIL_CONNECTION_REUSE messages; after a failure it is closed, so the next
    message reconnects (and a message is never sent again on its own: the outbox retries it)."""
    key = (id(state), state.server, state.port, state.username, state.use_tls, state.use_ssl, state.suppress)
    held = _local.held
    if held is not None:
        if (held.key == key and held.pid == os.getpid()
                and held.sent < int(current_app.config["MAIL_CONNECTION_REUSE"]) and _alive(held)):
            return held
        _close(held)
    connection = _TimedConnection(state)
    connection.__enter__()  # connects, unless MAIL_SUPPRESS_SEND
    held = _Held(key, connection, os.getpid())
    _local.held = held
    return held


def _send(state: Any, message: Message) -> None:
    if not _lock.acquire(blocking=False):
        with _TimedConnection(state) as connection:  # another thread has the open one
            connection.send(message)
        return
    try:
        held = _connection(state)
        held.connection.send(message)
        held.sent += 1
        held.last_used = time.monotonic()
    except BaseException:
        # Whatever went wrong, the next message starts on a new connection.
        _close(_local.held)
        raise
    finally:
        _lock.release()


def refusal(error: smtplib.SMTPRecipientsRefused | smtplib.SMTPResponseException
            ) -> TemporaryFailure | PermanentFailure:
    """What a server's answer to one message means. The outbox and bulk updates both read it
    here, so a hard bounce suppresses the same mailboxes whichever path sent the email."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        detail = "; ".join(f"{code} {text!r}" for code, text in error.recipients.values())
        if codes and all(400 <= code < 500 for code in codes):
            return TemporaryFailure(f"recipient deferred: {detail}", "recipient_deferred")
        mailbox = any(refuses_mailbox(code, text, at_rcpt=True)
                      for code, text in error.recipients.values())
        return PermanentFailure(f"recipient refused: {detail}",
                                "recipient_refused" if mailbox else "message_refused", mailbox)
    text = f"{error.smtp_code} {error.smtp_error!r}"
    if 500 <= error.smtp_code < 600:
        # After DATA the one recipient may still be refused (servers that check late); a
        # refused sender (MAIL FROM) is about us, never the recipient.
        mailbox = isinstance(error, smtplib.SMTPDataError) and refuses_mailbox(
            error.smtp_code, error.smtp_error, at_rcpt=False)
        return PermanentFailure(text, "recipient_refused" if mailbox else "message_refused", mailbox)
    return TemporaryFailure(text)


def send_message(message: Message) -> None:
    """Send one message; raise TemporaryFailure or PermanentFailure with the server's words."""
    state = current_app.extensions["mail"]
    try:
        _send(state, message)
    except BadHeaderError as error:
        raise PermanentFailure("bad header", "bad_message") from error
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPResponseException) as error:
        raise refusal(error) from error
    except (TimeoutError, smtplib.SMTPException, OSError) as error:
        raise TemporaryFailure(f"{type(error).__name__}: {error}", "unreachable") from error


def smtp_connection() -> _TimedConnection:
    """One SMTP connection (with MAIL_TIMEOUT) for many messages: `with smtp_connection() as c:
    c.send(message)`. Errors are smtplib's own; bulk senders sort them per recipient."""
    return _TimedConnection(current_app.extensions["mail"])
