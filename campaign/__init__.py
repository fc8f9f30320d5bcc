"""campaign: advocacy campaigns and petitions. create_app() builds the Flask application."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, abort
from werkzeug.middleware.proxy_fix import ProxyFix

from campaign.config import load_config
from campaign.extensions import csrf, db, migrate
from campaign.extensions import mail as mail_extension


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from the environment, with `config` taking precedence (tests pass a mapping)."""
    app = Flask(__name__, instance_relative_config=True, template_folder="../templates",
                static_folder="../static")
    app.config.from_mapping(load_config(app.instance_path, config))
    app.url_value_preprocessor(_ids_within_64_bits)
    register_extensions(app)
    register_operations(app)
    register_blueprints(app)
    register_mailings(app)
    register_integrations(app)
    register_reach(app)
    register_abuse(app)
    register_supporters(app)
    register_security(app)
    register_logging(app)
    register_commands(app)
    register_fast_path(app)
    return app


_LARGEST_ID = 2**63 - 1


def _ids_within_64_bits(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """An `<int:...>` beyond the largest 64-bit id names nothing: 404 rather than an overflow in
    the database driver (a 500). After routing, so the method checks stay the router's."""
    if values and any(isinstance(v, int) and not -_LARGEST_ID <= v <= _LARGEST_ID for v in values.values()):
        abort(404)


def register_extensions(app: Flask) -> None:
    from campaign import models  # noqa: F401 - registers the tables on the metadata
    from campaign.queue import celery_init_app
    from campaign.services import notifications  # noqa: F401 - registers the email kinds
    from campaign.services.outbox import install_dispatch

    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"))
    csrf.init_app(app)
    mail_extension.init_app(app)
    celery_init_app(app)
    install_dispatch(db.session)
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        with app.app_context():
            _tune_sqlite()
    if app.config["PROXY_FIX_HOPS"]:
        hops = int(app.config["PROXY_FIX_HOPS"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]


def _tune_sqlite() -> None:
    from sqlalchemy import event

    engine = db.engine

    @event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, begin transactions, so SAVEPOINT works.
        connection.isolation_level = None
        cursor = connection.cursor()
        # WAL: the worker reads while the web process writes. Foreign keys are off by default.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read that later writes would otherwise fail
        # at once with "database is locked" when another process wrote in between.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def register_blueprints(app: Flask) -> None:
    from campaign.web import api, embed, errors, public

    app.register_blueprint(public.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(embed.bp)
    errors.register(app)
    # The sign form carries its own signed token (petition pages set no session cookie);
    # the API authenticates with tokens, not cookies. Every other POST needs the session token.
    csrf.exempt(public.sign)
    csrf.exempt(api.bp)
    # The widget's form (in a partner's iframe, no cookies) carries the sign form's signed token.
    csrf.exempt(embed.sign)
    register_organizers(app)
    if app.config["DEV_MAILBOX"]:
        from campaign.web import dev

        app.register_blueprint(dev.bp)


def register_organizers(app: Flask) -> None:
    """Organizer accounts (Flask-Login), their pages and their email kinds."""
    from datetime import timedelta

    from campaign.services import account_mail  # noqa: F401 - registers the account email kinds
    from campaign.web import auth, organize

    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(seconds=int(app.config["SESSION_LIFETIME"]))
    auth.install(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(organize.bp)


def register_mailings(app: Flask) -> None:
    """Issue 4, mail to officials: the letter_to_target, delivery_to_target, target_failing and
    leader_response email kinds, and the organizer's mailing pages."""
    from campaign.services import deliveries, letters, responses  # noqa: F401 - registers the kinds
    from campaign.web import mailings

    app.register_blueprint(mailings.bp)


def register_integrations(app: Flask) -> None:
    """Issue 8: API tokens and webhooks (the organizer pages, and publishing webhook calls after
    the transaction that queued them commits)."""
    from campaign.services.webhooks import install_dispatch as install_webhook_dispatch
    from campaign.web import integrations

    install_webhook_dispatch(db.session)
    app.register_blueprint(integrations.bp)


def register_reach(app: Flask) -> None:
    """Issue 7, organizer reach: dashboards, exports, updates to supporters, unsubscribe, the
    bounce webhook and the bounce-mailbox command."""
    from campaign.cli import register_reach_commands
    from campaign.web import reach, reach_public

    app.register_blueprint(reach.bp)
    app.register_blueprint(reach_public.bp)
    # One-click unsubscribe (RFC 8058) comes from mail programs without cookies: the signed token
    # in the URL is its credential. The webhook is authenticated by its HMAC.
    csrf.exempt(reach_public.unsubscribe)
    csrf.exempt(reach_public.bounce_webhook)
    register_reach_commands(app)


def register_abuse(app: Flask) -> None:
    """Issue 6: rate limits on every blueprint registered so far, the moderation and admin
    pages, the trending alert email kind, and the privacy commands."""
    from campaign.cli import register_abuse_commands
    from campaign.services import abuse  # noqa: F401 - registers the trending_alert email kind
    from campaign.web import moderation, ratelimit

    moderation.install(app)
    ratelimit.install(app)
    register_abuse_commands(app)


def register_supporters(app: Flask) -> None:
    """Issue 5: languages (Flask-Babel), manage-my-data, the reminder and my-data email kinds,
    and the organizer's translation pages."""
    from campaign.services import supporter_mail  # noqa: F401 - registers the email kinds
    from campaign.web import i18n, supporters, supporters_organize

    i18n.install(app)
    app.register_blueprint(supporters.bp)
    app.register_blueprint(supporters_organize.bp)


def register_fast_path(app: Flask) -> None:
    # Only with the microcache on (gunicorn.conf.py): without it no view marks an answer, and
    # every GET would pay for the key. Outermost, so a microcached page skips ProxyFix too.
    from campaign.web.fastpath import FastPath

    size = int(app.config["PAGE_CACHE_SIZE"])
    if float(app.config["PAGE_MICROCACHE"]) > 0 and size > 0:
        app.wsgi_app = FastPath(app.wsgi_app, size)  # type: ignore[method-assign]


def register_security(app: Flask) -> None:
    from campaign.web.security import CachedSerializerSessions, apply_security_headers

    app.after_request(apply_security_headers)
    app.session_interface = CachedSerializerSessions()


def register_operations(app: Flask) -> None:
    """Logs (format, level, request ids), request metrics, and /readyz and /metrics."""
    from campaign.observability import configure_logging
    from campaign.ops_commands import register as register_ops_commands
    from campaign.web import ops

    configure_logging(app)
    ops.init_app(app)
    register_ops_commands(app)
    # Issue 11: the organizers' email status page.
    from campaign.web import email_status

    app.register_blueprint(email_status.bp)


def register_logging(app: Flask) -> None:
    from campaign.logs import install_redaction

    install_redaction("werkzeug", "gunicorn.access")


def register_commands(app: Flask) -> None:
    from campaign.cli import register

    register(app)
