"""Issue 11: the organizers' email status page (counts by state, the delay banner, the per-signer
look-up in plain words) and the outbox's scrubbed SMTP replies with their reason category."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from markupsafe import escape
from sqlalchemy import delete, select

from campaign.extensions import db
from campaign.mail.reasons import REASONS, scrub_error
from campaign.models import OutboundEmail, OutboxStatus, Signature
from campaign.models.base import utcnow
from campaign.services.killswitch import CONFIRMATIONS, forget_cached, set_switch
from campaign.services.outbox import deliver
from tests.organize.conftest import FAST_HASHING, build_side, csrf_of, login

CONFIRMATION = "signature_confirmation"
LETTER = "letter_to_target"


@pytest.fixture
def make_org_app(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    return lambda **overrides: make_app(**(FAST_HASHING | overrides))


def _only_these_rows(app: Flask, petition_id: int, rows: list[dict[str, Any]]) -> None:
    now = utcnow()
    with app.app_context():
        db.session.execute(delete(OutboundEmail).where(OutboundEmail.petition_id == petition_id))
        for n, values in enumerate(rows):
            values = {"kind": CONFIRMATION, "status": OutboxStatus.QUEUED, "attempts": 0,
                      "next_attempt_at": now, "last_error": "", "reason": ""} | values
            db.session.add(OutboundEmail(idempotency_key=f"test:{petition_id}:{n}", petition_id=petition_id,
                                         **values))
        db.session.commit()


def _counts(html: str) -> dict[str, int]:
    found = re.search(r'<dl class="stats" id="email-counts">(.*?)</dl>', html, re.S)
    assert found, html
    return {state: int(value.replace(",", ""))
            for state, value in re.findall(r'data-state="(\w+)">([\d,]+)<', found.group(1))}


def test_counts_by_state_next_try_and_the_delay_banner(make_org_app) -> None:
    app = make_org_app(EMAIL_DELAY_WARNING_SECONDS=120)
    side = build_side(app, "a")
    now = utcnow()
    retry_at = now + timedelta(minutes=7)
    _only_these_rows(app, side.petition_id, [
        {"status": OutboxStatus.SENT, "attempts": 1, "sent_at": now},
        {"status": OutboxStatus.SENT, "attempts": 2, "sent_at": now, "kind": LETTER},
        {"next_attempt_at": now - timedelta(seconds=30)},  # waiting, due half a minute ago
        {"attempts": 1, "next_attempt_at": retry_at, "reason": "server_busy"},
        {"attempts": 3, "next_attempt_at": retry_at + timedelta(minutes=5), "reason": "unreachable"},
        {"status": OutboxStatus.FAILED, "attempts": 1, "reason": "recipient_refused"},
        {"status": OutboxStatus.CANCELLED, "attempts": 1, "reason": "not_needed"},
        {"status": OutboxStatus.CANCELLED, "attempts": 1, "reason": "suppressed"},
        {"status": OutboxStatus.CANCELLED, "attempts": 1, "reason": "suppressed"},
    ])
    client = app.test_client()
    login(client, side.organizer)
    page = client.get(f"/organize/petitions/{side.petition_id}/emails")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert _counts(html) == {"sent": 2, "waiting": 1, "retrying": 2, "refused": 1, "not_needed": 1,
                             "paused": 0, "suppressed": 2}
    assert retry_at.strftime("%Y-%m-%d %H:%M") in html  # the soonest next try
    assert 'id="delay-banner"' not in html  # the oldest due email waited 30 s < 120 s

    # The oldest due email waited 10 minutes: the banner says mail runs late.
    _only_these_rows(app, side.petition_id, [{"next_attempt_at": now - timedelta(minutes=10)},
                                             {"next_attempt_at": now - timedelta(seconds=5)}])
    html = client.get(f"/organize/petitions/{side.petition_id}/emails").get_data(as_text=True)
    assert 'id="delay-banner"' in html and "10 minutes" in html
    assert _counts(html)["waiting"] == 2

    # An admin's pause explains itself and is not "late".
    with app.app_context():
        set_switch(db.session, None, CONFIRMATIONS, True)
        db.session.commit()
        forget_cached()
    html = client.get(f"/organize/petitions/{side.petition_id}/emails").get_data(as_text=True)
    assert _counts(html)["paused"] == 2 and _counts(html)["waiting"] == 0
    assert 'id="paused-banner"' in html and 'id="delay-banner"' not in html


def test_the_petition_page_links_to_it_and_other_campaigns_get_404(make_org_app) -> None:
    app = make_org_app()
    a, b = build_side(app, "a"), build_side(app, "b")
    client = app.test_client()
    login(client, a.organizer)
    petition_page = client.get(f"/organize/petitions/{a.petition_id}").get_data(as_text=True)
    assert f'href="/organize/petitions/{a.petition_id}/emails"' in petition_page
    assert client.get(f"/organize/petitions/{b.petition_id}/emails").status_code == 404
    page = client.get(f"/organize/petitions/{a.petition_id}/emails").get_data(as_text=True)
    response = client.post(f"/organize/petitions/{b.petition_id}/emails",
                           data={"csrf_token": csrf_of(page), "email": "pending-b@example.net"})
    assert response.status_code == 404
    assert client.post(f"/organize/petitions/{a.petition_id}/emails",
                       data={"email": "pending-a@example.net"}).status_code == 400  # no CSRF token
    assert app.test_client().get(f"/organize/petitions/{a.petition_id}/emails").status_code == 302


def _look_up(client: Any, petition_id: int, address: str) -> str:
    path = f"/organize/petitions/{petition_id}/emails"
    response = client.post(path, data={"csrf_token": csrf_of(client.get(path).get_data(as_text=True)),
                                       "email": address})
    assert response.status_code == 200
    return str(response.get_data(as_text=True))


def test_a_refused_email_is_stored_scrubbed_with_its_reason_and_explained_in_plain_words(
        make_org_app, mailbox) -> None:
    app = make_org_app()
    side = build_side(app, "a")
    reply = "550 5.1.1 <pending-a@example.net>: no such user (ref 4f9c2a7be31d08aa5c6e9f21b7d3)"
    mailbox.refusals["pending-a@example.net"] = reply
    with app.app_context():
        signature = db.session.get(Signature, side.signature_id)
        assert signature is not None
        rows = list(db.session.scalars(select(OutboundEmail.id).where(
            OutboundEmail.signature_id == side.signature_id, OutboundEmail.kind == CONFIRMATION)))
        assert rows
        assert [deliver(db.session, row) for row in rows] == ["failed"] * len(rows)
        stored = db.session.scalars(select(OutboundEmail).where(OutboundEmail.id.in_(rows))).all()
        for row in stored:
            assert row.reason == "recipient_refused"
            assert "550" in row.last_error and "no such user" in row.last_error
            assert "pending-a" not in row.last_error and "example.net" not in row.last_error
            assert "4f9c2a7be31d08aa5c6e9f21b7d3" not in row.last_error

    client = app.test_client()
    login(client, side.organizer)
    html = _look_up(client, side.petition_id, "Pending-A@example.net")  # exact address, any case
    assert 'id="lookup-result"' in html
    assert "Request to confirm a signature" in html and 'data-state="refused"' in html
    assert escape(REASONS["recipient_refused"]) in html
    assert "550" not in html and "no such user" not in html  # never the raw reply

    # The refusal suppressed the mailbox: a later confirmation (the person signs again) is not
    # sent, and the look-up says why in words of its own.
    with app.app_context():
        index = db.session.scalar(select(OutboundEmail.recipient_index).where(OutboundEmail.id == rows[0]))
        again = OutboundEmail(idempotency_key="again:1", kind=CONFIRMATION, petition_id=side.petition_id,
                              signature_id=side.signature_id, recipient_index=index, from_public_form=True)
        db.session.add(again)
        db.session.commit()
        assert deliver(db.session, again.id) == "cancelled"
    html = _look_up(client, side.petition_id, "pending-a@example.net")
    assert 'data-state="suppressed"' in html and escape(REASONS["bounced"]) in html
    assert len(mailbox.messages) == 0

    # A temporary failure: retrying, with the next try in words and as a time.
    with app.app_context():
        db.session.execute(delete(OutboundEmail).where(OutboundEmail.petition_id == side.petition_id))
        db.session.add(OutboundEmail(idempotency_key="t:1", kind=CONFIRMATION, petition_id=side.petition_id,
                                     signature_id=side.signature_id, attempts=2, reason="server_busy",
                                     next_attempt_at=utcnow() + timedelta(minutes=4)))
        db.session.commit()
    html = _look_up(client, side.petition_id, "pending-a@example.net")
    assert 'data-state="retrying"' in html and "Next try: in about 4 minutes" in html
    assert escape(REASONS["server_busy"]) in html

    html = _look_up(client, side.petition_id, "nobody@example.net")
    assert "Nobody with this address has signed this petition." in html
    html = _look_up(client, side.petition_id, "not an address")
    assert "exact addresses only" in html


def test_scrub_error_drops_addresses_and_tokens_and_keeps_the_words() -> None:
    assert scrub_error("550 5.1.1 <ada.l+x@mail.example.org>: Recipient address rejected") == \
        "550 5.1.1 <[address]>: Recipient address rejected"
    assert scrub_error("recipient refused: 550 'user ada@example.org unknown'") == \
        "recipient refused: 550 'user [address] unknown'"
    assert scrub_error("421 4.7.0 try again later, id=AbC123dEf456GhI789jKl0") == \
        "421 4.7.0 try again later, id=[token]"
    text = "451 4.3.0 Temporary local problem - please try later"
    assert scrub_error(text) == text
    assert len(scrub_error("x" * 5000)) == 2000
