"""Browser fixtures: the app served over real HTTP on 127.0.0.1, and Debian's Chromium.

The app runs on SQLite with the real loopback SMTP sink and the demo petition seeded; emails
leave the outbox through tests.support.deliver_due(app) and are read back from the sink.
Playwright's own browser download is not used: Chromium comes from Debian's package.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from werkzeug.serving import make_server

from campaign.extensions import db
from campaign.mail.sink import SinkHandler
from tests.support import ROOT, deliver_due, text_of, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 900}

# Reports every CSP violation to the console, where the watcher below collects it. Injected by
# the browser itself (not subject to the page's CSP); only runs when JavaScript is on. With it
# off, Chromium still logs "Refused to ..." console errors for violations, which are caught too.
_CSP_REPORTER = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline')
                + ' at ' + e.sourceFile + ':' + e.lineNumber);
});
"""


@dataclass
class LiveApp:
    """The app behind a real HTTP server, its SMTP sink, and the seeded demo petition."""

    app: Flask
    url: str
    mailbox: SinkHandler
    slug: str

    @property
    def petition_url(self) -> str:
        return f"{self.url}/petitions/{self.slug}"

    def confirm_link(self, to: str) -> str:
        """Send what is due in the outbox and return the confirmation link mailed to `to`."""
        deliver_due(self.app)
        pattern = re.compile(re.escape(self.url) + r"/confirm/[A-Za-z0-9._-]+")

        def find() -> str | None:
            with self.mailbox.lock:
                messages = [m for m in self.mailbox.messages if to.lower() in str(m["To"]).lower()]
            for message in reversed(messages):
                match = pattern.search(text_of(message))
                if match:
                    return match.group(0)
            return None

        return str(wait_for(find, timeout=10))


@pytest.fixture
def live(make_app: Callable[..., Flask], mailbox: SinkHandler) -> Iterator[LiveApp]:
    """Serve a fresh app (own SQLite file, demo seeded) on 127.0.0.1 at a free port."""
    from campaign.services.demo import DEMO_PETITION_SLUG, seed_demo

    # Bind first (port 0: the OS picks a free one), so BASE_URL can name the real port.
    holder: dict[str, Flask] = {}

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        return holder["app"](environ, start_response)

    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    # Pages may be cached for PAGE_MAX_AGE seconds by design; these tests read the count at once.
    app = make_app(BASE_URL=url, PAGE_MAX_AGE=0, PAGE_STALE_WHILE_REVALIDATE=0)
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveApp(app=app, url=url, mailbox=mailbox, slug=DEMO_PETITION_SLUG)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Debian's Chromium at {CHROMIUM}: "
                    "run `apt-get install chromium chromium-driver`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                              headless=True)
        yield chromium
        chromium.close()


@dataclass
class Watch:
    """Everything a page asked the network for, and every console error, page error or CSP
    violation, each with the page it happened on."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def foreign_requests(self) -> list[tuple[str, str]]:
        return [(page, url) for page, url in self.requests
                if urlsplit(url).scheme not in {"http", "https"} or urlsplit(url).hostname != "127.0.0.1"]

    def assert_clean(self) -> None:
        assert self.requests, "no request was recorded: the watcher is not attached"
        assert not self.foreign_requests(), f"requests left 127.0.0.1: {self.foreign_requests()}"
        assert not self.problems, f"console errors or CSP violations: {self.problems}"


@dataclass
class Opened:
    page: Any
    watch: Watch


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Opened]]:
    """open_page(viewport=PHONE, js=True) -> a fresh context's page with a watcher attached."""
    contexts: list[Any] = []

    def open_(viewport: dict[str, int] | None = None, js: bool = True, locale: str = "en-GB") -> Opened:
        viewport = viewport or PHONE
        context = browser.new_context(
            viewport=viewport, java_script_enabled=js, locale=locale,
            is_mobile=viewport["width"] < 600, has_touch=viewport["width"] < 600,
            device_scale_factor=2 if viewport["width"] < 600 else 1)
        context.set_default_timeout(10_000)
        contexts.append(context)
        context.add_init_script(_CSP_REPORTER)
        page = context.new_page()
        watch = Watch()
        documents: set[str] = set()

        def on_request(request: Any) -> None:
            watch.requests.append((page.url, request.url))
            if request.resource_type == "document":
                documents.add(request.url)

        def on_console(message: Any) -> None:
            text = message.text
            if text.startswith("Failed to load resource") and message.location.get("url", "").split("#")[0] in documents:
                return  # a page answered with its deliberate status (400 form errors, 404, 410)
            if message.type == "error" or "Content Security Policy" in text or "Refused to" in text:
                watch.problems.append((page.url, f"console {message.type}: {text}"))

        page.on("request", on_request)
        page.on("console", on_console)
        page.on("pageerror", lambda error: watch.problems.append((page.url, f"page error: {error}")))
        return Opened(page=page, watch=watch)

    yield open_
    for context in contexts:
        context.close()


def screenshot(page: Any, name: str, full_page: bool = False) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
