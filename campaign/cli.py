"""flask commands: seed-demo, outbox-sweep, and the checks that operators run by hand."""

from __future__ import annotations

import click
from flask import Flask

from campaign.extensions import db


def register(app: Flask) -> None:
    @app.cli.command("seed-demo")
    def seed_demo_command() -> None:
        """Create the demo campaign and petition (idempotent)."""
        from campaign.services.demo import DEMO_PETITION_SLUG, seed_demo

        created = seed_demo(db.session)
        db.session.commit()
        if created:
            click.echo(f"Seeded the demo petition at /petitions/{DEMO_PETITION_SLUG}")
        else:
            click.echo("The demo petition exists already; nothing changed.")

    @app.cli.command("outbox-sweep")
    def outbox_sweep_command() -> None:
        """Send every due outbox email now, in this process (no worker needed)."""
        from campaign.services.outbox import deliver, due_emails

        results: dict[str, int] = {}
        for email_id, _kind in due_emails(db.session, limit=10_000):
            outcome = deliver(db.session, email_id)
            results[outcome] = results.get(outcome, 0) + 1
        click.echo(", ".join(f"{n} {k}" for k, n in sorted(results.items())) or "nothing due")
