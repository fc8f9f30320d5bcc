"""Abuse resistance: which signatures the signing path holds (silently), the organizers' bulk
release and invalidation of held or suspect signatures, trending-address alerts, and the
public integrity note (how many signatures are held or removed, and why).

Nothing here tells a signer anything: a held signature gets the same page and the same email
as any other. IPs and email domains are only ever compared as keyed hashes.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from campaign.mail.messages import Draft
from campaign.models import (
    Campaign,
    HoldReason,
    Membership,
    OutboundEmail,
    OutboxStatus,
    Petition,
    PetitionStatus,
    Signature,
    SignatureStatus,
    TrendingAlert,
    TrendingKind,
    User,
    UserStatus,
)
from campaign.models.base import utcnow
from campaign.services.audit import record
from campaign.services.counting import add_to_count
from campaign.services.emails import canonical_email
from campaign.services.outbox import message_kind, queue_email
from campaign.services.petitions import absolute_url
from campaign.services.privacy import SignerCipher, cipher
from campaign.services.types import DbSession

log = logging.getLogger(__name__)

TRENDING_ALERT = "trending_alert"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


# --- what the signing path holds ------------------------------------------------------------

@dataclass(frozen=True)
class SigningSignals:
    """What the web layer saw about one sign request, for the hold decision."""
    ip: str | None = None
    honeypot_filled: bool = False
    # Seconds between the form token's issue time and the POST; None if unknown.
    fill_seconds: float | None = None
    # Over a Flask-Limiter sign limit (per address, per address on the petition): web/ratelimit.py.
    over_rate_limit: bool = False


def parse_bursts(text: str) -> list[tuple[int, int]]:
    """"1/60, 5/300" -> [(1, 60), (5, 300)]: at most count signatures per seconds."""
    rules = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        count, _, seconds = part.partition("/")
        try:
            rules.append((int(count), int(seconds)))
        except ValueError:
            raise ValueError(f"a burst rule is count/seconds, not {part!r}") from None
    return rules


def email_domain(canonical: str) -> str:
    return canonical.rpartition("@")[2].casefold().rstrip(".")


def domain_hash(crypt: SignerCipher, domain: str) -> str:
    # "@domain" is never a canonical address (the local part is empty), so these hashes
    # cannot collide with an email's blind index.
    return crypt.blind_index("@" + domain)


def common_domains() -> frozenset[str]:
    raw = str(current_app.config["SIGNING_COMMON_DOMAINS"] or "")
    return frozenset(d.strip().casefold() for d in raw.split(",") if d.strip())


class _DisposableList:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.path: Path | None = None
        self.mtime = 0.0
        self.checked = 0.0
        self.domains: frozenset[str] = frozenset()


_disposable = _DisposableList()


def disposable_domains_path() -> Path:
    configured = current_app.config.get("DISPOSABLE_DOMAINS_FILE")
    return Path(configured) if configured else DATA_DIR / "disposable_domains.txt"


def read_domain_list(text: str) -> set[str]:
    """Domains from a list file: one a line, '#' comments, case and spaces ignored."""
    domains = set()
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip().casefold().rstrip(".")
        if entry and "." in entry and " " not in entry:
            domains.add(entry)
    return domains


def disposable_domains() -> frozenset[str]:
    """The blocklist, re-read when the file changes (checked at most every 10 s)."""
    path = disposable_domains_path()
    now = time.monotonic()
    with _disposable.lock:
        if _disposable.path == path and now - _disposable.checked < 10:
            return _disposable.domains
        _disposable.checked = now
        try:
            mtime = path.stat().st_mtime
        except OSError:
            log.warning("disposable domains file %s is missing", path)
            _disposable.path, _disposable.domains = path, frozenset()
            return _disposable.domains
        if _disposable.path != path or mtime != _disposable.mtime:
            _disposable.domains = frozenset(read_domain_list(path.read_text("utf-8")))
            _disposable.path, _disposable.mtime = path, mtime
        return _disposable.domains


def is_disposable(domain: str) -> bool:
    """The domain or one of its parents is on the blocklist."""
    blocklist = disposable_domains()
    parts = domain.casefold().split(".")
    return any(".".join(parts[i:]) in blocklist for i in range(len(parts) - 1))


def update_disposable_domains(source: Path, *, replace: bool = False) -> tuple[int, int]:
    """Merge (or, with replace, swap in) the domains of a local list file into the data file.

    Written to a temporary file and renamed, so a process reading it never sees half a list.
    Returns (domains now listed, domains added). Raises ValueError if the source lists none.
    """
    incoming = read_domain_list(source.read_text("utf-8"))
    if not incoming:
        raise ValueError(f"{source} lists no domains")
    target = disposable_domains_path()
    text = target.read_text("utf-8") if target.exists() else ""
    header = [line for line in text.splitlines() if line.startswith("#")]
    current = set() if replace else read_domain_list(text)
    merged = current | incoming
    added = len(merged - read_domain_list(text))
    temporary = target.with_suffix(".tmp")
    temporary.write_text("\n".join([*header, *sorted(merged)]) + "\n", "utf-8")
    temporary.replace(target)
    _disposable.checked = 0.0
    return len(merged), added


@functools.lru_cache(maxsize=64)
def _burst_statement(ip_windows: int, domain_windows: int) -> Any:
    """One SELECT counting a petition's recent signatures from this address and from this email
    domain in each rule's window. Built once per shape and reused: the sign path runs it on
    every request, and building it anew cost more CPU than PostgreSQL spends running it."""
    table = Signature.__table__.c

    def since(name: str) -> Any:
        return bindparam(name, type_=table.created_at.type)

    counts = [func.count().filter(and_(table.ip_hash == bindparam("ip"),
                                       table.created_at >= since(f"ip_{n}")))
              for n in range(ip_windows)]
    counts += [func.count().filter(and_(table.email_domain_hash == bindparam("domain"),
                                        table.created_at >= since(f"domain_{n}")))
               for n in range(domain_windows)]
    matches = ([table.ip_hash == bindparam("ip")] if ip_windows else []) + (
        [table.email_domain_hash == bindparam("domain")] if domain_windows else [])
    return select(*counts).where(table.petition_id == bindparam("petition"),
                                 table.created_at >= since("since"),
                                 or_(*matches))


def _burst_counts(session: DbSession, petition_id: int, ip_hash: str | None,
                  ip_rules: Sequence[tuple[int, int]], domain_digest: str | None,
                  domain_rules: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Signatures of this petition from the address (per ip rule's window) and from the email
    domain (per domain rule's window): one query for both."""
    ip_rules = ip_rules if ip_hash else ()
    domain_rules = domain_rules if domain_digest else ()
    if not ip_rules and not domain_rules:
        return [], []
    now = utcnow()
    params: dict[str, Any] = {"petition": petition_id, "ip": ip_hash, "domain": domain_digest}
    for n, (_count, seconds) in enumerate(ip_rules):
        params[f"ip_{n}"] = now - timedelta(seconds=seconds)
    for n, (_count, seconds) in enumerate(domain_rules):
        params[f"domain_{n}"] = now - timedelta(seconds=seconds)
    params["since"] = now - timedelta(seconds=max(s for _c, s in (*ip_rules, *domain_rules)))
    row = session.execute(_burst_statement(len(ip_rules), len(domain_rules)), params).one()
    counts = [int(n or 0) for n in row]
    return counts[:len(ip_rules)], counts[len(ip_rules):]


def hold_reasons(session: DbSession, petition_id: int, *, ip_hash: str | None, domain: str,
                 domain_digest: str, signals: SigningSignals) -> list[HoldReason]:
    """Why a new signature should be held, in the caller's transaction; [] if it should not.

    Reads only: one query for both burst kinds. Counts held signatures too, so a bot that keeps
    going stays held. Two concurrent requests from one address may both pass the burst check
    (no lock on the hot path); the next one is held.
    """
    config = current_app.config
    reasons: list[HoldReason] = []
    if signals.honeypot_filled:
        reasons.append(HoldReason.HONEYPOT)
    minimum = float(config["SIGNING_MIN_FILL_SECONDS"])
    if signals.fill_seconds is not None and signals.fill_seconds < minimum:
        reasons.append(HoldReason.TOO_FAST)
    if domain and is_disposable(domain):
        reasons.append(HoldReason.DISPOSABLE)
    if signals.over_rate_limit:
        reasons.append(HoldReason.RATE_LIMIT)
    ip_rules = parse_bursts(config["SIGNING_IP_BURST"])
    domain_rules = parse_bursts(config["SIGNING_DOMAIN_BURST"])
    counted_domain = domain_digest if domain and domain not in common_domains() else None
    ip_counts, domain_counts = _burst_counts(session, petition_id, ip_hash, ip_rules,
                                             counted_domain, domain_rules)
    if any(n >= limit for n, (limit, _s) in zip(ip_counts, ip_rules, strict=False)):
        reasons.append(HoldReason.IP_BURST)
    if any(n >= limit for n, (limit, _s) in zip(domain_counts, domain_rules, strict=False)):
        reasons.append(HoldReason.DOMAIN_BURST)
    return reasons


def public_state(signature: Signature) -> str:
    """What the signer's own pages show: a held signature looks pending until its owner
    confirms it, and confirmed afterwards, exactly like any other."""
    if signature.status == SignatureStatus.HELD:
        return SignatureStatus.CONFIRMED if signature.confirmed_at else SignatureStatus.PENDING
    return signature.status


# --- bulk review: select, preview, release, invalidate -----------------------------------------

class SelectionError(ValueError):
    """The filter cannot be applied as typed; the message is fit to show next to the field."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


# An organizer types an address or CIDR; we hold hashes of addresses and of their /24 or /48.
# A prefix at least as wide as the stored network is expanded into its networks' hashes, a
# narrower one into its addresses' hashes, within these bounds (see docs/security.md).
MAX_EXPANSION = 4096
IPV4_WIDEST = 12    # a /12 holds 4,096 /24 networks
IPV6_WIDEST = 36    # a /36 holds 4,096 /48 networks
IPV6_NARROWEST_EXPANDED = 116  # a /116 holds 4,096 addresses


@dataclass(frozen=True)
class Selection:
    """Which signatures of one petition a bulk action touches. Empty fields do not filter."""
    ip: str = ""
    domain: str = ""
    country: str = ""
    since: datetime | None = None
    until: datetime | None = None
    reason: str = ""  # a HoldReason: only signatures held for it

    def is_empty(self) -> bool:
        return not (self.ip or self.domain or self.country or self.since or self.until or self.reason)

    def describe(self) -> str:
        """For the audit log: never a raw address (an IP filter is logged as its kind only)."""
        parts = []
        if self.ip:
            parts.append("ip/network filter")
        if self.domain:
            parts.append(f"domain={self.domain}")
        if self.country:
            parts.append(f"country={self.country}")
        if self.since:
            parts.append(f"since={self.since.isoformat(timespec='minutes')}")
        if self.until:
            parts.append(f"until={self.until.isoformat(timespec='minutes')}")
        if self.reason:
            parts.append(f"reason={self.reason}")
        return ", ".join(parts) or "all"


def ip_filter(crypt: SignerCipher, typed: str) -> Any:
    """A condition matching signatures from an address or CIDR, through the keyed hashes.

    Supported: any single address; IPv4 prefixes /12 to /32; IPv6 prefixes /36 to /48 and /116
    to /128. IPv4 wider than /12, IPv6 wider than /36, and IPv6 /49 to /115 raise SelectionError:
    the hashes cannot answer them without hashing more candidates than is reasonable.
    """
    text = typed.strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise SelectionError("Enter an IP address (203.0.113.7) or a network (203.0.113.0/24).",
                             "ip") from None
    stored = 24 if network.version == 4 else 48
    widest = IPV4_WIDEST if network.version == 4 else IPV6_WIDEST
    if network.prefixlen == network.max_prefixlen:
        return Signature.ip_hash == crypt.ip_hashes(str(network.network_address))[0]
    if widest <= network.prefixlen <= stored:
        subnets = [network] if network.prefixlen == stored else network.subnets(new_prefix=stored)
        hashes = [crypt.ip_hashes(str(sub.network_address))[1] for sub in subnets]
        return Signature.network_hash.in_(hashes)
    if (network.version == 4 and network.prefixlen > stored) or (
            network.version == 6 and network.prefixlen >= IPV6_NARROWEST_EXPANDED):
        hashes = [crypt.ip_hashes(str(address))[0] for address in _addresses(network)]
        return Signature.ip_hash.in_(hashes)
    if network.prefixlen < widest:
        raise SelectionError(f"Networks wider than /{widest} are not supported: enter up to "
                             f"{MAX_EXPANSION:,} networks of /{stored} at a time.", "ip")
    raise SelectionError("IPv6 prefixes between /49 and /115 are not supported: enter the /48 "
                         "network, or a prefix of /116 or narrower.", "ip")


def _addresses(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Iterable[Any]:
    # Every address in the prefix, network and broadcast addresses included: a signer's
    # address is whatever the socket said.
    start = int(network.network_address)
    for offset in range(network.num_addresses):
        yield ipaddress.ip_address(start + offset)


def normalize_domain(typed: str) -> str:
    domain = typed.strip().casefold().lstrip("@").rstrip(".")
    if not domain or "." not in domain or " " in domain or "@" in domain:
        raise SelectionError("Enter a domain such as example.org.", "domain")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise SelectionError("That is not a valid domain.", "domain") from None
    # The same aliases as the blind index (googlemail.com is gmail.com).
    return email_domain(canonical_email(f"x@{domain}"))


def _conditions(petition_id: int, selection: Selection) -> list[Any]:
    crypt = cipher()
    conditions: list[Any] = [Signature.petition_id == petition_id]
    if selection.ip:
        conditions.append(ip_filter(crypt, selection.ip))
    if selection.domain:
        digest = domain_hash(crypt, normalize_domain(selection.domain))
        conditions.append(Signature.email_domain_hash == digest)
    if selection.country:
        conditions.append(Signature.country == selection.country.strip().upper()[:8])
    if selection.since:
        conditions.append(Signature.created_at >= selection.since)
    if selection.until:
        conditions.append(Signature.created_at < selection.until)
    if selection.reason:
        if selection.reason not in set(HoldReason):
            raise SelectionError("Choose a reason from the list.", "reason")
        # hold_reasons is a comma list: match the whole word.
        conditions.append(("," + Signature.hold_reasons + ",").contains(f",{selection.reason},"))
    return conditions


def _count(session: DbSession, conditions: list[Any]) -> int:
    return int(session.scalar(select(func.count()).select_from(Signature).where(*conditions)) or 0)


RELEASABLE = (SignatureStatus.HELD,)
INVALIDATABLE = (SignatureStatus.PENDING, SignatureStatus.CONFIRMED, SignatureStatus.HELD)


def preview_release(session: DbSession, petition: Petition, selection: Selection) -> int:
    """How many held signatures release_held would change now."""
    return _count(session, [*_conditions(petition.id, selection), Signature.status.in_(RELEASABLE)])


def preview_invalidation(session: DbSession, petition: Petition, selection: Selection) -> int:
    """How many signatures invalidate_matching would change now."""
    if selection.is_empty():
        return 0
    return _count(session, [*_conditions(petition.id, selection), Signature.status.in_(INVALIDATABLE)])


@dataclass(frozen=True)
class BulkResult:
    changed: int
    counted: int  # change to the petition's count


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


def release_held(session: DbSession, actor: User, petition: Petition, selection: Selection) -> BulkResult:
    """Release matching held signatures, in the caller's transaction.

    One already confirmed by its owner becomes confirmed and is counted (add_to_count, once:
    the conditional UPDATE changes each row once however often this runs); one not yet
    confirmed becomes pending and counts when its owner confirms. Idempotent.
    """
    conditions = [*_conditions(petition.id, selection), Signature.status == SignatureStatus.HELD]
    now = utcnow()
    confirmed = _rowcount(session.execute(
        update(Signature).where(*conditions, Signature.confirmed_at.is_not(None))
        .values(status=SignatureStatus.CONFIRMED, released_at=now)
        .execution_options(synchronize_session=False)))
    pending = _rowcount(session.execute(
        update(Signature).where(*conditions, Signature.confirmed_at.is_(None))
        .values(status=SignatureStatus.PENDING, released_at=now)
        .execution_options(synchronize_session=False)))
    if confirmed:
        add_to_count(session, petition.id, confirmed)
    if confirmed or pending:
        record(session, actor, "signatures.released", campaign_id=petition.campaign_id,
               object_type="petition", object_id=petition.id,
               summary=f"{confirmed + pending} held signatures released ({confirmed} counted): "
                       f"{selection.describe()}")
    session.expire_all()
    return BulkResult(confirmed + pending, confirmed)


def invalidate_matching(session: DbSession, actor: User, petition: Petition, selection: Selection,
                        reason: str) -> BulkResult:
    """Invalidate matching pending, confirmed and held signatures, in the caller's transaction.

    Confirmed ones leave the count (once: conditional UPDATEs). They are never mailed again:
    the builders send only to pending or confirmed signatures. Refuses an empty selection.
    """
    reason = " ".join(reason.split())
    if not reason:
        raise SelectionError("Say why these signatures are invalid.", "reason_text")
    if selection.is_empty():
        raise SelectionError("Choose at least one filter: invalidating every signature is not "
                             "a bulk action.")
    conditions = _conditions(petition.id, selection)
    # Who did it is in the audit log (record below), not on the rows.
    values = {"status": SignatureStatus.INVALIDATED, "invalidated_at": utcnow(),
              "invalidation_reason": reason[:1000]}
    confirmed = _rowcount(session.execute(
        update(Signature).where(*conditions, Signature.status == SignatureStatus.CONFIRMED)
        .values(**values).execution_options(synchronize_session=False)))
    others = _rowcount(session.execute(
        update(Signature).where(*conditions, Signature.status.in_([SignatureStatus.PENDING,
                                                                   SignatureStatus.HELD]))
        .values(**values).execution_options(synchronize_session=False)))
    if confirmed:
        add_to_count(session, petition.id, -confirmed)
    if confirmed or others:
        record(session, actor, "signatures.invalidated", campaign_id=petition.campaign_id,
               object_type="petition", object_id=petition.id,
               summary=f"{confirmed + others} signatures invalidated ({confirmed} were counted): "
                       f"{selection.describe()}: {reason[:300]}")
    session.expire_all()
    return BulkResult(confirmed + others, -confirmed)


@dataclass(frozen=True)
class HeldGroup:
    label: str   # a hold reason, a country, or a hash prefix
    key: str     # what to put in the Selection to act on this group
    count: int


def held_summary(session: DbSession, petition_id: int) -> dict[str, list[HeldGroup]]:
    """Held signatures by reason, country and network (hash prefix), biggest groups first."""
    base = [Signature.petition_id == petition_id, Signature.status == SignatureStatus.HELD]
    by_reason: dict[str, int] = {}
    for reasons, n in session.execute(select(Signature.hold_reasons, func.count()).where(*base)
                                      .group_by(Signature.hold_reasons)):
        for reason in (reasons or "").split(","):
            if reason:
                by_reason[reason] = by_reason.get(reason, 0) + int(n)
    countries = session.execute(select(Signature.country, func.count()).where(*base)
                                .group_by(Signature.country).order_by(func.count().desc()).limit(20))
    return {
        "reason": [HeldGroup(r, r, n) for r, n in sorted(by_reason.items(), key=lambda x: -x[1])],
        "country": [HeldGroup(c, c, int(n)) for c, n in countries],
    }


# --- trending addresses and domains -------------------------------------------------------------

def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _domain_label(session: DbSession, petition_id: int, digest: str) -> str:
    """Name a trending domain by reading one of its signatures (it is not stored in the clear)."""
    encrypted = session.scalar(select(Signature.email_encrypted).where(
        Signature.petition_id == petition_id, Signature.email_domain_hash == digest).limit(1))
    if encrypted is None:
        return ""
    try:
        return email_domain(cipher().decrypt(encrypted))
    except ValueError:
        return ""


def detect_trending(session: DbSession, now: datetime | None = None) -> list[TrendingAlert]:
    """Raise an alert for each address or email domain that signed one published petition more
    than TRENDING_*_PER_HOUR times in the last hour, and queue an email to each of the
    petition's organizers. Commits nothing; the caller commits.

    Idempotent per hour: an alert exists once per petition, kind, subject and clock hour.
    """
    config = current_app.config
    now = now or utcnow()
    since = now - timedelta(hours=1)
    thresholds = {TrendingKind.IP: int(config["TRENDING_IP_PER_HOUR"]),
                  TrendingKind.DOMAIN: int(config["TRENDING_DOMAIN_PER_HOUR"])}
    common = {domain_hash(cipher(), d) for d in common_domains()}
    petitions = list(session.scalars(select(Petition.id).where(Petition.status == PetitionStatus.PUBLISHED)))
    raised: list[TrendingAlert] = []
    for petition_id in petitions:
        for kind, column in ((TrendingKind.IP, Signature.ip_hash),
                             (TrendingKind.DOMAIN, Signature.email_domain_hash)):
            threshold = thresholds[kind]
            if threshold <= 0:
                continue
            rows = session.execute(
                select(column, func.count()).where(Signature.petition_id == petition_id,
                                                   Signature.created_at >= since, column.is_not(None))
                .group_by(column).having(func.count() >= threshold))
            for subject, count in rows:
                if subject is None or (kind == TrendingKind.DOMAIN and subject in common):
                    continue
                alert = _raise_alert(session, petition_id, kind, subject, int(count), threshold, now)
                if alert is not None:
                    raised.append(alert)
    return raised


def _raise_alert(session: DbSession, petition_id: int, kind: TrendingKind, subject: str, count: int,
                 threshold: int, now: datetime) -> TrendingAlert | None:
    label = _domain_label(session, petition_id, subject) if kind == TrendingKind.DOMAIN else ""
    alert = TrendingAlert(petition_id=petition_id, kind=kind, subject=subject, label=label[:255],
                          count=count, threshold=threshold, window_start=_hour(now))
    try:
        with session.begin_nested():
            session.add(alert)
    except IntegrityError:
        return None  # alerted already this hour
    for user_id in organizer_ids(session, petition_id):
        queue_email(session, kind=TRENDING_ALERT, key=f"{TRENDING_ALERT}:{alert.id}:{user_id}",
                    petition_id=petition_id)
    return alert


def organizer_ids(session: DbSession, petition_id: int) -> list[int]:
    """Active members of the petition's campaign."""
    return list(session.scalars(
        select(User.id).join(Membership, Membership.user_id == User.id)
        .join(Petition, Petition.campaign_id == Membership.campaign_id)
        .where(Petition.id == petition_id, User.status == UserStatus.ACTIVE).order_by(User.id)))


def recent_alerts(session: DbSession, petition_ids: Sequence[int], limit: int = 100) -> list[TrendingAlert]:
    if not petition_ids:
        return []
    return list(session.scalars(select(TrendingAlert).where(TrendingAlert.petition_id.in_(list(petition_ids)))
                                .order_by(TrendingAlert.created_at.desc(), TrendingAlert.id.desc())
                                .limit(limit)))


@message_kind(TRENDING_ALERT)
def trending_alert_email(session: DbSession, row: OutboundEmail) -> Draft | None:
    """To one organizer: counts and a hash prefix or domain; never a signer's address."""
    parts = row.idempotency_key.split(":")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    alert = session.get(TrendingAlert, int(parts[1]))
    user = session.get(User, int(parts[2]))
    if alert is None or user is None or user.status != UserStatus.ACTIVE:
        return None
    petition = session.get(Petition, alert.petition_id)
    if petition is None:
        return None
    campaign = session.get(Campaign, petition.campaign_id)
    return Draft(
        kind=TRENDING_ALERT,
        to_name=user.name,
        to_address=user.email,
        subject="Unusual signing activity on a petition",
        sender_name=campaign.sender_name if campaign else "Campaign",
        context={
            "alert": alert,
            "petition": petition,
            "subject_label": alert.label or alert.subject[:12],
            "review_url": absolute_url(f"/organize/petitions/{petition.id}/moderation"),
        },
    )


# --- the public integrity note ----------------------------------------------------------------

# A signature held for several reasons is counted once, under the first of these it has.
_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("automated", frozenset({HoldReason.HONEYPOT, HoldReason.TOO_FAST})),
    ("disposable", frozenset({HoldReason.DISPOSABLE})),
    ("rate_limits", frozenset({HoldReason.IP_BURST, HoldReason.DOMAIN_BURST, HoldReason.RATE_LIMIT})),
)


@dataclass(frozen=True)
class IntegrityNote:
    held_rate_limits: int = 0
    held_automated: int = 0
    held_disposable: int = 0
    invalidated: int = 0
    bounced: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def held(self) -> int:
        return self.held_rate_limits + self.held_automated + self.held_disposable

    @property
    def removed(self) -> int:
        return self.invalidated + self.bounced

    @property
    def any(self) -> bool:
        return bool(self.held or self.removed)

    def as_tuple(self) -> tuple[int, ...]:
        return (self.held_rate_limits, self.held_automated, self.held_disposable, self.invalidated,
                self.bounced)


def integrity_note(session: DbSession, petition_id: int) -> IntegrityNote:
    """Held and removed signatures of a petition, as counts by reason. Two small queries over
    the (petition, status) index; kept per process for INTEGRITY_CACHE_SECONDS."""
    cache: dict[int, tuple[float, IntegrityNote]] = current_app.extensions.setdefault(
        "campaign.integrity", {})
    now = time.monotonic()
    hit = cache.get(petition_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    groups = dict.fromkeys((name for name, _ in _GROUPS), 0)
    invalidated = 0
    rows = session.execute(
        select(Signature.status, Signature.hold_reasons, func.count())
        .where(Signature.petition_id == petition_id,
               Signature.status.in_([SignatureStatus.HELD, SignatureStatus.INVALIDATED]))
        .group_by(Signature.status, Signature.hold_reasons))
    for status, reasons, n in rows:
        if status == SignatureStatus.INVALIDATED:
            invalidated += int(n)
            continue
        have = set((reasons or "").split(","))
        group = next((name for name, members in _GROUPS if have & members), "rate_limits")
        groups[group] += int(n)
    bounced = session.scalar(
        select(func.count(func.distinct(OutboundEmail.signature_id)))
        .join(Signature, and_(Signature.id == OutboundEmail.signature_id,
                              Signature.status == SignatureStatus.PENDING))
        .where(OutboundEmail.petition_id == petition_id, OutboundEmail.status == OutboxStatus.FAILED,
               OutboundEmail.kind == "signature_confirmation")) or 0
    note = IntegrityNote(held_rate_limits=groups["rate_limits"], held_automated=groups["automated"],
                         held_disposable=groups["disposable"], invalidated=invalidated, bounced=int(bounced))
    cache[petition_id] = (now + float(current_app.config["INTEGRITY_CACHE_SECONDS"]), note)
    return note


def forget_integrity(petition_id: int | None = None) -> None:
    cache: dict[int, Any] = current_app.extensions.setdefault("campaign.integrity", {})
    if petition_id is None:
        cache.clear()
    else:
        cache.pop(petition_id, None)
