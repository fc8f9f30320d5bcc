"""Webhooks: organizers' URLs told about a campaign's events (signature.confirmed,
petition.milestone, delivery.sent), the calls queued for them in the transaction that caused
the event, and sending one call: HMAC-SHA256-signed, to a public address only, with retries
driven by a next-attempt time and a webhook switched off after repeated failures.

A call row stores ids and counts only; the body is built when it is sent, so a signer's name or
email exists in a body only for a webhook whose organizers opted in to it (audited), and never
in the database. docs/api.md#webhooks documents the payloads and how to verify the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

import certifi
import urllib3
from flask import current_app
from sqlalchemy import and_, delete, event, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from campaign.models import (
    Campaign,
    Delivery,
    OutboundEmail,
    Petition,
    Signature,
    Target,
    User,
    Webhook,
    WebhookCall,
    WebhookCallStatus,
    WebhookEvent,
)
from campaign.models.base import utcnow
from campaign.services.audit import record
from campaign.services.counting import signature_count
from campaign.services.organizing import NotFound, OrganizingError, campaign_for
from campaign.services.outbox import backoff_seconds
from campaign.services.privacy import cipher
from campaign.services.types import DbSession

log = logging.getLogger(__name__)

EVENTS = tuple(e.value for e in WebhookEvent)
# What an organizer may opt in to on signature.confirmed; nothing of a signer is sent without it.
SIGNER_FIELDS = ("name", "email", "country")
SIGNATURE_HEADER = "Campaign-Signature"
TASK = "webhooks.send"
QUEUE = "bulk"
USER_AGENT = "Campaign-Webhooks/1"
_PENDING = "webhooks.pending-calls"
# A confirmation sees the count as of its own transaction: concurrent ones may step over a
# milestone together, so each fires milestones this far below its count too (keys dedupe).
MILESTONE_WINDOW = 64


class AddressRefused(ValueError):
    """The URL is not http(s), or its host is (or resolves to) an address webhooks may not call."""


# --- registering ----------------------------------------------------------------------------------

def _allowed_address(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    # is_global is False for private, link-local, shared (100.64/10), reserved and unspecified.
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> tuple[str, int]:
    """The host and port of a URL webhooks may be registered with. Raises AddressRefused."""
    if len(url) > 2000 or any(ord(c) < 33 for c in url):
        raise AddressRefused("Use an address of at most 2,000 characters without spaces.")
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise AddressRefused("Use an http:// or https:// address.")
    if parts.username or parts.password:
        raise AddressRefused("Leave user names and passwords out of the address: the signature "
                             "authenticates each call.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise AddressRefused("The port is not a number from 1 to 65535.") from None
    return parts.hostname, port


def resolve_public(host: str, port: int) -> str:
    """One address of the host that webhooks may call, checked now (at send time, against DNS
    rebinding). Every address the name resolves to must be allowed. Raises AddressRefused."""
    allow_loopback = bool(current_app.config["WEBHOOK_ALLOW_LOOPBACK"])
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise AddressRefused(f"{host} does not resolve.") from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise AddressRefused(f"{host} does not resolve.")
    for address in addresses:
        if not _allowed_address(address, allow_loopback):
            raise AddressRefused(f"{host} resolves to {address}, which is not a public address.")
    return addresses[0]


def register_webhook(session: DbSession, actor: User, campaign: Campaign, url: str,
                     events: Iterable[str], signer_fields: Iterable[str] = ()) -> tuple[Webhook, str]:
    """A webhook for the campaign and its signing secret (shown to the organizer once; stored
    encrypted because every call is signed with it). Raises OrganizingError."""
    url = url.strip()
    chosen = [e for e in EVENTS if e in set(events)]
    if not chosen:
        raise OrganizingError("Choose at least one event.", "events")
    fields = [f for f in SIGNER_FIELDS if f in set(signer_fields)]
    try:
        host, port = check_url(url)
        resolve_public(host, port)
    except AddressRefused as error:
        raise OrganizingError(str(error), "url") from None
    secret = "whsec_" + secrets.token_urlsafe(32)
    hook = Webhook(campaign_id=campaign.id, url=url, events=" ".join(chosen),
                   secret_encrypted=cipher().encrypt(secret), signer_fields=" ".join(fields),
                   created_by_id=actor.id, created_at=utcnow(), active=True, consecutive_failures=0,
                   disabled_reason="")
    session.add(hook)
    session.flush()
    record(session, actor, "webhook.created", campaign_id=campaign.id, object_type="webhook",
           object_id=hook.id, summary=f"{url} for {', '.join(chosen)}")
    if fields:
        # Sending signers' details to another system is a decision someone answers for.
        record(session, actor, "webhook.signer_fields", campaign_id=campaign.id, object_type="webhook",
               object_id=hook.id, summary=f"{url} gets signers' {', '.join(fields)} on signature.confirmed")
    return hook, secret


def webhook_for(session: DbSession, actor: User, webhook_id: int) -> Webhook:
    """The webhook if the actor may manage its campaign (owners and admins)."""
    hook = session.get(Webhook, webhook_id)
    if hook is None:
        raise NotFound
    campaign_for(session, actor, hook.campaign_id, owner=True)
    return hook


def webhooks_of(session: DbSession, campaign_id: int) -> list[Webhook]:
    return list(session.scalars(select(Webhook).where(Webhook.campaign_id == campaign_id)
                                .order_by(Webhook.created_at.desc())))


def set_active(session: DbSession, actor: User, hook: Webhook, active: bool) -> None:
    """Switch a webhook on (its failure count starts again) or off."""
    hook.active = active
    if active:
        hook.consecutive_failures = 0
        hook.disabled_at = None
        hook.disabled_reason = ""
    else:
        hook.disabled_at = utcnow()
        hook.disabled_reason = "switched off by an organizer"
        _cancel_queued(session, hook.id, "the webhook was switched off")
    record(session, actor, "webhook.enabled" if active else "webhook.disabled", campaign_id=hook.campaign_id,
           object_type="webhook", object_id=hook.id, summary=hook.url)


def delete_webhook(session: DbSession, actor: User, hook: Webhook) -> None:
    record(session, actor, "webhook.deleted", campaign_id=hook.campaign_id, object_type="webhook",
           object_id=hook.id, summary=hook.url)
    session.delete(hook)


def calls_of(session: DbSession, webhook_id: int, limit: int = 50) -> list[WebhookCall]:
    """The delivery log: the latest calls, newest first."""
    return list(session.scalars(select(WebhookCall).where(WebhookCall.webhook_id == webhook_id)
                                .order_by(WebhookCall.created_at.desc(), WebhookCall.id.desc()).limit(limit)))


def _cancel_queued(session: DbSession, webhook_id: int, why: str) -> None:
    session.execute(update(WebhookCall).where(WebhookCall.webhook_id == webhook_id,
                                              WebhookCall.status == WebhookCallStatus.QUEUED)
                    .values(status=WebhookCallStatus.CANCELLED, last_error=why)
                    .execution_options(synchronize_session=False))


# --- queueing events (the hooks) ------------------------------------------------------------------

def queue_event(session: DbSession, campaign_id: int, event_name: str, key: str,
                data: dict[str, Any]) -> int:
    """A call for each active webhook of the campaign that wants this event, in the caller's
    transaction; published after it commits. `data` must hold ids and counts only. Idempotent
    per (webhook, key). Returns how many calls were queued."""
    hooks = session.execute(select(Webhook.id, Webhook.events).where(
        Webhook.campaign_id == campaign_id, Webhook.active.is_(True))).all()
    queued = 0
    for hook_id, events in hooks:
        if event_name not in events.split():
            continue
        call = WebhookCall(webhook_id=hook_id, event=event_name, event_key=key[:120],
                           data=json.dumps(data, separators=(",", ":")), status=WebhookCallStatus.QUEUED,
                           attempts=0, next_attempt_at=utcnow(), created_at=utcnow(), last_error="")
        try:
            with session.begin_nested():
                session.add(call)
        except IntegrityError:
            continue
        session.info.setdefault(_PENDING, []).append(call.id)
        queued += 1
    return queued


def _petition_ref(petition: Petition) -> dict[str, Any]:
    return {"id": petition.id, "slug": petition.slug}


def milestones(goal: int) -> list[int]:
    steps = {int(p) for p in str(current_app.config["WEBHOOK_MILESTONES"]).split(",") if p.strip().isdigit()}
    if goal > 0:
        steps.add(goal)
    return sorted(s for s in steps if s > 0)


def on_signature_confirmed(session: DbSession, signature: Signature) -> None:
    """The hook for a signature that has just started to count (in the confirming transaction):
    signature.confirmed, and petition.milestone for a milestone the count has reached."""
    petition = session.get(Petition, signature.petition_id)
    if petition is None or not session.scalar(select(Webhook.id).where(
            Webhook.campaign_id == petition.campaign_id, Webhook.active.is_(True)).limit(1)):
        return  # the common case: one indexed look-up and nothing else
    count = signature_count(session, petition.id)
    queue_event(session, petition.campaign_id, WebhookEvent.SIGNATURE_CONFIRMED,
                f"signature.confirmed:{signature.id}",
                {"petition": _petition_ref(petition), "signature": {"id": signature.id},
                 "signature_count": count})
    for step in milestones(petition.goal):
        if count - MILESTONE_WINDOW < step <= count:
            queue_event(session, petition.campaign_id, WebhookEvent.PETITION_MILESTONE,
                        f"petition.milestone:{petition.id}:{step}",
                        {"petition": _petition_ref(petition), "milestone": step,
                         "goal": petition.goal, "goal_reached": step == petition.goal,
                         "signature_count": count})


def on_delivery_sent(session: DbSession, email_id: int) -> None:
    """The hook for a delivery email the mail server accepted; the caller commits."""
    delivery = session.scalar(select(Delivery).where(Delivery.email_id == email_id))
    if delivery is None:
        return
    petition = session.get(Petition, delivery.petition_id)
    target = session.get(Target, delivery.target_id)
    email = session.get(OutboundEmail, email_id)
    if petition is None or target is None:
        return
    queue_event(session, petition.campaign_id, WebhookEvent.DELIVERY_SENT, f"delivery.sent:{delivery.id}", {
        "petition": _petition_ref(petition),
        "delivery": {"id": delivery.id, "kind": delivery.kind, "new_signatures": delivery.new_count,
                     "total_signatures": delivery.total_count,
                     "sent_date": _iso(email.sent_at if email and email.sent_at else utcnow())},
        # Officials' names are public (the petition page shows them); their addresses never are.
        "target": {"id": target.id, "name": target.name, "title": target.title, "country": target.country},
    })


def install_dispatch(session_factory: Any) -> None:
    """After each outermost commit, publish the calls it queued; forget them on rollback."""
    if getattr(install_dispatch, "_installed", False):
        return
    install_dispatch._installed = True  # type: ignore[attr-defined]

    @event.listens_for(session_factory, "after_commit")
    def _after_commit(session: DbSession) -> None:
        if cast(Session, session).in_nested_transaction():
            return
        for call_id in session.info.pop(_PENDING, []):
            publish(call_id)

    @event.listens_for(session_factory, "after_soft_rollback")
    def _after_soft_rollback(session: DbSession, previous_transaction: Any) -> None:
        if previous_transaction.parent is None and previous_transaction.nested is False:
            session.info.pop(_PENDING, None)


_broker_down_until = 0.0


def publish(call_id: int) -> None:
    """Publish webhooks.send by name; a broker that is down leaves the call to the sweep."""
    global _broker_down_until
    if time.monotonic() < _broker_down_until:
        return
    try:
        current_app.extensions["celery"].send_task(TASK, args=[call_id], queue=QUEUE, retry=False)
    except Exception as error:  # any broker failure: the row is committed, the sweep has it
        _broker_down_until = time.monotonic() + 5.0
        log.warning("broker unavailable, webhook sweep will send call %s: %s", call_id, type(error).__name__)


# --- sending --------------------------------------------------------------------------------------

def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_payload(secret: str, timestamp: int, body: bytes) -> str:
    """The Campaign-Signature header: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, tolerance: int = 300,
                     now: float | None = None) -> bool:
    """What a receiver does (docs/api.md shows the same in a few lines): recompute the HMAC over
    the timestamp and the raw body, compare in constant time, refuse stale timestamps (replays)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        return False
    expected = sign_payload(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def forget_old_calls(session: DbSession, batch: int = 1000) -> int:
    """Delete finished calls older than WEBHOOK_LOG_DAYS, a batch at a time; the caller commits."""
    cutoff = utcnow() - timedelta(days=int(current_app.config["WEBHOOK_LOG_DAYS"]))
    finished = [WebhookCallStatus.SENT, WebhookCallStatus.FAILED, WebhookCallStatus.CANCELLED]
    old = (select(WebhookCall.id).where(WebhookCall.status.in_(finished), WebhookCall.created_at < cutoff)
           .limit(batch))
    ids = list(session.scalars(old))
    if ids:
        session.execute(delete(WebhookCall).where(WebhookCall.id.in_(ids)))
    return len(ids)


def _claimable(now: datetime) -> Any:
    return or_(
        and_(WebhookCall.status == WebhookCallStatus.QUEUED, WebhookCall.next_attempt_at <= now),
        and_(WebhookCall.status == WebhookCallStatus.SENDING, WebhookCall.lease_until < now),
    )


def due_calls(session: DbSession, limit: int) -> list[int]:
    """Calls to publish: due, or claimed by a worker whose lease ran out."""
    return list(session.scalars(select(WebhookCall.id).where(_claimable(utcnow()))
                                .order_by(WebhookCall.next_attempt_at).limit(limit)))


def _claim(session: DbSession, call_id: int) -> WebhookCall | None:
    now = utcnow()
    lease = now + timedelta(seconds=int(current_app.config["WEBHOOK_LEASE_SECONDS"]))
    result = session.execute(update(WebhookCall).where(WebhookCall.id == call_id, _claimable(now))
                             .values(status=WebhookCallStatus.SENDING, attempts=WebhookCall.attempts + 1,
                                     lease_until=lease).execution_options(synchronize_session=False))
    session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return session.get(WebhookCall, call_id, populate_existing=True)


def build_body(session: DbSession, hook: Webhook, call: WebhookCall) -> bytes:
    """The JSON body of a call, with the signer fields its webhook opted in to."""
    data: dict[str, Any] = json.loads(call.data or "{}")
    fields = set(hook.signer_fields.split())
    if call.event == WebhookEvent.SIGNATURE_CONFIRMED and fields:
        signature = session.get(Signature, data.get("signature", {}).get("id"))
        if signature is not None and signature.anonymized_at is None:
            extra = data["signature"]
            if "country" in fields:
                extra["country"] = signature.country
            if "name" in fields:
                extra["name"] = _plain(signature.name_encrypted)
            # An address only of a signer who agreed to hear from the organizers, as in exports.
            if "email" in fields and signature.consent_updates:
                extra["email"] = _plain(signature.email_encrypted)
    body = {"id": f"whc_{call.id}", "event": call.event, "created": _iso(call.created_at),
            "campaign": {"id": hook.campaign_id}, "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _plain(encrypted: bytes | None) -> str:
    try:
        return cipher().decrypt(encrypted) if encrypted else ""
    except ValueError:
        return ""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None
    error: str
    retry: bool


def _post(url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST to the URL at an address checked just now, connecting to that very address (so a
    second DNS answer cannot point the request elsewhere). Redirects are not followed."""
    try:
        host, port = check_url(url)
        address = resolve_public(host, port)
    except AddressRefused as error:
        return Outcome(False, None, f"refused: {error}", retry=False)
    parts = urlsplit(url)
    timeout = float(current_app.config["WEBHOOK_TIMEOUT"])
    pool: urllib3.HTTPConnectionPool
    if parts.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1,
                                           cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
                                           server_hostname=host, assert_hostname=host)
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default_port = 443 if parts.scheme == "https" else 80
    headers = {**headers, "Host": host if port == default_port else f"{host}:{port}"}
    try:
        response = pool.urlopen("POST", path, body=body, headers=headers, redirect=False,
                                retries=False, preload_content=False, assert_same_host=False)
        try:
            response.read(4096, decode_content=False)
        finally:
            response.release_conn()
    except urllib3.exceptions.HTTPError as error:
        return Outcome(False, None, f"{type(error).__name__}: {str(error)[:300]}", retry=True)
    finally:
        pool.close()
    status = int(response.status)
    if 200 <= status < 300:
        return Outcome(True, status, "", retry=False)
    return Outcome(False, status, f"HTTP {status}", retry=True)


def send_call(session: DbSession, call_id: int) -> str:
    """Send one webhook call if it is due. Safe to run any number of times: claimed with a
    conditional UPDATE and a lease. Returns skipped, sent, retry, failed or cancelled.
    Commits its own transactions (the claim before the request, the outcome after)."""
    call = _claim(session, call_id)
    if call is None:
        return "skipped"
    hook = session.get(Webhook, call.webhook_id)
    if hook is None or not hook.active:
        return _finish(session, call, WebhookCallStatus.CANCELLED, None, "the webhook is switched off")
    try:
        secret = cipher().decrypt(hook.secret_encrypted)
    except ValueError:
        # A key left SIGNER_DATA_KEYS before `flask rotate-signer-keys` re-encrypted this secret.
        return _finish(session, call, WebhookCallStatus.FAILED, None,
                       "the signing secret cannot be decrypted with SIGNER_DATA_KEYS")
    body = build_body(session, hook, call)
    timestamp = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               SIGNATURE_HEADER: sign_payload(secret, timestamp, body),
               "Campaign-Event": call.event, "Campaign-Webhook-Id": f"whc_{call.id}"}
    outcome = _post(hook.url, body, headers)
    if outcome.ok:
        session.execute(update(Webhook).where(Webhook.id == hook.id).values(consecutive_failures=0)
                        .execution_options(synchronize_session=False))
        return _finish(session, call, WebhookCallStatus.SENT, outcome.status, "")
    _count_failure(session, hook)
    if outcome.retry and call.attempts < int(current_app.config["WEBHOOK_MAX_ATTEMPTS"]):
        delay = backoff_seconds(call.attempts, int(current_app.config["WEBHOOK_BACKOFF_BASE"]),
                                int(current_app.config["WEBHOOK_BACKOFF_MAX"]))
        call_id, attempts = call.id, call.attempts
        _record(session, call, status=WebhookCallStatus.QUEUED, lease_until=None,
                response_status=outcome.status, last_error=outcome.error[:2000],
                next_attempt_at=utcnow() + timedelta(seconds=delay))
        log.info("webhook call %s: attempt %s failed (%s), next in %.1f s", call_id, attempts,
                 outcome.status or "no answer", delay)
        return "retry"
    return _finish(session, call, WebhookCallStatus.FAILED, outcome.status, outcome.error)


def _count_failure(session: DbSession, hook: Webhook) -> None:
    """One more failed attempt in a row; at WEBHOOK_DISABLE_AFTER the webhook is switched off."""
    limit = int(current_app.config["WEBHOOK_DISABLE_AFTER"])
    session.execute(update(Webhook).where(Webhook.id == hook.id)
                    .values(consecutive_failures=Webhook.consecutive_failures + 1)
                    .execution_options(synchronize_session=False))
    switched_off = session.execute(
        update(Webhook).where(Webhook.id == hook.id, Webhook.active.is_(True),
                              Webhook.consecutive_failures >= limit)
        .values(active=False, disabled_at=utcnow(),
                disabled_reason=f"switched off after {limit} failed attempts in a row")
        .execution_options(synchronize_session=False)).rowcount == 1  # type: ignore[attr-defined]
    if switched_off:
        _cancel_queued(session, hook.id, "the webhook was switched off after repeated failures")
        record(session, None, "webhook.auto_disabled", campaign_id=hook.campaign_id, object_type="webhook",
               object_id=hook.id, summary=f"{hook.url}: {limit} failed attempts in a row")
        log.warning("webhook %s switched off after %s failed attempts in a row", hook.id, limit)
    session.commit()


def _finish(session: DbSession, call: WebhookCall, status: WebhookCallStatus, response_status: int | None,
            error: str) -> str:
    _record(session, call, status=status, lease_until=None, response_status=response_status,
            last_error=error[:2000], sent_at=utcnow() if status == WebhookCallStatus.SENT else None)
    return {WebhookCallStatus.SENT: "sent", WebhookCallStatus.CANCELLED: "cancelled"}.get(status, "failed")


def _record(session: DbSession, call: WebhookCall, **values: Any) -> None:
    # Fenced by the lease: a worker that outlived its lease does not overwrite a newer claim.
    session.execute(update(WebhookCall).where(
        WebhookCall.id == call.id, WebhookCall.status == WebhookCallStatus.SENDING,
        WebhookCall.lease_until == call.lease_until).values(**values)
        .execution_options(synchronize_session=False))
    session.commit()
