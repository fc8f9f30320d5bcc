"""The gettext catalogs (issue 5): every translation keeps its placeholders, Russian is complete,
French, Spanish and German cover every interface string, the template is up to date with the
code, and `make` compiles the catalogs (the .mo files are built, never committed)."""

from __future__ import annotations

import re
import subprocess

import pytest
from babel.messages.pofile import read_po

from tests.support import ROOT

FOLDER = ROOT / "campaign" / "translations"
PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")
INTERFACE = [ROOT / "templates" / "base.html", *sorted((ROOT / "templates" / "public").glob("*.html")),
             ROOT / "templates" / "errors" / "error.html", ROOT / "campaign" / "web" / "forms.py",
             ROOT / "campaign" / "web" / "supporters.py", ROOT / "campaign" / "web" / "public.py"]


def _catalog(language: str):
    with (FOLDER / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=language)


def _ids(message) -> list[str]:
    return list(message.id) if isinstance(message.id, tuple) else [message.id]


def _strings(message) -> list[str]:
    return [s for s in (message.string if isinstance(message.string, tuple) else [message.string]) if s]


@pytest.mark.parametrize("language", ["ru", "fr", "es", "de"])
def test_translations_keep_their_placeholders(language: str) -> None:
    for message in _catalog(language):
        if not message.id:
            continue
        wanted = set(PLACEHOLDER.findall(" ".join(_ids(message))))
        for translated in _strings(message):
            # A plural form may leave the number out ("one" in some languages), never add a name.
            assert set(PLACEHOLDER.findall(translated)) <= wanted, (message.id, translated)
            assert set(PLACEHOLDER.findall(translated)) >= wanted - {"num"}, (message.id, translated)


def test_russian_is_complete() -> None:
    missing = [m.id for m in _catalog("ru") if m.id and not _strings(m)]
    assert missing == []


def _interface_ids() -> set[str]:
    """The singular msgids of the interface: pages, forms and their views."""
    ids: set[str] = set()
    for path in INTERFACE:
        text = path.read_text()
        ids |= set(re.findall(r'(?:\b_|_l|gettext)\(\s*"([^"]+)"', text))
        ids |= set(re.findall(r"(?:\b_|_l|gettext)\(\s*'([^']+)'", text))
    return ids


@pytest.mark.parametrize("language", ["fr", "es", "de"])
def test_interface_languages_cover_every_interface_string(language: str) -> None:
    translated = {m.id for m in _catalog(language) if m.id and _strings(m) and isinstance(m.id, str)}
    translated |= {m.id[0] for m in _catalog(language) if m.id and _strings(m) and isinstance(m.id, tuple)}
    interface = _interface_ids()
    assert len(interface) > 100
    missing = sorted(interface - translated)
    assert missing == [], missing


def test_the_template_is_up_to_date_with_the_code(tmp_path) -> None:
    fresh = tmp_path / "messages.pot"
    subprocess.run([str(ROOT / ".venv/bin/pybabel"), "extract", "-F", str(ROOT / "babel.cfg"), "-k", "_l",
                    "-k", "lazy_gettext", "--no-location", "--omit-header", "-o", str(fresh), str(ROOT)],
                   check=True, capture_output=True, cwd=ROOT)
    with fresh.open("rb") as handle:
        wanted = {m.id for m in read_po(handle) if m.id}
    with (FOLDER / "messages.pot").open("rb") as handle:
        have = {m.id for m in read_po(handle) if m.id}
    ru = {m.id for m in _catalog("ru") if m.id}
    assert wanted == have, "run `make translations` and translate the new entries"
    assert wanted <= ru


def test_make_compiles_the_catalogs_and_git_ignores_them() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pybabel compile" in makefile and "install: $(STAMP) $(MO_FILES)" in makefile
    assert "campaign/translations/*/LC_MESSAGES/*.mo" in (ROOT / ".gitignore").read_text()
    dry = subprocess.run(["make", "-n", "-B", "install"], capture_output=True, text=True, cwd=ROOT, check=True)
    for language in ("ru", "fr", "es", "de"):
        assert f"campaign/translations/{language}/LC_MESSAGES/messages.mo" in dry.stdout
