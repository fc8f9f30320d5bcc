"""Kill switches: an admin pauses signing (site-wide or one petition), new petitions, bulk mail
(confirmations keep flowing unless paused too) and sets a site banner, without a deploy. They
are in force at once in the process that changed them and within KILLSWITCH_CACHE_SECONDS in
every other."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from campaign.extensions import db
from campaign.models import OutboundEmail, Petition, Signature, User
from campaign.services import killswitch
from campaign.services.abuse import TRENDING_ALERT
from campaign.services.outbox import queue_email
from tests.organize.conftest import add_user, csrf_of, login
from tests.security.conftest import SLUG, client_from, demo_petition_id, sign_as
from tests.support import deliver_due


def _set(app, key, on, message=""):
    with app.app_context():
        killswitch.set_switch(db.session, None, key, on, message)
        db.session.commit()


def _signatures(app):
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(Signature)) or 0)


def test_pause_signing_site_wide_shows_the_message_and_refuses_quietly(sec_app):
    client = client_from(sec_app, "198.51.100.1")
    page = client.get(f"/petitions/{SLUG}")
    token_page = page.get_data(as_text=True)
    _set(sec_app, killswitch.SIGNING, True, "Back at 18:00 UTC <b>soon</b>")
    paused = client.get(f"/petitions/{SLUG}").get_data(as_text=True)
    assert "Signing is paused" in paused and "Back at 18:00 UTC &lt;b&gt;soon&lt;/b&gt;" in paused
    assert 'action="/petitions/g20-chechnya/sign' not in paused
    # A form rendered before the pause is refused with the message, never a 429.
    from tests.support import form_token

    response = client.post(f"/petitions/{SLUG}/sign", data={
        "name": "A", "email": "a@example.org", "country": "DE", "form_token": form_token(token_page)})
    assert response.status_code == 503 and "Back at 18:00 UTC" in response.get_data(as_text=True)
    assert _signatures(sec_app) == 0
    _set(sec_app, killswitch.SIGNING, False)
    assert sign_as(client, "a@example.org").status_code == 303
    assert _signatures(sec_app) == 1


def test_pause_one_petition(sec_app):
    _set(sec_app, killswitch.petition_key(demo_petition_id(sec_app)), True)
    page = sec_app.test_client().get(f"/petitions/{SLUG}").get_data(as_text=True)
    assert killswitch.DEFAULT_PAUSE_MESSAGE in page


def test_another_process_follows_within_the_cache_time(make_sec_app, tmp_path):
    app = make_sec_app(KILLSWITCH_CACHE_SECONDS=0.3)
    other = app.test_client()
    assert "Sign the petition" in other.get(f"/petitions/{SLUG}").get_data(as_text=True)
    with app.app_context():  # as another process would: straight to the table, no cache reset
        from campaign.models import SiteSetting

        db.session.add(SiteSetting(key=killswitch.SIGNING, value='{"on": true, "message": "stop"}'))
        db.session.commit()
    time.sleep(0.35)
    assert "Signing is paused" in other.get(f"/petitions/{SLUG}").get_data(as_text=True)


def test_site_banner_on_every_public_page(sec_app):
    _set(sec_app, killswitch.BANNER, True, "Maintenance tonight <script>")
    client = sec_app.test_client()
    for path in ("/", f"/petitions/{SLUG}", "/account/login"):
        html = client.get(path).get_data(as_text=True)
        assert "Maintenance tonight &lt;script&gt;" in html, path


def test_bulk_mail_pause_holds_bulk_but_not_confirmations(sec_app, mailbox):
    sign_as(client_from(sec_app, "198.51.100.2"), "signer@example.org")
    user_id = add_user(sec_app, "org@example.org")
    with sec_app.app_context():
        from campaign.models import TrendingAlert
        from campaign.models.base import utcnow

        alert = TrendingAlert(petition_id=demo_petition_id(sec_app), kind="ip", subject="ab" * 32, count=150,
                              threshold=100, window_start=utcnow())
        db.session.add(alert)
        db.session.flush()
        queue_email(db.session, kind=TRENDING_ALERT, key=f"{TRENDING_ALERT}:{alert.id}:{user_id}",
                    petition_id=alert.petition_id)
        db.session.commit()
    _set(sec_app, killswitch.BULK_MAIL, True)
    deliver_due(sec_app)
    assert [m["Subject"] for m in mailbox.messages] == ["Please confirm your signature"]
    _set(sec_app, killswitch.CONFIRMATIONS, True)
    sign_as(client_from(sec_app, "198.51.100.3"), "second@example.org")
    deliver_due(sec_app)
    assert len(mailbox.messages) == 1
    with sec_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboundEmail).where(
            OutboundEmail.status == "queued")) == 2
    _set(sec_app, killswitch.BULK_MAIL, False)
    _set(sec_app, killswitch.CONFIRMATIONS, False)
    deliver_due(sec_app)
    assert sorted(m["Subject"] for m in mailbox.messages) == [
        "Please confirm your signature", "Please confirm your signature", "Unusual signing activity on a petition"]


def test_pause_new_petitions_stops_organizers_not_admins(sec_app):
    with sec_app.app_context():
        campaign_id = db.session.scalar(select(Petition.campaign_id).where(Petition.slug == SLUG))
    add_user(sec_app, "organizer@example.org", campaign_id=campaign_id)
    add_user(sec_app, "root@example.org", admin=True)
    _set(sec_app, killswitch.NEW_PETITIONS, True, "Paused after a spam wave.")
    client = sec_app.test_client()
    login(client, "organizer@example.org")
    path = f"/organize/campaigns/{campaign_id}/petitions/new"
    token = csrf_of(client.get(path).get_data(as_text=True))
    response = client.post(path, data={"csrf_token": token, "title": "Spam", "slug": "spam-petition",
                                       "body_markdown": "x"})
    assert response.status_code == 503 and "Paused after a spam wave." in response.get_data(as_text=True)
    with sec_app.app_context():
        assert db.session.scalar(select(Petition).where(Petition.slug == "spam-petition")) is None
    admin = sec_app.test_client()
    login(admin, "root@example.org")
    token = csrf_of(admin.get(path).get_data(as_text=True))
    assert admin.post(path, data={"csrf_token": token, "title": "Admin petition", "slug": "admin-petition",
                                  "body_markdown": "x"}).status_code != 503


def test_switch_page_is_for_admins_only_and_takes_effect_at_once(sec_app):
    add_user(sec_app, "organizer@example.org")
    add_user(sec_app, "root@example.org", admin=True)
    organizer = sec_app.test_client()
    login(organizer, "organizer@example.org")
    assert organizer.get("/organize/admin/switches").status_code == 404
    admin = sec_app.test_client()
    login(admin, "root@example.org")
    page = admin.get("/organize/admin/switches")
    assert page.status_code == 200
    response = admin.post("/organize/admin/switches", data={
        "csrf_token": csrf_of(page.get_data(as_text=True)), "key": killswitch.SIGNING, "on": "y",
        "message": "Paused by an admin"})
    assert response.status_code == 303
    assert "Paused by an admin" in sec_app.test_client().get(f"/petitions/{SLUG}").get_data(as_text=True)
    with sec_app.app_context():
        from campaign.models import AuditEvent

        assert db.session.scalar(select(AuditEvent.action).where(AuditEvent.action == "switch.on"))
        assert db.session.scalar(select(User.id).where(User.email == "root@example.org"))
