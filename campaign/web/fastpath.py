"""Answers a microcached public page before Flask builds a request context (issue 9).

The petition page and "check your email" are the same bytes for every anonymous visitor for
PAGE_MICROCACHE seconds. A view that knows its answer depends only on the path, the query string
and the country preselected from Accept-Language marks the request (`allow`); this layer keeps
that final answer, headers included as the app's hooks left them, and serves it again to the same
request without routing, hooks or a session: a few tens of microseconds instead of most of a
millisecond. Everything else (other methods, conditional requests, a cookie in the answer) goes
through the app as before.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

from campaign.metrics import observe_request
from campaign.services.countries import is_country

_MARK = "campaign.fastpath"

StartResponse = Callable[..., Any]
# (monotonic expiry, endpoint, status line, headers, body)
_Answer = tuple[float, str, str, list[tuple[str, str]], bytes]


def preselected_country(accept: LanguageAccept) -> str:
    """The country of the first Accept-Language entry that names one ("fr-CA" -> "CA")."""
    for language, _quality in accept:
        parts = language.replace("_", "-").split("-")
        if len(parts) > 1 and is_country(parts[-1].upper()):
            return parts[-1].upper()
    return ""


def allow(environ: dict[str, Any], seconds: float, endpoint: str) -> None:
    """Let the fast path serve this request's answer again for `seconds`: the caller vouches that
    the body and headers depend on nothing but the path, query string and preselected country."""
    if seconds > 0:
        environ[_MARK] = (seconds, endpoint)


def _key(environ: dict[str, Any]) -> tuple[str, str, str, str] | None:
    if environ.get("REQUEST_METHOD") != "GET" or "HTTP_IF_NONE_MATCH" in environ:
        return None
    accept = environ.get("HTTP_ACCEPT_LANGUAGE")
    country = preselected_country(parse_accept_header(accept, LanguageAccept)) if accept else ""
    return (environ.get("SCRIPT_NAME", ""), environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""), country)


class FastPath:
    """WSGI middleware around the app's wsgi_app, installed while PAGE_MICROCACHE is on; `size`
    answers at most, least recently used go."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], size: int) -> None:
        self.wsgi_app = wsgi_app
        self.size = size
        self.lock = threading.Lock()
        self.answers: OrderedDict[tuple[str, ...], _Answer] = OrderedDict()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        key = _key(environ)
        if key is None:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        with self.lock:
            entry = self.answers.get(key)
            if entry is not None:
                self.answers.move_to_end(key)
        if entry is not None and entry[0] > time.monotonic():
            _expires, endpoint, status, headers, body = entry
            start_response(status, list(headers))
            observe_request(endpoint, "GET", 200, time.perf_counter() - started)
            return [body]
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return start_response(status, headers, exc_info)

        answer = self.wsgi_app(environ, capture)
        mark = environ.get(_MARK)
        if mark is None or not captured or not captured[0].startswith("200 "):
            return answer
        if any(name.lower() == "set-cookie" for name, _value in captured[1]):
            return answer  # never hand one visitor's cookie to the next
        try:
            body = b"".join(answer)
        finally:
            close = getattr(answer, "close", None)
            if close is not None:
                close()
        seconds, endpoint = mark
        with self.lock:
            self.answers[key] = (time.monotonic() + seconds, endpoint, captured[0], list(captured[1]), body)
            self.answers.move_to_end(key)
            while len(self.answers) > self.size:
                self.answers.popitem(last=False)
        return [body]
