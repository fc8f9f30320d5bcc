"""R27 (short run; the 10,000-document Hypothesis run is in test_markdown and bench): a table of
XSS payloads through every user-written field (petition, campaign, target, signer, the admins'
banner and pause messages), and every page and email that shows them. No output may carry a
script that is not one of ours, an on* attribute, or a javascript:/vbscript:/data: link."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from campaign.extensions import db
from campaign.models import Petition, Signature, User
from campaign.services import killswitch, organizing, target_lists
from campaign.services.emails import parse_email
from campaign.services.signing import SignerInput, confirm_signature, sign_petition
from tests.organize.conftest import add_user, login
from tests.support import deliver_due

PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "javascript:alert(1)",
    '<a href="javascript:alert(1)">x</a>',
    "</textarea><script>alert(1)</script>",
    "</title><script>alert(1)</script>",
    '<iframe src="//evil.example"></iframe>',
    "<details open ontoggle=alert(1)>",
    "[click](javascript:alert(1))",
    '![x](x" onerror="alert(1))',
    "<a href=\"vbscript:msgbox(1)\">v</a>",
    "<object data=\"data:text/html,<script>alert(1)</script>\">",
    "{{ 7*7 }}{% raw %}",
    "\u202e<script>alert(1)</script>",
]


class _Findings(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            src = values.get("src") or ""
            if not src.startswith("/static/"):
                self.problems.append(f"script tag src={src!r}")
            self.in_script = True
        if tag in {"iframe", "object", "embed", "style", "base"}:
            self.problems.append(f"<{tag}> tag")
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"{tag} {name}=")
            if name in {"href", "src", "action", "formaction", "data", "xlink:href"} and value:
                scheme = value.strip().lower().replace("\x00", "")
                if scheme.startswith(("javascript:", "vbscript:")) or (scheme.startswith("data:") and tag != "img"):
                    self.problems.append(f"{tag} {name}={value[:40]!r}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = False

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.problems.append("inline script")


def problems_in(html: str) -> list[str]:
    parser = _Findings()
    parser.feed(html)
    return parser.problems


def test_the_checker_finds_what_it_looks_for():
    bad = '<p onclick="x">a</p><script>1</script><a href=" JaVaScript:x">l</a><iframe src="//x"></iframe>'
    assert len(problems_in(bad)) >= 4
    assert problems_in('<script src="/static/js/site.js" defer></script><a href="/x">y</a>') == []


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_in_every_field_is_inert_on_every_page_and_email(make_sec_app, mailbox, payload):
    app = make_sec_app(INTEGRITY_CACHE_SECONDS=0)
    add_user(app, "owner@example.org", admin=True)
    with app.app_context():
        owner = db.session.scalar(select(User).where(User.email == "owner@example.org"))
        campaign = organizing.create_campaign(db.session, owner, organizing.CampaignInput(
            name=f"C {payload}", slug="xss-campaign", organization=f"O {payload}", sender_name=f"S {payload}",
            description=payload))
        petition = organizing.create_petition(db.session, owner, campaign, organizing.PetitionInput(
            title=f"T {payload}", slug="xss-petition", summary=payload, body_markdown=f"# {payload}\n\n{payload}",
            letter=payload))
        target = target_lists.create_target(db.session, owner, campaign.id, target_lists.TargetInput(
            name=f"N {payload}"[:200], title=f"Ti {payload}"[:200], country="DE", email="t@example.org"))
        target_lists.add_target_to_petition(db.session, owner, petition, target.id)
        organizing.publish_petition(db.session, owner, petition)
        for n, name in enumerate([payload, f"second {payload}"]):
            sign_petition(db.session, petition, SignerInput(
                name=name[:200], email=parse_email(f"s{n}@example.org"), country="DE",
                postcode=payload[:20].replace("\n", " "), comment=payload, consent_updates=True))
        first = db.session.scalar(select(Signature).order_by(Signature.id).limit(1))
        confirm_signature(db.session, first)
        killswitch.set_switch(db.session, owner, killswitch.BANNER, True, f"banner {payload}")
        db.session.commit()
        petition_id = petition.id
        signature_id = first.id
    deliver_due(app)
    # An "already signed" email too.
    with app.app_context():
        petition = db.session.get(Petition, petition_id)
        sign_petition(db.session, petition, SignerInput(name=payload[:200], email=parse_email("s0@example.org"),
                                                        country="DE"))
        db.session.commit()
    deliver_due(app)

    public = app.test_client()
    organizer = app.test_client()
    login(organizer, "owner@example.org")
    from campaign.services.signing import confirmation_token

    with app.app_context():
        token = confirmation_token(db.session.get(Signature, signature_id))
    pages = {
        "index": public.get("/"),
        "petition": public.get("/petitions/xss-petition"),
        "check-email": public.get("/petitions/xss-petition/check-email"),
        "confirm": public.get(f"/confirm/{token}"),
        "embed": public.get("/embed/xss-petition"),
        "organize petition": organizer.get(f"/organize/petitions/{petition_id}"),
        "organize signatures": organizer.get(f"/organize/petitions/{petition_id}/signatures"),
        "organize moderation": organizer.get(f"/organize/petitions/{petition_id}/moderation"),
        "organize campaign": organizer.get("/organize/"),
        "admin switches": organizer.get("/organize/admin/switches"),
    }
    found = {}
    for name, response in pages.items():
        assert response.status_code == 200, (name, response.status_code)
        html = response.get_data(as_text=True)
        issues = problems_in(html)
        if "<script>alert(1)</script>" in payload:
            assert "<script>alert(1)</script>" not in html, name
        if issues:
            found[name] = issues
    if len(mailbox.messages) < 2:
        with app.app_context():
            from campaign.models import OutboundEmail
            print([(r.kind, r.status, r.last_error) for r in db.session.scalars(select(OutboundEmail))])
    assert len(mailbox.messages) >= 2
    for message in mailbox.messages:
        html_part = message.get_body(("html",))
        if html_part is not None:
            issues = problems_in(str(html_part.get_content()))
            if issues:
                found[f"email {message['Subject']}"] = issues
    assert found == {}
