"""Issue 5 in a real browser: signing in Russian on a phone and a desktop, keyboard only, the
language switcher (with and without JavaScript), manage-my-data, axe-core on the petition,
thank-you, confirm and manage-my-data pages, and not one request leaving 127.0.0.1.
Screenshots go to test-artifacts/screenshots/."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, PHONE, LiveApp, Opened, screenshot
from tests.browser.test_supporter_pages import _FOCUSED, _axe
from tests.support import deliver_due, text_of, wait_for
from tests.supporters.conftest import _catalogs  # noqa: F401 - compiles the catalogs if needed

pytestmark = pytest.mark.browser

SIGN_RU = "Подписать петицию"
CONFIRM_RU = "Подтвердить подпись"


def _fill_ru(page: Any, name: str, email: str, country: str = "RU") -> None:
    page.get_by_label("Имя и фамилия", exact=True).fill(name)
    page.get_by_label("Электронная почта", exact=True).fill(email)
    page.get_by_label("Страна", exact=True).select_option(country)


def _my_data_link(live: LiveApp, to: str) -> str:
    deliver_due(live.app)
    pattern = re.compile(re.escape(live.url) + r"/my-data/[A-Za-z0-9._-]+(\?lang=\w+)?")

    def find() -> str | None:
        with live.mailbox.lock:
            messages = [m for m in live.mailbox.messages if to.lower() in str(m["To"]).lower()]
        for message in reversed(messages):
            match = pattern.search(text_of(message))
            if match:
                return match.group(0)
        return None

    return str(wait_for(find, timeout=10))


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_sign_and_confirm_in_russian(live: LiveApp, open_page: Any, viewport: dict[str, int]) -> None:
    device = "phone" if viewport is PHONE else "desktop"
    opened: Opened = open_page(viewport=viewport, locale="ru-RU")
    page = opened.page
    page.goto(f"{live.url}/ru/petitions/{live.slug}")
    assert page.locator("html").get_attribute("lang") == "ru"
    assert page.get_by_role("heading", level=1).inner_text().startswith("Лидеры G20")
    assert page.locator("h1").get_attribute("lang") == "ru"
    page.wait_for_timeout(50)
    screenshot(page, f"petition-ru-{device}", full_page=True)
    email = f"ru-{device}@example.org"
    _fill_ru(page, "Хава Ӏаьржа", email)
    page.get_by_role("button", name=SIGN_RU).click()
    page.wait_for_url(re.compile(r"/check-email\?lang=ru(#sign)?$"))
    assert page.get_by_role("heading", level=1).inner_text().startswith("Ещё один шаг")
    page.goto(live.confirm_link(email))
    assert page.locator("html").get_attribute("lang") == "ru"
    page.get_by_role("button", name=CONFIRM_RU).click()
    page.wait_for_url(re.compile(r"done=1"))
    assert "Спасибо — ваша подпись подтверждена" in page.content()
    share = page.locator("#share-url").input_value()
    assert re.search(r"/ru/petitions/g20-chechnya\?source=link&ref=[A-Za-z0-9_-]{8}$", share), share
    page.goto(f"{live.url}/ru/petitions/{live.slug}")
    assert page.locator(".progress-count strong").first.inner_text() == "1"
    opened.watch.assert_clean()


def test_keyboard_only_in_russian(live: LiveApp, open_page: Any) -> None:
    opened = open_page(viewport=DESKTOP, locale="ru-RU")
    page = opened.page
    page.goto(f"{live.url}/ru/petitions/{live.slug}")
    typing = {"name": "Зелимхан", "email": "kb-ru@example.org", "country": "Росс"}
    order: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        label = focused["id"] or (focused["text"] if focused["tag"] == "button" else focused["tag"])
        order.append(label)
        assert (focused["outline"] != "none" and focused["outlineWidth"] >= 2) or focused["shadow"] != "none", \
            f"no visible focus indicator on {label}: {focused}"
        if focused["id"] == "country":
            page.keyboard.press("ArrowDown")  # moves off "Choose your country"
            page.get_by_label("Страна", exact=True).select_option("RU")
        elif focused["id"] in typing:
            page.keyboard.type(typing[focused["id"]])
        if focused["tag"] == "button" and focused["text"] == SIGN_RU:
            break
    else:
        pytest.fail(f"Tab never reached the sign button: {order}")
    assert order.index("name") <= 7, order  # skip link, brand, language switcher, leaders, then the form
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/check-email\?lang=ru(#sign)?$"))
    opened.watch.assert_clean()


@pytest.mark.parametrize("js", [True, False], ids=["js", "nojs"])
def test_the_language_switcher(live: LiveApp, open_page: Any, js: bool) -> None:
    opened = open_page(viewport=PHONE, js=js)
    page = opened.page
    page.goto(live.petition_url)
    assert page.locator("html").get_attribute("lang") == "en"
    page.locator(".languages summary").click()
    page.get_by_role("link", name="Русский").click()
    page.wait_for_url(re.compile(r"/ru/petitions/g20-chechnya$"))
    assert page.locator("html").get_attribute("lang") == "ru"
    assert page.get_by_role("button", name=SIGN_RU).is_visible()
    page.locator(".languages summary").click()
    page.get_by_role("link", name="Deutsch").click()
    page.wait_for_url(re.compile(r"/de/petitions/g20-chechnya$"))
    assert page.get_by_role("button", name="Petition unterschreiben").is_visible()
    # The English text stays marked as English inside the German page.
    assert page.locator("h1").get_attribute("lang") == "en"
    # On pages without a language in their address, the choice is remembered in a cookie.
    page.goto(f"{live.url}/my-data")
    page.locator(".languages summary").click()
    page.get_by_role("link", name="Español").click()
    page.wait_for_url(re.compile(r"/my-data\?lang=es$"))
    page.goto(f"{live.url}/my-data")
    assert page.get_by_role("heading", level=1).inner_text() == "Gestionar mis datos"
    opened.watch.assert_clean()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_axe_on_supporter_pages_in_russian_and_manage_my_data(live: LiveApp, open_page: Any,
                                                              viewport: dict[str, int]) -> None:
    device = "phone" if viewport is PHONE else "desktop"
    opened = open_page(viewport=viewport, locale="ru-RU")
    page = opened.page
    serious: list[str] = []
    page.goto(f"{live.url}/ru/petitions/{live.slug}")
    serious += _axe(page, "petition (ru)")
    email = f"axe-{device}@example.org"
    _fill_ru(page, "Ахмед", email)
    page.get_by_label("Показать моё имя в списке недавно подписавших").check()
    page.get_by_role("button", name=SIGN_RU).click()
    page.wait_for_url(re.compile(r"/check-email"))
    page.goto(live.confirm_link(email))
    serious += _axe(page, "confirm (ru)")
    page.get_by_role("button", name=CONFIRM_RU).click()
    page.wait_for_url(re.compile(r"done=1"))
    serious += _axe(page, "thank you (ru)")
    page.goto(f"{live.url}/ru/petitions/{live.slug}")
    assert "Ахмед" in page.locator(".recent-signers").inner_text()
    serious += _axe(page, "petition with recent signers (ru)")

    page.goto(_my_data_link(live, email))
    assert page.get_by_role("heading", level=1).inner_text() == "Что мы храним о вас"
    assert "Ахмед" in page.content()
    serious += _axe(page, "manage my data")
    screenshot(page, f"my-data-{device}", full_page=True)
    page.get_by_role("button", name="Удалить эту подпись").click()
    serious += _axe(page, "delete my signature")
    page.get_by_role("button", name="Удалить", exact=True).click()
    page.wait_for_url(re.compile(r"done=deleted"))
    assert "У нас нет подписей" in page.content()
    page.goto(f"{live.url}/my-data")
    serious += _axe(page, "send me a link")
    assert not serious, "\n".join(serious)
    opened.watch.assert_clean()


def test_live_count_and_inline_validation_with_javascript(live: LiveApp, open_page: Any) -> None:
    from campaign.extensions import db
    from campaign.models import Petition
    from campaign.services.counting import add_to_count

    opened = open_page(viewport=DESKTOP, locale="ru-RU")
    page = opened.page
    page.goto(f"{live.url}/ru/petitions/{live.slug}")
    # Inline: leaving the email field with a wrong address shows the error next to it at once.
    page.get_by_label("Электронная почта", exact=True).fill("not-an-email")
    page.get_by_label("Страна", exact=True).focus()
    error = page.locator("#email-error")
    assert error.inner_text().startswith("Ошибка:")
    assert page.get_by_label("Электронная почта", exact=True).get_attribute("aria-invalid") == "true"
    page.get_by_label("Электронная почта", exact=True).fill("fine@example.org")
    page.get_by_label("Страна", exact=True).focus()
    assert page.locator("#email-error").count() == 0
    # Live: the count follows the JSON API (polled every 15 s) without a reload.
    with live.app.app_context():
        add_to_count(db.session, db.session.scalar(db.select(Petition.id)), 1234)
        db.session.commit()
    page.wait_for_timeout(16_500)
    assert page.locator(".progress-count strong").first.inner_text().replace("\u00a0", " ") == "1 234"
    assert page.get_by_role("progressbar").get_attribute("aria-valuenow") == "1234"
    assert any("/api/v1/petitions/g20-chechnya" in url for _page, url in opened.watch.requests)
    opened.watch.assert_clean()
