"""In a real browser (Playwright + Debian's Chromium): the dashboard's server-drawn charts, then an
update written, previewed and sent, whose page counts the emails up by itself (reach.js polls the
progress endpoint). No CSP violation, no console error, nothing requested from another host."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from werkzeug.serving import make_server

from campaign.extensions import db
from campaign.services.updates import send_batch, start_due_updates
from tests.organize.conftest import FAST_HASHING, PASSWORD
from tests.organize.test_browser import _CSP_REPORTER, ARGS, CHROMIUM, SCREENSHOTS, _in_a_thread_of_its_own
from tests.reach.conftest import ORGANIZER, World, add_signers, make_world
from tests.support import wait_for


@pytest.fixture
def served(make_app) -> Iterator[tuple[World, str]]:
    holder: dict[str, Any] = {}

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    app = make_app(BASE_URL=url, REACH_BATCH_SIZE=5, **FAST_HASHING)
    holder["app"] = app
    world = make_world(app)
    add_signers(app, world.petition_id, 30, country="DE", source="newsletter")
    add_signers(app, world.petition_id, 12, start=100, country="FR", source="partner-x")
    thread = threading.Thread(target=server.serve_forever, name="reach-live-server", daemon=True)
    thread.start()
    try:
        yield world, url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.browser
def test_dashboard_charts_and_a_sent_update_counting_up_live(served, mailbox):
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}")
    _in_a_thread_of_its_own(lambda: _scenario(*served, mailbox))


def _scenario(world: World, url: str, mailbox: Any) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            _organizer(world, url, mailbox, chromium)
        finally:
            chromium.close()


def _organizer(world: World, url: str, mailbox: Any, chromium: Any) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    context.add_init_script(_CSP_REPORTER)
    page = context.new_page()
    problems: list[str] = []
    foreign: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(url) else None)

    page.goto(f"{url}/account/login")
    page.get_by_label("Email").fill(ORGANIZER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/organize/")

    page.goto(f"{url}/organize/petitions/{world.petition_id}/dashboard")
    assert page.locator("[data-stat=confirmed]").inner_text() == "42"
    assert page.locator("svg.chart").count() == 3
    assert page.get_by_role("img", name=re.compile("Confirmed signatures by country")).count() == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "organizer-dashboard-desktop.png"), full_page=True)

    page.goto(f"{url}/organize/campaigns/{world.campaign_id}/updates/new")
    page.get_by_label("Subject").fill("We delivered it")
    page.get_by_label("Message (Markdown)").fill("Hello {{ first_name }}, **thank you**.")
    page.get_by_role("button", name="Save and preview").click()
    page.locator(".preview strong", has_text="thank you").wait_for()
    assert "Hello Olga," in page.locator(".preview").inner_text()
    page.get_by_role("link", name="Send…").click()
    page.get_by_role("button", name="Send to 42 people").click()
    page.get_by_text("Sending has started.").wait_for()
    assert page.locator("[data-progress=sent]").inner_text() == "0"

    # A worker's work, in this process, while the page stays open: the figures move by themselves.
    app = world.app
    update_id = int(page.url.rstrip("/").split("/")[-1])
    with app.app_context():
        start_due_updates(db.session)
        while send_batch(db.session, update_id).claimed:
            pass
        db.session.remove()
    page.locator("[data-progress=sent]", has_text="42").wait_for(timeout=15_000)
    page.locator("[data-progress=status]", has_text="sent").wait_for()
    page.screenshot(path=str(SCREENSHOTS / "organizer-update-sent-desktop.png"), full_page=True)
    wait_for(lambda: len(mailbox.messages) == 42, timeout=10)
    context.close()
    assert problems == [], problems
    assert foreign == [], foreign
