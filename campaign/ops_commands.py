"""flask commands for operators: backup, restore and check-redis (docs/operations.md).

Each prints one line per fact and exits non-zero, with a one-line reason, when it did not do what
was asked.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import redis
from flask import Flask, current_app

from campaign.extensions import db
from campaign.services import backup as backups
from campaign.services.health import redis_eviction_policy
from campaign.services.privacy import SignerCipher

# Exit status of a restore that worked but whose data the configured keys cannot read.
KEYS_MISMATCH = 3


def _where(url: str) -> str:
    """host:port/db of a Redis URL, never its password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path or ''}"


def redis_urls(config: Mapping[str, Any]) -> list[str]:
    """The distinct Redis URLs the app uses: the broker's and REDIS_URL."""
    found: list[str] = []
    for name in ("CELERY_BROKER_URL", "REDIS_URL"):
        url = config.get(name)
        if url and str(url).startswith(("redis://", "rediss://", "unix://")) and url not in found:
            found.append(str(url))
    return found


def register(app: Flask) -> None:
    @app.cli.command("backup")
    @click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--force", is_flag=True, help="Replace PATH if it exists.")
    def backup_command(path: Path, force: bool) -> None:
        """Write a backup of the whole database to PATH (pg_dump custom format, or a SQLite copy).

        The keys are not in it: keep SIGNER_DATA_KEYS, BLIND_INDEX_KEY and SECRET_KEY elsewhere.
        """
        try:
            result = backups.backup_database(db.engine, path, overwrite=force)
        except backups.BackupError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"backed up {backups.describe(result)}")

    @app.cli.command("restore")
    @click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--force", is_flag=True, help="Replace a database that holds data.")
    def restore_command(path: Path, force: bool) -> None:
        """Restore the backup at PATH into this app's database, which must be empty unless --force.

        Stop the web and worker processes first. Emails marked sent in the backup stay sent.
        """
        try:
            result = backups.restore_database(db.engine, path, force=force)
        except backups.BackupError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"restored {backups.describe(result)}")
        try:
            outbox = backups.outbox_summary(db.session)
            config = current_app.config
            problems = backups.key_problems(
                db.session, SignerCipher(config["SIGNER_DATA_KEYS"], config["BLIND_INDEX_KEY"]))
        finally:
            db.session.remove()
        if outbox:
            click.echo("outbox: " + ", ".join(f"{n} {status}" for status, n in sorted(outbox.items()))
                       + " (sent stays sent; queued is sent by the workers, sending once its lease ends)")
        if problems:
            for problem in problems:
                click.echo(f"Error: {problem}", err=True)
            sys.exit(KEYS_MISMATCH)

    @app.cli.command("check-redis")
    def check_redis_command() -> None:
        """Fail unless every Redis the app uses has maxmemory-policy noeviction.

        With an eviction policy, Redis may delete queued tasks under memory pressure.
        """
        urls = redis_urls(current_app.config)
        if not urls:
            scheme = urlsplit(str(current_app.config["CELERY_BROKER_URL"])).scheme
            click.echo(f"no Redis in use (broker: {scheme}://)")
            return
        for url in urls:
            client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
            try:
                policy = redis_eviction_policy(client)
            except redis.RedisError as error:
                raise click.ClickException(
                    f"Redis at {_where(url)} did not answer: {type(error).__name__}") from None
            finally:
                client.close()
            if policy != "noeviction":
                shown = policy or "unknown (neither INFO nor CONFIG GET shows it)"
                raise click.ClickException(
                    f"Redis at {_where(url)} has maxmemory-policy {shown}; set noeviction, or queued "
                    "tasks can be evicted")
            click.echo(f"Redis at {_where(url)}: maxmemory-policy noeviction")
