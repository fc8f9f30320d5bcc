"""Batched deliveries: cadences (every N, daily, weekly, final), a schedule in the past, letters
over the cap folded into the next delivery, the CSV (consents, formula injection), invalidated
signatures, "deliver now", the ledger, failing targets and the public figures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from campaign.models import (
    Cadence,
    Delivery,
    DeliveryKind,
    MailingPolicy,
    Membership,
    OutboundEmail,
    PetitionStatus,
    RoutedSignature,
    Signature,
    SignatureStatus,
    Suppression,
    Target,
    TargetMailing,
    User,
    UserStatus,
)
from campaign.models.base import utcnow
from campaign.services.deliveries import (
    DELIVERY,
    TARGET_FAILING,
    MailingError,
    deliver_now,
    ledger,
    preview_deliver_now,
    public_mailings,
    run_mailings,
    set_cadence,
)
from tests.mailings.helpers import (
    TargetSpec,
    add_signer,
    csv_of,
    make_petition,
    messages,
    outbox,
    plain,
    recipient,
    target_named,
)
from tests.support import deliver_due

TARGETS = [TargetSpec("Merz", "DE", title="Federal Chancellor of Germany"),
           TargetSpec("Macron", "FR", title="President of France"),
           TargetSpec("Costa", "EU", covers=["DE", "FR", "IT"], default=True)]


def send_all(session: Any, app: Any) -> dict[str, int]:
    session.commit()  # ends the transaction, so SQLite's write lock is free for the sender
    return deliver_due(app)


def deliveries_to(mailbox: Any, address: str) -> list[Any]:
    return [m for m in messages(mailbox) if recipient(m) == address and "signatures" in str(m["Subject"])]


def petition_with(session: Any, policy: str = MailingPolicy.DELIVERIES, targets=TARGETS, **kwargs: Any):
    return make_petition(session, targets, policy=policy, **kwargs)


def test_every_n_signatures_makes_one_batch_with_new_and_total(session, mapp, mailbox) -> None:
    petition = petition_with(session)
    merz = target_named(session, "Merz")
    set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=3)
    add_signer(session, petition, "Ada Lovelace", "ada@example.com", "DE", named=True, comment="Now!")
    add_signer(session, petition, "Bob", "bob@example.com", "DE", comment="secret comment", reply=True)
    assert run_mailings(session).deliveries == []  # 2 of 3
    add_signer(session, petition, "=HYPERLINK(\"http://evil\")", "eve@example.com", "DE", named=True)
    result = run_mailings(session)
    assert len(result.deliveries) == 1
    assert run_mailings(session).deliveries == []  # nothing new: no second batch
    assert send_all(session, mapp) == {"sent": 1}
    [mail] = deliveries_to(mailbox, "merz@gov.example.org")
    assert "3 new signatures (3 in all)" in str(mail["Subject"])
    text = plain(mail)
    assert "Dear Federal Chancellor of Germany" in text and "3 more people" in text
    rows = csv_of(mail)
    assert rows[0] == ["name", "country", "comment", "date", "email"]
    today = utcnow().date().isoformat()
    assert rows[1:] == [
        ["Ada Lovelace", "Germany", "Now!", today, ""],
        ["A supporter from Germany", "Germany", "", today, "bob@example.com"],
        ["'=HYPERLINK(\"http://evil\")", "Germany", "", today, ""],
    ]
    assert "secret comment" not in mail.as_string()


def test_the_next_batch_counts_new_and_total(session, mapp, mailbox) -> None:
    petition = petition_with(session)
    merz = target_named(session, "Merz")
    set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=2)
    for i in range(4):
        add_signer(session, petition, f"S{i}", f"s{i}@example.com", "DE")
        run_mailings(session)
    batches = session.scalars(select(Delivery).where(Delivery.target_id == merz.id).order_by(Delivery.id)).all()
    assert [(b.new_count, b.total_count) for b in batches] == [(2, 2), (2, 4)]
    # Each signature went in exactly one batch, named by the batch id.
    batch_ids = session.scalars(select(RoutedSignature.batch_id).where(RoutedSignature.target_id == merz.id)).all()
    assert sorted(batch_ids) == sorted([batches[0].id] * 2 + [batches[1].id] * 2)
    assert send_all(session, mapp) == {"sent": 2}
    subjects = sorted(str(m["Subject"]) for m in deliveries_to(mailbox, "merz@gov.example.org"))
    assert [s.split(": ")[-1] for s in subjects] == ["2 new signatures (2 in all)", "2 new signatures (4 in all)"]


def test_a_daily_schedule_in_the_past_sends_once_and_moves_on(session, mapp, mailbox) -> None:
    petition = petition_with(session)
    merz = target_named(session, "Merz")
    now = utcnow()
    past = now - timedelta(days=10, hours=3)
    set_cadence(session, petition, merz.id, Cadence.DAILY, first_at=past)
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    made = run_mailings(session, now=now).deliveries
    assert len(made) == 1
    mailing = session.get(TargetMailing, (petition.id, merz.id))
    # The next send-after time is the first slot after now on the same daily grid: no burst of
    # the ten missed days.
    assert now < mailing.next_run_at <= now + timedelta(days=1)
    assert (mailing.next_run_at - past) % timedelta(days=1) == timedelta(0)
    add_signer(session, petition, "Bob", "bob@example.com", "DE")
    assert run_mailings(session, now=now + timedelta(hours=1)).deliveries == []
    assert len(run_mailings(session, now=mailing.next_run_at + timedelta(seconds=1)).deliveries) == 1


def test_a_weekly_schedule_waits_for_its_day(session) -> None:
    petition = petition_with(session)
    merz = target_named(session, "Merz")
    now = utcnow()
    set_cadence(session, petition, merz.id, Cadence.WEEKLY, first_at=now + timedelta(days=3))
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    assert [d for d in run_mailings(session, now=now).deliveries
            if session.get(Delivery, d).target_id == merz.id] == []
    made = run_mailings(session, now=now + timedelta(days=3, seconds=1)).deliveries
    assert [d for d in made if session.get(Delivery, d).target_id == merz.id] != []


def test_final_only_delivers_when_the_petition_closes(session, mapp, mailbox) -> None:
    petition = petition_with(session)
    merz = target_named(session, "Merz")
    set_cadence(session, petition, merz.id, Cadence.FINAL)
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    assert [d for d in run_mailings(session, now=utcnow() + timedelta(days=30)).deliveries
            if session.get(Delivery, d).target_id == merz.id] == []
    petition.close()
    made = run_mailings(session).deliveries
    kinds = {session.get(Delivery, d).target_id: session.get(Delivery, d).kind for d in made}
    assert kinds[merz.id] == DeliveryKind.FINAL
    send_all(session, mapp)
    [mail] = deliveries_to(mailbox, "merz@gov.example.org")
    assert "has closed" in plain(mail)


def test_letters_over_the_cap_fold_into_the_next_delivery(make_app, mailbox) -> None:
    from campaign.extensions import db

    app = make_app(LETTERS_PER_TARGET_PER_HOUR=2)
    with app.app_context():
        session = db.session
        petition = petition_with(session, MailingPolicy.LETTERS, targets=TARGETS[:1])
        merz = target_named(session, "Merz")
        set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=1)
        for i in range(5):
            add_signer(session, petition, f"Signer {i}", f"s{i}@example.com", "DE", named=True)
        [delivery_id] = run_mailings(session).deliveries
        assert session.get(Delivery, delivery_id).new_count == 3
        assert send_all(session, app) == {"sent": 3}
        got = messages(mailbox)
        letters = [m for m in got if "a letter from" in str(m["Subject"])]
        [batch] = [m for m in got if "new signatures" in str(m["Subject"])]
        named = {plain(m).split("Sincerely,\n\n")[1].split("\n")[0] for m in letters}
        named |= {row[0] for row in csv_of(batch)[1:]}
        assert named == {f"Signer {i}" for i in range(5)}  # nothing lost, nothing twice
        assert len(letters) + len(csv_of(batch)) - 1 == 5
        db.session.remove()


def test_invalidated_signatures_are_never_in_a_later_delivery(session, mapp, mailbox) -> None:
    petition = petition_with(session)
    merz = target_named(session, "Merz")
    set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=1)
    gone = add_signer(session, petition, "Gone Before", "gone@example.com", "DE", named=True)
    session.execute(update(Signature).where(Signature.id == gone.id).values(status=SignatureStatus.INVALIDATED))
    add_signer(session, petition, "Kept", "kept@example.com", "DE", named=True)
    late = add_signer(session, petition, "Gone After", "late@example.com", "DE", named=True)
    assert len([d for d in run_mailings(session).deliveries if session.get(Delivery, d).target_id == merz.id]) == 1
    # Invalidated between batching and sending: left out at send time.
    session.execute(update(Signature).where(Signature.id == late.id).values(status=SignatureStatus.INVALIDATED))
    send_all(session, mapp)
    [mail] = deliveries_to(mailbox, "merz@gov.example.org")
    assert [row[0] for row in csv_of(mail)[1:]] == ["Kept"]
    assert "Gone" not in mail.as_string()
    # The one invalidated before batching waits in no batch, forever.
    assert session.scalar(select(RoutedSignature.batch_id).where(RoutedSignature.signature_id == gone.id)) is None
    assert run_mailings(session).deliveries == []


def test_a_batch_whose_signatures_were_all_invalidated_is_cancelled(session, mapp, mailbox) -> None:
    petition = petition_with(session, targets=TARGETS[:1])
    merz = target_named(session, "Merz")
    set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=1)
    signature = add_signer(session, petition, "Ada", "ada@example.com", "DE")
    run_mailings(session)
    session.execute(update(Signature).where(Signature.id == signature.id).values(status=SignatureStatus.INVALIDATED))
    assert send_all(session, mapp) == {"cancelled": 1}
    assert mailbox.messages == []


def test_a_target_without_a_valid_address_waits_and_gets_everything_once_fixed(session, mapp, mailbox) -> None:
    petition = petition_with(session, targets=[TargetSpec("Merz", "DE", email="merz at gov")])
    merz = target_named(session, "Merz")
    set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=1)
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    assert run_mailings(session).deliveries == []
    [line] = ledger(session, petition)
    assert not line.address_ok and line.failing and line.waiting == 1
    merz.email = "merz@gov.example.org"
    assert len(run_mailings(session).deliveries) == 1
    assert send_all(session, mapp) == {"sent": 1}


def test_a_petition_with_no_targets_plans_nothing_and_cannot_be_delivered(session) -> None:
    petition = petition_with(session, targets=[])
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    assert run_mailings(session).deliveries == []
    assert preview_deliver_now(session, petition).lines == []
    with pytest.raises(MailingError, match="no targets"):
        deliver_now(session, None, petition, None, "nonce")


def test_set_cadence_refuses_bad_input(session) -> None:
    petition = petition_with(session)
    merz = target_named(session, "Merz")
    with pytest.raises(MailingError):
        set_cadence(session, petition, merz.id, "hourly")
    with pytest.raises(MailingError):
        set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=0)
    with pytest.raises(MailingError):
        set_cadence(session, petition, 999_999, Cadence.DAILY)


# --- deliver now ------------------------------------------------------------------------------------

def test_deliver_now_sends_the_complete_petition_with_names_only_to_the_signers_own_leader(
        session, mapp, mailbox) -> None:
    petition = petition_with(session, MailingPolicy.LETTERS,
                             targets=[*TARGETS, TargetSpec("Nobody", "BR", email="broken")])
    add_signer(session, petition, "German Named", "de@example.com", "DE", named=True, comment="Hallo", reply=True)
    add_signer(session, petition, "French Named", "fr@example.com", "FR", named=True)
    add_signer(session, petition, "Italian Anonymous", "it@example.com", "IT", comment="Ciao")
    preview = preview_deliver_now(session, petition)
    by_name = {line.target.name: line for line in preview.lines}
    assert {n: (line.rows, line.named, line.with_email, line.address_ok) for n, line in by_name.items()} == {
        "Merz": (3, 1, 1, True), "Macron": (3, 1, 0, True), "Costa": (3, 2, 1, True),
        "Nobody": (3, 0, 0, False)}
    made = deliver_now(session, None, petition, None, "screen-1")
    assert len(made) == 3  # Nobody has no valid address: skipped, and the screen said so
    assert deliver_now(session, None, petition, None, "screen-1") == []  # the same screen again
    assert send_all(session, mapp)["sent"] >= 3
    merz = deliveries_to(mailbox, "merz@gov.example.org")
    [mail] = [m for m in merz if "new signatures" not in str(m["Subject"])]
    assert "3 signatures" in str(mail["Subject"])
    rows = {row[0]: row for row in csv_of(mail)[1:]}
    assert set(rows) == {"German Named", "A supporter from France", "A supporter from Italy"}
    assert rows["German Named"][2:] == ["Hallo", rows["German Named"][3], "de@example.com"]
    assert rows["A supporter from Italy"][2] == ""  # no comment without the name box
    [costa] = [m for m in deliveries_to(mailbox, "costa@gov.example.org") if "new" not in str(m["Subject"])]
    assert {row[0] for row in csv_of(costa)[1:]} == {"German Named", "French Named", "A supporter from Italy"}


def test_deliver_now_to_chosen_targets_only_and_the_next_batch_starts_after_it(session, mapp) -> None:
    petition = petition_with(session)
    merz = target_named(session, "Merz")
    set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=1)
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    [made] = deliver_now(session, None, petition, [merz.id], "screen-2")
    assert made.target_id == merz.id and made.kind == DeliveryKind.NOW
    assert [session.get(Delivery, d).target_id for d in run_mailings(session).deliveries] != [merz.id]
    with pytest.raises(MailingError):
        deliver_now(session, None, petition, [987654], "screen-3")


# --- ledger, failures, public figures ----------------------------------------------------------------

def add_organizer(session: Any, petition: Any) -> User:
    user = User(email="org@example.org", name="Org", password_hash="x", status=UserStatus.ACTIVE,
                session_token="t")
    session.add(user)
    session.flush()
    session.add(Membership(campaign_id=petition.campaign_id, user_id=user.id, role="owner"))
    session.flush()
    return user


def test_a_refused_target_is_bounced_in_the_ledger_and_the_organizers_are_warned_once(
        session, mapp, mailbox) -> None:
    petition = petition_with(session, MailingPolicy.LETTERS, targets=TARGETS[:1])
    add_organizer(session, petition)
    petition_id = petition.id
    mailbox.refusals["merz@gov.example.org"] = "550 5.1.1 mailbox unavailable"
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    add_signer(session, petition, "Bob", "bob@example.com", "DE")
    assert send_all(session, mapp) == {"failed": 2}
    # An official's refusal goes to the ledger, never to the supporters' suppression list.
    assert session.scalar(select(func.count()).select_from(Suppression)) == 0
    result = run_mailings(session)
    assert result.warned == 1
    assert run_mailings(session).warned == 0  # once per episode
    petition = session.get(type(petition), petition_id)
    [line] = ledger(session, petition)
    assert line.failing and line.letters == {"failed": 2}
    assert "550" in line.mailing.last_error
    mailbox.refusals.clear()
    assert send_all(session, mapp) == {"sent": 1}
    [warning] = [m for m in messages(mailbox) if recipient(m) == "org@example.org"]
    assert "failing" in str(warning["Subject"])
    assert "550" in plain(warning) and "Ada" not in warning.as_string()
    # Mail to the target works again: the next letter sent clears the episode.
    add_signer(session, petition, "Cy", "cy@example.com", "DE")
    send_all(session, mapp)
    run_mailings(session)
    assert session.get(TargetMailing, (petition_id, line.target.id)).failing_since is None


def test_delivery_status_names_bounces_and_retries() -> None:
    from campaign.models import OutboxStatus
    from campaign.services.deliveries import delivery_status

    def row(status: str, error: str = "", attempts: int = 1) -> OutboundEmail:
        return OutboundEmail(status=status, last_error=error, attempts=attempts)

    assert delivery_status(row(OutboxStatus.SENT)) == "sent"
    assert delivery_status(row(OutboxStatus.QUEUED, attempts=0)) == "queued"
    assert delivery_status(row(OutboxStatus.QUEUED, "421 busy")) == "retrying"
    assert delivery_status(row(OutboxStatus.FAILED, "recipient refused: 550 'no'")) == "bounced"
    assert delivery_status(row(OutboxStatus.FAILED, "gave up after 8 attempts: 421 busy")) == "failed"
    assert delivery_status(None) == "cancelled"


def test_public_figures_say_delivered_to_n_leaders_and_letters_per_target(session, mapp) -> None:
    petition = petition_with(session, MailingPolicy.LETTERS)
    petition_id = petition.id
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    add_signer(session, petition, "Bob", "bob@example.com", "FR")
    send_all(session, mapp)
    petition = session.get(type(petition), petition_id)
    deliver_now(session, None, petition, None, "final-push")
    send_all(session, mapp)
    run_mailings(session)
    petition = session.get(type(petition), petition_id)
    figures = public_mailings(session, petition)
    assert figures.delivered_to == 3
    assert figures.delivered_on is not None
    assert {t.name: n for t, n in figures.reached} == {"Merz": 1, "Macron": 1, "Costa": 2}


def test_a_confirmed_signature_nothing_routed_is_routed_by_the_job(session) -> None:
    petition = petition_with(session, MailingPolicy.LETTERS)
    signature = add_signer(session, petition, "Ada", "ada@example.com", "DE", confirm=False)
    # As a release from hold does: confirmed without the confirmation path.
    session.execute(update(Signature).where(Signature.id == signature.id)
                    .values(status=SignatureStatus.CONFIRMED, confirmed_at=utcnow()))
    assert run_mailings(session).routed == 1
    assert len(outbox(session, "letter_to_target")) == 2
    assert run_mailings(session).routed == 0


def test_the_outbox_keys_name_petition_target_and_batch(session) -> None:
    petition = petition_with(session, targets=TARGETS[:1])
    merz = target_named(session, "Merz")
    set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=1)
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    [delivery_id] = run_mailings(session).deliveries
    [row] = outbox(session, DELIVERY)
    assert row.idempotency_key == f"delivery:{petition.id}:{merz.id}:{delivery_id}"
    assert session.scalar(select(func.count()).select_from(OutboundEmail)
                          .where(OutboundEmail.kind == TARGET_FAILING)) == 0


def test_closed_petitions_stop_being_planned_after_a_while(session) -> None:
    petition = petition_with(session)
    petition.status = PetitionStatus.CLOSED
    petition.closed_at = utcnow() - timedelta(days=60)
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    assert run_mailings(session).deliveries == []
    assert session.scalar(select(func.count()).select_from(Target)) == 3


def test_thousands_of_signers_to_one_official_stay_within_the_cap(make_app) -> None:
    """RELIABILITY.md 19 at a small scale: 500 signers of one official within an hour give
    the cap's letters and one batch with everyone else, and names only of those who consented."""
    from campaign.extensions import db
    from campaign.models import LetterQuota, RouteVia

    app = make_app(LETTERS_PER_TARGET_PER_HOUR=20)
    with app.app_context():
        session = db.session
        petition = petition_with(session, MailingPolicy.LETTERS, targets=TARGETS[:1])
        merz = target_named(session, "Merz")
        set_cadence(session, petition, merz.id, Cadence.DAILY, first_at=utcnow() - timedelta(minutes=1))
        for i in range(500):
            add_signer(session, petition, f"Signer {i}", f"s{i}@example.com", "DE", named=i % 10 == 0)
        vias = dict(session.execute(select(RoutedSignature.via, func.count()).group_by(RoutedSignature.via)).all())
        assert vias == {RouteVia.LETTER: 20, RouteVia.OVERFLOW: 480}
        assert session.scalar(select(func.max(LetterQuota.used))) == 20
        [delivery_id] = run_mailings(session).deliveries
        assert session.get(Delivery, delivery_id).new_count == 480
        assert run_mailings(session).deliveries == []  # one batch a day
        letters = len(outbox(session, "letter_to_target"))
        batches = len(outbox(session, DELIVERY))
        assert (letters, batches) == (20, 1)  # 21 messages to the official in this hour
        db.session.remove()


@pytest.mark.parametrize("name", ["+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1:A9)", "=cmd|' /C calc'!A0"])
def test_formula_names_and_comments_are_neutralized_in_the_delivery_csv(session, mapp, mailbox, name) -> None:
    petition = petition_with(session)
    merz = target_named(session, "Merz")
    set_cadence(session, petition, merz.id, Cadence.EVERY_N, every_n=1)
    add_signer(session, petition, name, "eve@example.com", "DE", named=True,
               comment="=1+1\r\nBcc: victim@example.com\r\n<b>bold</b>")
    assert len(run_mailings(session).deliveries) == 1
    assert send_all(session, mapp) == {"sent": 1}
    [mail] = deliveries_to(mailbox, "merz@gov.example.org")
    assert mail["Bcc"] is None
    [_header, row] = csv_of(mail)
    assert row[0] == "'" + name
    # The comment keeps its text, line breaks inside its quoted cell, and cannot run as a formula.
    assert row[2].replace("\r\n", "\n") == "'=1+1\nBcc: victim@example.com\n<b>bold</b>"


def test_a_temporary_failure_is_retrying_in_the_ledger_then_sent_once(session, mapp, mailbox) -> None:
    petition = petition_with(session, MailingPolicy.DELIVERIES, targets=TARGETS[:1])
    petition_id = petition.id
    add_signer(session, petition, "Ada", "ada@example.com", "DE")
    [delivery] = deliver_now(session, None, petition, None, nonce="retry-1")
    delivery_id = delivery.id
    mailbox.refusals["merz@gov.example.org"] = "421 4.7.0 try again later"
    assert send_all(session, mapp) == {"retry": 1}
    petition = session.get(type(petition), petition_id)
    [line] = ledger(session, petition)
    [entry] = line.deliveries
    assert entry.status == "retrying" and "421" in entry.error and entry.attempts == 1
    mailbox.refusals.clear()
    # Due again after its backoff (OUTBOX_BACKOFF_BASE is 1 s in tests): no wait needed here.
    session.execute(update(OutboundEmail).where(OutboundEmail.id == delivery.email_id)
                    .values(next_attempt_at=utcnow()))
    assert send_all(session, mapp) == {"sent": 1}
    assert len(deliveries_to(mailbox, "merz@gov.example.org")) == 1
    assert send_all(session, mapp) == {}
    petition = session.get(type(petition), petition_id)
    [line] = ledger(session, petition)
    assert [(e.delivery.id, e.status, e.attempts) for e in line.deliveries] == [(delivery_id, "sent", 2)]
