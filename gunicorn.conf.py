"""gunicorn settings for production; `gunicorn app:app` reads this file from the working directory.

Environment: GUNICORN_BIND (default 127.0.0.1:$PORT, PORT defaulting to 8000), WEB_CONCURRENCY
(worker processes; default 2 x CPUs + 1, at most 16) and GUNICORN_TIMEOUT (seconds, default 30).
The workers' SQLALCHEMY_POOL_SIZE / SQLALCHEMY_MAX_OVERFLOW / PAGE_MICROCACHE default to 1 / 2 / 1 here
(see raw_env).
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
# The database pool, sized for sync workers: a worker serves one request at a time and the request
# holds one connection, so a pool of 1 (plus 2 overflow for a rare second connection) keeps a web
# machine at about `workers` PostgreSQL connections, never above 3 x workers, instead of the
# library default of 5 + 10 per process. Set SQLALCHEMY_POOL_SIZE / SQLALCHEMY_MAX_OVERFLOW in
# the environment to override (docs/operations.md, "Scaling out").
# PAGE_MICROCACHE=1: a worker serves the petition page it rendered in the last second again without
# a query, which lets a viral petition's page cost about what a static template costs
# (docs/performance.md); the count on it is then at most a second old.
raw_env = [f"{name}={default}" for name, default in
           (("SQLALCHEMY_POOL_SIZE", "1"), ("SQLALCHEMY_MAX_OVERFLOW", "2"), ("PAGE_MICROCACHE", "1"))
           if name not in os.environ]
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
