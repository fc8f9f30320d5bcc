"""Responses: the organizer records a leader's answer; signers routed to that leader who asked
for updates are told, once each, in chunks; bad input is refused."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from campaign.models import (
    MailingPolicy,
    OutboundEmail,
    Signature,
    SignatureStatus,
    Stance,
    Suppression,
    TargetResponse,
)
from campaign.models.base import utcnow
from campaign.services.responses import (
    LEADER_RESPONSE,
    ResponseError,
    delete_response,
    notify_responses,
    record_response,
    scoreboard,
)
from tests.mailings.helpers import (
    TargetSpec,
    add_signer,
    make_petition,
    messages,
    plain,
    recipient,
    target_named,
)
from tests.support import deliver_due

TARGETS = [TargetSpec("Merz", "DE"), TargetSpec("Macron", "FR")]


def responses_queued(session: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(OutboundEmail)
                              .where(OutboundEmail.kind == LEADER_RESPONSE)) or 0)


def test_signers_of_that_leader_who_asked_for_updates_are_told_once(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS, policy=MailingPolicy.LETTERS)
    merz = target_named(session, "Merz")
    add_signer(session, petition, "Ada", "ada@example.com", "DE", updates=True)
    add_signer(session, petition, "Quiet", "quiet@example.com", "DE", updates=False)
    gone = add_signer(session, petition, "Gone", "gone@example.com", "DE", updates=True)
    add_signer(session, petition, "French", "fr@example.com", "FR", updates=True)
    session.execute(update(Signature).where(Signature.id == gone.id).values(status=SignatureStatus.INVALIDATED))
    response = record_response(session, None, petition, merz.id, responded_on=utcnow().date(),
                               stance=Stance.PARTLY, text="We raised it at the summit.\n\n<b>Thanks</b>",
                               link="https://gov.example.org/answer")
    assert [row.target.name for row in scoreboard(session, petition.id).answered] == ["Merz"]
    assert notify_responses(session, chunk=1) == 1  # chunked: one signer per pass here
    assert notify_responses(session, chunk=1) == 0
    assert notify_responses(session, chunk=1) == 0
    assert session.get(TargetResponse, response.id).notify_pending is False
    assert notify_responses(session) == 0  # nothing twice
    assert responses_queued(session) == 1
    session.commit()
    deliver_due(mapp)
    told = [m for m in messages(mailbox) if m["Subject"] == "An answer to the letter you signed"]
    assert [recipient(m) for m in told] == ["ada@example.com"]
    text = plain(told[0])
    assert "Merz" in text and "Partly supports it" in text and "https://gov.example.org/answer" in text
    assert "<b>Thanks</b>" in text
    assert "&lt;b&gt;Thanks&lt;/b&gt;" in told[0].get_body(("html",)).get_content()


def test_the_email_carries_one_click_unsubscribe_and_honours_it(session, mapp, mailbox) -> None:
    # Mail a signer asked for (RELIABILITY.md C20): an RFC 8058 one-click link, here and in the body.
    petition = make_petition(session, TARGETS, policy=MailingPolicy.LETTERS)
    merz = target_named(session, "Merz")
    ada = add_signer(session, petition, "Ada", "ada@example.com", "DE", updates=True)
    record_response(session, None, petition, merz.id, responded_on=utcnow().date(), stance=Stance.PARTLY,
                    text="We raised it.", link="")
    notify_responses(session)
    session.commit()
    deliver_due(mapp)
    [told] = [m for m in messages(mailbox) if m["Subject"] == "An answer to the letter you signed"]
    assert told["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(r"<(http://campaign\.test(/unsubscribe/[^>]+))>", " ".join(str(told["List-Unsubscribe"]).split()))
    assert match, told["List-Unsubscribe"]
    assert match.group(1) in plain(told)
    # A mail program's one-click POST: no cookies, no form token.
    assert mapp.test_client().post(match.group(2)).status_code == 200
    session.expire_all()
    assert session.get(Signature, ada.id).consent_updates is False
    # Suppressed for the campaign, as the supporter updates' link does.
    assert session.scalar(select(func.count()).select_from(Suppression)
                          .where(Suppression.campaign_id == petition.campaign_id)) == 1


def test_keys_are_per_signature_and_response(session) -> None:
    petition = make_petition(session, TARGETS)
    merz = target_named(session, "Merz")
    signature = add_signer(session, petition, "Ada", "ada@example.com", "DE", updates=True)
    first = record_response(session, None, petition, merz.id, responded_on=date(2026, 1, 5),
                            stance=Stance.DECLINED, text="No.")
    second = record_response(session, None, petition, merz.id, responded_on=date(2026, 2, 5),
                             stance=Stance.SUPPORTS, link="https://gov.example.org/yes")
    notify_responses(session)
    keys = sorted(session.scalars(select(OutboundEmail.idempotency_key)
                                  .where(OutboundEmail.kind == LEADER_RESPONSE)))
    assert keys == sorted([f"response:{signature.id}:{first.id}", f"response:{signature.id}:{second.id}"])
    # The scoreboard shows the latest answer.
    [row] = scoreboard(session, petition.id).answered
    assert row.response.id == second.id and row.stance_label == "Supports the petition"


def test_a_deleted_response_cancels_its_emails(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS)
    merz = target_named(session, "Merz")
    add_signer(session, petition, "Ada", "ada@example.com", "DE", updates=True)
    response = record_response(session, None, petition, merz.id, responded_on=date(2026, 1, 5),
                               stance=Stance.OPPOSES, text="No.")
    notify_responses(session)
    delete_response(session, None, response)
    session.commit()
    assert deliver_due(mapp).get("cancelled") == 1


@pytest.mark.parametrize(("fields", "field"), [
    ({"stance": "maybe", "text": "x"}, "stance"),
    ({"stance": Stance.SUPPORTS}, "text"),
    ({"stance": Stance.SUPPORTS, "link": "javascript:alert(1)"}, "link"),
    ({"stance": Stance.SUPPORTS, "link": "https://ok.example/\r\nX: y"}, "link"),
    ({"stance": Stance.SUPPORTS, "text": "x" * 5001}, "text"),
    ({"stance": Stance.SUPPORTS, "text": "x", "responded_on": utcnow().date() + timedelta(days=5)},
     "responded_on"),
])
def test_bad_responses_are_refused(session, fields, field) -> None:
    petition = make_petition(session, TARGETS)
    merz = target_named(session, "Merz")
    arguments = {"responded_on": utcnow().date(), **fields}
    with pytest.raises(ResponseError) as caught:
        record_response(session, None, petition, merz.id, **arguments)
    assert caught.value.field == field


def test_a_target_of_another_petition_is_not_found(session) -> None:
    petition = make_petition(session, TARGETS)
    other = make_petition(session, [TargetSpec("Lula", "BR")], slug="other")
    with pytest.raises(LookupError):
        record_response(session, None, petition, target_named(session, "Lula").id,
                        responded_on=utcnow().date(), stance=Stance.SUPPORTS, text="x")
    assert other.id != petition.id
