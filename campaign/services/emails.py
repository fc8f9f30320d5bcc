"""Email addresses: validation, and the canonical form that decides "the same person"."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

# Providers where dots and/or +tags reach the same mailbox; elsewhere they may be other people.
_DOTS_IGNORED = {"gmail.com"}
_PLUS_TAGS = {
    "gmail.com", "outlook.com", "hotmail.com", "live.com", "icloud.com", "me.com",
    "protonmail.com", "proton.me", "pm.me", "fastmail.com", "yandex.ru",
}
_ALIASES = {"googlemail.com": "gmail.com", "ya.ru": "yandex.ru"}


class InvalidEmail(ValueError):
    """The address cannot receive mail; the message is fit to show next to the field."""


@dataclass(frozen=True)
class Email:
    address: str    # where mail goes: as typed, tidied by email-validator
    canonical: str  # what the blind index hashes: one value per mailbox


def parse_email(raw: str, *, check_deliverability: bool = False) -> Email:
    """Validate an address and derive its canonical form. Raises InvalidEmail."""
    text = unicodedata.normalize("NFKC", raw or "").strip()
    if not text:
        raise InvalidEmail("Enter your email address.")
    if len(text) > 254:
        raise InvalidEmail("That email address is too long.")
    try:
        result = validate_email(text, check_deliverability=check_deliverability)
    except EmailNotValidError as error:
        raise InvalidEmail(f"Enter a valid email address ({error}).") from None
    return Email(address=result.normalized, canonical=canonical_email(result.normalized))


def canonical_email(address: str) -> str:
    local, _, domain = address.rpartition("@")
    local = unicodedata.normalize("NFKC", local).casefold()
    domain = domain.casefold().rstrip(".")
    domain = _ALIASES.get(domain, domain)
    if domain in _PLUS_TAGS:
        local = local.split("+", 1)[0]
    if domain in _DOTS_IGNORED:
        local = local.replace(".", "")
    return f"{local}@{domain}"
