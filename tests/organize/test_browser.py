"""In a real browser (Playwright + Debian's Chromium): the demo organizer signs in, creates a
petition with the Markdown editor (its live preview comes from the server), publishes it, and
a supporter signs and confirms it. No CSP violation, no console error, nothing from elsewhere."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from campaign.extensions import db
from tests.organize.conftest import FAST_HASHING
from tests.support import ROOT, deliver_due, text_of, wait_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-quic"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
_CSP_REPORTER = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline'));
});
"""


@pytest.fixture
def served(make_app) -> Iterator[tuple[Any, str]]:
    holder: dict[str, Any] = {}

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    app = make_app(BASE_URL=url, **FAST_HASHING)
    from campaign.services.demo import seed_demo

    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, name="organizer-live-server", daemon=True)
    thread.start()
    try:
        yield app, url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _in_a_thread_of_its_own(scenario: Any) -> None:
    """Run a Playwright scenario on its own thread: the sync API refuses to start where another
    Playwright (tests/browser's session-wide one, in the same worker) runs an event loop."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            scenario()
        except BaseException as error:  # handed to the test's thread below
            errors.append(error)

    thread = threading.Thread(target=run, name="organizer-browser")
    thread.start()
    thread.join(170)
    assert not thread.is_alive(), "the browser scenario did not finish"
    if errors:
        raise errors[0]


@pytest.mark.browser
def test_organizer_creates_and_publishes_a_petition_and_a_supporter_signs(served, mailbox):
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}")
    _in_a_thread_of_its_own(lambda: _scenario(*served, mailbox))


def _scenario(app: Any, url: str, mailbox: Any) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            _organizer_and_supporter(app, url, mailbox, chromium)
        finally:
            chromium.close()


def _organizer_and_supporter(app: Any, url: str, mailbox: Any, chromium: Any) -> None:
    runner = app.test_cli_runner()
    email, password = re.search(r"Demo organizer: (\S+) / (\S+)",
                                runner.invoke(args=["demo-credentials"]).output).groups()
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    context.add_init_script(_CSP_REPORTER)
    page = context.new_page()
    problems: list[str] = []
    foreign: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(url) else None)

    # Sign in as the demo organizer.
    page.goto(f"{url}/organize/")
    assert "/account/login" in page.url
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/organize/")
    page.get_by_role("link", name="End the anti-gay purge in Chechnya").first.click()

    # A new petition, with the live preview rendered (and sanitized) by the server.
    page.get_by_role("link", name="New petition").click()
    page.get_by_label("Title: the ask").fill("Release the men held in Argun")
    page.get_by_label("Summary").fill("They must be freed now.")
    body = page.get_by_label("Text (Markdown)")
    body.fill("**Free them.** [More](https://example.org)\n\n<script>alert(1)</script>")
    preview = page.locator("[data-preview]")
    preview.locator("strong", has_text="Free them.").wait_for()
    assert preview.locator("script").count() == 0
    assert "&lt;script&gt;" in preview.inner_html()
    page.get_by_label("Goal").fill("2500")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "organizer-editor-desktop.png"), full_page=True)
    page.get_by_role("button", name="Save", exact=True).click()
    page.get_by_text("Petition saved as a draft.").wait_for()

    page.get_by_role("button", name="Publish").click()
    page.get_by_text("Published.").wait_for()
    page.screenshot(path=str(SCREENSHOTS / "organizer-petition-desktop.png"), full_page=True)
    public_url = f"{url}/petitions/release-the-men-held-in-argun"
    assert page.get_by_role("link", name="open the public page").get_attribute("href") == \
        "/petitions/release-the-men-held-in-argun"

    # A supporter, in a browser of their own, signs and confirms.
    supporter = chromium.new_context(viewport={"width": 360, "height": 740})
    supporter.set_default_timeout(10_000)
    signer = supporter.new_page()
    signer.goto(public_url)
    assert signer.get_by_role("heading", level=1).inner_text() == "Release the men held in Argun"
    signer.get_by_role("textbox", name="Full name").fill("Ruslan Example")
    signer.get_by_role("textbox", name="Email").fill("ruslan@example.com")
    signer.get_by_label("Country").select_option("DE")
    signer.get_by_role("button", name="Sign the petition").click()
    signer.wait_for_url(re.compile(r".*/check-email(#.*)?$"))
    deliver_due(app)

    def link() -> str | None:
        with mailbox.lock:
            for message in mailbox.messages:
                if "ruslan@example.com" in str(message["To"]).lower():
                    found = re.search(re.escape(url) + r"/confirm/[A-Za-z0-9._-]+", text_of(message))
                    if found:
                        return found.group(0)
        return None

    signer.goto(wait_for(link, timeout=10))
    signer.get_by_role("button", name="Confirm my signature").click()
    signer.get_by_text("your signature is confirmed", exact=False).wait_for()
    supporter.close()

    # The organizer sees the signature, confirmed.
    page.get_by_role("link", name="Signatures", exact=True).first.click()
    assert "Ruslan Example" in page.content()
    assert page.locator("text=1 confirmed").count() == 1
    context.close()
    assert problems == [], problems
    assert foreign == [], foreign
