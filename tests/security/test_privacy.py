"""Privacy: the suppression list (blind index only) and the outbox skipping suppressed supporter
mail; trending alerts that name no signer (R17); retention (R41): IP hashes dropped, unconfirmed
signatures purged, closed petitions anonymized with counts unchanged; key rotation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, text

from campaign.extensions import db
from campaign.models import OutboundEmail, Petition, Signature, Suppression, TrendingAlert, User
from campaign.models.base import utcnow
from campaign.services import abuse, retention, suppression
from campaign.services.emails import parse_email
from campaign.services.outbox import queue_email
from campaign.services.signing import SignerInput, confirm_signature, sign_petition
from tests.organize.conftest import add_user
from tests.security.conftest import SLUG, count_of, demo_petition_id
from tests.support import KEYS, deliver_due, text_of


def _sign(app, email, ip="198.51.100.1", confirmed=True, **extra):
    with app.app_context():
        petition = db.session.scalar(select(Petition).where(Petition.slug == SLUG))
        sign_petition(db.session, petition, SignerInput(name=f"Name of {email}", email=parse_email(email),
                                                        country="DE", postcode="10115",
                                                        comment="my comment"), ip=ip)
        row = db.session.scalar(select(Signature).order_by(Signature.id.desc()).limit(1))
        assert row is not None
        for key, value in extra.items():
            setattr(row, key, value)
        if confirmed:
            confirm_signature(db.session, row)
        db.session.commit()
        return row.id


# --- suppressions ---------------------------------------------------------------------------

def test_suppressions_hold_only_the_blind_index_and_match_every_spelling(sec_app):
    with sec_app.app_context():
        suppression.suppress_email(db.session, "A.B+news@Gmail.com", "unsubscribe")
        suppression.suppress_email(db.session, "ab@googlemail.com", "bounce")  # the same mailbox
        db.session.commit()
        rows = list(db.session.scalars(select(Suppression)))
        assert len(rows) == 1 and len(rows[0].email_index) == 64
        dump = " ".join(str(v) for r in db.session.execute(text("SELECT * FROM suppressions")) for v in r)
        assert "gmail" not in dump.lower() and "ab@" not in dump
        assert suppression.is_suppressed(db.session, "ab@gmail.com")
        assert suppression.is_suppressed(db.session, "AB@GMAIL.COM", campaign_id=123)
        assert not suppression.is_suppressed(db.session, "someone@gmail.com")
        assert not suppression.is_suppressed(db.session, "not an address")
        campaign_id = db.session.scalar(select(Petition.campaign_id).where(Petition.slug == SLUG))
        suppression.suppress_email(db.session, "c@example.org", "unsubscribe", campaign_id=campaign_id)
        assert suppression.is_suppressed(db.session, "c@example.org", campaign_id=campaign_id)
        assert not suppression.is_suppressed(db.session, "c@example.org", campaign_id=campaign_id + 1)
        assert not suppression.is_suppressed(db.session, "c@example.org")


def test_outbox_skips_supporter_mail_to_suppressed_addresses_but_not_their_confirmation(sec_app, mailbox):
    signature_id = _sign(sec_app, "gone@example.org", confirmed=False)
    with sec_app.app_context():
        signature = db.session.get(Signature, signature_id)
        assert signature is not None
        suppression.suppress(db.session, signature.email_index, "complaint")
        # Supporter mail: to a signer, not caused by the form just now (a reminder, a mailing).
        row = queue_email(db.session, kind="signature_confirmation", key="reminder:1",
                          petition_id=signature.petition_id, signature_id=signature.id,
                          recipient_index=signature.email_index, from_public_form=False)
        assert row is not None
        db.session.commit()
        reminder_id = row.id
    deliver_due(sec_app)
    with sec_app.app_context():
        assert db.session.get(OutboundEmail, reminder_id).status == "cancelled"
    assert len(mailbox.messages) == 1  # the form's own confirmation went out


# --- trending alerts ------------------------------------------------------------------------

def test_trending_address_and_domain_alert_organizers_once_without_signer_data(make_sec_app, mailbox):
    app = make_sec_app(TRENDING_IP_PER_HOUR=20, TRENDING_DOMAIN_PER_HOUR=25, SIGNING_IP_BURST="",
                       SIGNING_DOMAIN_BURST="")
    with app.app_context():
        campaign_id = db.session.scalar(select(Petition.campaign_id).where(Petition.slug == SLUG))
    add_user(app, "watcher@example.org", campaign_id=campaign_id)
    add_user(app, "stranger@example.org")
    emails = [f"bot{n}@spam-farm.example" for n in range(25)]
    for n, email in enumerate(emails):
        _sign(app, email, ip="203.0.113.9" if n < 20 else f"203.0.113.{n}", confirmed=False)
    for n in range(30):
        _sign(app, f"real{n}@gmail.com", ip=f"198.51.100.{n + 1}", confirmed=False)
    with app.app_context():
        raised = abuse.detect_trending(db.session)
        db.session.commit()
        assert sorted((a.kind, a.count, a.label) for a in raised) == [
            ("domain", 25, "spam-farm.example"), ("ip", 20, "")]
        assert abuse.detect_trending(db.session) == []  # once per hour
        db.session.commit()
    mailbox.messages.clear()
    with app.app_context():  # only the alerts: the 55 confirmations would just cost time
        from campaign.services.outbox import deliver

        for row_id in list(db.session.scalars(select(OutboundEmail.id).where(OutboundEmail.kind == "trending_alert"))):
            assert deliver(db.session, row_id) == "sent"
    alerts = [m for m in mailbox.messages if m["Subject"] == "Unusual signing activity on a petition"]
    recipients = [m["To"] for m in alerts]
    assert recipients.count("watcher@example.org") == 2 and "stranger@example.org" not in recipients
    body = "".join(text_of(m) + str(m.get_body(("html",)).get_content()) for m in alerts)
    for recipient in set(recipients):
        body = body.replace(recipient, "")
    assert "spam-farm.example" in body and "/organize/petitions/" in body
    assert not any(email in body for email in emails)
    assert "@" not in body
    assert "203.0.113" not in body


# --- retention ------------------------------------------------------------------------------

def test_ip_hashes_are_dropped_after_the_retention_period(sec_app):
    old = _sign(sec_app, "old@example.org", created_at=utcnow() - timedelta(days=40))
    new = _sign(sec_app, "new@example.org", ip="198.51.100.2")
    with sec_app.app_context():
        assert retention.drop_ip_hashes(db.session) == 1
        rows = {s.id: s for s in db.session.scalars(select(Signature))}
        assert rows[old].ip_hash is None and rows[old].network_hash is None
        assert rows[new].ip_hash is not None


def test_unconfirmed_signatures_are_purged_after_n_days(sec_app):
    stale = _sign(sec_app, "stale@example.org", confirmed=False, created_at=utcnow() - timedelta(days=31))
    kept = _sign(sec_app, "kept@example.org", confirmed=False)
    confirmed_old = _sign(sec_app, "done@example.org", created_at=utcnow() - timedelta(days=90))
    with sec_app.app_context():
        assert retention.purge_unconfirmed(db.session) == 1
        left = set(db.session.scalars(select(Signature.id)))
    assert left == {kept, confirmed_old} and stale not in left


def _all_text(app):
    """Every value in every table, as one string: what a database dump would show."""
    with app.app_context():
        values = []
        for table in db.metadata.sorted_tables:
            for row in db.session.execute(table.select()):
                values.extend(str(v) for v in row)
        return "\n".join(values)


def test_retention_job_anonymizes_closed_petitions_and_keeps_counts(sec_app, mailbox):
    """R41: no raw email, name, IP hash or postcode left for a petition closed long enough."""
    emails = [f"signer{n}@example.org" for n in range(5)]
    for n, email in enumerate(emails):
        _sign(sec_app, email, ip=f"198.51.100.{n + 1}", confirmed=n < 4)
    deliver_due(sec_app)
    with sec_app.app_context():
        signature = db.session.scalar(select(Signature).limit(1))
        suppression.suppress(db.session, signature.email_index, "unsubscribe")
        db.session.execute(OutboundEmail.__table__.update().values(last_error="550 <signer0@example.org> no"))
        petition = db.session.scalar(select(Petition).where(Petition.slug == SLUG))
        petition.close()
        petition.closed_at = utcnow() - timedelta(days=200)
        db.session.commit()
    before = count_of(sec_app)
    with sec_app.app_context():
        report = retention.run_retention(db.session)
        assert report.anonymized == 5
        assert retention.run_retention(db.session).anonymized == 0  # idempotent
        rows = list(db.session.scalars(select(Signature)))
        assert all(r.ip_hash is None and r.network_hash is None and r.email_domain_hash is None for r in rows)
        assert all(r.postcode_encrypted is None and r.comment == "" for r in rows)
        from campaign.services.privacy import cipher

        assert {cipher().decrypt(r.name_encrypted) for r in rows} == {""}
        assert {cipher().decrypt(r.email_encrypted) for r in rows} == {""}
        assert db.session.scalar(select(func.count()).select_from(OutboundEmail).where(
            OutboundEmail.recipient_index.is_not(None))) == 0
    assert count_of(sec_app) == before == 4
    dump = _all_text(sec_app)
    assert not any(email in dump for email in emails)
    assert "Name of" not in dump and "10115" not in dump and "my comment" not in dump


# --- key rotation ---------------------------------------------------------------------------

def test_rotate_signer_keys_reencrypts_everything_idempotent_and_resumable(make_sec_app, tmp_path):
    app = make_sec_app()
    for n in range(7):
        _sign(app, f"rot{n}@example.org", ip=f"198.51.100.{n + 1}")
    add_user(app, "totp@example.org")
    with app.app_context():
        from campaign.services.privacy import cipher

        user = db.session.scalar(select(User).where(User.email == "totp@example.org"))
        user.totp_secret_encrypted = cipher().encrypt("JBSWY3DPEHPK3PXP")
        db.session.commit()
    new_key = Fernet.generate_key().decode()
    rotated_app = make_sec_app(SIGNER_DATA_KEYS=f"{new_key},{KEYS['SIGNER_DATA_KEYS']}",
                               DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"])
    runner = rotated_app.test_cli_runner()

    from campaign.services import key_rotation

    calls = {"n": 0}
    original = key_rotation.Session if hasattr(key_rotation, "Session") else None
    assert original is None

    # Resumable: a run that dies after its first batch leaves that batch done.
    def stop_after_first(label, last):
        calls["n"] += 1
        raise KeyboardInterrupt

    with rotated_app.app_context(), pytest.raises(KeyboardInterrupt):
        key_rotation.rotate_signer_keys(db.session, batch=3, progress=stop_after_first)
    result = runner.invoke(args=["rotate-signer-keys", "--batch", "3"])
    assert result.exit_code == 0, result.output
    assert "re-encrypted" in result.output
    again = runner.invoke(args=["rotate-signer-keys"])
    assert again.output.startswith("0 values re-encrypted"), again.output
    only_new = make_sec_app(SIGNER_DATA_KEYS=new_key, DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"])
    with only_new.app_context():
        from campaign.services.privacy import cipher

        rows = list(db.session.scalars(select(Signature)))
        names = [cipher().decrypt(s.name_encrypted) for s in rows]
        assert sorted(names) == sorted(f"Name of rot{n}@example.org" for n in range(7))
        # Comments (EncryptedText) are rotated too.
        assert [s.comment for s in rows] == ["my comment"] * 7
        user = db.session.scalar(select(User).where(User.email == "totp@example.org"))
        assert cipher().decrypt(user.totp_secret_encrypted) == "JBSWY3DPEHPK3PXP"
    # A value no configured key can read stops the run with a clear message.
    lost = make_sec_app(SIGNER_DATA_KEYS=Fernet.generate_key().decode(),
                        DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"])
    failed = lost.test_cli_runner().invoke(args=["rotate-signer-keys"])
    assert failed.exit_code != 0 and "cannot be decrypted" in failed.output


def test_comments_are_stored_encrypted_and_read_back_in_the_clear(make_sec_app):
    app = make_sec_app()
    _sign(app, "commenter@example.org", confirmed=False)
    _sign(app, "silent@example.org", ip="198.51.100.2", confirmed=False)
    with app.app_context():
        db.session.execute(text("UPDATE signatures SET comment = '' WHERE id = 2"))
        db.session.commit()
        raw = dict(db.session.execute(text("SELECT id, comment FROM signatures")).all())
        assert raw[2] == ""  # an empty comment is stored empty
        assert "my comment" not in raw[1] and raw[1].startswith("gAAAA")  # a Fernet token
        assert [s.comment for s in db.session.scalars(select(Signature).order_by(Signature.id))] == [
            "my comment", ""]
    other_keys = make_sec_app(SIGNER_DATA_KEYS=Fernet.generate_key().decode(),
                              DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"])
    with other_keys.app_context(), pytest.raises(ValueError, match="cannot be decrypted"):
        db.session.scalars(select(Signature.comment)).all()


def test_trending_alert_rows_hold_hashes_not_addresses(sec_app):
    with sec_app.app_context():
        assert "subject" in TrendingAlert.__table__.c and "ip" not in TrendingAlert.__table__.c
    assert demo_petition_id(sec_app)


def test_migration_0007_encrypts_existing_comments_and_downgrade_decrypts(tmp_path, smtp_port):
    from flask_migrate import downgrade, upgrade

    from campaign import create_app
    from campaign.services.demo import seed_demo
    from tests.support import base_config

    app = create_app(base_config(f"sqlite:///{tmp_path / 'm7.db'}", smtp_port))
    with app.app_context():
        db.drop_all()
        upgrade()
        seed_demo(db.session)
        db.session.commit()
    _sign(app, "old@example.org", confirmed=False)
    with app.app_context():
        downgrade(revision="0006")
        assert db.session.scalar(text("SELECT comment FROM signatures")) == "my comment"
        db.session.remove()  # SQLite: the migration needs the write lock the session holds
        upgrade()
        stored = db.session.scalar(text("SELECT comment FROM signatures"))
        assert stored.startswith("gAAAA") and "my comment" not in stored
        assert db.session.scalar(select(Signature.comment)) == "my comment"
        db.session.remove()
        db.engine.dispose()
