"""Response headers every page carries, and the same-origin check for token-only forms."""

from __future__ import annotations

from typing import cast
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "object-src 'none'; frame-ancestors 'none'")


def framable_csp(ancestors: str) -> str:
    """The CSP of the /embed/ widget pages, the only ones other sites may frame: the usual policy
    with frame-ancestors set to `ancestors` (EMBED_FRAME_ANCESTORS, checked at start-up)."""
    return _CSP.replace("frame-ancestors 'none'", f"frame-ancestors {ancestors}")


def apply_security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    # X-Frame-Options is older browsers' frame-ancestors: deny exactly where the CSP does, so
    # the embeddable widget (framable_csp) is not denied by the one while allowed by the other.
    csp = response.headers["Content-Security-Policy"]
    if "frame-ancestors" not in csp or "frame-ancestors 'none'" in csp:
        response.headers.setdefault("X-Frame-Options", "DENY")
    if current_app.config["CAMPAIGN_ENV"] == "production":
        response.headers.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
    return response


def same_origin_post() -> bool:
    """True unless the browser says the POST came from another site.

    Browsers send Sec-Fetch-Site and Origin on POSTs; a form on another site cannot forge them.
    Clients that send neither (scripts, old browsers) rely on the signed form token alone.
    """
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site in {"same-origin", "none"}
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    base = urlsplit(current_app.config["BASE_URL"])
    return origin.rstrip("/") == f"{base.scheme}://{base.netloc}"


class CachedSerializerSessions(SecureCookieSessionInterface):
    """Flask's cookie sessions with the signing serializer built once per key set, not on
    every request (a few percent of a sign request's CPU, issue 9)."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.secret_key:
            return None
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = app.extensions.get("campaign.session_serializer")
        if cached is None or cached[0] != keys:
            cached = (keys, super().get_signing_serializer(app))
            app.extensions["campaign.session_serializer"] = cached
        return cast(URLSafeTimedSerializer | None, cached[1])
