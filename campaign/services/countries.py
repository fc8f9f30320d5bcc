"""Countries (ISO 3166-1 alpha-2) and the few bodies that petitions address, with their flags."""

from __future__ import annotations

from functools import cache

import pycountry

# Bodies that are targets but not countries. EU is reserved in ISO 3166 for the Union;
# the African Union has no code there, and AU is Australia's, so it gets a longer one.
BODIES = {"EU": "European Union", "AFU": "African Union"}


@cache
def country_choices() -> list[tuple[str, str]]:
    """(code, name) for every ISO country, sorted by name, for the signing form."""
    countries = [(c.alpha_2, getattr(c, "common_name", c.name)) for c in pycountry.countries]
    return sorted(countries, key=lambda item: item[1])


@cache
def _names() -> dict[str, str]:
    return dict(country_choices()) | BODIES


def is_country(code: str) -> bool:
    return code in _names() and code not in BODIES


def country_name(code: str) -> str:
    return _names().get(code, code)


def flag(code: str) -> str:
    """The flag emoji of an alpha-2 code (EU has one); empty for other bodies."""
    if len(code) != 2 or not code.isalpha():
        return ""
    return "".join(chr(0x1F1E6 + ord(letter) - ord("A")) for letter in code.upper())


@cache
def localized_country_choices(language: str) -> list[tuple[str, str]]:
    """country_choices() named in a language (pycountry ships the ISO 3166 translations)."""
    import gettext

    if language == "en":
        return country_choices()
    translation = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=[language], fallback=True)
    countries = [(code, translation.gettext(name)) for code, name in country_choices()]
    return sorted(countries, key=lambda item: item[1].casefold())


def localized_country_name(code: str, language: str) -> str:
    return dict(localized_country_choices(language)).get(code) or country_name(code)
