"""The petition page of issue 5: link previews, the rising goal, recent signers, referral codes,
languages (petition, choice, Accept-Language; translations; cache keys), the organizer's
translation page, and bad input shown escaped everywhere."""

from __future__ import annotations

import re

from sqlalchemy import select

from campaign.extensions import db
from campaign.models import Petition, PetitionTranslation, Signature
from campaign.services.counting import add_to_count, signature_count
from campaign.services.supporters import displayed_goal, first_name
from tests.organize.conftest import FAST_HASHING, add_user, csrf_of, login
from tests.support import BASE_URL, confirm, confirm_path, deliver_due
from tests.supporters.conftest import messages_to, sign_and_confirm, sign_in

PAGE = "/petitions/g20-chechnya"


def _petition(app) -> Petition:
    return db.session.scalar(select(Petition))


def test_open_graph_and_twitter_tags_with_absolute_urls(client, demo):
    html = client.get(PAGE).get_data(as_text=True)
    image = re.search(r'<meta property="og:image" content="([^"]+)"', html).group(1)
    assert image == f"{BASE_URL}/static/img/share-card.png"
    assert f'<meta property="og:url" content="{BASE_URL}{PAGE}">' in html
    assert '<meta property="og:title" content="G20 leaders: demand an end' in html
    assert '<meta property="og:description" content="Gay men in Chechnya' in html
    assert '<meta name="twitter:card" content="summary_large_image">' in html
    assert f'<meta name="twitter:image" content="{image}">' in html
    png = client.get("/static/img/share-card.png")
    try:
        assert png.status_code == 200 and png.mimetype == "image/png"
        assert png.get_data()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        png.close()


def test_the_goal_rises_to_the_next_step_once_reached():
    assert displayed_goal(1000, 999) == 1000
    assert displayed_goal(1000, 1000) == 1500
    assert displayed_goal(1000, 1600) == 2000
    assert displayed_goal(100_000, 100_001) == 150_000
    assert displayed_goal(100_000, 760_000) == 1_000_000
    assert displayed_goal(0, 10) == 0


def test_the_page_shows_the_risen_goal(app, client, demo):
    with app.app_context():
        add_to_count(db.session, _petition(app).id, 100_000)
        db.session.commit()
    html = client.get(PAGE).get_data(as_text=True)
    assert "let's get to 150,000" in html and 'aria-valuemax="150000"' in html


def test_recent_signers_first_name_and_country_only_with_consent_and_an_off_switch(app, client, demo, mailbox):
    sign_and_confirm(app, client, mailbox, "yes@example.com", name="Zarema Khadzhieva", country="FR",
                     consent_public_name="y")
    sign_and_confirm(app, client, mailbox, "no@example.com", name="Hidden Person", country="DE")
    sign_in(client, email="pending@example.com", name="Pending Person", consent_public_name="y")
    html = client.get(PAGE).get_data(as_text=True)
    assert "Recent signers" in html and "<bdi>Zarema</bdi>, <span class=\"muted\">France</span>" in html
    for absent in ("Khadzhieva", "Hidden", "Pending", "yes@example.com"):
        assert absent not in html
    with app.app_context():
        _petition(app).show_recent_signers = False
        db.session.commit()
    assert "Zarema" not in client.get(PAGE).get_data(as_text=True)
    assert first_name("  Ada   King Lovelace ") == "Ada" and first_name("") == ""


def test_referral_code_on_the_thank_you_page_and_the_referrer_stored(app, client, demo, mailbox):
    sign_in(client, email="first@example.com")
    deliver_due(app)
    path = confirm_path(messages_to(mailbox, "first@example.com")[0])
    thanks = client.get(confirm(client, path).headers["Location"]).get_data(as_text=True)
    with app.app_context():
        code = db.session.scalar(select(Signature.referral_code))
    assert code and re.fullmatch(r"[A-Za-z0-9_-]{8}", code)
    assert f"?source=link&amp;ref={code}" in thanks and f"source%3Dwhatsapp%26ref%3D{code}" in thanks
    # A friend opens the shared link and signs: the referrer and the channel are both recorded.
    sign_in(client, f"{PAGE}?source=whatsapp&ref={code}", email="friend@example.com")
    sign_in(client, f"{PAGE}?ref=<script>", email="junk@example.com")
    with app.app_context():
        friend = db.session.scalar(select(Signature).where(Signature.id == 2))
        junk = db.session.scalar(select(Signature).where(Signature.id == 3))
        assert (friend.referred_by, friend.source) == (code, "whatsapp")
        assert junk.referred_by is None


def test_organizers_see_whose_shares_brought_signatures_and_edit_translations(make_app, mailbox):
    from campaign.services.demo import DEMO_ORGANIZER_EMAIL, demo_organizer_password, seed_demo

    app = make_app(**FAST_HASHING)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        petition_id = _petition(app).id
        password = demo_organizer_password()
    client = app.test_client()
    sign_and_confirm(app, client, mailbox, "a@example.com")
    with app.app_context():
        code = db.session.scalar(select(Signature.referral_code))
    page = client.get(f"{PAGE}?ref={code}").get_data(as_text=True)
    assert f'name="ref" type="hidden" value="{code}"' in page
    sign_and_confirm(app, client, mailbox, "b@example.com", ref=code)
    organizer = app.test_client()
    assert login(organizer, DEMO_ORGANIZER_EMAIL, password).status_code == 302
    url = f"/organize/petitions/{petition_id}/translations"
    html = organizer.get(url).get_data(as_text=True)
    assert f"<code>{code}</code></td><td>1</td>" in html and "#1" in html
    assert "Лидеры G20" in html  # the demo's Russian translation
    saved = organizer.post(url, data={"csrf_token": csrf_of(html), "language": "fr",
                                      "title": "Dirigeants du G20 <script>", "summary": "Résumé",
                                      "body_markdown": "**Texte** <img src=x onerror=alert(1)>"})
    assert saved.status_code == 303
    french = client.get("/fr/petitions/g20-chechnya").get_data(as_text=True)
    assert "Dirigeants du G20 &lt;script&gt;" in french and "<strong>Texte</strong>" in french
    assert "<img src=x" not in french and "&lt;img src=x" in french and "Signer la pétition" in french
    refused = organizer.post(url, data={"csrf_token": csrf_of(html), "language": "en", "title": "Own"})
    assert refused.status_code == 400  # the petition's own language is edited on the petition
    off = organizer.post(f"/organize/petitions/{petition_id}/recent-signers", data={"csrf_token": csrf_of(html)})
    assert off.status_code == 303
    with app.app_context():
        assert _petition(app).show_recent_signers is False
    # Another campaign's organizer gets 404 (the IDOR sweep covers every route; one here too).
    add_user(app, "stranger@example.org")
    stranger = app.test_client()
    login(stranger, "stranger@example.org")
    assert stranger.get(url).status_code == 404


def test_languages_come_from_the_url_then_the_choice_then_accept_language(app, client, demo):
    english = client.get(PAGE, headers={"Accept-Language": "ru"})
    html = english.get_data(as_text=True)
    # The petition's own page speaks the petition's language, whatever the browser prefers.
    assert '<html lang="en" dir="ltr">' in html and "Sign the petition</button>" in html
    assert "Set-Cookie" not in english.headers
    russian = client.get("/ru/petitions/g20-chechnya")
    html = russian.get_data(as_text=True)
    assert '<html lang="ru" dir="ltr">' in html and "Подписать петицию</button>" in html
    assert '<h1 lang="ru">Лидеры G20' in html and "Set-Cookie" not in russian.headers
    assert russian.headers["ETag"] != english.headers["ETag"]
    assert 'hreflang="ru" href="http://campaign.test/ru/petitions/g20-chechnya"' in html
    # German has no translation of the text: the interface is German, the text stays English.
    german = client.get("/de/petitions/g20-chechnya").get_data(as_text=True)
    assert '<html lang="de"' in german and "Petition unterschreiben" in german
    assert '<h1 lang="en">G20 leaders' in german
    # Unknown language codes fall back cleanly.
    unknown = client.get("/xx/petitions/g20-chechnya?source=tw")
    assert unknown.status_code == 302 and unknown.headers["Location"] == "/petitions/g20-chechnya?source=tw"
    assert client.get("/RU/petitions/g20-chechnya").status_code == 302
    # Pages without a language in the URL: the visible choice (cookie set only then), else the browser.
    assert "Мои данные" in client.get("/my-data", headers={"Accept-Language": "ru-RU,ru;q=0.9"}).get_data(
        as_text=True)
    chosen = client.get("/my-data?lang=es")
    assert "Gestionar mis datos" in chosen.get_data(as_text=True) and "lang=es" in chosen.headers["Set-Cookie"]
    assert "Gestionar mis datos" in client.get("/my-data").get_data(as_text=True)  # remembered
    bogus = client.get("/my-data?lang=zz-evil")
    assert bogus.status_code == 200 and "Set-Cookie" not in bogus.headers


def test_a_signature_counts_on_the_petition_whichever_language(app, client, demo, mailbox):
    sign_and_confirm(app, client, mailbox, "en@example.com")
    sign_in(client, "/ru/petitions/g20-chechnya", email="ru@example.com", name="Хава")
    response = sign_in(client, "/fr/petitions/g20-chechnya", email="fr@example.com")
    assert response.headers["Location"] == "/petitions/g20-chechnya/check-email?lang=fr"
    deliver_due(app)
    for address in ("ru@example.com", "fr@example.com"):
        confirm(client, confirm_path(messages_to(mailbox, address)[0]))
    with app.app_context():
        petition = _petition(app)
        assert signature_count(db.session, petition.id) == 3
        assert sorted(db.session.scalars(select(Signature.locale))) == ["en", "fr", "ru"]
        assert db.session.scalar(select(PetitionTranslation.language)) == "ru"
    ru_mail = messages_to(mailbox, "ru@example.com")[0]
    assert ru_mail["Subject"] == "Пожалуйста, подтвердите подпись"
    assert 'lang="ru"' in ru_mail.get_body(("html",)).get_content()
    thanks = client.get(confirm_path(ru_mail)).get_data(as_text=True)
    assert '<html lang="ru"' in thanks and "Ваша подпись уже подтверждена" in thanks
    # The visitor's choice wins over the language the signature was made in.
    chosen = client.get(confirm_path(ru_mail) + "?lang=de").get_data(as_text=True)
    assert '<html lang="de"' in chosen and "Ihre Unterschrift ist bereits bestätigt" in chosen


NAUGHTY = {
    "arabic": "محمد عبد الله",
    "chechen": "Ӏаьржа Хьамзат",  # Chechen Cyrillic with the palochka
    "emoji": "Ada 🏳️‍🌈 Lovelace",
    "html": '<img src=x onerror="alert(1)">Eve',
}


def test_bad_input_is_accepted_and_shown_escaped_everywhere(make_app, mailbox):
    from campaign.services.demo import DEMO_ORGANIZER_EMAIL, demo_organizer_password, seed_demo

    app = make_app(**FAST_HASHING)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        petition_id = _petition(app).id
        password = demo_organizer_password()
    client = app.test_client()
    for key, name in NAUGHTY.items():
        path = sign_and_confirm(app, client, mailbox, f"{key}@example.com", name=name,
                                comment=f"<script>alert('{key}')</script>", consent_public_name="y",
                                consent_name_to_targets="y")
        mine = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in mine and "&lt;script&gt;" in mine
        if key != "html":
            assert name in mine
    assert "onerror=\"alert" not in client.get(path).get_data(as_text=True)
    page = client.get(PAGE).get_data(as_text=True)
    assert "<bdi>محمد</bdi>" in page and "<bdi>Ӏаьржа</bdi>" in page
    assert "<img src=x" not in page and "&lt;img" in page
    for message in messages_to(mailbox, "html@example.com"):
        html = message.get_body(("html",)).get_content()
        assert "<img src=x" not in html and "&lt;img src=x" in html
    # The organizer's signature list escapes it too.
    organizer = app.test_client()
    login(organizer, DEMO_ORGANIZER_EMAIL, password)
    listing = organizer.get(f"/organize/petitions/{petition_id}/signatures").get_data(as_text=True)
    assert "&lt;img src=x" in listing and "<img src=x" not in listing and "محمد عبد الله" in listing
    # 300 characters: refused next to the field (the limit is 200), never a 500.
    long = sign_in(client, email="long@example.com", name="Я" * 300)
    assert long.status_code == 400 and "Use at most 200 characters." in long.get_data(as_text=True)
    # A source with script in it is kept as text and shown escaped.
    scripted = client.get(PAGE + '?source="><script>alert(1)</script>').get_data(as_text=True)
    assert "<script>alert(1)</script>" not in scripted and "&#34;&gt;&lt;script&gt;" in scripted
    # An unknown language in the sign form falls back to the petition's.
    response = sign_in(client, email="lang@example.com", lang="xx-<b>")
    assert response.status_code == 303 and response.headers["Location"].endswith("/check-email")
