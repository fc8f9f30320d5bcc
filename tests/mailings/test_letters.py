"""Letters to targets: what an official reads with and without each consent, header injection
and HTML in comments, a target without a valid address, the hourly cap, and signatures that
are invalidated before their letter goes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text, update

from campaign.models import (
    LetterQuota,
    MailingPolicy,
    OutboundEmail,
    OutboxStatus,
    RoutedSignature,
    RouteVia,
    Signature,
    SignatureStatus,
    Target,
)
from campaign.services.letters import LETTER, stable_message_id
from tests.mailings.helpers import (
    TargetSpec,
    add_signer,
    html,
    make_petition,
    messages,
    outbox,
    plain,
    recipient,
)
from tests.support import deliver_due

TARGETS = [TargetSpec("Friedrich Merz", "DE", title="Federal Chancellor of Germany"),
           TargetSpec("Emmanuel Macron", "FR", title="President of France")]


def send_all(session: Any, app: Any) -> dict[str, int]:
    """Commit what the test did, let go of SQLite's lock, and run the worker's send code."""
    session.commit()  # ends the transaction, so SQLite's write lock is free for the sender
    return deliver_due(app)


def only_letter(mailbox: Any) -> Any:
    letters = [m for m in messages(mailbox) if "a letter from" in str(m["Subject"])]
    assert len(letters) == 1, [m["Subject"] for m in messages(mailbox)]
    return letters[0]


def test_named_letter_carries_name_country_comment_and_reply_to(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS)
    add_signer(session, petition, "Ada Lovelace", "ada@example.com", "DE", comment="Act now, please.",
               named=True, reply=True)
    assert send_all(session, mapp) == {"sent": 1}
    letter = only_letter(mailbox)
    assert recipient(letter) == "friedrich.merz@gov.example.org"
    assert letter["Reply-To"] == "ada@example.com"
    body = plain(letter)
    assert body.startswith("Dear Federal Chancellor of Germany,\n\nPlease act now.")
    assert "Ada Lovelace\nGermany" in body
    assert "Act now, please." in body
    assert "A supporter from" not in body
    assert "Ada Lovelace" in html(letter)
    # Names stay out of headers: the subject says where the supporter is, not who.
    assert "Ada" not in str(letter["Subject"])
    assert "Germany" in str(letter["Subject"])


def test_unticked_letter_is_anonymous_without_comment_or_address(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS)
    add_signer(session, petition, "Ada Lovelace", "ada@example.com", "DE", comment="My secret words.")
    assert send_all(session, mapp) == {"sent": 1}
    letter = only_letter(mailbox)
    raw = letter.as_string()
    assert "A supporter from Germany" in plain(letter)
    assert "A supporter from Germany" in html(letter)
    for secret in ("Ada", "Lovelace", "ada@example.com", "My secret words"):
        assert secret not in raw
    assert letter["Reply-To"] is None


def test_reply_to_without_name_shows_the_address_only(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS)
    add_signer(session, petition, "Ada Lovelace", "ada@example.com", "DE", comment="Words.", reply=True)
    send_all(session, mapp)
    letter = only_letter(mailbox)
    assert letter["Reply-To"] == "ada@example.com"
    assert "A supporter from Germany" in plain(letter)
    assert "Lovelace" not in letter.as_string()
    assert "Words." not in letter.as_string()


def test_name_without_reply_to_shows_no_address(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS)
    add_signer(session, petition, "Ada Lovelace", "ada@example.com", "DE", named=True)
    send_all(session, mapp)
    letter = only_letter(mailbox)
    assert letter["Reply-To"] is None
    assert "ada@example.com" not in letter.as_string()
    assert "Ada Lovelace" in plain(letter)


def test_header_injection_in_comment_and_name_stays_in_the_body(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS)
    add_signer(session, petition, "Eve\r\nBcc: victim@example.net", "eve@example.com", "DE",
               comment="Hello\r\nBcc: victim@example.net\r\nSubject: spoofed\n\nmore", named=True)
    assert send_all(session, mapp) == {"sent": 1}
    letter = only_letter(mailbox)
    assert letter["Bcc"] is None
    assert "spoofed" not in str(letter["Subject"])
    assert [recipient(letter)] == ["friedrich.merz@gov.example.org"]
    assert len(mailbox.messages) == 1
    assert "Bcc: victim@example.net" in plain(letter)  # harmless text in the body


def test_html_in_a_comment_is_escaped_in_the_html_letter(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS)
    add_signer(session, petition, "<b>Ada</b>", "ada@example.com", "DE", named=True,
               comment='<script>alert(1)</script><a href="https://evil.example">click</a>')
    send_all(session, mapp)
    body = html(only_letter(mailbox))
    assert "<script>" not in body and "<a href=\"https://evil.example\"" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&lt;b&gt;Ada&lt;/b&gt;" in body


def test_a_target_without_a_valid_address_gets_no_letter_but_the_next_delivery(session, mapp, mailbox) -> None:
    petition = make_petition(session, [TargetSpec("Nobody", "DE", email="not-an-address")])
    signature = add_signer(session, petition, "Ada", "ada@example.com", "DE", named=True)
    routed = session.scalar(select(RoutedSignature).where(RoutedSignature.signature_id == signature.id))
    assert routed.via == RouteVia.NO_ADDRESS and routed.letter_email_id is None
    assert outbox(session, LETTER) == []
    assert send_all(session, mapp) == {}


def test_an_address_that_turns_bad_before_sending_cancels_the_letter_and_waits(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS)
    signature_id = add_signer(session, petition, "Ada", "ada@example.com", "DE", named=True).id
    session.execute(update(Target).where(Target.name == "Friedrich Merz").values(email="broken"))
    assert send_all(session, mapp) == {"cancelled": 1}
    assert mailbox.messages == []
    routed = session.scalar(select(RoutedSignature).where(RoutedSignature.signature_id == signature_id))
    assert routed.via == RouteVia.NO_ADDRESS and routed.batch_id is None


def test_an_invalidated_signature_never_gets_its_queued_letter(session, mapp, mailbox) -> None:
    petition = make_petition(session, TARGETS)
    signature = add_signer(session, petition, "Ada", "ada@example.com", "DE", named=True)
    session.execute(update(Signature).where(Signature.id == signature.id)
                    .values(status=SignatureStatus.INVALIDATED))
    assert send_all(session, mapp) == {"cancelled": 1}
    assert mailbox.messages == []


def test_confirming_twice_queues_one_letter_per_target(session, mapp) -> None:
    from campaign.services.letters import plan_letters
    from campaign.services.signing import confirm_signature

    petition = make_petition(session, TARGETS)
    signature = add_signer(session, petition, "Ada", "ada@example.com", "DE")
    assert confirm_signature(session, signature) is False
    assert plan_letters(session, signature) == []
    rows = outbox(session, LETTER)
    assert [r.idempotency_key for r in rows] == [f"letter:{signature.id}:{rows[0].target_id}"]


def test_the_hourly_cap_per_target_folds_the_rest_into_the_next_delivery(make_app) -> None:
    from campaign.extensions import db

    app = make_app(LETTERS_PER_TARGET_PER_HOUR=3)
    with app.app_context():
        petition = make_petition(db.session, TARGETS)
        for i in range(5):
            add_signer(db.session, petition, f"Signer {i}", f"s{i}@example.com", "DE")
        add_signer(db.session, petition, "French", "fr@example.com", "FR")
        vias = db.session.scalars(select(RoutedSignature.via).order_by(RoutedSignature.id)).all()
        assert vias == [RouteVia.LETTER] * 3 + [RouteVia.OVERFLOW] * 2 + [RouteVia.LETTER]
        assert db.session.scalar(select(LetterQuota.used).join(Target).where(Target.country == "DE")) == 3
        assert len(outbox(db.session, LETTER)) == 4
        db.session.remove()


def test_a_cap_of_zero_sends_no_single_letters(make_app) -> None:
    from campaign.extensions import db

    app = make_app(LETTERS_PER_TARGET_PER_HOUR=0)
    with app.app_context():
        petition = make_petition(db.session, TARGETS)
        add_signer(db.session, petition, "Ada", "ada@example.com", "DE")
        assert db.session.scalars(select(RoutedSignature.via)).all() == [RouteVia.OVERFLOW]
        db.session.remove()


def test_deliveries_only_petition_queues_no_letters(session) -> None:
    petition = make_petition(session, TARGETS, policy=MailingPolicy.DELIVERIES)
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    assert session.scalars(select(RoutedSignature.via)).all() == [RouteVia.BATCH]
    assert outbox(session, LETTER) == []


def test_letters_go_on_the_letters_queue_with_a_stable_message_id(session, mapp, mailbox) -> None:
    from campaign.services.outbox import queue_for

    assert queue_for(LETTER) == "letters"
    petition = make_petition(session, TARGETS)
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    key = outbox(session, LETTER)[0].idempotency_key
    expected = stable_message_id(key)
    send_all(session, mapp)
    assert only_letter(mailbox)["Message-ID"] == expected
    assert session.scalar(select(OutboundEmail.status).where(OutboundEmail.kind == LETTER)) == OutboxStatus.SENT


def test_letters_are_published_only_when_the_outermost_transaction_commits(mapp) -> None:
    """A savepoint's release fires SQLAlchemy's after_commit too; publishing then sent workers
    after rows that were not committed yet (they skipped them, and the sweep sent them late)."""
    from campaign.extensions import db

    published: list[int] = []
    mapp.extensions["campaign.publish"] = lambda email_id, queue: published.append(email_id)
    with mapp.app_context():
        petition = make_petition(db.session, TARGETS)
        for i in range(3):
            add_signer(db.session, petition, f"S{i}", f"s{i}@example.com", "DE")
        assert published == []
        db.session.commit()
        assert len(published) == 3
        db.session.remove()


def test_a_target_taken_off_the_petition_gets_no_queued_letter_or_delivery(session, mapp, mailbox) -> None:
    from campaign.models import PetitionTarget
    from campaign.services.deliveries import DELIVERY, deliver_now

    petition = make_petition(session, TARGETS)
    add_signer(session, petition, "Ada", "ada@example.com", "DE", named=True)
    merz = session.scalar(select(PetitionTarget).join(Target, Target.id == PetitionTarget.target_id)
                          .where(Target.country == "DE"))
    assert len(deliver_now(session, None, petition, [merz.target_id], nonce="n1")) == 1
    session.delete(merz)
    assert send_all(session, mapp) == {"cancelled": 2}
    assert messages(mailbox) == []
    assert {r.kind for r in outbox(session, LETTER) + outbox(session, DELIVERY)} == {LETTER, DELIVERY}


def test_no_task_is_scheduled_with_a_broker_countdown_or_eta() -> None:
    # Redis hands a message that waits past its visibility timeout to a second worker (Celery
    # #2481, #7009): scheduled mail is rows with a send-after time that beat finds, never an ETA.
    import re

    from tests.support import ROOT

    scheduled = re.compile(r"\b(countdown|eta)\s*=|\bapply_async\(")
    offenders = [f"{path.relative_to(ROOT)}: {found.group(0)}"
                 for folder in ("campaign", "worker") for path in (ROOT / folder).rglob("*.py")
                 for found in scheduled.finditer(path.read_text())]
    assert offenders == []


@pytest.mark.integration
def test_a_full_hour_is_told_without_waiting_on_the_quota_rows_lock(make_pg_app, pg_url) -> None:
    """During a surge every confirmation routed to one leader asks for a letter slot. Once the
    hour is full the answer must not wait on the quota row: PostgreSQL's ON CONFLICT DO UPDATE
    locks the row even when its WHERE fails, which queued every such confirmation (issue 9).
    Here another transaction holds the row's lock; the full hour must still answer at once."""
    import psycopg

    from campaign.extensions import db
    from campaign.models.base import utcnow
    from campaign.services.letters import hour_window, take_letter_slot

    app = make_pg_app(LETTERS_PER_TARGET_PER_HOUR=2)
    with app.app_context():
        make_petition(db.session, TARGETS)
        target_id = db.session.scalar(select(Target.id).where(Target.country == "DE"))
        assert [take_letter_slot(db.session, target_id) for _ in range(3)] == [True, True, False]
        db.session.commit()
        window = hour_window(utcnow())
        with psycopg.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as holder:
            holder.execute("SELECT used FROM letter_quotas WHERE target_id = %s AND window_start = %s "
                           "FOR UPDATE", (target_id, window))
            db.session.execute(text("SET LOCAL lock_timeout = '300ms'"))
            assert take_letter_slot(db.session, target_id) is False  # no lock wait, no timeout
            db.session.rollback()
        assert db.session.scalar(select(LetterQuota.used).where(LetterQuota.target_id == target_id)) == 2
