"""Rate limits (Flask-Limiter): sign-in and password reset per account and per client address,
the API per client, organizer and admin actions per account. The limits are settings
(RATELIMIT_*), read per request, so a change needs a restart but no code.

The public sign forms are never answered with a 429: their counters (per client address, and
per address on one petition) only decide whether a signature is held, silently, by the signing
service (DESIGN, R14). Keys are keyed hashes, never a raw address or email, so Redis holds
nothing that names anyone.

Each app gets its own Limiter (one module-level Limiter would keep the first app's
RATELIMIT_ENABLED and storage for every later app of the process), and writes its own
Retry-After: only on 429s, never over one a view set itself.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, request
from flask_limiter import Limiter
from flask_login import current_user
from limits import RateLimitItem, parse_many
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter, RateLimiter

from campaign.services.emails import InvalidEmail, parse_email
from campaign.services.privacy import cipher

# Endpoints by group. Sign-in includes the second-factor step; "reset" covers every request
# that mails an account link (forgotten password, new password, sign-up).
LOGIN_ENDPOINTS = frozenset({"auth.login", "auth.login_code"})
RESET_ENDPOINTS = frozenset({"auth.forgot", "auth.reset", "auth.signup"})
ORGANIZER_BLUEPRINTS = frozenset({"organize", "moderation", "admin", "mailings", "exports", "integrations",
                                  "reach", "translations"})
API_BLUEPRINTS = frozenset({"api"})
# Never limited with a 429, whatever else changes (DESIGN: held silently instead).
NEVER_LIMITED = frozenset({"public.sign", "embed.sign"})
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
log = logging.getLogger(__name__)


def client_key() -> str:
    """The client's address as a keyed hash (ProxyFix has set remote_addr from PROXY_FIX_HOPS)."""
    digest, _network = cipher().ip_hashes(request.remote_addr)
    return "ip:" + (digest or "unknown")[:32]


def account_key() -> str:
    """The account a sign-in or reset names (its email field), as a keyed hash; else the client."""
    raw = request.form.get("email", "") if request.method in WRITE_METHODS else ""
    try:
        canonical = parse_email(raw).canonical
    except InvalidEmail:
        canonical = (raw or "").strip().casefold()
    if not canonical:
        token = (request.view_args or {}).get("token")
        if token:  # a reset link names its account through the token
            return "link:" + hashlib.sha256(str(token).encode()).hexdigest()[:32]
        return client_key()
    return "acct:" + cipher().blind_index("ratelimit:" + canonical)[:32]


def organizer_key() -> str:
    if current_user and current_user.is_authenticated:
        return f"user:{current_user.get_id().split(':', 1)[0]}"
    return client_key()


def api_key() -> str:
    token = request.headers.get("Authorization", "")
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return client_key()


def _setting(name: str) -> Callable[[], str]:
    def provider() -> str:
        return str(current_app.config[name] or "")
    provider.__name__ = f"limit_{name.lower()}"
    return provider


def _outside(endpoints: frozenset[str]) -> Callable[[], bool]:
    def exempt() -> bool:
        return request.endpoint not in endpoints
    return exempt


@dataclass(frozen=True)
class Rule:
    blueprints: frozenset[str]
    setting: str
    key: Callable[[], str]
    scope: str
    exempt_when: Callable[[], bool] | None = None
    writes_only: bool = True


# Built once per process and attached to each app's own Limiter.
RULES = (
    Rule(frozenset({"auth"}), "RATELIMIT_LOGIN_PER_IP", client_key, "login-ip", _outside(LOGIN_ENDPOINTS)),
    Rule(frozenset({"auth"}), "RATELIMIT_LOGIN_PER_ACCOUNT", account_key, "login-account",
         _outside(LOGIN_ENDPOINTS)),
    Rule(frozenset({"auth"}), "RATELIMIT_RESET_PER_IP", client_key, "reset-ip", _outside(RESET_ENDPOINTS)),
    Rule(frozenset({"auth"}), "RATELIMIT_RESET_PER_ACCOUNT", account_key, "reset-account",
         _outside(RESET_ENDPOINTS)),
    Rule(API_BLUEPRINTS, "RATELIMIT_API", api_key, "api", writes_only=False),
    Rule(ORGANIZER_BLUEPRINTS, "RATELIMIT_ORGANIZER", organizer_key, "organizer"),
)
_PROVIDERS = {rule.setting: _setting(rule.setting) for rule in RULES}
LIMITED_BLUEPRINTS = frozenset().union(*(rule.blueprints for rule in RULES))


def current_limiter() -> Limiter:
    return cast(Limiter, current_app.extensions["campaign.limiter"])


def install(app: Flask) -> None:
    """Bind a Limiter of this app's own and attach the RULES to their blueprints, by name, so a
    blueprint registered later (or not at all yet) is covered too."""
    # Headers are written by _limit_headers below: Flask-Limiter's own would put Retry-After
    # on every limited response and overwrite the one a view set (a 503's "300").
    limiter = Limiter(key_func=client_key, headers_enabled=False)
    limiter.request_filter(_never_limited)
    for rule in RULES:
        for name in rule.blueprints:
            # Flask-Limiter keys blueprint limits by the blueprint's name; a stand-in with the
            # same name registers them whether or not the real one exists yet.
            target = app.blueprints.get(name) or Blueprint(name, __name__)
            limiter.shared_limit(
                _PROVIDERS[rule.setting], scope=rule.scope, key_func=rule.key,
                methods=list(WRITE_METHODS) if rule.writes_only else None,
                exempt_when=rule.exempt_when, override_defaults=False)(cast(Blueprint, target))
    # Registered before init_app, so it runs after Flask-Limiter's own after_request hooks.
    app.after_request(_limit_headers)
    limiter.init_app(app)
    app.extensions["campaign.limiter"] = limiter


def _never_limited() -> bool:
    # A request outside every limited blueprint (the public pages) has no limit to check:
    # skipping Flask-Limiter's evaluation there saves the sign flow's GETs its cost (issue 9).
    return request.endpoint in NEVER_LIMITED or request.blueprint not in LIMITED_BLUEPRINTS


def _limit_headers(response: Response) -> Response:
    limiter = current_app.extensions.get("campaign.limiter")
    limit = limiter.current_limit if limiter is not None and limiter.enabled else None
    if limit is None:
        return response
    try:
        reset_at, remaining = int(limit.reset_at), int(limit.remaining)
    except Exception:  # the storage went away after the check: the answer stands without them
        log.warning("rate limit storage unreachable while writing headers")
        return response
    if current_app.config.get("RATELIMIT_HEADERS_ENABLED"):
        response.headers["X-RateLimit-Limit"] = str(limit.limit.amount)
        response.headers["X-RateLimit-Remaining"] = str(remaining)
        response.headers["X-RateLimit-Reset"] = str(reset_at)
    if response.status_code == 429 and "Retry-After" not in response.headers:
        response.headers["Retry-After"] = str(max(1, reset_at - int(time.time())))
    return response


# --- the sign forms: counted here, held by the signing service, never refused -------------------

_STORAGE_PAUSE = 5.0  # seconds the sign path skips an unreachable storage before trying again


def signing_over_limit(petition: str) -> bool:
    """Count this sign request in Flask-Limiter's storage (Redis in production, memory in the
    embedded default), per client address across petitions (SIGNING_RATELIMIT_PER_IP) and per
    address on this petition, named by its slug (SIGNING_RATELIMIT_PER_PETITION); True if either
    is over its limit.

    Every request is counted, whatever its outcome, so a held and a normal request do the same
    work. The atomic counters also close the window in which concurrent requests from one
    address all pass the database's burst check. A storage that cannot be reached answers
    False (never a failed or slow signature) and is skipped for a few seconds; the database's
    burst checks still hold.
    """
    limiter = current_limiter()
    config = current_app.config
    if not limiter.enabled:
        return False
    state = current_app.extensions.setdefault("campaign.sign_limits", {"skip_until": 0.0})
    if state["skip_until"] > time.monotonic():
        return False
    key = client_key()
    prefix = str(config.get("RATELIMIT_KEY_PREFIX") or "")
    checks: list[tuple[RateLimitItem, tuple[str, ...]]] = [
        *((item, (prefix, "sign-ip", key)) for item in _limits(config["SIGNING_RATELIMIT_PER_IP"])),
        *((item, (prefix, "sign-petition", petition, key))
          for item in _limits(config["SIGNING_RATELIMIT_PER_PETITION"]))]
    try:
        over = not all(_hit_all(limiter.limiter, checks))
    except Exception:
        log.warning("rate limit storage unreachable on the sign path; skipped for %.0f s", _STORAGE_PAUSE)
        state["skip_until"] = time.monotonic() + _STORAGE_PAUSE
        return False
    return over


def _hit_all(strategy: RateLimiter, checks: list[tuple[RateLimitItem, tuple[str, ...]]]) -> list[bool]:
    """Count one hit on every check; True for each still within its limit.

    On Redis with fixed windows (the default strategy), all counters move in one MULTI/EXEC
    round trip on the library's own keys: SET NX EX gives a new window its expiry as the
    library's increment script does, atomically with the INCR, so a counter never outlives its
    window. One round trip instead of one per limit, and no SCRIPT EXISTS check (issue 9).
    Other storages and strategies go one by one.
    """
    storage = strategy.storage
    if isinstance(strategy, FixedWindowRateLimiter) and isinstance(storage, RedisStorage) and checks:
        pipeline = cast(Any, storage.get_connection()).pipeline(transaction=True)
        for item, identifiers in checks:
            key = storage.prefixed_key(item.key_for(*identifiers))
            pipeline.set(key, 0, ex=item.get_expiry(), nx=True)
            pipeline.incrby(key, 1)
        replies = pipeline.execute()
        counts = replies[1::2]
        return [int(count) <= item.amount for count, (item, _ids) in zip(counts, checks, strict=True)]
    return [strategy.hit(item, *identifiers) for item, identifiers in checks]


_parsed: dict[str, list[RateLimitItem]] = {}


def _limits(text: str | None) -> list[RateLimitItem]:
    text = (text or "").strip()
    if text not in _parsed:
        _parsed[text] = list(parse_many(text)) if text else []
    return _parsed[text]
