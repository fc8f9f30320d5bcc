"""Kill switches: what admins can stop at once, without a deploy. Stored in site_settings and
read through a per-process cache of KILLSWITCH_CACHE_SECONDS, so a change is in force within
that time in every process (at once in the process that made it)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, cast

from flask import current_app
from sqlalchemy import select

from campaign.models import SiteSetting, User
from campaign.models.base import utcnow
from campaign.services.audit import record
from campaign.services.types import DbSession

SIGNING = "signing_paused"
NEW_PETITIONS = "new_petitions_paused"
BULK_MAIL = "bulk_mail_paused"
CONFIRMATIONS = "confirmations_paused"
BANNER = "site_banner"
_PETITION_PREFIX = "petition_signing_paused:"

SWITCHES = (SIGNING, NEW_PETITIONS, BULK_MAIL, CONFIRMATIONS)
DEFAULT_PAUSE_MESSAGE = "Signing is paused for a short while. Please come back later."
MAX_TEXT = 500


@dataclass(frozen=True)
class Switches:
    """Every switch at one moment; what the pages and the outbox read."""
    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def on(self, key: str) -> bool:
        return bool(self.values.get(key, {}).get("on"))

    def message(self, key: str) -> str:
        return str(self.values.get(key, {}).get("message") or "")

    @property
    def banner(self) -> str:
        return self.message(BANNER) if self.on(BANNER) else ""

    def signing_pause_message(self, petition_id: int) -> str | None:
        """The message to show instead of the sign form, or None if signing is open."""
        for key in (SIGNING, petition_key(petition_id)):
            if self.on(key):
                return self.message(key) or DEFAULT_PAUSE_MESSAGE
        return None

    def paused_queues(self) -> frozenset[str]:
        queues = set()
        if self.on(BULK_MAIL):
            queues |= {"letters", "bulk"}
        if self.on(CONFIRMATIONS):
            queues.add("confirmations")
        return frozenset(queues)

    def fingerprint(self) -> str:
        """What public pages depend on (pauses and the banner), for their cache keys."""
        public = {k: v for k, v in self.values.items()
                  if k in (SIGNING, BANNER) or k.startswith(_PETITION_PREFIX)}
        return json.dumps(public, sort_keys=True)


def petition_key(petition_id: int) -> str:
    return f"{_PETITION_PREFIX}{int(petition_id)}"


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expires = 0.0
        self.switches = Switches()


def _cache() -> _Cache:
    cache = current_app.extensions.get("campaign.killswitch")
    if cache is None:
        cache = current_app.extensions.setdefault("campaign.killswitch", _Cache())
    return cast(_Cache, cache)


def switches(session: DbSession) -> Switches:
    """The current switches: from the process cache, or one small query when it is stale."""
    cache = _cache()
    now = time.monotonic()
    if now < cache.expires:
        return cache.switches
    values: dict[str, dict[str, Any]] = {}
    for row in session.scalars(select(SiteSetting)):
        try:
            value = json.loads(row.value or "{}")
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("on"):
            values[row.key] = value
    fresh = Switches(values)
    with cache.lock:
        cache.switches = fresh
        cache.expires = now + float(current_app.config["KILLSWITCH_CACHE_SECONDS"])
    return fresh


def forget_cached() -> None:
    """Drop this process's copy (after a change, or in tests)."""
    _cache().expires = 0.0


def set_switch(session: DbSession, actor: User | None, key: str, on: bool, message: str = "") -> None:
    """Turn a switch on (with an optional message) or off, in the caller's transaction.

    Keys: the SWITCHES, BANNER, or petition_key(id). Raises ValueError for any other key and
    PermissionError when the actor is not an admin. Idempotent.
    """
    if actor is not None and not actor.is_admin:
        raise PermissionError("admins only")
    if key not in (*SWITCHES, BANNER) and not key.startswith(_PETITION_PREFIX):
        raise ValueError(f"unknown switch {key!r}")
    text = " ".join((message or "").split())[:MAX_TEXT]
    if key == BANNER and on and not text:
        raise ValueError("a banner needs a text")
    row = session.get(SiteSetting, key)
    if row is None:
        row = SiteSetting(key=key)
        session.add(row)
    row.value = json.dumps({"on": bool(on), "message": text})
    row.updated_at = utcnow()
    row.updated_by_id = actor.id if actor is not None else None
    record(session, actor, "switch.on" if on else "switch.off", object_type="switch",
           summary=f"{key}: {text}" if on and text else key)
    session.flush()
    forget_cached()


def ensure_new_petitions_allowed(session: DbSession) -> None:
    """Raise PermissionError while admins have paused new petitions."""
    if switches(session).on(NEW_PETITIONS):
        raise PermissionError(switches(session).message(NEW_PETITIONS)
                              or "Creating petitions is paused for a short while.")
