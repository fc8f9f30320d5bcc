"""SMTP sending with a timeout, and the split between failures worth retrying and final ones."""

from __future__ import annotations

import contextlib
import functools
import smtplib
import ssl

from flask import current_app
from flask_mail import BadHeaderError, Connection, Message


class TemporaryFailure(Exception):
    """Try again later: the server is busy, unreachable or said 4xx."""

    def __init__(self, text: str, reason: str = "server_busy") -> None:
        super().__init__(text)
        self.reason = reason  # a key of campaign.mail.reasons.REASONS


class PermanentFailure(Exception):
    """Do not try again: the server refused the message or the address (5xx)."""

    def __init__(self, text: str, reason: str = "message_refused") -> None:
        super().__init__(text)
        self.reason = reason


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


def send_message(message: Message) -> None:
    """Send one message; raise TemporaryFailure or PermanentFailure with the server's words."""
    state = current_app.extensions["mail"]
    try:
        with _TimedConnection(state) as connection:
            connection.send(message)
    except BadHeaderError as error:
        raise PermanentFailure("bad header", "bad_message") from error
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        detail = "; ".join(f"{code} {text!r}" for code, text in error.recipients.values())
        if codes and all(400 <= code < 500 for code in codes):
            raise TemporaryFailure(f"recipient deferred: {detail}", "recipient_deferred") from error
        raise PermanentFailure(f"recipient refused: {detail}", "recipient_refused") from error
    except smtplib.SMTPResponseException as error:
        text = f"{error.smtp_code} {error.smtp_error!r}"
        if 500 <= error.smtp_code < 600:
            raise PermanentFailure(text) from error
        raise TemporaryFailure(text) from error
    except (TimeoutError, smtplib.SMTPException, OSError) as error:
        raise TemporaryFailure(f"{type(error).__name__}: {error}", "unreachable") from error


def smtp_connection() -> _TimedConnection:
    """One SMTP connection (with MAIL_TIMEOUT) for many messages: `with smtp_connection() as c:
    c.send(message)`. Errors are smtplib's own; bulk senders sort them per recipient."""
    return _TimedConnection(current_app.extensions["mail"])
