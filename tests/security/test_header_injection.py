"""R23 (short run; R23_EXAMPLES=10000 with --timeout=0 for the full one): Hypothesis writes names, petition titles, campaign and
sender names and target names with CR, LF, NUL and Unicode line separators, and every mail
builder's message is checked: the same header lines as with plain input, From and To the
configured sender and the real recipient, no header value with a line break."""

from __future__ import annotations

import email
import email.policy
import os

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from campaign.extensions import db
from campaign.mail.messages import build_message
from campaign.models import Campaign, OutboundEmail, Petition, Signature, Target, User
from campaign.services.outbox import _builders
from campaign.services.privacy import cipher
from tests.organize.conftest import add_user, csrf_of, login
from tests.security.conftest import SLUG, client_from, sign_as
from tests.support import confirm, confirm_path, deliver_due

NASTY = ["\r\nBcc: victim@evil.example", "\nX-Injected: 1", "\r", "\x00", "\u2028", "\u2029", "\x85",
         "\x0b", "\x0c", "=?utf-8?b?DQpCY2M6IHg=?=", "a, b: c;", '"quoted" <x@evil.example>', "\\", "<>"]
text = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=8)), max_size=6).map("".join),
)


def _fill_outbox(app, mailbox):
    """One outbox row of each kind these flows produce."""
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

        for n in range(3):
            sign_as(client_from(app, "198.51.100.99"), f"burst{n}@example.org")
        abuse.detect_trending(db.session)
        db.session.commit()


def _messages(app):
    """Each row's message as raw header lines and as parsed; HeaderInjection (refused, never
    sent) is recorded as such."""
    from campaign.mail.messages import HeaderInjection

    out = {}
    with app.test_request_context("/"):
        try:
            for row in db.session.scalars(select(OutboundEmail).order_by(OutboundEmail.id)):
                builder = _builders.get(row.kind)
                # A builder may decide the row is no longer wanted (e.g. a used link): skip it.
                draft = builder(db.session, row) if builder else None
                if draft is None:
                    continue
                try:
                    raw = build_message(draft, app.config["MAIL_DEFAULT_SENDER"]).as_bytes()
                except (HeaderInjection, ValueError):
                    # Refused (the outbox marks it failed, never sends it): nothing injected.
                    out[row.id] = (row.kind, draft.to_address, None, None)
                    continue
                # The header block, line endings normalized (SMTP messages use CRLF).
                head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("ascii", "replace")
                out[row.id] = (row.kind, draft.to_address, head,
                               email.message_from_bytes(raw, policy=email.policy.default))
        finally:
            db.session.rollback()
    return out


def _names(head):
    """Header names of the raw header block, folded lines joined."""
    return sorted(line.split(":", 1)[0].lower() for line in head.split("\n") if line and line[0] not in " \t")


def test_every_builder_resists_header_injection(make_sec_app, mailbox):
    app = make_sec_app(TRENDING_IP_PER_HOUR=3, SIGNING_IP_BURST="")
    _fill_outbox(app, mailbox)
    baseline = _messages(app)
    assert all(head is not None for _k, _t, head, _m in baseline.values())
    kinds = {kind for kind, _to, _h, _m in baseline.values()}
    assert {"signature_confirmation", "password_reset", "organizer_invitation", "trending_alert"} <= kinds
    sender = email.utils.parseaddr(app.config["MAIL_DEFAULT_SENDER"])[1]

    @settings(max_examples=int(os.environ.get("R23_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
              phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink])
    @given(name=text, title=text, organization=text, sender_name=text, target=text)
    def fuzz(name, title, organization, sender_name, target):
        with app.app_context():
            crypt = cipher()
            for signature in db.session.scalars(select(Signature)):
                signature.name_encrypted = crypt.encrypt(name)
            for petition in db.session.scalars(select(Petition)):
                petition.title = title
            for campaign in db.session.scalars(select(Campaign)):
                campaign.organization, campaign.sender_name, campaign.name = organization, sender_name, title
            for row in db.session.scalars(select(Target)):
                row.name = target
            for user in db.session.scalars(select(User)):
                user.name = name
            db.session.commit()
        for row_id, (kind, to_address, head, message) in _messages(app).items():
            expected_head, expected = baseline[row_id][2], baseline[row_id][3]
            if head is None:
                continue  # refused by header_safe: never sent, nothing injected
            # Protocol level: the same header lines, no stray CR, no NUL.
            assert _names(head) == _names(expected_head), kind
            assert "\r" not in head and "\x00" not in head, kind
            assert message["From"].addresses[0].addr_spec == sender, (kind, str(message["From"]))
            assert [a.addr_spec for a in message["To"].addresses] == [to_address], kind
            if kind in {"signature_confirmation", "signature_already_confirmed", "password_reset"}:
                assert message["Subject"] == expected["Subject"], kind

    fuzz()
