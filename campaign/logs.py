"""Logging that never carries a link token: access-log lines are finished, then redacted."""

from __future__ import annotations

import logging
import re

TOKEN_PATH = re.compile(r"/(confirm|unsubscribe|my-data|reset)/[^\s\"?]+", re.IGNORECASE)


def redact(text: str) -> str:
    return TOKEN_PATH.sub(r"/\1/[redacted]", text)


class RedactTokens(logging.Filter):
    """Format the record now, redact token paths, and leave no arguments behind.

    werkzeug logs a format string with a tuple, gunicorn one with a dict of atoms: formatting
    first works for both and leaves nothing for a later handler to format with the raw values.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            line = record.getMessage()
        except (TypeError, ValueError):
            line = f"{record.msg} {record.args!r}"
        record.msg = redact(line)
        record.args = ()
        return True


def install_redaction(*logger_names: str) -> None:
    for name in logger_names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
