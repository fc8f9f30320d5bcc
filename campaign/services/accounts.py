"""Organizer accounts: Argon2id passwords, sign-up with email verification and admin approval,
sign-in throttled per account and per client address, an optional TOTP second factor, signed
single-use password reset links, and the admin's user management.

Nothing here tells a caller whether an address has an account unless the caller proved it
owns that account (the right password, or a link mailed to it).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import pyotp
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from campaign.models import AttemptCounter, User, UserStatus
from campaign.models.base import utcnow
from campaign.services.audit import record
from campaign.services.emails import InvalidEmail, canonical_email, parse_email
from campaign.services.outbox import queue_email
from campaign.services.privacy import cipher
from campaign.services.types import DbSession

# R35 / OWASP: Argon2id with at least 19 MiB and 2 iterations.
MIN_MEMORY_KIB = 19 * 1024
MIN_TIME_COST = 2
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 256

ACCOUNT_VERIFICATION = "account_verification"
ACCOUNT_EXISTS = "account_exists"
PASSWORD_RESET = "password_reset"  # noqa: S105 - an email kind, not a password

_RESET_SALT = "campaign.password-reset"
_VERIFY_SALT = "campaign.account-verify"
# Notes and reset emails one address may be sent per LOGIN_ATTEMPT_WINDOW, whoever asks.
_EMAILS_PER_WINDOW = 3


class AccountError(ValueError):
    """A request about an account that cannot be done; the message is fit to show."""


class BadCredentials(AccountError):
    """Wrong address or password. The same message whether or not the account exists."""

    def __init__(self) -> None:
        super().__init__("That email address and password do not match an account that can sign in.")


class Throttled(AccountError):
    """Too many failed attempts from this account or client address: answer 429."""

    def __init__(self, retry_after: int) -> None:
        minutes = max(1, (retry_after + 59) // 60)
        super().__init__(f"Too many attempts. Wait {minutes} minute{'s' if minutes != 1 else ''} "
                         "and try again, or reset your password.")
        self.retry_after = retry_after


class NotActive(AccountError):
    """The right password for an account that may not sign in (yet). Only shown after the
    password proved who is asking."""


class TokenInvalid(AccountError):
    def __init__(self, reason: str) -> None:
        messages = {"expired": "This link has expired. Ask for a new one.",
                    "invalid": "This link is not valid, or it was used already. Ask for a new one."}
        super().__init__(messages[reason])
        self.reason = reason


# --- passwords ------------------------------------------------------------------------------

def password_hasher() -> PasswordHasher:
    """The app's Argon2id hasher, from PASSWORD_HASH_*; refuses parameters below R35's floor."""
    app = current_app
    hasher = app.extensions.get("campaign.password_hasher")
    if hasher is None:
        memory = int(app.config["PASSWORD_HASH_MEMORY_KIB"])
        time_cost = int(app.config["PASSWORD_HASH_TIME_COST"])
        if memory < MIN_MEMORY_KIB or time_cost < MIN_TIME_COST:
            raise ValueError(f"Argon2id needs PASSWORD_HASH_MEMORY_KIB >= {MIN_MEMORY_KIB} and "
                             f"PASSWORD_HASH_TIME_COST >= {MIN_TIME_COST}")
        hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory,
                                parallelism=int(app.config["PASSWORD_HASH_PARALLELISM"]), type=Type.ID)
        app.extensions["campaign.password_hasher"] = hasher
        # Verified against when no account matches, so a miss costs as long as a hit.
        app.extensions["campaign.dummy_hash"] = hasher.hash(secrets.token_urlsafe(16))
    return cast(PasswordHasher, hasher)


def hash_password(password: str) -> str:
    return password_hasher().hash(password)


def _verify(stored: str | None, password: str) -> bool:
    hasher = password_hasher()
    try:
        return hasher.verify(stored or current_app.extensions["campaign.dummy_hash"], password) \
            and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_problem(password: str, email: str = "") -> str | None:
    """Why a new password is refused, or None. Length matters more than character classes."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"Use at least {PASSWORD_MIN_LENGTH} characters."
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"Use at most {PASSWORD_MAX_LENGTH} characters."
    if email and password.strip().casefold() == email.strip().casefold():
        return "Do not use your email address as your password."
    if len(set(password)) < 4:
        return "Choose a password that is harder to guess."
    return None


def account_email(raw: str) -> str:
    """The address an account is stored under: validated, lower-cased. Raises InvalidEmail."""
    return parse_email(raw).address.lower()


def user_by_email(session: DbSession, raw: str) -> User | None:
    try:
        address = account_email(raw)
    except InvalidEmail:
        return None
    return session.scalar(select(User).where(User.email == address))


def new_session_token() -> str:
    return secrets.token_urlsafe(24)


def _set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    user.password_changed_at = utcnow()
    # Every signed-in session of this account names the old token and ends.
    user.session_token = new_session_token()


def load_session_user(session: DbSession, session_id: str) -> User | None:
    """Flask-Login's user loader: "<id>:<session token>", valid only while the token matches."""
    user_id, _, token = session_id.partition(":")
    if not user_id.isdigit() or not token:
        return None
    user = session.get(User, int(user_id))
    if user is None or not secrets.compare_digest(user.session_token, token):
        return None
    return user


# --- throttling -----------------------------------------------------------------------------

def _account_key(raw_email: str) -> str:
    try:
        canonical = canonical_email(account_email(raw_email))
    except InvalidEmail:
        canonical = (raw_email or "").strip().casefold()
    return "acct:" + cipher().blind_index("login:" + canonical)[:48]


def _ip_key(ip: str | None) -> str | None:
    digest, _network = cipher().ip_hashes(ip)
    return None if digest is None else "ip:" + digest[:48]


def _window() -> int:
    return int(current_app.config["LOGIN_ATTEMPT_WINDOW"])


def _blocked_for(session: DbSession, key: str, limit: int) -> int:
    """Seconds until key may try again; 0 when it may now."""
    row = session.scalar(select(AttemptCounter).where(AttemptCounter.key == key))
    if row is None:
        return 0
    ends = row.window_start + timedelta(seconds=_window())
    now = utcnow()
    if ends <= now or row.count < limit:
        return 0
    return max(1, int((ends - now).total_seconds()))


def _hit(session: DbSession, key: str) -> int:
    """Count one attempt against key in the current window; return the count."""
    now = utcnow()
    row = session.scalar(select(AttemptCounter).where(AttemptCounter.key == key))
    if row is None:
        try:
            with session.begin_nested():
                row = AttemptCounter(key=key, count=0, window_start=now)
                session.add(row)
        except IntegrityError:  # a concurrent attempt created it
            row = session.scalar(select(AttemptCounter).where(AttemptCounter.key == key))
            if row is None:
                raise
    if row.window_start + timedelta(seconds=_window()) <= now:
        row.count = 1
        row.window_start = now
    else:
        # An expression, so concurrent failures all count.
        session.execute(update(AttemptCounter).where(AttemptCounter.id == row.id)
                        .values(count=AttemptCounter.count + 1).execution_options(synchronize_session=False))
        session.refresh(row)
    session.flush()
    return row.count


def _clear(session: DbSession, key: str) -> None:
    session.execute(delete(AttemptCounter).where(AttemptCounter.key == key))


def _login_keys(email: str, ip: str | None) -> list[tuple[str, int]]:
    config = current_app.config
    keys = [(_account_key(email), int(config["LOGIN_ATTEMPTS_PER_ACCOUNT"]))]
    ip_key = _ip_key(ip)
    if ip_key:
        keys.append((ip_key, int(config["LOGIN_ATTEMPTS_PER_IP"])))
    return keys


def check_throttle(session: DbSession, email: str, ip: str | None) -> None:
    """Raise Throttled when this account or client address has used up its attempts."""
    wait = max(_blocked_for(session, key, limit) for key, limit in _login_keys(email, ip))
    if wait:
        raise Throttled(wait)


def record_failure(session: DbSession, email: str, ip: str | None) -> None:
    """Count a failed attempt (wrong password or second factor) against account and address."""
    for key, _limit in _login_keys(email, ip):
        _hit(session, key)


# --- signing in -----------------------------------------------------------------------------

def authenticate(session: DbSession, email: str, password: str, ip: str | None) -> User:
    """Check an address and password. Returns the user, who may still need a second factor.

    Raises Throttled (before looking at the password: a right password does not get through a
    lockout), BadCredentials (wrong or unknown, one message, about the same time), or NotActive
    (right password, account not approved or disabled). Re-hashes a password stored with older
    Argon2 parameters. The caller commits, also after an error: failures must be counted.
    """
    check_throttle(session, email, ip)
    user = user_by_email(session, email)
    if not _verify(user.password_hash if user else None, password) or user is None:
        record_failure(session, email, ip)
        raise BadCredentials
    if password_hasher().check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    _clear(session, _account_key(email))
    if user.status == UserStatus.UNVERIFIED:
        raise NotActive("Open the link in the email we sent when you signed up to verify your "
                        "address first. Ask for a password reset to get a new link.")
    if user.status == UserStatus.PENDING:
        raise NotActive("Your account is waiting for an administrator's approval. "
                        "You will be able to sign in once it is approved.")
    if user.status == UserStatus.DISABLED:
        raise NotActive("This account is disabled. Ask an administrator.")
    return user


def totp_mandatory(user: User) -> bool:
    """An admin required a second factor for this account, or the platform does for admins."""
    return user.totp_required or (user.is_admin and bool(current_app.config["REQUIRE_TOTP_FOR_ADMINS"]))


def record_login(session: DbSession, user: User) -> None:
    user.last_login_at = utcnow()


# --- TOTP -----------------------------------------------------------------------------------

def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(user: User, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name="Campaign organizer")


def _matching_step(secret: str, code: str) -> int | None:
    """The time step a code belongs to (now, or one step either side for clock drift)."""
    code = "".join(ch for ch in code if ch.isdigit())
    if len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now = utcnow()
    step = totp.timecode(now)
    for candidate in (step, step - 1, step + 1):
        if secrets.compare_digest(totp.generate_otp(candidate), code):
            return candidate
    return None


def enable_totp(session: DbSession, user: User, secret: str, code: str) -> bool:
    """Turn on the second factor once the person shows a code from their app. False if wrong."""
    step = _matching_step(secret, code)
    if step is None:
        return False
    user.totp_secret_encrypted = cipher().encrypt(secret)
    user.totp_last_step = step
    record(session, user, "account.totp_enabled", object_type="user", object_id=user.id)
    return True


def disable_totp(session: DbSession, user: User, password: str) -> None:
    """Turn off the second factor; needs the password, and is refused where it is required."""
    if totp_mandatory(user):
        raise AccountError("A second factor is required for this account; it cannot be turned off.")
    if not _verify(user.password_hash, password):
        raise AccountError("That password is not right.")
    user.totp_secret_encrypted = None
    user.totp_last_step = None
    record(session, user, "account.totp_disabled", object_type="user", object_id=user.id)


def check_second_factor(session: DbSession, user: User, code: str, ip: str | None) -> None:
    """Accept a TOTP code once: a code already used (or an older one) is refused.

    Raises Throttled, or BadCredentials for a wrong code (counted like a wrong password).
    """
    check_throttle(session, user.email, ip)
    if user.totp_secret_encrypted is None:
        raise BadCredentials
    step = _matching_step(cipher().decrypt(user.totp_secret_encrypted), code)
    accepted = False
    if step is not None:
        # Conditional: of two requests with the same code, one wins.
        result = session.execute(
            update(User).where(User.id == user.id,
                               (User.totp_last_step.is_(None)) | (User.totp_last_step < step))
            .values(totp_last_step=step).execution_options(synchronize_session=False))
        accepted = result.rowcount == 1  # type: ignore[attr-defined]
    if not accepted:
        record_failure(session, user.email, ip)
        raise BadCredentials
    session.refresh(user)
    _clear(session, _account_key(user.email))


# --- sign-up and verification -----------------------------------------------------------------

def _mail_key(kind: str, user_id: int) -> str:
    return f"{kind}:{user_id}:{secrets.token_hex(8)}"


def user_id_of(key: str) -> int | None:
    """The account an account email's idempotency key names (kind:<user id>:<nonce>)."""
    parts = key.split(":")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _may_email(session: DbSession, kind: str, address: str) -> bool:
    """At most a few account emails per address and window, however often someone asks."""
    key = f"mail:{kind[:12]}:" + cipher().blind_index("account:" + address)[:40]
    return _hit(session, key) <= _EMAILS_PER_WINDOW


def sign_up(session: DbSession, *, name: str, email: str, password: str) -> None:
    """Create an unverified account and queue its verification email.

    When the address has an account already, nothing is created and its owner is told by
    email instead; the caller cannot tell which happened. Raises InvalidEmail or AccountError
    (a refused password) before anything is written.
    """
    address = account_email(email)
    problem = password_problem(password, address)
    if problem:
        raise AccountError(problem)
    existing = session.scalar(select(User).where(User.email == address))
    if existing is None:
        user = User(email=address, name=name.strip()[:200], password_hash=hash_password(password),
                    status=UserStatus.UNVERIFIED, session_token=new_session_token())
        try:
            with session.begin_nested():
                session.add(user)
        except IntegrityError:
            existing = session.scalar(select(User).where(User.email == address))
        else:
            queue_email(session, kind=ACCOUNT_VERIFICATION, key=_mail_key(ACCOUNT_VERIFICATION, user.id))
            return
    if existing is not None and _may_email(session, ACCOUNT_EXISTS, address):
        queue_email(session, kind=ACCOUNT_EXISTS, key=_mail_key(ACCOUNT_EXISTS, existing.id))


def create_invited_account(session: DbSession, *, email: str, name: str, password: str) -> User:
    """An active account for the address an invitation was mailed to (the link proves it, and
    an owner vouched for it). Raises AccountError when the address has an account already
    (only the invitation's recipient learns that) or the password is refused."""
    address = account_email(email)
    problem = password_problem(password, address)
    if problem:
        raise AccountError(problem)
    if session.scalar(select(User.id).where(User.email == address)) is not None:
        raise AccountError("This address has an account already: sign in with it instead.")
    user = User(email=address, name=name.strip()[:200], password_hash=hash_password(password),
                status=UserStatus.ACTIVE, approved_at=utcnow(), session_token=new_session_token())
    session.add(user)
    session.flush()
    record(session, user, "account.created_by_invitation", object_type="user", object_id=user.id)
    return user


def _serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=salt,
                                  signer_kwargs={"digest_method": hashlib.sha256})


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:24]


def verification_token(user: User) -> str:
    return _serializer(_VERIFY_SALT).dumps({"u": user.id, "e": _fingerprint(user.email),
                                            "n": secrets.token_hex(8)})


def _load(salt: str, token: str, max_age: int) -> dict[str, Any]:
    try:
        data = _serializer(salt).loads(token, max_age=max_age)
    except SignatureExpired:
        raise TokenInvalid("expired") from None
    except BadSignature:
        raise TokenInvalid("invalid") from None
    if not isinstance(data, dict) or not isinstance(data.get("u"), int):
        raise TokenInvalid("invalid")
    return data


def verify_account(session: DbSession, token: str) -> User:
    """Mark an account's address verified. Then it waits for approval, or is active when
    SIGNUPS_OPEN. Idempotent for an account already past this step. Raises TokenInvalid."""
    data = _load(_VERIFY_SALT, token, int(current_app.config["SIGNUP_TOKEN_MAX_AGE"]))
    user = session.get(User, data["u"])
    if user is None or data.get("e") != _fingerprint(user.email):
        raise TokenInvalid("invalid")
    if user.status == UserStatus.UNVERIFIED:
        _mark_verified(user)
        record(session, user, "account.verified", object_type="user", object_id=user.id)
    return user


def _mark_verified(user: User) -> None:
    if current_app.config["SIGNUPS_OPEN"]:
        user.status = UserStatus.ACTIVE
        user.approved_at = utcnow()
    else:
        user.status = UserStatus.PENDING


# --- password reset -------------------------------------------------------------------------

def request_password_reset(session: DbSession, email: str, ip: str | None) -> None:
    """Queue a reset link if the address has an account; otherwise do nothing, the same way.

    A few per address and window at most; a client address that asks too often is Throttled.
    """
    ip_key = _ip_key(ip)
    if ip_key:
        limit = int(current_app.config["LOGIN_ATTEMPTS_PER_IP"])
        wait = _blocked_for(session, "reset-" + ip_key, limit)
        if wait:
            raise Throttled(wait)
        _hit(session, "reset-" + ip_key)
    user = user_by_email(session, email)
    if user is None or user.status == UserStatus.DISABLED:
        return
    if _may_email(session, PASSWORD_RESET, user.email):
        queue_email(session, kind=PASSWORD_RESET, key=_mail_key(PASSWORD_RESET, user.id))


def reset_token(user: User) -> str:
    # The password hash's fingerprint: once the password changes (the link was used, or the
    # person remembered it), every older link stops working.
    return _serializer(_RESET_SALT).dumps({"u": user.id, "p": _fingerprint(user.password_hash)})


def user_for_reset_token(session: DbSession, token: str) -> User:
    """The account a reset link is for. Raises TokenInvalid (expired, tampered, used)."""
    data = _load(_RESET_SALT, token, int(current_app.config["RESET_TOKEN_MAX_AGE"]))
    user = session.get(User, data["u"])
    if (user is None or user.status == UserStatus.DISABLED
            or not secrets.compare_digest(str(data.get("p")), _fingerprint(user.password_hash))):
        raise TokenInvalid("invalid")
    return user


def reset_password(session: DbSession, token: str, password: str) -> User:
    """Set a new password from a reset link; the link, and every session, stop working.

    The link proves the address, so an unverified account counts as verified afterwards.
    Raises TokenInvalid or AccountError (a refused password).
    """
    user = user_for_reset_token(session, token)
    problem = password_problem(password, user.email)
    if problem:
        raise AccountError(problem)
    _set_password(user, password)
    if user.status == UserStatus.UNVERIFIED:
        _mark_verified(user)
    _clear(session, _account_key(user.email))
    record(session, user, "account.password_reset", object_type="user", object_id=user.id)
    return user


def change_password(session: DbSession, user: User, current: str, new: str) -> None:
    """Change a signed-in user's password. Other sessions end; the caller signs this one in again."""
    if not _verify(user.password_hash, current):
        raise AccountError("Your current password is not right.")
    problem = password_problem(new, user.email)
    if problem:
        raise AccountError(problem)
    _set_password(user, new)
    record(session, user, "account.password_changed", object_type="user", object_id=user.id)


# --- admins ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class AdminResult:
    user: User
    created: bool


def create_admin(session: DbSession, email: str, password: str) -> AdminResult:
    """Create an active admin, or make an existing account an active admin with this password.

    Raises InvalidEmail or AccountError (a refused password).
    """
    address = account_email(email)
    problem = password_problem(password, address)
    if problem:
        raise AccountError(problem)
    user = session.scalar(select(User).where(User.email == address))
    created = user is None
    if user is None:
        user = User(email=address, name="", session_token=new_session_token(), password_hash="")
        session.add(user)
    _set_password(user, password)
    user.is_admin = True
    user.status = UserStatus.ACTIVE
    user.approved_at = user.approved_at or utcnow()
    session.flush()
    record(session, None, "user.admin_created" if created else "user.made_admin", object_type="user",
           object_id=user.id, summary=address)
    return AdminResult(user, created)


def list_users(session: DbSession, status: str | None = None) -> list[User]:
    query = select(User).order_by(User.created_at.desc(), User.id.desc())
    if status:
        query = query.where(User.status == status)
    return list(session.scalars(query.limit(1000)))


def set_user_status(session: DbSession, admin: User, user: User, status: UserStatus) -> None:
    """Approve (active), disable or re-enable an account. Disabling ends its sessions."""
    if not admin.is_admin:
        raise PermissionError("admins only")
    if user.id == admin.id and status != UserStatus.ACTIVE:
        raise AccountError("You cannot disable your own account.")
    if status == UserStatus.ACTIVE and user.approved_at is None:
        user.approved_at = utcnow()
    if status == UserStatus.DISABLED:
        user.session_token = new_session_token()
    user.status = status
    record(session, admin, f"user.{status.value}", object_type="user", object_id=user.id, summary=user.email)


def set_totp_required(session: DbSession, admin: User, user: User, required: bool) -> None:
    if not admin.is_admin:
        raise PermissionError("admins only")
    user.totp_required = required
    record(session, admin, "user.totp_required" if required else "user.totp_optional",
           object_type="user", object_id=user.id, summary=user.email)
