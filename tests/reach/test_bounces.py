"""Bounces and complaints into the suppression list: the signed webhook (a bad signature is 401
and changes nothing) and the command that reads a mailbox of delivery status notifications."""

from __future__ import annotations

import json
import mailbox
import time

from sqlalchemy import func, select

from campaign.extensions import db
from campaign.models import Suppression
from campaign.services.bounces import sign_webhook
from tests.reach.conftest import add_signers, index_of, signed_in

SECRET = "whsec-test-" + "x" * 24


def _post(client, body: bytes, *, secret: str = SECRET, timestamp: int | None = None, signature: str | None = None):
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    headers = {"X-Campaign-Timestamp": stamp,
               "X-Campaign-Signature": signature or sign_webhook(secret, stamp, body),
               "Content-Type": "application/json"}
    return client.post("/webhooks/bounces", data=body, headers=headers)


def _suppressions(app) -> list[tuple[str, str]]:
    with app.app_context():
        return sorted((i, r) for i, r in db.session.execute(select(Suppression.email_index, Suppression.reason)))


def test_signed_webhook_suppresses_bounces_and_complaints_and_a_bad_signature_changes_nothing(make_app):
    app = make_app(BOUNCE_WEBHOOK_SECRET=SECRET)
    client = app.test_client()
    body = json.dumps({"events": [{"type": "bounce", "email": "Gone@Example.org"},
                                  {"type": "complaint", "email": "angry@example.org"},
                                  {"type": "soft_bounce", "email": "full@example.org"}]}).encode()
    for bad in (_post(client, body, secret="wrong-secret"), _post(client, body, signature="sha256=00"),
                _post(client, body, timestamp=int(time.time()) - 3600),
                client.post("/webhooks/bounces", data=body, headers={"Content-Type": "application/json"})):
        assert bad.status_code == 401
        assert bad.headers["Content-Type"] == "application/problem+json"
    assert _suppressions(app) == []

    response = _post(client, body)
    assert response.status_code == 200
    assert response.get_json()["accepted"] == {"bounce": 1, "complaint": 1, "soft_bounce": 1,
                                               "soft_bounce_suppressed": 0, "invalid": 0}
    assert _suppressions(app) == sorted([(index_of(app, "gone@example.org"), "bounce"),
                                         (index_of(app, "angry@example.org"), "complaint")])
    assert _post(client, body).status_code == 200  # a replay adds nothing
    assert len(_suppressions(app)) == 2
    assert _post(client, b"not json").status_code == 400


def test_the_webhook_is_off_without_a_secret(make_app):
    app = make_app()
    assert app.test_client().post("/webhooks/bounces", data=b"{}").status_code == 404


DSN = """From: Mail Delivery System <MAILER-DAEMON@mx.example.org>
To: no-reply@campaign.test
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system. Your message could not be delivered.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {hard}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 no such user

Final-Recipient: rfc822; {soft}
Action: delayed
Status: 4.2.2

--B--
"""

ARF = """From: abuse@isp.example
To: no-reply@campaign.test
Subject: Complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="C"

--C
Content-Type: text/plain

A complaint.

--C
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: test/1.0
Version: 1
Original-Rcpt-To: {who}

--C--
"""

AUTOREPLY = """From: someone@example.org
To: no-reply@campaign.test
Subject: Out of office

I am away.
"""


def test_bounce_mailbox_command_reads_mbox_and_maildir(reach_app, tmp_path):
    app = reach_app
    box = mailbox.mbox(str(tmp_path / "bounces.mbox"))
    box.add(DSN.format(hard="dead@example.net", soft="slow@example.net"))
    box.add(ARF.format(who="spam-clicker@example.net"))
    box.add(AUTOREPLY)
    box.flush()
    box.close()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["bounces-import", str(tmp_path / "bounces.mbox")])
    assert result.exit_code == 0, result.output
    assert "3 messages read: 1 hard bounces and 1 complaints suppressed, 1 soft bounces" in result.output
    assert _suppressions(app) == sorted([(index_of(app, "dead@example.net"), "bounce"),
                                         (index_of(app, "spam-clicker@example.net"), "complaint")])

    maildir = mailbox.Maildir(str(tmp_path / "Maildir"), create=True)
    maildir.add(DSN.format(hard="another@example.net", soft="x@example.net"))
    result = runner.invoke(args=["bounces-import", str(tmp_path / "Maildir")])
    assert result.exit_code == 0 and "1 messages read: 1 hard bounces" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Suppression)) == 3


def test_the_organizer_sees_suppression_counts(world):
    add_signers(world.app, world.petition_id, 3)
    with world.app.app_context():
        from campaign.services.suppression import suppress

        suppress(db.session, index_of(world.app, "signer0@example.net"), "bounce")
        suppress(db.session, index_of(world.app, "signer1@example.net"), "unsubscribe", world.campaign_id)
        suppress(db.session, index_of(world.app, "stranger@example.net"), "complaint")  # not a signer here
        db.session.commit()
    html = signed_in(world.app).get(f"/organize/campaigns/{world.campaign_id}/updates").get_data(as_text=True)
    section = html.split('id="suppressions"')[1]
    assert "<dt>Unsubscribed</dt><dd>1</dd>" in section and "<dt>Bounced</dt><dd>1</dd>" in section
    assert "<dt>Complained</dt><dd>0</dd>" in section


def test_soft_bounces_suppress_at_the_limit_within_the_window(make_app):
    from datetime import timedelta

    from campaign.models import SoftBounce
    from campaign.models.base import utcnow

    app = make_app(BOUNCE_WEBHOOK_SECRET=SECRET, SOFT_BOUNCE_LIMIT=3, SOFT_BOUNCE_WINDOW_DAYS=30)
    client = app.test_client()
    soft = json.dumps({"type": "soft_bounce", "email": "full@example.org"}).encode()
    for _ in range(2):
        assert _post(client, soft).get_json()["accepted"]["soft_bounce_suppressed"] == 0
    assert _suppressions(app) == []
    # The first two were long ago: the count starts again.
    with app.app_context():
        db.session.get(SoftBounce, index_of(app, "full@example.org")).first_at = utcnow() - timedelta(days=31)
        db.session.commit()
    assert _post(client, soft).get_json()["accepted"]["soft_bounce_suppressed"] == 0
    assert _post(client, soft).get_json()["accepted"]["soft_bounce_suppressed"] == 0
    assert _post(client, soft).get_json()["accepted"]["soft_bounce_suppressed"] == 1
    assert _suppressions(app) == [(index_of(app, "full@example.org"), "bounce")]
