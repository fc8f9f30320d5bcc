"""Key rotation for SIGNER_DATA_KEYS: re-encrypt every stored ciphertext under the first key.

Every column named *_encrypted (signers' names, emails and postcodes, organizers' TOTP secrets,
and whatever later tables add under that name) and every EncryptedText column (signers'
comments) is found from the models' metadata. Rows are
read in primary-key order, in batches, each batch committed: a run that stops is resumed by
running it again, and a value already under the first key is left alone (idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken
from flask import current_app
from sqlalchemy import LargeBinary, Table, Text, literal, select, type_coerce, update

from campaign.models import Base
from campaign.models.base import EncryptedText
from campaign.services.privacy import cipher
from campaign.services.types import DbSession


@dataclass
class RotationReport:
    rotated: int = 0
    current: int = 0
    per_column: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        columns = ", ".join(f"{name}: {n}" for name, n in sorted(self.per_column.items()) if n)
        return (f"{self.rotated} values re-encrypted under the first key, {self.current} were already"
                + (f" ({columns})" if columns else ""))


def encrypted_columns() -> list[tuple[Table, str]]:
    """(table, column) for every LargeBinary column named *_encrypted, and every EncryptedText
    column, on a table with an id."""
    found = []
    for table in Base.metadata.sorted_tables:
        if "id" not in table.c:
            continue
        for column in table.c:
            if isinstance(column.type, EncryptedText) or (
                    column.name.endswith("_encrypted") and isinstance(column.type, LargeBinary)):
                found.append((table, column.name))
    return found


def _primary() -> Fernet:
    first = next(key.strip() for key in current_app.config["SIGNER_DATA_KEYS"].split(",") if key.strip())
    return Fernet(first.encode())


def rotate_signer_keys(session: DbSession, batch: int = 500,
                       progress: Callable[[str, int], None] | None = None) -> RotationReport:
    """Re-encrypt every value not yet under the first key of SIGNER_DATA_KEYS.

    Raises ValueError if a value cannot be decrypted with any configured key (a key was removed
    too early); the batches before it stay committed, and a rerun with the key restored resumes.
    """
    crypt = cipher()
    primary = _primary()
    report = RotationReport()
    for table, name in encrypted_columns():
        key = table.c["id"]
        textual = isinstance(table.c[name].type, EncryptedText)
        # EncryptedText would decrypt on read and encrypt on write: handle its raw tokens.
        column = type_coerce(table.c[name], Text) if textual else table.c[name]
        label = f"{table.name}.{name}"
        report.per_column.setdefault(label, 0)
        last = None
        while True:
            query = select(key, column).where(column.is_not(None)).order_by(key).limit(batch)
            if textual:  # an empty comment is stored empty
                query = query.where(column != literal("", Text))
            if last is not None:
                query = query.where(key > last)
            rows = session.execute(query).all()
            if not rows:
                break
            for row_id, value in rows:
                token = value.encode("ascii") if textual else bytes(value)
                try:
                    primary.decrypt(token)
                    report.current += 1
                    continue
                except InvalidToken:
                    pass
                try:
                    rotated = crypt.rotate(token)
                except InvalidToken:
                    raise ValueError(f"{label} of row {row_id} cannot be decrypted with any key in "
                                     "SIGNER_DATA_KEYS: put the old key back and run again") from None
                stored = literal(rotated.decode("ascii"), Text) if textual else rotated
                session.execute(update(table).where(key == row_id, column == literal(value, column.type))
                                .values({name: stored}))
                report.rotated += 1
                report.per_column[label] += 1
            last = rows[-1][0]
            session.commit()
            if progress:
                progress(label, int(last))
    return report
