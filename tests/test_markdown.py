"""Petition bodies: Markdown rendered, anything that could run script removed."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from campaign.services.markdown import render_markdown

_BAD_TAGS = {"script", "iframe", "svg", "style", "object", "embed", "form", "math", "base", "meta"}


class _Inspector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BAD_TAGS:
            self.found.append(tag)
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{tag}[{name}]")
            scheme = (value or "").strip().lower().split(":", 1)[0]
            if name in {"href", "src"} and ":" in (value or "") and scheme not in {"http", "https", "mailto"}:
                self.found.append(f"{tag}[{name}={value}]")


def executable_parts(html: str) -> list[str]:
    """Elements, event handlers and URL schemes that could run script: what must never appear."""
    inspector = _Inspector()
    inspector.feed(html)
    return inspector.found


@pytest.mark.parametrize("source", [
    "<script>alert(1)</script>",
    "<iframe src=https://evil.example></iframe>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    '<img src=x onerror="alert(1)">',
    "![x](javascript:alert(1))",
    '<a href="#" onclick="alert(1)">x</a>',
    "<svg onload=alert(1)>",
    "<style>body{display:none}</style>",
])
def test_nothing_executable_survives(source):
    assert executable_parts(render_markdown(source)) == []


def test_markdown_renders_and_links_are_marked():
    html = render_markdown("**bold** and [a link](https://example.org)\n\n- one\n- two")
    assert "<strong>bold</strong>" in html
    assert '<a href="https://example.org" rel="noopener noreferrer nofollow">a link</a>' in html
    assert "<li>one</li>" in html


def test_raw_html_is_shown_as_text():
    assert "&lt;b&gt;hi&lt;/b&gt;" in render_markdown("<b>hi</b>")


def test_the_inspector_itself_catches_what_it_looks_for():
    assert executable_parts('<a href="javascript:alert(1)">x</a><img src=x onerror=y><script></script>') == [
        "a[href=javascript:alert(1)]", "img[onerror]", "script"]
