"""R23, header injection (short runs; R23_EXAMPLES=10000 with --timeout=0 for the full one).

Hypothesis writes user text (signer, organizer and target names, organization and sender names,
petition titles, comments, subjects) holding CR, LF, NUL, Unicode line separators, quotes, commas,
colons, angle brackets, encoded-word lookalikes, RTL text and very long text. Every message must
serialize and parse back with the same header lines, From/To/Reply-To exactly the intended
addresses and the subject as meant; none may be refused, none may carry an extra header.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import os
from email.message import EmailMessage
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from campaign.extensions import db
from campaign.mail.messages import Draft, HeaderInjection, build_message, display_name, subject_text
from campaign.models import Campaign, MailingPolicy, OutboundEmail, Petition, Signature, Target, User
from campaign.services.outbox import _builders
from campaign.services.privacy import cipher
from tests.mailings.helpers import TargetSpec, add_signer, make_petition
from tests.organize.conftest import add_user, csrf_of, login
from tests.security.conftest import SLUG, client_from, sign_as
from tests.support import confirm, confirm_path, deliver_due

EXAMPLES = int(os.environ.get("R23_EXAMPLES", "60"))
NASTY = ["\r\nBcc: victim@evil.example", "\nX-Injected: 1", "\r", "\x00", "\u2028", "\u2029", "\x85",
         "\x0b", "\x0c", "\x1e", "=?utf-8?b?DQpCY2M6IHg=?=", "=?utf-8?q?=0D=0ABcc:_x@evil.example?=", "=??Q?=0D",
         "a, b: c;", '"quoted" <x@evil.example>', "\\", "<>", "@", "(c)", "[x]", ".", "\u202e\u202d",
         "مرحبا بالعالم", "שלום", "Правозащитный центр «Мемориал»", "🏳️‍🌈", "é" * 50, "x" * 120, " ", "\t"]
text = st.one_of(
    st.text(max_size=80),
    st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=8)), max_size=8).map("".join),
)
SENDER = "Campaign <noreply@campaign.example.org>"


def _parse(raw: bytes) -> tuple[str, EmailMessage]:
    """The header block (line ends normalized) and the message as the email package reads it."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("ascii", "replace")
    return head, email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def _names(head: str) -> list[str]:
    """Header names of a raw header block, folded lines joined."""
    return sorted(line.split(":", 1)[0].lower() for line in head.split("\n") if line and line[0] not in " \t")


def _addresses(message: EmailMessage, name: str) -> list[str]:
    header = message[name]
    return [] if header is None else [a.addr_spec for a in header.addresses]


def _check(draft: Draft, raw: bytes, expected_names: list[str]) -> EmailMessage:
    head, message = _parse(raw)
    assert _names(head) == expected_names, (draft.kind, head)
    assert "\r" not in head and "\x00" not in head, draft.kind
    assert all("\r" not in str(v) and "\n" not in str(v) for v in message.values()), (draft.kind, head)
    assert _addresses(message, "From") == [email.utils.parseaddr(SENDER)[1]], (draft.kind, head)
    assert message["From"].addresses[0].display_name == display_name(draft.sender_name), (draft.kind, head)
    assert _addresses(message, "To") == [draft.to_address], (draft.kind, head)
    assert _addresses(message, "Reply-To") == ([draft.reply_to] if draft.reply_to else []), (draft.kind, head)
    assert str(message["Subject"] or "") == subject_text(draft.subject), (draft.kind, head)
    return message


@pytest.fixture
def mail_app(monkeypatch: pytest.MonkeyPatch) -> Flask:
    """Enough of an app to build a message (Flask-Mail reads its settings from the app); the
    bodies do not matter here, so a word stands in for the templates."""
    from flask_mail import Mail

    monkeypatch.setattr("campaign.mail.messages.render_template", lambda _name, **_ctx: "body")
    app = Flask(__name__)
    Mail(app)
    return app


def test_build_message_keeps_addresses_and_header_lines_for_any_user_text(mail_app) -> None:
    """The one place headers are written: every builder's Draft goes through build_message."""
    plain = Draft(kind="x", to_name="", to_address="signer@example.org", subject="Please confirm",
                  sender_name="Org", context={}, reply_to="reply@example.org")
    with mail_app.app_context():
        expected = _names(_parse(build_message(plain, SENDER).as_bytes())[0])

        @settings(max_examples=EXAMPLES * 10, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                  phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
        @given(sender_name=text, to_name=text, subject=text.filter(lambda s: subject_text_or_none(s) is not None))
        def fuzz(sender_name: str, to_name: str, subject: str) -> None:
            draft = Draft(kind="x", to_name=to_name, to_address="signer@example.org", subject=subject,
                          sender_name=sender_name, context={}, reply_to="reply@example.org")
            names = expected if subject_text(subject) else [n for n in expected if n != "subject"]
            _check(draft, build_message(draft, SENDER).as_bytes(), names)

        fuzz()


def subject_text_or_none(value: str) -> str | None:
    try:
        return subject_text(value)
    except HeaderInjection:
        return None


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: victim@evil.example", "a\nb", "x\x00", "a\u2028b", "a\x1eb"])
def test_a_subject_with_a_line_break_is_refused_never_sent(mail_app, subject: str) -> None:
    draft = Draft(kind="x", to_name="", to_address="signer@example.org", subject=subject, sender_name="Org",
                  context={})
    with mail_app.app_context(), pytest.raises(HeaderInjection):
        build_message(draft, SENDER)


@pytest.mark.parametrize("address", ["=?utf-8?q?=0D=0ABcc:_x?=@example.org", "a\r\n@example.org"])
def test_an_address_that_would_decode_into_a_line_break_is_refused(mail_app, address: str) -> None:
    draft = Draft(kind="x", to_name="", to_address=address, subject="Hi", sender_name="Org", context={})
    with mail_app.app_context(), pytest.raises(HeaderInjection):
        build_message(draft, SENDER)


def _fill_outbox(app: Flask, mailbox: Any) -> None:
    """One outbox row of each kind these flows produce: confirmation, already signed, password
    reset, invitation, trending alert, letter to a target (with the signer's Reply-To) and
    delivery to a target."""
    client = client_from(app, "198.51.100.4")
    sign_as(client, "signer@example.org")
    deliver_due(app)
    confirm(client, confirm_path(mailbox.messages[0]))
    sign_as(client, "signer@example.org")
    with app.app_context():
        campaign_id = db.session.scalar(select(Petition.campaign_id).where(Petition.slug == SLUG))
    add_user(app, "owner@example.org", campaign_id=campaign_id, role="owner")
    token = csrf_of(client.get("/account/forgot").get_data(as_text=True))
    client.post("/account/forgot", data={"csrf_token": token, "email": "owner@example.org"})
    owner = app.test_client()
    login(owner, "owner@example.org")
    path = f"/organize/campaigns/{campaign_id}/members"
    owner.post(path, data={"csrf_token": csrf_of(owner.get(path).get_data(as_text=True)),
                           "email": "invitee@example.org"})
    with app.app_context():
        from campaign.services import abuse
        from campaign.services.deliveries import deliver_now

        for n in range(3):
            sign_as(client_from(app, "198.51.100.99"), f"burst{n}@example.org")
        abuse.detect_trending(db.session)
        petition = make_petition(db.session, [TargetSpec("Merz", "DE", default=True)], policy=MailingPolicy.LETTERS)
        add_signer(db.session, petition, "Ada", "ada@example.com", "DE", comment="Hallo", named=True, reply=True)
        deliver_now(db.session, None, petition, None, "nonce")
        db.session.commit()


def _messages(app: Flask) -> dict[int, tuple[Draft, bytes | None]]:
    """Each row's draft and serialized message (None when refused: never sent)."""
    out: dict[int, tuple[Draft, bytes | None]] = {}
    with app.test_request_context("/"):
        try:
            for row in db.session.scalars(select(OutboundEmail).order_by(OutboundEmail.id)):
                builder = _builders.get(row.kind)
                # A builder may decide the row is no longer wanted (e.g. a used link): skip it.
                draft = builder(db.session, row) if builder else None
                if draft is None:
                    continue
                try:
                    out[row.id] = (draft, build_message(draft, SENDER).as_bytes())
                except HeaderInjection:
                    out[row.id] = (draft, None)
        finally:
            db.session.rollback()
    return out


def test_every_builder_resists_header_injection(make_sec_app, mailbox) -> None:
    app = make_sec_app(TRENDING_IP_PER_HOUR=3, SIGNING_IP_BURST="")
    _fill_outbox(app, mailbox)
    baseline = _messages(app)
    assert all(raw is not None for _d, raw in baseline.values())
    kinds = {draft.kind for draft, _raw in baseline.values()}
    assert {"signature_confirmation", "password_reset", "organizer_invitation", "trending_alert",
            "letter_to_target", "delivery_to_target"} <= kinds, kinds
    assert any(draft.reply_to for draft, _raw in baseline.values())
    expected = {row_id: _names(_parse(raw)[0]) for row_id, (_d, raw) in baseline.items() if raw}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
              phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
    @given(name=text, title=text, organization=text, sender_name=text, target=text, comment=text)
    def fuzz(name: str, title: str, organization: str, sender_name: str, target: str, comment: str) -> None:
        with app.app_context():
            crypt = cipher()
            for signature in db.session.scalars(select(Signature)):
                signature.name_encrypted = crypt.encrypt(name)
                signature.comment = comment
            for petition in db.session.scalars(select(Petition)):
                petition.title = title
            for campaign in db.session.scalars(select(Campaign)):
                campaign.organization, campaign.sender_name, campaign.name = organization, sender_name, title
            for row in db.session.scalars(select(Target)):
                row.name, row.title = target, target
            for user in db.session.scalars(select(User)):
                user.name = name
            db.session.commit()
        for row_id, (draft, raw) in _messages(app).items():
            assert raw is not None, (draft.kind, draft.subject)  # builders clean what they put in headers
            _check(draft, raw, expected[row_id])

    fuzz()
