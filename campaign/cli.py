"""flask commands: seed-demo, outbox-sweep, create-admin, demo-credentials, close-due-petitions,
and the checks that operators run by hand."""

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

    register_organizer_commands(app)


def register_organizer_commands(app: Flask) -> None:
    @app.cli.command("create-admin")
    @click.argument("email")
    def create_admin_command(email: str) -> None:
        """Create a platform admin (or make an account one). Asks for the password, or reads
        CAMPAIGN_ADMIN_PASSWORD for scripts."""
        import os

        from campaign.services.accounts import AccountError, create_admin
        from campaign.services.emails import InvalidEmail

        password = os.environ.get("CAMPAIGN_ADMIN_PASSWORD") or click.prompt(
            "Password", hide_input=True, confirmation_prompt=True)
        try:
            result = create_admin(db.session, email, password)
        except (InvalidEmail, AccountError) as error:
            raise click.ClickException(str(error)) from None
        db.session.commit()
        click.echo(f"{'Created' if result.created else 'Updated'} the admin {result.user.email}.")

    @app.cli.command("demo-credentials")
    def demo_credentials_command() -> None:
        """Print the demo organizer's sign-in (development only; refused in production)."""
        from flask import current_app

        from campaign.models import User
        from campaign.services.demo import DEMO_ORGANIZER_EMAIL, demo_organizer_password

        if current_app.config["CAMPAIGN_ENV"] == "production":
            raise click.ClickException("demo-credentials is for development only.")
        if db.session.scalar(db.select(User.id).where(User.email == DEMO_ORGANIZER_EMAIL)) is None:
            raise click.ClickException("No demo organizer: run `flask --app app seed-demo` first.")
        base = current_app.config["BASE_URL"]
        click.echo(f"Demo organizer: {DEMO_ORGANIZER_EMAIL} / {demo_organizer_password()}"
                   f"  (sign in at {base}/account/login)")

    @app.cli.command("close-due-petitions")
    def close_due_command() -> None:
        """Close the published petitions whose closing date has passed."""
        from campaign.services.organizing import close_due_petitions

        closed = close_due_petitions(db.session)
        db.session.commit()
        click.echo(f"Closed {closed} petition{'s' if closed != 1 else ''}.")


def register_abuse_commands(app: Flask) -> None:
    """Issue 6: key rotation, retention, trending alerts and the disposable-domains list."""

    @app.cli.command("rotate-signer-keys")
    @click.option("--batch", default=500, show_default=True, help="rows per transaction")
    def rotate_signer_keys_command(batch: int) -> None:
        """Re-encrypt every encrypted value under the first key of SIGNER_DATA_KEYS.

        Put the new key first, keep the old ones after it, run this, then remove the old keys.
        Idempotent and resumable: values already under the first key are left alone.
        """
        from campaign.services.key_rotation import rotate_signer_keys

        try:
            report = rotate_signer_keys(db.session, batch=max(1, batch))
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        click.echo(str(report))

    @app.cli.command("retention")
    def retention_command() -> None:
        """Drop old IP hashes, delete old unconfirmed signatures, anonymize closed petitions."""
        from campaign.services.retention import run_retention

        click.echo(str(run_retention(db.session)))

    @app.cli.command("trending-alerts")
    def trending_command() -> None:
        """Check for addresses and domains signing one petition too fast; alert its organizers."""
        from campaign.services.abuse import detect_trending

        raised = detect_trending(db.session)
        db.session.commit()
        click.echo(f"{len(raised)} new alert{'s' if len(raised) != 1 else ''}.")

    @app.cli.command("update-disposable-domains")
    @click.argument("source", type=click.Path(exists=True, dir_okay=False))
    @click.option("--replace", is_flag=True, help="use only the new list instead of merging")
    def update_disposable_command(source: str, replace: bool) -> None:
        """Merge a local list of disposable email domains into campaign/data/disposable_domains.txt."""
        from pathlib import Path

        from campaign.services.abuse import update_disposable_domains

        try:
            total, added = update_disposable_domains(Path(source), replace=replace)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"{total} domains listed ({added} new).")


def register_reach_commands(app: Flask) -> None:
    @app.cli.command("bounces-import")
    @click.argument("path", type=click.Path(exists=True))
    def bounces_import_command(path: str) -> None:
        """Read a mailbox (an mbox file or a Maildir folder) of bounce reports (DSN, RFC 3464) and
        complaint reports (ARF), and put the addresses on the suppression list."""
        from pathlib import Path

        from campaign.services.bounces import import_mailbox

        counts = import_mailbox(db.session, Path(path))
        db.session.commit()
        click.echo(f"{counts['messages']} messages read: {counts['bounce']} hard bounces and "
                   f"{counts['complaint']} complaints suppressed, {counts['soft_bounce']} soft bounces "
                   f"counted ({counts['soft_bounce_suppressed']} reached SOFT_BOUNCE_LIMIT), "
                   f"{counts['invalid']} unreadable addresses")
