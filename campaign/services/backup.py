"""Whole-database backups and restores: pg_dump/pg_restore (custom format) on PostgreSQL, the
sqlite3 backup API on SQLite.

A backup holds signer data encrypted, never the keys: restoring needs the same SIGNER_DATA_KEYS
and BLIND_INDEX_KEY (and SECRET_KEY for links already mailed), kept elsewhere. A restore refuses a
database that holds data unless forced, and afterwards reads a few signatures back to show whether
the configured keys fit the restored data.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, inspect, literal, select, table, text
from sqlalchemy.engine import URL

from campaign.models import OutboundEmail, Signature
from campaign.services.emails import canonical_email
from campaign.services.privacy import SignerCipher
from campaign.services.types import DbSession

PG_MAGIC = b"PGDMP"
SQLITE_MAGIC = b"SQLite format 3\x00"
_BOOKKEEPING = {"alembic_version"}


class BackupError(Exception):
    """The backup or restore did not happen; the message is one line fit for an operator."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    seconds: float
    dialect: str


@dataclass(frozen=True)
class RestoreResult:
    path: Path
    seconds: float
    dialect: str
    replaced: bool


# --- PostgreSQL connection details for the client programs --------------------------------------

def _libpq(url: URL) -> tuple[str, dict[str, str]]:
    """A connection URI without the password (command lines are visible to every local user) and
    the environment that carries the password."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    program = shutil.which(args[0])
    if program is None:
        raise BackupError(f"{args[0]} is not installed (Debian: apt-get install postgresql-client)")
    try:
        done = subprocess.run([program, *args[1:]], env=env, capture_output=True, text=True,  # noqa: S603
                              check=False)
    except OSError as error:
        raise BackupError(f"{what} could not start: {error}") from None
    if done.returncode != 0:
        # pg_dump and pg_restore name objects, never row values, in their messages.
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {done.returncode}"
        raise BackupError(f"{what} failed: {reason}")


# --- backing up ---------------------------------------------------------------------------------

def backup_database(engine: Engine, path: Path, *, overwrite: bool = False) -> BackupResult:
    """Write a consistent copy of the whole database to `path`.

    Written to `<path>.partial` first and renamed when complete, so a file at `path` is always a
    whole backup. Refuses an existing `path` unless `overwrite`. Raises BackupError.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BackupError(f"{path} exists already; choose another name (or --force to replace it)")
    if not path.parent.is_dir():
        raise BackupError(f"folder {path.parent} does not exist")
    partial = path.with_name(path.name + ".partial")
    started = time.monotonic()
    dialect = engine.dialect.name
    try:
        if dialect == "postgresql":
            uri, env = _libpq(engine.url)
            # Custom format: compressed, restorable table by table, read with pg_restore.
            _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                  f"--file={partial}", f"--dbname={uri}"], env, "pg_dump")
            _run(["pg_restore", "--list", str(partial)], env, "reading the new backup back")
        elif dialect == "sqlite":
            _sqlite_copy(_sqlite_path(engine), partial)
        else:
            raise BackupError(f"backups of {dialect} databases are not supported")
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return BackupResult(path=path, size=path.stat().st_size, seconds=time.monotonic() - started,
                        dialect=dialect)


def _sqlite_path(engine: Engine) -> Path:
    database = engine.url.database
    if not database or database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def _sqlite_copy(source: Path, target: Path) -> None:
    """Copy with SQLite's online backup API: a consistent snapshot even while others write."""
    if not source.exists():
        raise BackupError(f"the database file {source} does not exist")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


# --- restoring ----------------------------------------------------------------------------------

def tables_with_rows(engine: Engine) -> list[str]:
    """The application's tables that hold at least one row (Alembic's bookkeeping aside)."""
    with engine.connect() as connection:
        names = [n for n in inspect(connection).get_table_names() if n not in _BOOKKEEPING]
        return [name for name in names
                if connection.execute(select(literal(1)).select_from(table(name)).limit(1)).first()
                is not None]


def _kind_of(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(PG_MAGIC):
        return "postgresql"
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    return "unknown"


def restore_database(engine: Engine, path: Path, *, force: bool = False) -> RestoreResult:
    """Replace the database's contents with the backup at `path`.

    Refuses, changing nothing, when any application table holds a row, unless `force`; with
    `force` (or when the tables exist but are empty, e.g. after `db upgrade`) every table is
    dropped first. On PostgreSQL the restore is one transaction and is followed by ANALYZE, so the
    planner has statistics before the first request. Stop the web and worker processes first.
    Raises BackupError.
    """
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"no backup file at {path}")
    dialect = engine.dialect.name
    kind = _kind_of(path)
    if kind != dialect:
        what = "not a backup this command wrote" if kind == "unknown" else f"a {kind} backup"
        raise BackupError(f"{path} is {what}, and the database is {dialect}")
    holding = tables_with_rows(engine)
    if holding and not force:
        raise BackupError(
            f"the database is not empty ({len(holding)} tables hold rows, e.g. {holding[0]}); restore "
            "into an empty database, or pass --force to replace everything in it")
    started = time.monotonic()
    if dialect == "postgresql":
        _drop_all_tables(engine)
        engine.dispose()
        uri, env = _libpq(engine.url)
        _run(["pg_restore", "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
              f"--dbname={uri}", str(path)], env, "pg_restore")
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    else:
        engine.dispose()  # the backup API needs the file to itself
        _sqlite_restore(path, _sqlite_path(engine))
    return RestoreResult(path=path, seconds=time.monotonic() - started, dialect=dialect,
                         replaced=bool(holding))


def _drop_all_tables(engine: Engine) -> None:
    with engine.begin() as connection:
        # Waiting forever on a lock held by a running web or worker process would look like a hang.
        connection.execute(text("SET LOCAL lock_timeout = '10s'"))
        quote = connection.dialect.identifier_preparer.quote
        for name in inspect(connection).get_table_names():
            try:
                connection.execute(text(f"DROP TABLE IF EXISTS {quote(name)} CASCADE"))
            except Exception as error:
                raise BackupError("could not empty the database (is the app still running? stop the "
                                  f"web and worker processes): {type(error).__name__}") from None


def _sqlite_restore(backup: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target, timeout=10)
        try:
            src.backup(dst)
        except sqlite3.OperationalError as error:
            raise BackupError(f"could not write {target} (is the app still running?): {error}") from None
        finally:
            dst.close()
    finally:
        src.close()


# --- after a restore ----------------------------------------------------------------------------

def outbox_summary(session: DbSession) -> dict[str, int]:
    """Outbox rows by status: what the workers will do with the restored outbox."""
    rows = session.execute(select(OutboundEmail.status, func.count()).group_by(OutboundEmail.status))
    return {str(status): int(n) for status, n in rows}


def key_problems(session: DbSession, cipher: SignerCipher, sample: int = 5) -> list[str]:
    """Read a few signatures back with the configured keys: a list of what does not fit (empty when
    they fit, or when there is no signature to try). Names nothing: only which key is wrong."""
    problems: list[str] = []
    for signature in session.scalars(select(Signature).order_by(Signature.id).limit(sample)):
        try:
            address = cipher.decrypt(signature.email_encrypted)
            cipher.decrypt(signature.name_encrypted)
        except ValueError:
            problems.append("SIGNER_DATA_KEYS cannot decrypt the restored signatures: configure the "
                            "keys the backup was made with")
            break
        if cipher.blind_index(canonical_email(address)) != signature.email_index:
            problems.append("BLIND_INDEX_KEY is not the one the backup was made with: returning signers "
                            "would not be recognized")
            break
    return problems


def describe(result: Any) -> str:
    size = getattr(result, "size", None)
    shown = f", {size / 1_048_576:.1f} MiB" if size is not None else ""
    return f"{result.dialect} {result.path}{shown} in {result.seconds:.1f} s"
