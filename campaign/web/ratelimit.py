"""Rate limits (Flask-Limiter): sign-in and password reset per account and per client address,
the API per client, organizer and admin actions per account. The limits are settings
(RATELIMIT_*), read per request, so a change needs a restart but no code.

The public sign form is never limited here: a signature over a threshold is held silently by
the signing service (DESIGN, R14), it never gets a 429. Keys are keyed hashes, never a raw
address or email, so Redis holds nothing that names anyone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from flask import Blueprint, Flask, current_app, request
from flask_login import current_user

from campaign.extensions import limiter
from campaign.services.emails import InvalidEmail, parse_email
from campaign.services.privacy import cipher

# Endpoints by group. Sign-in includes the second-factor step; "reset" covers every request
# that mails an account link (forgotten password, new password, sign-up).
LOGIN_ENDPOINTS = frozenset({"auth.login", "auth.login_code"})
RESET_ENDPOINTS = frozenset({"auth.forgot", "auth.reset", "auth.signup"})
ORGANIZER_BLUEPRINTS = frozenset({"organize", "moderation", "admin", "mailings", "exports", "translations"})
API_BLUEPRINTS = frozenset({"api"})
# Never limited with a 429, whatever else changes (DESIGN: held silently instead).
NEVER_LIMITED = frozenset({"public.sign", "embed.sign"})
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


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


# Built once per process, so registering them on every app (tests build many) adds nothing twice:
# Flask-Limiter keeps a blueprint's limits in a set of equal definitions.
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


def install(app: Flask) -> None:
    """Bind Flask-Limiter to the app and attach the RULES to their blueprints, by name, so a
    blueprint registered later (or not at all yet) is covered too."""
    limiter.init_app(app)
    for rule in RULES:
        for name in rule.blueprints:
            # Flask-Limiter keys blueprint limits by the blueprint's name; a stand-in with the
            # same name registers them whether or not the real one exists yet.
            target = app.blueprints.get(name) or Blueprint(name, __name__)
            limiter.shared_limit(
                _PROVIDERS[rule.setting], scope=rule.scope, key_func=rule.key,
                methods=list(WRITE_METHODS) if rule.writes_only else None,
                exempt_when=rule.exempt_when, override_defaults=False)(cast(Blueprint, target))


@limiter.request_filter
def _never_limited() -> bool:
    return request.endpoint in NEVER_LIMITED
