"""Declarative base, shared column types and the constraint naming convention Alembic needs."""

from datetime import UTC, datetime
from enum import StrEnum

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app
from sqlalchemy import BigInteger, CheckConstraint, DateTime, Integer, MetaData, Text
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit id.
BigID = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def enum_check(column: str, enum: type[StrEnum], name: str) -> CheckConstraint:
    """A CHECK that keeps a string status column inside its enum."""
    values = ", ".join(f"'{member.value}'" for member in enum)
    return CheckConstraint(f"{column} IN ({values})", name=name)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive values and would lose the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def signer_fernet() -> MultiFernet:
    """The current app's SIGNER_DATA_KEYS as a MultiFernet: the first key encrypts, all decrypt."""
    app = current_app
    keys = app.config["SIGNER_DATA_KEYS"]
    cached = app.extensions.get("campaign.signer_fernet")
    if cached is None or cached[0] != keys:
        parts = [key.strip() for key in keys.split(",") if key.strip()]
        cached = (keys, MultiFernet([Fernet(key.encode()) for key in parts]))
        app.extensions["campaign.signer_fernet"] = cached
    return cached[1]


class EncryptedText(TypeDecorator[str]):
    """Signer text read and written as str but stored as a Fernet token (SIGNER_DATA_KEYS), so
    code that needs it in the clear (letters at send time) reads it like any column, and a dump
    shows only ciphertext. The empty string is stored empty: it says nothing but "no text".

    Filters on such a column compare ciphertexts and match nothing: filter after reading.
    The key rotation command re-encrypts these columns too.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        if not value:
            return value
        return signer_fernet().encrypt(value.encode("utf-8")).decode("ascii")

    def process_result_value(self, value: str | None, dialect: object) -> str | None:
        if not value:
            return value
        try:
            return signer_fernet().decrypt(value.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeEncodeError):
            raise ValueError("signer data cannot be decrypted with the configured keys") from None
