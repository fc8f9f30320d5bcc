"""gunicorn settings for production; `gunicorn app:app` reads this file from the working directory.

Environment: GUNICORN_BIND (default 127.0.0.1:$PORT, PORT defaulting to 8000), WEB_CONCURRENCY
(worker processes; default 2 x CPUs + 1, at most 16) and GUNICORN_TIMEOUT (seconds, default 30).
"""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger

from campaign.logs import install_redaction


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


# Loopback by default: the proxy in front of the app runs on the same machine. Set GUNICORN_BIND
# (e.g. 10.0.0.5:8000, or several, comma-separated) when it runs elsewhere.
bind = [b.strip() for b in
        os.environ.get("GUNICORN_BIND", f"127.0.0.1:{os.environ.get('PORT', '8000')}").split(",")
        if b.strip()]
# Sync workers hold one database connection each while serving; the signing request is one short
# transaction. Capped so a large host does not exhaust PostgreSQL's max_connections.
workers = int(os.environ.get("WEB_CONCURRENCY") or min(2 * _cpus() + 1, 16))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
proc_name = "campaign-web"
# gunicorn 27 opens a control socket in ~/.gunicorn by default; two instances would share it.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
# No client address, user agent or referrer (signers' IPs are never stored raw), and the
# decoded path (%(U)s) rather than the raw request line, so a percent-encoded token path is
# logged as the router sees it, and redacted. No query string.
access_log_format = '%(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'


class RedactingLogger(Logger):
    """gunicorn's logger with the app's token redaction installed before the first request."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        install_redaction(self.access_log.name)


logger_class = RedactingLogger
