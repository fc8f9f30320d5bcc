"""The supporter's pages in a real browser (Debian's Chromium through Playwright).

Sign, read the email in the SMTP sink, confirm, and see the count: with and without JavaScript,
on a phone and on a desktop. Keyboard-only use, form errors, the CSP, third-party requests and
axe-core's accessibility rules. Screenshots go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.browser.conftest import DESKTOP, PHONE, LiveApp, Opened, screenshot

pytestmark = pytest.mark.browser

SIGN = "Sign the petition"


def _fill_form(page: Any, name: str, email: str, country: str = "DE", postcode: str = "",
               comment: str = "") -> None:
    page.get_by_label("Full name", exact=True).fill(name)
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Country", exact=True).select_option(country)
    if postcode:
        page.get_by_label("Postcode", exact=True).fill(postcode)
    if comment:
        page.get_by_label("Comment", exact=True).fill(comment)


def _box(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return box


def _shown_count(page: Any) -> tuple[str, str | None]:
    return (page.locator(".progress-count strong").first.inner_text(),
            page.get_by_role("progressbar").get_attribute("aria-valuenow"))


# --- the whole path -------------------------------------------------------------------------

@pytest.mark.parametrize("js", [True, False], ids=["js", "nojs"])
@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_sign_confirm_and_see_the_count(live: LiveApp, open_page: Any, viewport: dict[str, int],
                                        js: bool) -> None:
    device = "phone" if viewport is PHONE else "desktop"
    opened: Opened = open_page(viewport=viewport, js=js)
    page = opened.page
    shots = js  # one set of screenshots per viewport is enough

    page.goto(live.petition_url)
    assert _shown_count(page) == ("0", "0")
    sign_box, summary, body = _box(page, ".sign-box"), _box(page, ".summary"), _box(page, ".petition-body")
    if device == "phone":
        # One column: the form comes right after the summary, before the full text.
        assert summary["y"] + summary["height"] <= sign_box["y"] < body["y"]
        assert sign_box["width"] <= viewport["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], \
            "the page scrolls sideways on a phone"
    else:
        # Two columns: the sign box on the right, beside the text, and it stays in view.
        assert sign_box["x"] >= body["x"] + body["width"]
        assert sign_box["y"] < viewport["height"]
        # Read on: scroll the text (the pointer over it). The box stays beside it, whole.
        page.mouse.move(200, 500)
        page.mouse.wheel(0, 300)
        page.wait_for_timeout(150)  # wait_for_function would need eval, which the CSP forbids
        scrolled = page.evaluate("window.scrollY")
        if scrolled > 100:  # the page is longer than the screen
            box = _box(page, ".sign-box")
            assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], \
                f"the sign box scrolled out of view after {scrolled} px: {box}"
        page.evaluate("window.scrollTo(0, 0)")
    if shots:
        page.wait_for_timeout(50)
        screenshot(page, f"petition-{device}", full_page=True)

    email = f"signer-{device}-{'js' if js else 'nojs'}@example.org"
    _fill_form(page, "Ada Lovelace", email, "DE", postcode="10115")
    page.get_by_role("button", name=SIGN).click()
    page.wait_for_url(re.compile(r"/check-email(#sign)?$"))
    assert page.get_by_role("heading", level=1).inner_text().startswith("One more step")
    assert "check your email" in page.content().lower()
    if shots:
        screenshot(page, f"check-email-{device}", full_page=True)

    link = live.confirm_link(email)
    page.goto(link)
    button = page.get_by_role("button", name="Confirm my signature")
    assert button.is_visible()
    if shots:
        screenshot(page, f"confirm-{device}", full_page=True)
    button.click()
    page.wait_for_url(re.compile(r"done=1"))
    assert "your signature is confirmed" in page.content()
    if shots:
        screenshot(page, f"thank-you-{device}", full_page=True)

    page.goto(live.petition_url)
    assert _shown_count(page) == ("1", "1")
    assert "1 has signed" in page.locator(".progress-count").inner_text()
    opened.watch.assert_clean()


def test_sign_box_fits_a_short_laptop_screen(live: LiveApp, open_page: Any) -> None:
    viewport = {"width": 1280, "height": 640}
    page = open_page(viewport=viewport).page
    page.goto(live.petition_url)
    page.mouse.move(200, 400)
    page.mouse.wheel(0, 300)
    page.wait_for_timeout(150)
    assert page.evaluate("window.scrollY") > 100
    box = _box(page, ".sign-box")
    assert box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"], box
    # Taller than the screen, the box scrolls within itself: its button is still reachable.
    page.get_by_role("button", name=SIGN).focus()
    page.wait_for_timeout(100)
    button = _box(page, ".sign-box button[type=submit]")
    assert button["y"] >= 0 and button["y"] + button["height"] <= viewport["height"], button


# --- keyboard --------------------------------------------------------------------------------

_FOCUSED = """() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {id: el.id, tag: el.tagName.toLowerCase(), type: el.type || '', text: (el.innerText || '').trim(),
          outline: style.outlineStyle, outlineWidth: parseFloat(style.outlineWidth) || 0,
          shadow: style.boxShadow};
}"""


def test_keyboard_only(live: LiveApp, open_page: Any) -> None:
    opened = open_page(viewport=DESKTOP)
    page = opened.page
    page.goto(live.petition_url)
    typing = {"name": "Kay Board", "email": "kay@example.org", "country": "Germany",
              "postcode": "10115", "comment": "Typed without a mouse."}
    order: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        label = focused["id"] or (focused["text"] if focused["tag"] == "button" else focused["tag"])
        order.append(label)
        assert (focused["outline"] != "none" and focused["outlineWidth"] >= 2) or focused["shadow"] != "none", \
            f"no visible focus indicator on {label}: {focused}"
        if len(order) == 1:
            assert focused["text"] == "Skip to content", "the first Tab should reach the skip link"
            assert page.locator(".skip-link").bounding_box()["y"] >= 0
        if focused["id"] in typing:
            page.keyboard.type(typing[focused["id"]])
        if focused["id"] == "country":
            screenshot(page, "keyboard-focus-desktop")
        if focused["tag"] == "button" and focused["text"] == SIGN:
            break
    else:
        pytest.fail(f"Tab never reached the sign button: {order}")

    fields = [x for x in order if x in {"name", "email", "country", "postcode", "comment",
                                        "consent_updates", SIGN}]
    assert fields == ["name", "email", "country", "postcode", "comment", "consent_updates", SIGN], order
    # Nothing but the skip link, the header and the list of leaders comes before the form.
    assert order.index("name") <= 6, order
    assert page.get_by_label("Country", exact=True).input_value() == "DE"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/check-email(#sign)?$"))
    assert "check your email" in page.content().lower()
    opened.watch.assert_clean()


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("js", [True, False], ids=["js", "nojs"])
def test_form_error_is_next_to_its_field_and_input_is_kept(live: LiveApp, open_page: Any,
                                                           js: bool) -> None:
    opened = open_page(viewport=PHONE, js=js)
    page = opened.page
    page.goto(live.petition_url)
    _fill_form(page, "Зелимхан Ü. O'Brien", "not-an-email", "FR", postcode="75001",
               comment="Solidarité ✊")
    page.get_by_role("button", name=SIGN).click()
    page.wait_for_load_state()

    email = page.get_by_label("Email", exact=True)
    assert email.get_attribute("aria-invalid") == "true"
    described = (email.get_attribute("aria-describedby") or "").split()
    assert "email-error" in described
    error = page.locator("#email-error")
    assert error.is_visible()
    message = error.inner_text()
    assert message.startswith("Error:") and len(message) > len("Error: ") + 5, message
    # Next to the field: in the same group, just below the box.
    field_box, error_box = email.bounding_box(), error.bounding_box()
    assert 0 <= error_box["y"] - (field_box["y"] + field_box["height"]) < 40
    assert page.locator(".field", has=page.locator("#email")).locator("#email-error").count() == 1
    # Only the wrong field is marked; the rest of what was typed is still there.
    assert page.get_by_label("Full name", exact=True).get_attribute("aria-invalid") is None
    assert page.get_by_label("Full name", exact=True).input_value() == "Зелимхан Ü. O'Brien"
    assert email.input_value() == "not-an-email"
    assert page.get_by_label("Country", exact=True).input_value() == "FR"
    assert page.get_by_label("Postcode", exact=True).input_value() == "75001"
    assert page.get_by_label("Comment", exact=True).input_value() == "Solidarité ✊"
    assert page.get_by_role("alert").first.is_visible()
    # The answer opens at the form (the action's #sign), not at the top of the page; with
    # JavaScript the list of errors also takes the focus, so it is read out.
    assert page.url.endswith("/sign#sign")
    if js:
        page.wait_for_load_state("load")
        focused = False
        for _ in range(20):  # the script focuses it just after load (no wait_for_function: CSP)
            focused = page.evaluate("document.activeElement.hasAttribute('data-error-summary')")
            if focused:
                break
            page.wait_for_timeout(50)
        assert focused, "the list of errors did not take the focus"
    if js:
        screenshot(page, "form-error-phone", full_page=True)

    # Fix it and send again: the kept values go through.
    email.fill("obrien@example.org")
    page.get_by_role("button", name=SIGN).click()
    page.wait_for_url(re.compile(r"/check-email(#sign)?$"))
    opened.watch.assert_clean()


# --- privacy and the CSP on every page --------------------------------------------------------

def _all_pages(live: LiveApp, opened: Opened) -> list[str]:
    """Visit each supporter page; return the URLs visited."""
    page = opened.page
    visited = []

    def visit(url: str) -> None:
        page.goto(url)
        page.wait_for_load_state("networkidle")
        visited.append(page.url)

    visit(f"{live.url}/")
    visit(live.petition_url)
    _fill_form(page, "Grace Hopper", "grace@example.org", "US")
    page.get_by_role("button", name=SIGN).click()
    page.wait_for_url(re.compile(r"/check-email(#sign)?$"))
    page.wait_for_load_state("networkidle")
    visited.append(page.url)
    link = live.confirm_link("grace@example.org")
    visit(link)
    page.get_by_role("button", name="Confirm my signature").click()
    page.wait_for_url(re.compile(r"done=1"))
    page.wait_for_load_state("networkidle")
    visited.append(page.url)
    visit(link)  # already confirmed
    visit(f"{live.url}/confirm/not-a-real-token")
    visit(f"{live.url}/petitions/no-such-petition")
    return visited


@pytest.mark.parametrize("js", [True, False], ids=["js", "nojs"])
def test_no_request_leaves_the_host_and_no_console_errors(live: LiveApp, open_page: Any,
                                                          js: bool) -> None:
    opened = open_page(viewport=PHONE, js=js)
    visited = _all_pages(live, opened)
    assert len(visited) == 8
    hosts = {re.sub(r"^https?://([^/:]+).*", r"\1", url) for _page, url in opened.watch.requests}
    assert hosts == {"127.0.0.1"}, opened.watch.requests
    # The stylesheet (and with JS, the script) are the site's own.
    assert any(url.endswith("/static/css/site.css") for _page, url in opened.watch.requests)
    opened.watch.assert_clean()


# --- axe-core ---------------------------------------------------------------------------------

def _axe(page: Any, name: str) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    serious = []
    for violation in results.response["violations"]:
        line = (f"axe {name}: {violation['id']} ({violation['impact']}) on "
                f"{len(violation['nodes'])} node(s): {violation['help']}")
        print(line)
        if violation["impact"] in {"serious", "critical"}:
            targets = [node["target"] for node in violation["nodes"]][:5]
            serious.append(f"{line} {targets}")
    if not results.response["violations"]:
        print(f"axe {name}: no violations")
    return serious


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_axe_finds_nothing_serious(live: LiveApp, open_page: Any, viewport: dict[str, int]) -> None:
    opened = open_page(viewport=viewport)
    page = opened.page
    serious: list[str] = []

    page.goto(live.petition_url)
    page.locator(".targets details summary").click()  # the list of leaders, opened
    serious += _axe(page, "petition")
    _fill_form(page, "", "broken@", "")
    page.get_by_role("button", name=SIGN).click()
    page.wait_for_load_state()
    assert page.locator(".field.has-error").count() >= 2
    serious += _axe(page, "petition with errors")
    _fill_form(page, "Alan Turing", "alan@example.org", "GB")
    page.get_by_role("button", name=SIGN).click()
    page.wait_for_url(re.compile(r"/check-email(#sign)?$"))
    serious += _axe(page, "check email")
    page.goto(live.confirm_link("alan@example.org"))
    serious += _axe(page, "confirm")
    page.get_by_role("button", name="Confirm my signature").click()
    page.wait_for_url(re.compile(r"done=1"))
    serious += _axe(page, "thank you")

    assert not serious, "\n".join(serious)
    opened.watch.assert_clean()
