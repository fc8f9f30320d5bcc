"""The embeddable widget: framing rules, no cookies, the signed form token and same-origin check,
the partner recorded as the source, and the snippet page."""

from __future__ import annotations

import re
from typing import Any

import pytest

from campaign import create_app
from campaign.config import ConfigError
from campaign.extensions import db
from campaign.models import OutboundEmail, Petition, Signature
from campaign.web.embed import partner_source
from tests.support import base_config, deliver_due, form_token, text_of

WIDGET = "/embed/g20-chechnya"
PARTNER = "https://www.partner.example/campaigns/chechnya"


def _nothing_written(app: Any) -> bool:
    with app.app_context():
        return db.session.query(Signature).count() == 0 and db.session.query(OutboundEmail).count() == 0


def _assert_framable(response: Any, ancestors: str = "*") -> None:
    csp = response.headers["Content-Security-Policy"]
    assert f"frame-ancestors {ancestors}" in csp and "frame-ancestors 'none'" not in csp
    assert "X-Frame-Options" not in response.headers
    assert "'unsafe-inline'" not in csp and "script-src 'self'" in csp
    assert "Set-Cookie" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def _assert_no_inline_code(html: str) -> None:
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert " style=" not in html and "<style" not in html, "inline style"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"


def _widget_post(client: Any, referrer: str = PARTNER, headers: dict[str, str] | None = None,
                 **fields: Any) -> Any:
    page = client.get(WIDGET + "?source=newsletter", headers={"Referer": referrer})
    token = form_token(page.get_data(as_text=True))
    source = re.search(r'name="source" type="hidden" value="([^"]*)"', page.get_data(as_text=True))
    assert source
    data = {"name": "Ada Lovelace", "email": "ada@example.com", "country": "DE", "form_token": token,
            "source": source.group(1)}
    data.update(fields)
    return client.post(WIDGET + "/sign", data=data, headers={
        "Origin": "http://campaign.test", "Sec-Fetch-Site": "same-origin", **(headers or {})})


def test_widget_is_framable_sets_no_cookie_and_has_no_inline_code(client, demo):
    response = client.get(WIDGET, headers={"Referer": PARTNER})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    _assert_framable(response)
    _assert_no_inline_code(html)
    assert 'action="/embed/g20-chechnya/sign"' in html
    assert 'name="form_token"' in html and 'data-campaign-frame' in html
    assert "/static/css/embed.css" in html and "/static/js/embed.js" in html
    assert "site.css" not in html
    assert 'data-count-url="/api/v1/petitions/g20-chechnya/count"' in html


def test_widget_records_the_partner_as_the_source_and_mails_the_confirmation(client, demo, app, mailbox):
    response = _widget_post(client)
    assert response.status_code == 303
    _assert_framable(response)
    location = response.headers["Location"]
    assert location == "/embed/g20-chechnya/check-email?source=newsletter@www.partner.example"
    step = client.get(location)
    assert step.status_code == 200
    _assert_framable(step)
    assert "check your email" in step.get_data(as_text=True).lower()
    # "Sign again" goes back into the widget, keeping the partner's source.
    assert 'href="/embed/g20-chechnya?source=newsletter@www.partner.example"' in step.get_data(as_text=True)
    with app.app_context():
        signature = db.session.query(Signature).one()
        assert signature.source == "newsletter@www.partner.example"
    deliver_due(app)
    assert len(mailbox.messages) == 1 and "ada@example.com" in str(mailbox.messages[0]["To"])
    assert "/confirm/" in text_of(mailbox.messages[0])


def test_the_widget_answers_the_same_for_a_repeat_signer(client, demo, app):
    first = _widget_post(client)
    second = _widget_post(client)
    other = _widget_post(client, email="other@example.com")
    assert first.status_code == second.status_code == other.status_code == 303
    assert first.headers["Location"] == second.headers["Location"] == other.headers["Location"]
    assert first.get_data() == second.get_data() == other.get_data()


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "", "Origin": "https://evil.example"},
])
def test_a_post_from_another_site_is_refused_inside_the_frame(client, demo, app, headers):
    response = _widget_post(client, headers=headers, name="Posted By Another Site")
    assert response.status_code == 400
    _assert_framable(response)
    assert "can only be sent from its own page" in response.get_data(as_text=True)
    assert "Posted By Another Site" not in response.get_data(as_text=True)
    assert _nothing_written(app)


@pytest.mark.parametrize("token", ["", "forged", None])
def test_a_missing_or_forged_token_is_refused(client, demo, app, token):
    if token is None:  # a token for another petition
        from campaign.web.forms import make_form_token

        with app.test_request_context():
            token = make_form_token(999)
    response = _widget_post(client, form_token=token)
    assert response.status_code == 400
    _assert_framable(response)
    assert "incomplete or altered" in response.get_data(as_text=True)
    assert _nothing_written(app)


def test_invalid_fields_are_shown_in_the_frame_and_nothing_is_written(client, demo, app):
    response = _widget_post(client, name="", email="broken", country="XX")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    _assert_framable(response)
    assert "Enter your full name." in html and "Enter a valid email address" in html
    assert "Choose a country from the list." in html
    assert html.count('aria-invalid="true"') == 3
    # A fresh token comes with the form, so the next press works.
    assert form_token(html)
    assert _nothing_written(app)


def test_closed_and_unknown_petitions_stay_framable(client, demo, app):
    missing = client.get("/embed/no-such-petition")
    assert missing.status_code == 404
    _assert_framable(missing)
    assert client.post("/embed/no-such-petition/sign", data={}).status_code == 404
    token = form_token(client.get(WIDGET).get_data(as_text=True))
    with app.app_context():
        db.session.get(Petition, 1).close()
        db.session.commit()
    page = client.get(WIDGET)
    assert page.status_code == 200 and "This petition is closed" in page.get_data(as_text=True)
    assert 'name="form_token"' not in page.get_data(as_text=True)
    response = client.post(WIDGET + "/sign", data={"name": "Late", "email": "late@example.com",
                                                   "country": "FR", "form_token": token})
    assert response.status_code == 410
    _assert_framable(response)
    assert _nothing_written(app)


def test_configured_frame_ancestors_are_used(make_app, demo):
    app = make_app(EMBED_FRAME_ANCESTORS="https://partner.example   https://*.coalition.example")
    response = app.test_client().get("/embed/no-such-petition")
    _assert_framable(response, "https://partner.example https://*.coalition.example")


@pytest.mark.parametrize("value", ["", "https://a.example; script-src *", "https://a.example,https://b",
                                   "'unsafe-inline'", "javascript:", "'none' https://a.example", "\"*\""])
def test_a_malformed_frame_ancestors_setting_stops_the_app(tmp_path, value):
    with pytest.raises(ConfigError, match="EMBED_FRAME_ANCESTORS"):
        create_app(base_config(f"sqlite:///{tmp_path / 'x.db'}", 25, EMBED_FRAME_ANCESTORS=value))


@pytest.mark.parametrize(("code", "referrer", "expected"), [
    ("newsletter", "https://www.partner.example/page?x=1", "newsletter@www.partner.example"),
    ("", "https://partner.example:8443/", "embed@partner.example:8443"),
    ("newsletter", None, "newsletter"),
    ("", None, "embed"),
    ("newsletter", "http://campaign.test/embed/g20-chechnya", "newsletter"),  # reloaded in its frame
    ("newsletter@www.partner.example", "https://www.partner.example/", "newsletter@www.partner.example"),
    ("newsletter", "javascript:alert(1)", "newsletter"),
    ("newsletter", "not a url", "newsletter"),
])
def test_partner_source(code, referrer, expected):
    assert partner_source(code, referrer, "http://campaign.test") == expected


def test_a_source_with_control_characters_is_cleaned_not_refused(client, demo, app):
    # A hidden field the signer cannot correct; PostgreSQL could not store the NUL.
    response = _widget_post(client, source="partner\x00\x07-code" + "x" * 100)
    assert response.status_code == 303
    with app.app_context():
        source = db.session.query(Signature).one().source
    assert source == ("partner-code" + "x" * 100)[:64]


def test_snippet_page_offers_both_snippets_and_cannot_be_framed(client, demo):
    response = client.get("/embed/g20-chechnya/snippet?source=amnesty-de")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    _assert_no_inline_code(html)
    # The snippets, escaped once inside the text areas.
    assert ('&lt;script src=&#34;http://campaign.test/static/js/embed.js&#34; data-petition=&#34;g20-chechnya&#34; '
            'data-source=&#34;amnesty-de&#34; async&gt;&lt;/script&gt;') in html
    assert ('&lt;iframe src=&#34;http://campaign.test/embed/g20-chechnya?source=amnesty-de&#34;') in html
    assert ('&lt;a href=&#34;http://campaign.test/petitions/g20-chechnya?source=amnesty-de&#34; '
            'data-campaign-petition=&#34;g20-chechnya&#34;&gt;') in html
    assert 'data-copy="script-snippet"' in html and 'data-copy="iframe-snippet"' in html
    assert '<iframe class="embed-preview" src="http://campaign.test/embed/g20-chechnya?source=amnesty-de"' in html


def test_snippet_source_code_is_restricted(client, demo):
    html = client.get('/embed/g20-chechnya/snippet?source="><script>x</script>').get_data(as_text=True)
    assert "data-source=&#34;scriptxscript&#34;" in html
    assert "<script>x" not in html
    assert client.get("/embed/nope/snippet").status_code == 404


def test_snippet_escapes_the_title_for_the_partner_page(client, demo, app):
    with app.app_context():
        db.session.get(Petition, 1).title = 'Free them <now> & "today"'
        db.session.commit()
    html = client.get("/embed/g20-chechnya/snippet").get_data(as_text=True)
    # In the partner's HTML the title is escaped (&lt;now&gt;), and shown escaped again in the page.
    assert "Sign the petition: Free them &amp;lt;now&amp;gt; &amp;amp; &amp;#34;today&amp;#34;" in html


def test_paused_signing_shows_the_admins_message_in_the_frame(client, demo, app):
    from campaign.services import killswitch

    token = form_token(client.get(WIDGET).get_data(as_text=True))
    with app.app_context():
        killswitch.set_switch(db.session, None, killswitch.SIGNING, True, "Signing resumes at noon.")
        db.session.commit()
    page = client.get(WIDGET)
    assert "Signing resumes at noon." in page.get_data(as_text=True)
    assert 'name="form_token"' not in page.get_data(as_text=True)
    response = client.post(WIDGET + "/sign", data={"name": "Ada", "email": "ada@example.com", "country": "DE",
                                                  "form_token": token})
    assert response.status_code == 503 and response.headers["Retry-After"] == "300"
    _assert_framable(response)
    assert _nothing_written(app)
