"""The widget on a partner's page, in Debian's Chromium: the page is served from another loopback
address (127.0.0.2, another site) under a strict CSP that allows only our origin, includes the
snippet copied from the snippet page, and a visitor signs through the iframe.

Checks: the iframe appears in place of the fallback link and is sized by the widget's messages;
the POST from inside the iframe passes the sign form's Origin / Sec-Fetch-Site check; the
confirmation email reaches the SMTP sink; the partner is recorded as the source; no cookie is
set; no CSP violation or console error; and no request leaves loopback. Without JavaScript the
script snippet is a plain link, and the iframe snippet still signs.
"""

from __future__ import annotations

import html
import ipaddress
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from campaign.extensions import db
from campaign.models import Signature
from tests.browser.conftest import DESKTOP, PHONE, LiveApp, screenshot
from tests.support import deliver_due, text_of, wait_for

pytestmark = pytest.mark.browser

PARTNER_HOST = "127.0.0.2"
CODE = "partner-test"


class PartnerSite:
    """A partner's website on 127.0.0.2: pages holding our snippets, under a strict CSP."""

    def __init__(self, app_origin: str) -> None:
        self.pages: dict[str, str] = {}
        self.csp = (f"default-src 'none'; script-src {app_origin}; frame-src {app_origin}; "
                    "style-src 'none'; img-src 'none'")
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = site.pages.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Security-Policy", site.csp)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((PARTNER_HOST, 0), Handler)
        self.origin = f"http://{PARTNER_HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="partner-site", daemon=True)
        self.thread.start()

    def add(self, path: str, snippet: str) -> str:
        self.pages[path] = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                            "<title>A partner's campaign page</title></head><body>"
                            "<main><h1>Our coalition</h1><p>We stand with the petition below.</p>"
                            f"{snippet}<p>More of the partner's text.</p></main></body></html>")
        return self.origin + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def partner(live: LiveApp) -> Iterator[PartnerSite]:
    site = PartnerSite(live.url)
    yield site
    site.close()


def _snippets(live: LiveApp) -> dict[str, str]:
    """The snippets exactly as the snippet page offers them for copying."""
    page = live.app.test_client().get(f"/embed/{live.slug}/snippet?source={CODE}").get_data(as_text=True)
    found = {}
    for name in ("script-snippet", "iframe-snippet"):
        match = re.search(rf'<textarea id="{name}"[^>]*>(.*?)</textarea>', page, re.S)
        assert match, name
        found[name] = html.unescape(match.group(1))
    return found


def _only_loopback(requests: list[tuple[str, str]]) -> None:
    hosts = {urlsplit(url).hostname for _page, url in requests}
    assert hosts, "no request recorded"
    for host in hosts:
        assert host is not None and ipaddress.ip_address(host).is_loopback, f"a request left loopback: {host}"
    assert hosts <= {"127.0.0.1", PARTNER_HOST}


def _sign_in(frame: Any, name: str, email: str) -> None:
    frame.get_by_label("Full name", exact=True).fill(name)
    frame.get_by_label("Email", exact=True).fill(email)
    frame.get_by_label("Country", exact=True).select_option("FR")
    frame.get_by_label("Keep me updated about this campaign by email").check()
    frame.get_by_role("button", name="Sign the petition").click()


def _source_of(live: LiveApp) -> list[str]:
    with live.app.app_context():
        sources = [s.source for s in db.session.query(Signature).all()]
        db.session.remove()
    return sources


def _mail_to(live: LiveApp, email: str) -> str:
    deliver_due(live.app)

    def find() -> str | None:
        with live.mailbox.lock:
            for message in live.mailbox.messages:
                if email in str(message["To"]):
                    return text_of(message)
        return None

    return str(wait_for(find, timeout=10))


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_sign_through_the_script_snippet_on_a_partner_page(live: LiveApp, partner: PartnerSite,
                                                           open_page: Callable[..., Any],
                                                           viewport: dict[str, int]) -> None:
    url = partner.add("/", _snippets(live)["script-snippet"])
    opened = open_page(viewport=viewport)
    page = opened.page
    page.goto(url)

    iframe = page.locator(f"iframe[data-campaign-widget='{live.slug}']")
    iframe.wait_for()
    assert page.locator("a[data-campaign-petition]").count() == 0, "the fallback link was not replaced"
    frame = page.frame_locator(f"iframe[data-campaign-widget='{live.slug}']")
    frame.get_by_role("button", name="Sign the petition").wait_for()
    # The widget's height message sized the frame to its content (the snippet starts at 640px).
    content = frame.locator("html").evaluate("e => Math.ceil(e.getBoundingClientRect().height)")
    page.wait_for_function(
        "h => Math.abs(document.querySelector('iframe[data-campaign-widget]').getBoundingClientRect().height - h) <= 2",
        arg=content)
    assert content != 640
    device = "phone" if viewport is PHONE else "desktop"
    screenshot(page, f"widget-partner-{device}", full_page=True)

    email = f"widget-{device}@example.com"
    _sign_in(frame, "Ada Lovelace", email)
    frame.get_by_role("heading", name="One more step: check your email").wait_for()
    done_height = frame.locator("html").evaluate("e => Math.ceil(e.getBoundingClientRect().height)")
    page.wait_for_function(
        "h => Math.abs(document.querySelector('iframe[data-campaign-widget]').getBoundingClientRect().height - h) <= 2",
        arg=done_height)
    screenshot(page, f"widget-partner-{device}-done", full_page=True)

    assert "/confirm/" in _mail_to(live, email)
    port = urlsplit(partner.origin).port
    assert _source_of(live) == [f"{CODE}@{PARTNER_HOST}:{port}"]
    assert page.context.cookies() == [], "the widget set a cookie"
    _only_loopback(opened.watch.requests)
    assert not opened.watch.problems, opened.watch.problems
    # The partner page is another site: the POST went from the iframe to its own origin.
    posts = [u for _p, u in opened.watch.requests if u.endswith(f"/embed/{live.slug}/sign")]
    assert len(posts) == 1


def test_without_javascript_the_script_snippet_is_a_link(live: LiveApp, partner: PartnerSite,
                                                         open_page: Callable[..., Any]) -> None:
    url = partner.add("/nojs", _snippets(live)["script-snippet"])
    opened = open_page(js=False)
    page = opened.page
    page.goto(url)
    link = page.get_by_role("link", name=re.compile("^Sign the petition: "))
    assert link.get_attribute("href") == f"{live.url}/petitions/{live.slug}?source={CODE}"
    assert page.locator("iframe").count() == 0
    link.click()
    page.get_by_role("button", name="Sign the petition").wait_for()
    _only_loopback(opened.watch.requests)


def test_the_iframe_snippet_signs_without_javascript(live: LiveApp, partner: PartnerSite,
                                                     open_page: Callable[..., Any]) -> None:
    url = partner.add("/iframe", _snippets(live)["iframe-snippet"])
    opened = open_page(viewport=DESKTOP, js=False)
    page = opened.page
    page.goto(url)
    frame = page.frame_locator("iframe")
    email = "widget-nojs@example.com"
    _sign_in(frame, "Grace Hopper", email)
    frame.get_by_role("heading", name="One more step: check your email").wait_for()
    assert "/confirm/" in _mail_to(live, email)
    port = urlsplit(partner.origin).port
    assert _source_of(live) == [f"{CODE}@{PARTNER_HOST}:{port}"]
    assert page.context.cookies() == []
    _only_loopback(opened.watch.requests)
    assert not opened.watch.problems, opened.watch.problems


def test_the_petition_page_cannot_be_framed_by_a_partner(live: LiveApp, partner: PartnerSite,
                                                         open_page: Callable[..., Any]) -> None:
    # Only /embed/ may be framed: the same page with the petition itself stays empty.
    url = partner.add("/steal", f'<iframe src="{live.petition_url}" title="framed"></iframe>')
    opened = open_page()
    page = opened.page
    page.goto(url)
    frame = page.frame_locator("iframe")
    page.wait_for_timeout(500)
    assert frame.get_by_role("button", name="Sign the petition").count() == 0


def _axe_serious(page: Any, name: str) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    serious = []
    for violation in Axe().run(page).response["violations"]:
        line = f"axe {name}: {violation['id']} ({violation['impact']}): {violation['help']}"
        print(line)
        if violation["impact"] in {"serious", "critical"}:
            serious.append(f"{line} {[node['target'] for node in violation['nodes']][:5]}")
    return serious


def test_axe_finds_nothing_serious_in_the_widget_snippet_and_docs_pages(live: LiveApp,
                                                                        open_page: Callable[..., Any]) -> None:
    opened = open_page(viewport=PHONE)
    page = opened.page
    serious: list[str] = []
    page.goto(f"{live.url}/embed/{live.slug}")
    serious += _axe_serious(page, "widget")
    page.get_by_role("button", name="Sign the petition").click()
    page.get_by_text("Please correct the fields marked below.").wait_for()
    serious += _axe_serious(page, "widget with errors")
    page.goto(f"{live.url}/embed/{live.slug}/check-email")
    serious += _axe_serious(page, "widget check email")
    page.goto(f"{live.url}/embed/{live.slug}/snippet")
    serious += _axe_serious(page, "snippet page")
    page.goto(f"{live.url}/api/v1/docs")
    serious += _axe_serious(page, "API docs")
    assert not serious, "\n".join(serious)
    _only_loopback(opened.watch.requests)
    assert not opened.watch.problems, opened.watch.problems
