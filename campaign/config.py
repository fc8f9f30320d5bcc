"""Settings from the environment: one table of every setting, its default and its type.

Two modes share one code path: `development` (the embedded default that `make run` uses:
SQLite, a filesystem broker, a local SMTP sink) and `production` (PostgreSQL, Redis, real SMTP),
which refuses to start without its secrets. docs/configuration.md lists the same table.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet


class ConfigError(RuntimeError):
    """A setting is missing or malformed: the app must not start."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    kind: type
    help: str


# The single list of settings; docs/configuration.md mirrors it (a test keeps them in step).
SETTINGS: tuple[Setting, ...] = (
    Setting("CAMPAIGN_ENV", "production", str,
            "production, development (the embedded default of `make run`) or testing"),
    Setting("SECRET_KEY", None, str, "signs sessions, form tokens and email links; required in production"),
    Setting("BASE_URL", None, str,
            "absolute origin for links in emails, e.g. https://act.example.org; required in production"),
    Setting("DATABASE_URL", None, str,
            "SQLAlchemy URL; plain postgresql:// is rewritten to psycopg 3; default: SQLite in instance/"),
    Setting("REDIS_URL", None, str, "Redis: the Celery broker in production"),
    Setting("CELERY_BROKER_URL", None, str,
            "defaults to REDIS_URL; development uses a filesystem broker under instance/"),
    Setting("SIGNER_DATA_KEYS", None, str,
            "comma-separated Fernet keys for signer names and emails, newest first; required in production"),
    Setting("BLIND_INDEX_KEY", None, str,
            "key for the keyed hash of normalized emails (uniqueness, look-ups); required in production"),
    Setting("MAIL_SERVER", "localhost", str, "SMTP host"),
    Setting("MAIL_PORT", 25, int, "SMTP port"),
    Setting("MAIL_USERNAME", None, str, "SMTP user"),
    Setting("MAIL_PASSWORD", None, str, "SMTP password"),
    Setting("MAIL_USE_TLS", False, bool, "STARTTLS"),
    Setting("MAIL_USE_SSL", False, bool, "SMTP over TLS"),
    Setting("MAIL_DEFAULT_SENDER", "Campaign <no-reply@localhost>", str, "From: of every email"),
    Setting("MAIL_TIMEOUT", 20.0, float, "seconds before an SMTP connection or command gives up"),
    Setting("MAIL_SUPPRESS_SEND", False, bool, "build but do not send mail (Flask-Mail)"),
    Setting("CONFIRM_TOKEN_MAX_AGE", 30 * 24 * 3600, int, "seconds a confirmation link stays valid"),
    Setting("FORM_TOKEN_MAX_AGE", 24 * 3600, int, "seconds a rendered sign form stays valid"),
    Setting("EMAILS_PER_ADDRESS_PER_PETITION", 5, int,
            "emails the public form may cause to one address for one petition, ever"),
    Setting("EMAILS_PER_ADDRESS_PER_DAY", 20, int,
            "emails the public form may cause to one address in 24 hours, across petitions"),
    Setting("OUTBOX_MAX_ATTEMPTS", 8, int, "send attempts before an email is marked failed"),
    Setting("OUTBOX_BACKOFF_BASE", 30, int,
            "seconds before the first retry; doubles per attempt, with jitter"),
    Setting("OUTBOX_BACKOFF_MAX", 3600, int, "longest wait between two attempts, seconds"),
    Setting("OUTBOX_LEASE_SECONDS", 300, int,
            "a row claimed for sending longer than this is considered abandoned and retried"),
    Setting("OUTBOX_SWEEP_INTERVAL", 15.0, float, "seconds between outbox sweeps (Celery beat)"),
    Setting("OUTBOX_SWEEP_GRACE", 30.0, float,
            "seconds a due email is left to its own task before the sweep publishes it again"),
    Setting("OUTBOX_SWEEP_BATCH", 500, int,
            "tasks the sweep keeps waiting per queue: with Redis it tops the queue up to this, "
            "counting what already waits; with other brokers, rows one sweep publishes per queue"),
    Setting("OUTBOX_SWEEP_FOLLOW_UP", True, bool,
            "while a queue has more due rows than the batch, sweep it again once its workers reach "
            "the end of the batch (Redis only; false: wait for beat's next sweep)"),
    Setting("COUNTER_SHARDS", 16, int, "rows per petition counter, spreading concurrent confirmations"),
    Setting("CELERY_VISIBILITY_TIMEOUT", 3600, int,
            "seconds before Redis hands an unacknowledged task to another worker"),
    Setting("BROKER_CONNECT_TIMEOUT", 2.0, float, "seconds the web process waits for the broker"),
    Setting("CELERY_SOFT_SHUTDOWN_TIMEOUT", 10.0, float,
            "seconds a worker told to stop at once (SIGQUIT, or SIGTERM with REMAP_SIGTERM=SIGQUIT) "
            "lets running sends finish before it cancels them (Celery's worker_soft_shutdown_timeout)"),
    Setting("CELERY_BROKER_FOLDER", None, str,
            "filesystem broker only: its folder; default instance/broker"),
    Setting("EMAIL_CHECK_DELIVERABILITY", False, bool,
            "look up the email domain's MX in DNS when signing (adds latency to the signing path)"),
    Setting("DEV_MAILBOX", False, bool,
            "serve the local SMTP sink's messages at /dev/mailbox (development only; refused in production)"),
    Setting("DEV_MAILBOX_DIR", None, str, "Maildir the dev SMTP sink writes; default instance/mailbox"),
    Setting("DEV_SMTP_PORT", 8025, int, "port of the local SMTP sink that `make run` starts"),
    Setting("CRASH_POINT", None, str,
            "fault tests only: before_smtp, after_smtp (or export_writing) makes a worker exit there; "
            "refused in production"),
    Setting("PROXY_FIX_HOPS", 0, int, "trusted reverse proxies in front of the app (X-Forwarded-*)"),
    Setting("SQLALCHEMY_POOL_SIZE", 5, int, "database connections per process (PostgreSQL)"),
    Setting("SQLALCHEMY_MAX_OVERFLOW", 10, int, "extra connections a process may open under load"),
    # Organizer accounts (issue 3): docs/organizers.md.
    Setting("SIGNUPS_OPEN", False, bool,
            "organizer sign-ups are active once their email is verified, without an admin's approval"),
    Setting("REVIEW_REQUIRED", False, bool,
            "petitions go to an admin's review queue before they are published"),
    Setting("REQUIRE_TOTP_FOR_ADMINS", False, bool,
            "admins must set up a TOTP second factor before they can use organizer pages"),
    Setting("LOGIN_ATTEMPTS_PER_ACCOUNT", 5, int,
            "failed sign-ins for one email address within LOGIN_ATTEMPT_WINDOW before it is refused (429)"),
    Setting("LOGIN_ATTEMPTS_PER_IP", 20, int,
            "failed sign-ins from one client address within LOGIN_ATTEMPT_WINDOW before it is refused (429)"),
    Setting("LOGIN_ATTEMPT_WINDOW", 900, int, "seconds over which failed sign-ins are counted"),
    Setting("RESET_TOKEN_MAX_AGE", 3600, int, "seconds a password reset link stays valid"),
    Setting("SIGNUP_TOKEN_MAX_AGE", 86400, int, "seconds an organizer's email verification link stays valid"),
    Setting("INVITATION_MAX_AGE", 7 * 86400, int, "seconds an invitation to co-organize stays valid"),
    Setting("PASSWORD_HASH_MEMORY_KIB", 65536, int,
            "Argon2id memory per password hash, KiB (at least 19456)"),
    Setting("PASSWORD_HASH_TIME_COST", 3, int, "Argon2id iterations per password hash (at least 2)"),
    Setting("PASSWORD_HASH_PARALLELISM", 4, int, "Argon2id lanes per password hash"),
    Setting("SIGNATURE_SEARCH_LIMIT", 50_000, int,
            "signatures an organizer's name search may decrypt; beyond it, narrow the filter"),
    Setting("SESSION_LIFETIME", 12 * 3600, int, "seconds an organizer stays signed in"),
    Setting("FORM_TOKEN_BUCKET", 60, int,
            "seconds of one sign-form token window: pages rendered within it carry the same token"),
    Setting("PAGE_MAX_AGE", 5, int, "seconds a cache may serve an anonymous petition page without asking"),
    Setting("PAGE_STALE_WHILE_REVALIDATE", 30, int,
            "seconds a cache may serve a stale petition page while it revalidates in the background"),
    Setting("PAGE_CACHE_SIZE", 256, int, "rendered petition pages kept per web process (0: none)"),
    Setting("PAGE_MICROCACHE", 0.0, float,
            "seconds a web process serves the same petition page without reading the database "
            "(gunicorn.conf.py sets 1; 0: off)"),
    # Operations (issue 11): docs/operations.md.
    Setting("LOG_FORMAT", None, str, "json or text; default: json in production, text otherwise"),
    Setting("LOG_LEVEL", "INFO", str, "level of every process's log: DEBUG, INFO, WARNING or ERROR"),
    Setting("METRICS_TOKEN", None, str,
            "bearer token for /metrics; unset: 404 in production, loopback clients only otherwise"),
    Setting("METRICS_DB_TIMEOUT", 3.0, float, "seconds /metrics waits for its database and broker queries"),
    Setting("METRICS_RECENT_WINDOW", 900, int, "seconds back that the recently-sent email gauge counts"),
    Setting("PROMETHEUS_MULTIPROC_DIR", None, str,
            "prometheus_client's multiprocess folder (several gunicorn workers); emptied before start"),
    Setting("READYZ_TIMEOUT", 2.0, float, "seconds /readyz waits for its checks before answering 503"),
    Setting("DATABASE_CONNECT_TIMEOUT", 5, int, "seconds a PostgreSQL connection attempt may take"),
    # The API and the embeddable widget (issue 8): docs/api.md.
    Setting("EMBED_FRAME_ANCESTORS", "*", str,
            "sites that may frame the /embed/ sign widget: a CSP frame-ancestors source list"),
    # Abuse resistance, privacy and security (issue 6): docs/security.md.
    Setting("RATELIMIT_STORAGE_URI", None, str,
            "Flask-Limiter storage; default: REDIS_URL in production, memory:// otherwise"),
    Setting("RATELIMIT_LOGIN_PER_IP", "30 per minute; 300 per hour", str,
            "sign-in requests (POST) one client address may send before 429"),
    Setting("RATELIMIT_LOGIN_PER_ACCOUNT", "20 per minute; 100 per hour", str,
            "sign-in requests (POST) naming one email address before 429"),
    Setting("RATELIMIT_RESET_PER_IP", "10 per minute; 50 per hour", str,
            "password reset requests (POST) one client address may send before 429"),
    Setting("RATELIMIT_RESET_PER_ACCOUNT", "5 per hour", str,
            "password reset requests (POST) naming one email address before 429"),
    Setting("RATELIMIT_API", "120 per minute; 3000 per hour", str, "requests to /api/ per client address"),
    Setting("RATELIMIT_ORGANIZER", "120 per minute; 2000 per hour", str,
            "organizer and admin actions (POST) per signed-in account, or per address when signed out"),
    Setting("RATELIMIT_ENABLED", True, bool,
            "Flask-Limiter on; off only for measuring the bare signing path (each app has its own limiter)"),
    Setting("SIGNING_RATELIMIT_PER_IP", "20 per minute; 200 per hour", str,
            "sign requests from one client address across petitions (Flask-Limiter) before its "
            "signatures are held (never a 429); empty: off"),
    Setting("SIGNING_RATELIMIT_PER_PETITION", "2 per minute; 10 per hour", str,
            "sign requests from one client address to one petition (Flask-Limiter) before its "
            "signatures are held (never a 429); empty: off"),
    Setting("SIGNING_MIN_FILL_SECONDS", 3, int,
            "a signature sent sooner than this after its form token's issue time is held"),
    Setting("SIGNING_IP_BURST", "1/60, 5/300", str,
            "signatures per client address per petition (count/seconds, ...) before further ones are held"),
    Setting("SIGNING_DOMAIN_BURST", "30/60, 100/300", str,
            "signatures per email domain per petition (count/seconds, ...) before further ones are held"),
    Setting("SIGNING_COMMON_DOMAINS",
            "gmail.com, outlook.com, hotmail.com, live.com, yahoo.com, icloud.com, me.com, aol.com, "
            "proton.me, protonmail.com, gmx.de, gmx.net, web.de, t-online.de, orange.fr, free.fr, "
            "yandex.ru, mail.ru, qq.com, 163.com", str,
            "large mailbox providers left out of domain bursts and domain trending alerts"),
    Setting("DISPOSABLE_DOMAINS_FILE", None, str,
            "blocklist of throwaway-address domains; default campaign/data/disposable_domains.txt"),
    Setting("TRENDING_IP_PER_HOUR", 100, int,
            "signatures from one address on one petition within an hour that alert its organizers"),
    Setting("TRENDING_DOMAIN_PER_HOUR", 200, int,
            "signatures from one email domain on one petition within an hour that alert its organizers"),
    Setting("TRENDING_INTERVAL", 600.0, float, "seconds between trending checks (Celery beat)"),
    Setting("KILLSWITCH_CACHE_SECONDS", 5.0, float,
            "seconds a process keeps the admins' switches before reading them again"),
    Setting("INTEGRITY_CACHE_SECONDS", 60.0, float,
            "seconds a process keeps a petition's integrity note (held and removed counts)"),
    Setting("IP_HASH_RETENTION_DAYS", 30, int, "days after signing that a signature's IP hashes are dropped"),
    Setting("UNCONFIRMED_RETENTION_DAYS", 30, int, "days after which unconfirmed signatures are deleted"),
    Setting("ANONYMIZE_AFTER_DAYS", 182, int,
            "days after a petition closed that its signatures are anonymized (counts kept)"),
    Setting("RETENTION_INTERVAL", 3600.0, float, "seconds between retention runs (Celery beat)"),
    Setting("RETENTION_BATCH", 1000, int, "rows the retention job changes per transaction"),
    # Mail to officials (issue 4): docs/mailings.md.
    Setting("LETTERS_PER_TARGET_PER_HOUR", 20, int,
            "letters queued to one target per clock hour (UTC), across petitions; the rest wait for "
            "the target's next batched delivery (0: no single letters)"),
    Setting("DELIVERIES_INTERVAL", 60.0, float,
            "seconds between runs of the deliveries job (Celery beat): batches, routing, failure watch"),
    # Operations (issue 11): docs/operations.md.
    Setting("EMAIL_DELAY_WARNING_SECONDS", 120.0, float,
            "the email status page warns that mail runs late once the oldest due email waited this long"),
    Setting("PETITION_CLOSE_INTERVAL", 300.0, float,
            "seconds between runs of the job that closes petitions whose closing date passed (Celery beat)"),
    # Integrations (issue 8): docs/api.md.
    Setting("WEBHOOK_MAX_ATTEMPTS", 8, int, "attempts per webhook call before it is marked failed"),
    Setting("WEBHOOK_BACKOFF_BASE", 30, int,
            "seconds before a webhook call's first retry; doubles per attempt"),
    Setting("WEBHOOK_BACKOFF_MAX", 3600, int, "longest wait between two attempts of a webhook call, seconds"),
    Setting("WEBHOOK_DISABLE_AFTER", 20, int,
            "consecutive failed attempts after which a webhook is switched off (organizers re-enable it)"),
    Setting("WEBHOOK_TIMEOUT", 10.0, float, "seconds a webhook receiver has to connect and answer"),
    Setting("WEBHOOK_LEASE_SECONDS", 120, int, "a webhook call claimed longer than this is retried"),
    Setting("WEBHOOK_SWEEP_INTERVAL", 15.0, float,
            "seconds between sweeps that send due webhook calls (Celery beat)"),
    Setting("WEBHOOK_ALLOW_LOOPBACK", False, bool,
            "let webhooks call loopback addresses (tests only; refused in production)"),
    Setting("WEBHOOK_LOG_DAYS", 30, int, "days a finished webhook call stays in its webhook's delivery log"),
    Setting("WEBHOOK_MILESTONES", "100,1000,5000,10000,25000,50000,100000,250000,500000,1000000", str,
            "signature counts that fire petition.milestone, comma-separated (the goal always does)"),
    # Organizer reach (issue 7): docs/organizers.md.
    Setting("REACH_INTERVAL", 5.0, float,
            "seconds between runs of the reach job (Celery beat): starts updates that are due, restarts "
            "stalled ones, deletes expired export files"),
    Setting("DASHBOARD_CACHE_SECONDS", 30.0, float,
            "seconds a web process keeps a dashboard's figures before counting again (0: off)"),
    Setting("REACH_BATCH_SIZE", 200, int, "supporter update emails one task sends over one SMTP connection"),
    Setting("REACH_PARALLEL", 2, int, "batch tasks working on one supporter update at the same time"),
    Setting("REACH_LEASE_SECONDS", 120, int,
            "a batch claimed longer than this is considered abandoned (a worker died) and sent again"),
    Setting("UNSUBSCRIBE_TOKEN_MAX_AGE", 2 * 365 * 86400, int, "seconds an unsubscribe link stays valid"),
    Setting("EXPORT_DIR", None, str, "folder for export files prepared by workers; default instance/exports"),
    Setting("EXPORT_LINK_MAX_AGE", 24 * 3600, int,
            "seconds an export file's download link stays valid; the file is deleted after that"),
    Setting("EXPORT_LEASE_SECONDS", 3600, int,
            "a background export running longer than this is considered abandoned (its worker died) "
            "and queued again; keep it above the longest export"),
    Setting("EXPORT_MAX_ATTEMPTS", 3, int,
            "workers that may die on one background export before it is marked failed"),
    Setting("BOUNCE_WEBHOOK_SECRET", None, str,
            "shared secret of the bounce and complaint webhook (HMAC-SHA256); unset: it answers 404"),
    Setting("SOFT_BOUNCE_LIMIT", 3, int,
            "soft bounces reported for one mailbox (webhook or mailbox file) that suppress it like a hard "
            "bounce (0: never)"),
    Setting("SOFT_BOUNCE_WINDOW_DAYS", 30, int, "days over which soft bounces of one mailbox are counted"),
    Setting("BOUNCE_WEBHOOK_TOLERANCE", 300, int,
            "seconds a bounce webhook's signed timestamp may differ from the server's clock"),
    # The supporter's experience (issue 5): docs/supporters.md.
    Setting("LANGUAGES", "en,ru,fr,es,de", str,
            "interface languages, comma-separated; the first is the fallback"),
    Setting("MY_DATA_TOKEN_MAX_AGE", 30 * 24 * 3600, int, "seconds a manage-my-data link stays valid"),
    Setting("REMINDER_AFTER_HOURS", 24.0, float,
            "hours after signing that one reminder goes to a signer who has not confirmed (0: none)"),
    Setting("REMINDER_MAX_AGE_HOURS", 168.0, float,
            "signatures older than this many hours get no reminder (e.g. after an outage)"),
    Setting("REMINDER_INTERVAL", 300.0, float, "seconds between runs of the reminder job (Celery beat)"),
    Setting("REMINDER_BATCH", 500, int, "reminders queued per run of the reminder job"),
    Setting("RECENT_SIGNERS", 8, int, "recent signers listed on a petition page (0: none)"),
    # Surge (issue 9): docs/performance.md.
    Setting("MAIL_CONNECTION_REUSE", 100, int,
            "messages a worker process sends over one SMTP connection before opening another (1: one each)"),
)

REQUIRED_IN_PRODUCTION = ("SECRET_KEY", "BASE_URL", "SIGNER_DATA_KEYS", "BLIND_INDEX_KEY", "DATABASE_URL")


def _coerce(setting: Setting, raw: Any) -> Any:
    if raw is None or not isinstance(raw, str):
        return raw
    if setting.kind is bool:
        value = raw.strip().lower()
        if value in {"1", "true", "yes", "on"}:
            return True
        if value in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"{setting.name} must be true or false, not {raw!r}")
    if setting.kind in (int, float):
        try:
            return setting.kind(raw)
        except ValueError:
            raise ConfigError(f"{setting.name} must be a number, not {raw!r}") from None
    return raw


def database_url(url: str) -> str:
    """Point the plain URLs that hosting providers hand out at the driver the project uses."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _development_secrets(instance: Path) -> dict[str, str]:
    """Keys for the embedded default, generated once into instance/ and never committed."""
    path = instance / "secrets.json"
    if path.exists():
        stored: dict[str, str] = json.loads(path.read_text())
        return stored
    instance.mkdir(parents=True, exist_ok=True)
    generated = {
        "SECRET_KEY": secrets.token_urlsafe(48),
        "SIGNER_DATA_KEYS": Fernet.generate_key().decode(),
        "BLIND_INDEX_KEY": secrets.token_urlsafe(48),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(generated, handle)
    return generated


def load_config(instance_path: str, overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config: overrides win over the environment, which wins over defaults."""
    env = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    given = set(env) | set(overrides)
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            raw = overrides.pop(setting.name)
        else:
            raw = env.get(setting.name, setting.default)
        values[setting.name] = _coerce(setting, raw)

    mode = values["CAMPAIGN_ENV"]
    if mode not in {"production", "development", "testing"}:
        raise ConfigError(f"CAMPAIGN_ENV must be production, development or testing, not {mode!r}")
    instance = Path(instance_path)

    if mode == "production":
        missing = [name for name in REQUIRED_IN_PRODUCTION if not values.get(name)]
        if missing:
            raise ConfigError(
                "production needs " + ", ".join(missing)
                + " (see docs/configuration.md; set CAMPAIGN_ENV=development for the embedded default)"
            )
        if not values["CELERY_BROKER_URL"] and not values["REDIS_URL"]:
            raise ConfigError("production needs REDIS_URL (or CELERY_BROKER_URL) for the task queue")
        if values["CRASH_POINT"]:
            raise ConfigError("CRASH_POINT is for fault tests and cannot be set in production")
        if values["DEV_MAILBOX"]:
            raise ConfigError("DEV_MAILBOX cannot be switched on in production")
        if values["WEBHOOK_ALLOW_LOOPBACK"]:
            raise ConfigError("WEBHOOK_ALLOW_LOOPBACK is for tests and cannot be set in production")
    elif mode == "development":
        for name, value in _development_secrets(instance).items():
            values[name] = values[name] or value
        values["BASE_URL"] = values["BASE_URL"] or "http://127.0.0.1:5000"
        values["DATABASE_URL"] = values["DATABASE_URL"] or f"sqlite:///{instance / 'campaign.db'}"
        if not values["CELERY_BROKER_URL"] and not values["REDIS_URL"]:
            values["CELERY_BROKER_URL"] = "filesystem://"
        if "MAIL_SERVER" not in given:
            values["MAIL_SERVER"] = "127.0.0.1"
            values["MAIL_PORT"] = values["DEV_SMTP_PORT"]
        if "DEV_MAILBOX" not in given:
            values["DEV_MAILBOX"] = True

    if not values["SECRET_KEY"] or not values["SIGNER_DATA_KEYS"] or not values["BLIND_INDEX_KEY"]:
        raise ConfigError("SECRET_KEY, SIGNER_DATA_KEYS and BLIND_INDEX_KEY must be set")
    if not values["BASE_URL"]:
        raise ConfigError("BASE_URL must be set")
    values["BASE_URL"] = values["BASE_URL"].rstrip("/")
    values["DATABASE_URL"] = database_url(values["DATABASE_URL"] or f"sqlite:///{instance / 'campaign.db'}")
    values["CELERY_BROKER_URL"] = values["CELERY_BROKER_URL"] or values["REDIS_URL"] or "memory://"
    values["DEV_MAILBOX_DIR"] = values["DEV_MAILBOX_DIR"] or str(instance / "mailbox")
    values["EXPORT_DIR"] = values["EXPORT_DIR"] or str(instance / "exports")

    values.update(_framework_config(values))
    values.update(overrides)  # anything else a test or caller passes straight to Flask
    return values


def _framework_config(values: dict[str, Any]) -> dict[str, Any]:
    url = values["DATABASE_URL"]
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # WAL lets the worker read while the web process writes; wait instead of failing on a lock.
        engine["connect_args"] = {"timeout": 15}
    else:
        engine["pool_size"] = values["SQLALCHEMY_POOL_SIZE"]
        engine["max_overflow"] = values["SQLALCHEMY_MAX_OVERFLOW"]
        # An unreachable database must fail a request (and /readyz) quickly, not after TCP's minutes.
        engine["connect_args"] = {"connect_timeout": values["DATABASE_CONNECT_TIMEOUT"]}
    production = values["CAMPAIGN_ENV"] == "production"
    limiter = _limiter_config(values)
    return {
        **limiter,
        "SQLALCHEMY_DATABASE_URI": url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine,
        "TESTING": values["CAMPAIGN_ENV"] == "testing",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        # __Host-: the browser keeps it only if Secure, Path=/ and without Domain, so a sibling
        # subdomain cannot plant or overwrite the session (organizer CSRF tokens live in it).
        "SESSION_COOKIE_NAME": "__Host-session" if production else "session",
        "SESSION_COOKIE_PATH": "/",
        "SESSION_COOKIE_DOMAIN": False,
        # Flask-Login's remember-me cookie, should it ever be used, gets the same protection.
        "REMEMBER_COOKIE_NAME": "__Host-remember" if production else "remember_token",
        "REMEMBER_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_PATH": "/",
        "WTF_CSRF_TIME_LIMIT": None,  # the session bounds it; a long form must not expire mid-edit
        "MAX_CONTENT_LENGTH": 1024 * 1024,
    }


def _limiter_config(values: dict[str, Any]) -> dict[str, Any]:
    """Flask-Limiter: Redis in production, memory otherwise; a Redis that is down falls back to
    memory for a while instead of failing the request (DESIGN: never raise)."""
    storage = values["RATELIMIT_STORAGE_URI"]
    if not storage:
        redis_url = values["REDIS_URL"]
        storage = redis_url if values["CAMPAIGN_ENV"] == "production" and redis_url else "memory://"
    options: dict[str, Any] = {}
    if storage.startswith(("redis", "rediss")):
        timeout = float(values["BROKER_CONNECT_TIMEOUT"])
        options = {"socket_connect_timeout": timeout, "socket_timeout": max(timeout, 1.0)}
    return {
        "RATELIMIT_STORAGE_URI": storage,
        "RATELIMIT_STORAGE_OPTIONS": options,
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_KEY_PREFIX": "campaign-rl",
    }
