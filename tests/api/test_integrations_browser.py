"""In a real browser (Playwright + Debian's Chromium): the demo organizer opens API and webhooks
from the navigation, creates a token and a webhook by keyboard-free clicks on labelled fields,
sees each secret once, and the pages pass axe-core with nothing serious, with no console error,
CSP violation or request leaving the server."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.organize.test_browser import _CSP_REPORTER, ARGS, CHROMIUM, SCREENSHOTS, _in_a_thread_of_its_own
from tests.organize.test_browser import served as served  # the live-server fixture

pytestmark = pytest.mark.browser


def test_organizer_creates_a_token_and_a_webhook_in_the_browser(served):
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}")
    _in_a_thread_of_its_own(lambda: _scenario(*served))


def _axe(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} {[n['target'] for n in v['nodes']][:3]}"
            for v in results.response["violations"] if v["impact"] in {"serious", "critical"}]


def _scenario(app: Any, url: str) -> None:
    from playwright.sync_api import sync_playwright

    app.config["WEBHOOK_ALLOW_LOOPBACK"] = True  # the webhook below points at this very server
    runner = app.test_cli_runner()
    email, password = re.search(r"Demo organizer: (\S+) / (\S+)",
                                runner.invoke(args=["demo-credentials"]).output).groups()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            context = chromium.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(10_000)
            context.add_init_script(_CSP_REPORTER)
            page = context.new_page()
            problems: list[str] = []
            foreign: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(url) else None)

            page.goto(f"{url}/organize/")
            page.get_by_label("Email").fill(email)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{url}/organize/")
            page.get_by_role("link", name="End the anti-gay purge in Chechnya").first.click()
            page.get_by_role("link", name="API and webhooks").click()
            page.get_by_role("heading", name="API and webhooks").wait_for()
            serious = _axe(page)

            page.get_by_label("Token name", exact=True).fill("CiviCRM")
            page.get_by_label("write: create, edit and delete draft petitions").check()
            page.get_by_role("button", name="Create the token").click()
            secret = page.locator("[data-secret]").inner_text()
            assert re.fullmatch(r"cmp_[A-Za-z0-9_-]{43}", secret)
            assert page.get_by_role("cell", name="read write").count() == 1
            serious += _axe(page)
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "organizer-integrations-desktop.png"), full_page=True)

            page.get_by_label("URL", exact=True).fill(f"{url}/hooks/receiver")
            page.get_by_label("A petition reaches a milestone or its goal").check()
            page.get_by_role("button", name="Add the webhook").click()
            assert page.locator("[data-secret]").inner_text().startswith("whsec_")
            page.get_by_role("link", name=f"{url}/hooks/receiver").click()
            page.get_by_role("heading", name="Delivery log").wait_for()
            serious += _axe(page)

            # Shown once: the page, opened again, has neither secret.
            page.goto(f"{url}/organize/campaigns/1/integrations")
            assert secret not in page.content() and "whsec_" not in page.content()
            page.get_by_role("button", name="Revoke").click()
            page.get_by_text("revoked: it no longer works").wait_for()
            assert serious == [], serious
            assert problems == [], problems
            assert foreign == [], foreign
        finally:
            chromium.close()
