"""What supporters see: the consent boxes on the sign form (unticked on sensitive petitions),
"your letter goes to" in the confirmation email and on the thank-you page, and the delivery and
responses section of the petition page."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from sqlalchemy import select

from campaign.extensions import db
from campaign.models import MailingPolicy, Petition, Signature, Stance
from campaign.models.base import utcnow
from campaign.services.deliveries import deliver_now, run_mailings
from campaign.services.demo import DEMO_PETITION_SLUG
from campaign.services.petitions import petition_by_slug
from campaign.services.responses import record_response
from tests.mailings.helpers import messages, plain, recipient, target_named
from tests.support import confirm, confirm_path, deliver_due, sign

SLUG = DEMO_PETITION_SLUG


def checkbox(html: str, name: str) -> str:
    match = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    assert match, f"no {name} box"
    return match.group(0)


def test_the_sign_form_has_the_consent_boxes_unticked_on_a_sensitive_petition(mapp: Flask, mdemo: str) -> None:
    page = mapp.test_client().get(f"/petitions/{SLUG}").get_data(as_text=True)
    for name in ("consent_name_to_targets", "consent_reply_to", "consent_public_name"):
        assert "checked" not in checkbox(page, name)
    assert "Add my name to the letter to the leaders" in page
    assert "Let the leader reply to me by email" in page
    assert "Show my first name in the list of recent signers" in page
    assert "css/mailings.css" in page


def test_on_a_petition_not_marked_sensitive_the_name_box_starts_ticked(mapp: Flask, mdemo: str) -> None:
    with mapp.app_context():
        petition = petition_by_slug(db.session, SLUG)
        petition.is_sensitive = False
        db.session.commit()
    page = mapp.test_client().get(f"/petitions/{SLUG}").get_data(as_text=True)
    assert "checked" in checkbox(page, "consent_name_to_targets")
    assert "checked" not in checkbox(page, "consent_reply_to")
    assert "checked" not in checkbox(page, "consent_public_name")


def test_signing_stores_the_consents_and_the_signer_learns_where_the_letter_goes(
        mapp: Flask, mdemo: str, mailbox: Any) -> None:
    client = mapp.test_client()
    assert sign(client, email="ada@example.com", country="DE", consent_name_to_targets="y",
                consent_public_name="y").status_code == 303
    with mapp.app_context():
        signature = db.session.scalar(select(Signature))
        assert (signature.consent_name_to_targets, signature.consent_reply_to, signature.consent_public_name) == (
            True, False, True)
    deliver_due(mapp)
    [email] = messages(mailbox)
    assert "Once you confirm, your letter goes to Friedrich Merz, Federal Chancellor of Germany." in plain(email)
    path = confirm_path(email)
    done = confirm(client, path)
    page = client.get(done.headers["Location"]).get_data(as_text=True)
    assert "Your letter goes to <strong>Friedrich Merz</strong>, Federal Chancellor of Germany." in page
    deliver_due(mapp)
    letters = [m for m in messages(mailbox) if recipient(m).endswith("leaders.example.org")]
    assert [recipient(m) for m in letters] == ["friedrich.merz@de.leaders.example.org"]
    assert "Ada Lovelace" in plain(letters[0])


def test_the_eu_and_the_au_write_for_their_members(mapp: Flask, mdemo: str, mailbox: Any) -> None:
    client = mapp.test_client()
    sign(client, email="nl@example.com", country="NL")
    sign(client, email="ke@example.com", country="KE")
    deliver_due(mapp)
    texts = {recipient(m): plain(m).replace("\n", " ") for m in messages(mailbox)}
    assert "your letter goes to António Costa, President of the European Council." in texts["nl@example.com"]
    assert "your letter goes to João Lourenço, Chairperson" in texts["ke@example.com"]


def test_a_signer_from_a_country_no_leader_covers_is_told_the_default_targets(
        mapp: Flask, mdemo: str, mailbox: Any) -> None:
    client = mapp.test_client()
    sign(client, email="ch@example.com", country="CH")
    deliver_due(mapp)
    text = plain(messages(mailbox)[0])
    # Switzerland is in neither the G20, the EU nor the AU: the demo's default targets.
    assert re.search(r"your letter goes to António Costa, President of the European Council; João Lourenço, Chairperson of the African Union", text.replace("\n", " "))


def test_the_petition_page_shows_delivery_letters_and_the_scoreboard(
        mapp: Flask, mdemo: str, mailbox: Any) -> None:
    client = mapp.test_client()
    with mapp.app_context():
        session = db.session
        petition = petition_by_slug(session, SLUG)
        from tests.mailings.helpers import add_signer

        add_signer(session, petition, "Ada", "ada@example.com", "DE")
        deliver_now(session, None, petition, None, "demo-delivery")
        merz = target_named(session, "Friedrich Merz")
        record_response(session, None, petition, merz.id, responded_on=utcnow().date(), stance=Stance.SUPPORTS,
                        text="<script>x</script> We agree.", link="https://gov.example.org/a?b=1&c=2")
        session.commit()
    deliver_due(mapp)
    with mapp.app_context():
        run_mailings(db.session)
        db.session.commit()
    page = client.get(f"/petitions/{SLUG}").get_data(as_text=True)
    assert "Delivery and responses" in page
    today = utcnow()
    assert f"Delivered to 21 leaders on {today.day} {today.strftime('%B %Y')}" in page
    assert "1 of 21 leaders have answered." in page
    assert "Supports the petition" in page
    assert "&lt;script&gt;x&lt;/script&gt; We agree." in page
    assert 'href="https://gov.example.org/a?b=1&amp;c=2" rel="nofollow noopener noreferrer"' in page
    assert re.search(r"Friedrich Merz</span> <span class=\"reached-count\">1 letter</span>", page)
    # Officials' addresses never appear on the page.
    assert "leaders.example.org" not in page


def test_no_delivery_section_when_the_petition_sends_no_mail(mapp: Flask, mdemo: str) -> None:
    with mapp.app_context():
        db.session.execute(db.update(Petition).values(mailing_policy=MailingPolicy.NONE))
        db.session.commit()
    page = mapp.test_client().get(f"/petitions/{SLUG}").get_data(as_text=True)
    assert "Delivery and responses" not in page
