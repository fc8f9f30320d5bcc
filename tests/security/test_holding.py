"""R14: the signing path holds suspicious signatures silently (honeypot, fill time, bursts per
address and email domain, disposable domains). A held signer sees the normal flow, byte for
byte, and gets the normal email; a held signature never counts until an organizer releases it,
and then exactly once."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from campaign.extensions import db
from campaign.models import HoldReason, Signature, SignatureStatus, User
from campaign.services import abuse
from tests.security.conftest import (
    BOT_CHECKS,
    SLUG,
    client_from,
    count_of,
    demo_petition_id,
    sign_as,
    signature_of,
)
from tests.support import confirm, confirm_path, deliver_due, form_token, text_of


def _statuses(app):
    return [(s.status, s.hold_reasons) for s in signature_of(app)]


def _backdate(app, seconds):
    with app.app_context():
        for row in db.session.scalars(select(Signature)):
            row.created_at = row.created_at - timedelta(seconds=seconds)
        db.session.commit()


def test_honeypot_holds_silently_and_still_sends_the_confirmation(sec_app, mailbox):
    response = sign_as(client_from(sec_app, "198.51.100.1"), "bot@example.org", website="http://spam.example")
    assert response.status_code == 303
    assert _statuses(sec_app) == [(SignatureStatus.HELD, HoldReason.HONEYPOT)]
    deliver_due(sec_app)
    assert len(mailbox.messages) == 1
    assert mailbox.messages[0]["Subject"] == "Please confirm your signature"


def test_same_address_twice_in_60s_then_six_in_five_minutes(sec_app):
    """R14 with e-petitions' defaults (1 per 60 s, 5 per 300 s): report how many end held."""
    client = client_from(sec_app, "198.51.100.7")
    sign_as(client, "first@example.org")
    sign_as(client, "second@example.org")
    assert [s for s, _ in _statuses(sec_app)] == ["pending", "held"]
    assert signature_of(sec_app)[1].hold_reasons == HoldReason.IP_BURST

    later = client_from(sec_app, "198.51.100.8")
    for number in range(6):  # six times within five minutes: 50 s apart
        _backdate(sec_app, 50)
        sign_as(later, f"later-{number}@example.org")
    held = [s.status == "held" for s in signature_of(sec_app)[2:]]
    assert held == [False, True, True, True, True, True], held


def test_five_per_300_seconds_alone(make_sec_app):
    # Backdating moves the database's clock only: Flask-Limiter's counters are off here.
    app = make_sec_app(SIGNING_IP_BURST="5/300", SIGNING_RATELIMIT_PER_IP="", SIGNING_RATELIMIT_PER_PETITION="")
    client = client_from(app, "198.51.100.9")
    for number in range(6):
        _backdate(app, 40)
        sign_as(client, f"five-{number}@example.org")
    assert [s.status for s in signature_of(app)] == ["pending"] * 5 + ["held"]


def test_other_addresses_are_not_held_by_someone_elses_burst(sec_app):
    for number in range(5):
        sign_as(client_from(sec_app, f"198.51.100.{10 + number}"), f"person{number}@example.org")
    assert all(s.status == "pending" for s in signature_of(sec_app))


def test_domain_burst_holds_but_common_providers_never_do(make_sec_app):
    app = make_sec_app(SIGNING_DOMAIN_BURST="3/60")
    for number in range(4):
        sign_as(client_from(app, f"203.0.113.{number + 1}"), f"staff{number}@corp.example")
    for number in range(6):
        sign_as(client_from(app, f"203.0.113.{number + 50}"), f"someone{number}@gmail.com")
    rows = signature_of(app)
    assert [s.status for s in rows[:4]] == ["pending", "pending", "pending", "held"]
    assert rows[3].hold_reasons == HoldReason.DOMAIN_BURST
    assert all(s.status == "pending" for s in rows[4:])


def test_disposable_domains_and_their_subdomains_are_held(sec_app):
    sign_as(client_from(sec_app, "203.0.113.20"), "x@mailinator.com")
    sign_as(client_from(sec_app, "203.0.113.21"), "y@eu.mailinator.com")
    sign_as(client_from(sec_app, "203.0.113.22"), "z@example.org")
    assert [(s.status, s.hold_reasons) for s in signature_of(sec_app)] == [
        ("held", "disposable"), ("held", "disposable"), ("pending", None)]


def test_a_form_sent_faster_than_a_person_types_is_held(make_sec_app):
    from campaign.web.forms import make_form_token

    app = make_sec_app(SIGNING_MIN_FILL_SECONDS=5)
    client = client_from(app, "203.0.113.30")
    sign_as(client, "quick@example.org")
    with app.test_request_context():
        old_token = make_form_token(demo_petition_id(app), int(time.time()) - 30)
    sign_as(client_from(app, "203.0.113.31"), "patient@example.org", form_token=old_token)
    assert _statuses(app) == [("held", "too_fast"), ("pending", None)]


_TOKENS = [re.compile(r"/confirm/[A-Za-z0-9._-]+"), re.compile(r'name="csrf_token"[^>]*value="[^"]+"'),
           re.compile(r'value="[A-Za-z0-9._-]{40,}"'),
           # Issue 5: the manage-my-data link and each signer's own referral code.
           re.compile(r"/my-data/[A-Za-z0-9._-]+"), re.compile(r"ref(=|%3D)[A-Za-z0-9_-]+")]


def _normalized(response):
    body = response.get_data(as_text=True)
    for pattern in _TOKENS:
        body = pattern.sub("TOKEN", body)
    headers = []
    for key, value in response.headers.items():
        if key.lower() in {"date", "x-request-id"}:
            continue
        for pattern in _TOKENS:
            value = pattern.sub("TOKEN", value)
        headers.append((key, re.sub(r"=[^;]*", "=X", value, count=1) if key == "Set-Cookie" else value))
    headers.sort()
    return response.status_code, headers, body


def test_held_and_normal_signers_see_identical_responses_and_emails(sec_app, mailbox):
    """R14's second half: status, headers and body identical apart from per-response tokens."""
    normal, held = client_from(sec_app, "198.51.100.50"), client_from(sec_app, "198.51.100.51")
    fields = {"name": "Same Name"}
    first = sign_as(normal, "normal@example.org", **fields)
    second = sign_as(held, "held@example.org", website="x", **fields)
    assert _normalized(first) == _normalized(second)
    assert _normalized(normal.get(first.location)) == _normalized(held.get(second.location))
    assert [s.status for s in signature_of(sec_app)] == ["pending", "held"]

    deliver_due(sec_app)
    by_recipient = {m["To"]: m for m in mailbox.messages}
    texts = [re.sub(r"/(confirm|my-data)/\S+", "/TOKEN", text_of(by_recipient[a]))
             for a in ("normal@example.org", "held@example.org")]
    assert texts[0] == texts[1]
    assert by_recipient["normal@example.org"]["Subject"] == by_recipient["held@example.org"]["Subject"]

    paths = [confirm_path(by_recipient[a]) for a in ("normal@example.org", "held@example.org")]
    pages = [_normalized(client.get(path)) for client, path in zip((normal, held), paths, strict=True)]
    assert pages[0] == pages[1]
    results = [confirm(client, path) for client, path in zip((normal, held), paths, strict=True)]
    assert _normalized(results[0]) == _normalized(results[1])
    done = [_normalized(client.get(r.location)) for client, r in zip((normal, held), results, strict=True)]
    assert done[0] == done[1]
    assert "already confirmed" not in done[1][2] and "cannot be confirmed" not in done[1][2]

    rows = signature_of(sec_app)
    assert rows[1].status == "held" and rows[1].confirmed_at is not None
    assert count_of(sec_app) == 1  # the held one is not counted


def test_release_counts_a_confirmed_held_signature_exactly_once(sec_app, mailbox):
    client = client_from(sec_app, "198.51.100.60")
    sign_as(client, "a@example.org", website="x")
    sign_as(client_from(sec_app, "198.51.100.61"), "b@example.org", website="x")
    deliver_due(sec_app)
    path = confirm_path(next(m for m in mailbox.messages if m["To"] == "a@example.org"))
    confirm(client, path)
    assert count_of(sec_app) == 0
    with sec_app.app_context():
        actor = User(email="admin@example.org", password_hash="x", is_admin=True, status="active",
                     session_token="t")
        db.session.add(actor)
        petition = db.session.get(abuse.Petition, demo_petition_id(sec_app))
        selection = abuse.Selection()
        assert abuse.preview_release(db.session, petition, selection) == 2
        first = abuse.release_held(db.session, actor, petition, selection)
        again = abuse.release_held(db.session, actor, petition, selection)
        db.session.commit()
    assert (first.changed, first.counted, again.changed) == (2, 1, 0)
    assert count_of(sec_app) == 1
    assert [s.status for s in signature_of(sec_app)] == ["confirmed", "pending"]
    # The released, unconfirmed one counts when its owner confirms: once.
    path = confirm_path(next(m for m in mailbox.messages if m["To"] == "b@example.org"))
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert csrf
    for _ in range(2):  # a double click
        assert client.post(path, data={"csrf_token": csrf.group(1)}).status_code == 303
    assert count_of(sec_app) == 2


def test_held_signer_signing_again_gets_the_normal_repeat_email(sec_app, mailbox):
    client = client_from(sec_app, "198.51.100.70")
    sign_as(client, "again@example.org", website="x")
    deliver_due(sec_app)
    confirm(client, confirm_path(mailbox.messages[0]))
    sign_as(client_from(sec_app, "198.51.100.71"), "again@example.org")
    deliver_due(sec_app)
    assert [m["Subject"] for m in mailbox.messages] == ["Please confirm your signature", "You have already signed"]


def test_integrity_note_on_the_petition_page_counts_held_and_removed(make_sec_app):
    app = make_sec_app(INTEGRITY_CACHE_SECONDS=0)
    sign_as(client_from(app, "198.51.100.80"), "a@example.org", website="x")
    sign_as(client_from(app, "198.51.100.81"), "b@mailinator.com")
    client = client_from(app, "198.51.100.82")
    sign_as(client, "c@example.org")
    sign_as(client, "d@example.org")
    with app.app_context():
        db.session.execute(update(Signature).where(Signature.id == 1).values(status=SignatureStatus.INVALIDATED))
        db.session.commit()
    page = app.test_client().get(f"/petitions/{SLUG}").get_data(as_text=True)
    note = page.split('id="integrity-heading"', 1)[1]
    assert "<strong>1</strong> held for review: too many from one place" in note
    assert "<strong>1</strong> held for review: throwaway email addresses" in note
    assert "<strong>1</strong> removed by the organizers as invalid" in note
    assert "filled in by a program" not in note  # the honeypot one was invalidated since


def test_fresh_petition_page_says_nothing_was_held(sec_app):
    page = sec_app.test_client().get(f"/petitions/{SLUG}").get_data(as_text=True)
    assert "No signatures have been held or removed." in page
    assert 'name="website"' in page and 'class="hp-field"' in page
    assert form_token(page)


def test_fill_time_counts_from_the_pages_own_opening_not_its_token_window(make_sec_app, monkeypatch):
    """The cached page's token is shared by a whole FORM_TOKEN_BUCKET window, so alone it let a
    bot that posted at once through whenever the window was older than the minimum. The page's
    script fetches a signed opening time (form-started); the fill time counts from it."""
    import itsdangerous.timed

    from campaign.web.forms import make_form_token

    app = make_sec_app(SIGNING_MIN_FILL_SECONDS=5, FORM_TOKEN_BUCKET=60)
    pid = demo_petition_id(app)
    with app.test_request_context():
        old_window = make_form_token(pid, int(time.time()) - 40)
    client = client_from(app, "203.0.113.40")
    page = client.get(f"/petitions/{SLUG}").get_data(as_text=True)
    assert f'data-form-started="/petitions/{SLUG}/form-started"' in page
    started = client.get(f"/petitions/{SLUG}/form-started")
    assert started.headers["Cache-Control"] == "no-store" and "Set-Cookie" not in started.headers

    def sign(number, **extra):
        sign_as(client_from(app, f"203.0.113.{50 + number}"), f"fill{number}@example.org",
                form_token=old_window, **extra)

    sign(0, form_started=started.get_data(as_text=True))        # opened just now: a bot
    real = time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() - 12)
    with app.test_request_context():
        from campaign.web.forms import make_started_token

        earlier, elsewhere = make_started_token(SLUG), make_started_token("another-petition")
    monkeypatch.setattr(itsdangerous.timed.time, "time", real)
    sign(1, form_started=earlier)                                 # opened 12 s ago: a person
    sign(2, form_started=earlier[:-3] + "AAA")                    # tampered: the window decides
    sign(3, form_started=elsewhere)                               # another petition's: ignored
    sign(4)                                                       # no script: the window decides
    assert _statuses(app) == [("held", "too_fast"), ("pending", None), ("pending", None),
                              ("pending", None), ("pending", None)]


def test_the_widget_sends_the_opening_time_too(make_sec_app):
    from campaign.web.forms import make_form_token

    app = make_sec_app(SIGNING_MIN_FILL_SECONDS=5, FORM_TOKEN_BUCKET=60)
    client = client_from(app, "203.0.113.60")
    widget = client.get(f"/embed/{SLUG}").get_data(as_text=True)
    assert f'data-form-started="/petitions/{SLUG}/form-started"' in widget
    with app.test_request_context():
        old_window = make_form_token(demo_petition_id(app), int(time.time()) - 40)
    started = client.get(f"/petitions/{SLUG}/form-started").get_data(as_text=True)
    response = client.post(f"/embed/{SLUG}/sign", data={
        "name": "Quick Widget", "email": "widget@example.org", "country": "DE",
        "form_token": old_window, "form_started": started})
    assert response.status_code == 303
    assert _statuses(app) == [("held", "too_fast")]


def test_the_disposable_list_is_a_data_file_updated_by_a_command(make_sec_app, tmp_path):
    """The blocklist is maintained by merging a newer list into the data file; a running
    process picks the change up without a restart."""
    import shutil

    listed = tmp_path / "disposable.txt"
    shutil.copy(abuse.DATA_DIR / "disposable_domains.txt", listed)
    app = make_sec_app(DISPOSABLE_DOMAINS_FILE=str(listed))
    sign_as(client_from(app, "203.0.113.70"), "a@fresh-throwaway.example")
    newer = tmp_path / "newer.txt"
    newer.write_text("# a newer list\nFresh-Throwaway.example\nmailinator.com\nnot a domain\n", "utf-8")
    result = app.test_cli_runner().invoke(args=["update-disposable-domains", str(newer)])
    assert result.exit_code == 0 and "(1 new)" in result.output, result.output
    assert "fresh-throwaway.example" in listed.read_text("utf-8").splitlines()
    assert listed.read_text("utf-8").startswith("# Throwaway")  # the header comment is kept
    sign_as(client_from(app, "203.0.113.71"), "b@sub.fresh-throwaway.example")
    assert _statuses(app) == [("pending", None), ("held", "disposable")]
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n", "utf-8")
    refused = app.test_cli_runner().invoke(args=["update-disposable-domains", str(empty)])
    assert refused.exit_code != 0 and "lists no domains" in refused.output


@pytest.mark.integration
def test_one_burst_query_holds_by_address_and_by_domain_on_postgresql(make_pg_app):
    """The sign path counts address and domain bursts in one statement (issue 9); on PostgreSQL
    too it holds the second signature from one address and the fourth from one domain."""
    from campaign.services.demo import seed_demo

    app = make_pg_app(**(BOT_CHECKS | {"SIGNING_DOMAIN_BURST": "3/60", "RATELIMIT_ENABLED": False}))
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    sign_as(client_from(app, "198.51.100.40"), "one@example.org")
    sign_as(client_from(app, "198.51.100.40"), "two@example.org")
    for number in range(4):
        sign_as(client_from(app, f"203.0.113.{number + 60}"), f"staff{number}@corp.example")
    statuses = [(s.status, s.hold_reasons) for s in signature_of(app)]
    assert statuses == [("pending", None), ("held", HoldReason.IP_BURST),
                        ("pending", None), ("pending", None), ("pending", None),
                        ("held", HoldReason.DOMAIN_BURST)], statuses
