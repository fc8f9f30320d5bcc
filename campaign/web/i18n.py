"""Which language a page speaks: the petition's (or its URL's), then the visitor's choice, then
Accept-Language. Flask-Babel does the translating; catalogs live in campaign/translations.

Petition pages take their language from the URL (`/<lang>/petitions/<slug>`, else the
petition's own), so they never read or set a cookie and stay cacheable. Other pages follow a
`?lang=` choice, remembered in a `lang` cookie that is set only when someone chooses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_babel import format_decimal, get_locale, refresh

from campaign.extensions import babel

COOKIE = "lang"
# Supporter-facing blueprints. Organizer, admin and developer pages and the embedded widget (not
# translated yet) stay in English, the catalogs' source language, whatever the browser asks for.
TRANSLATED_BLUEPRINTS = frozenset({"public", "supporters", None})
RTL = frozenset({"ar", "arc", "ckb", "dv", "fa", "he", "ps", "sd", "ug", "ur", "yi"})
# Each language named in itself, for the switcher.
NATIVE_NAMES = {"en": "English", "ru": "Русский", "fr": "Français", "es": "Español", "de": "Deutsch",
                "ar": "العربية", "ce": "Нохчийн", "it": "Italiano", "pt": "Português", "uk": "Українська"}


def languages() -> list[str]:
    return [code.strip().lower() for code in str(current_app.config["LANGUAGES"]).split(",") if code.strip()]


def supported(code: str | None) -> str | None:
    """The supported language a code names ("ru", "ru-RU", "RU" -> "ru"), or None."""
    if not code or len(code) > 16:
        return None
    base = code.replace("_", "-").split("-")[0].lower()
    return base if base in languages() else None


def set_page_language(code: str | None) -> str:
    """Pin this request's language (a petition page, a confirmation link); returns it."""
    lang = supported(code) or languages()[0]
    g.page_lang = lang
    refresh()
    return lang


def chosen_language() -> str | None:
    """A supported `?lang=` on this request, else the cookie: the visitor's own choice."""
    return supported(request.args.get("lang")) or supported(request.cookies.get(COOKIE))


def select_locale() -> str:
    pinned = g.get("page_lang") if g else None
    if pinned:
        return str(pinned)
    from flask import has_request_context

    if not has_request_context():
        return languages()[0]
    if request.blueprint not in TRANSLATED_BLUEPRINTS:
        return "en"
    return (chosen_language()
            or request.accept_languages.best_match(languages())
            or languages()[0])


def current_language() -> str:
    return str(get_locale() or languages()[0]).split("_")[0]


def direction(code: str | None) -> str:
    return "rtl" if (code or "").split("-")[0].lower() in RTL else "ltr"


def _remember_choice(response: Response) -> Response:
    # Only on an explicit choice, and never on petition pages (their language is in the URL and
    # they must stay cookie-free to be cacheable).
    if request.method == "GET" and not g.get("page_lang"):
        choice = supported(request.args.get("lang"))
        if choice and request.cookies.get(COOKIE) != choice:
            response.set_cookie(COOKIE, choice, max_age=365 * 24 * 3600, samesite="Lax",
                                secure=request.is_secure, httponly=True)
    return response


def install(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_locale,
                   default_translation_directories=str(Path(app.root_path) / "translations"))
    app.after_request(_remember_choice)

    @app.context_processor
    def _language_context() -> dict[str, Any]:
        return {"current_language": current_language, "language_direction": direction,
                "interface_languages": languages, "native_name": lambda c: NATIVE_NAMES.get(c, c),
                "num": format_decimal}
