"""Helpers for the supporter's experience (issue 5): sign, confirm and open manage-my-data."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest

from tests.support import ROOT, confirm, confirm_path, deliver_due, form_token, text_of

MY_DATA_LINK = re.compile(r"http://campaign\.test(/my-data/[A-Za-z0-9._-]+)(\?lang=\w+)?")


@pytest.fixture(scope="session", autouse=True)
def _catalogs() -> None:
    """`make` compiles the gettext catalogs; a bare pytest run compiles what is missing."""
    folder = ROOT / "campaign" / "translations"
    for po in folder.glob("*/LC_MESSAGES/messages.po"):
        mo = po.with_suffix(".mo")
        if not mo.exists() or mo.stat().st_mtime < po.stat().st_mtime:
            subprocess.run([str(ROOT / ".venv/bin/pybabel"), "compile", "-i", str(po), "-o", str(mo)],
                           check=True, capture_output=True)


def sign_in(client: Any, path: str = "/petitions/g20-chechnya", **fields: Any) -> Any:
    """GET a petition page (any language), POST its form as a browser would."""
    page = client.get(path)
    html = page.get_data(as_text=True)
    lang = re.search(r'name="lang" value="(\w+)"', html)
    data = {"name": "Ada Lovelace", "email": "ada@example.com", "country": "DE",
            "form_token": form_token(html), "lang": lang.group(1) if lang else ""}
    for hidden in ("ref", "source"):
        found = re.search(rf'name="{hidden}" type="hidden" value="([^"]*)"', html)
        if found:
            data[hidden] = found.group(1)
    data.update(fields)
    return client.post("/petitions/g20-chechnya/sign", data=data)


def messages_to(mailbox: Any, address: str) -> list[Any]:
    with mailbox.lock:
        return [m for m in mailbox.messages if address.lower() in str(m["To"]).lower()]


def my_data_path(message: Any) -> str:
    match = MY_DATA_LINK.search(text_of(message))
    assert match, "no manage-my-data link in the email"
    return match.group(1)


def sign_and_confirm(app: Any, client: Any, mailbox: Any, email: str, **fields: Any) -> str:
    """Sign, confirm; returns the manage-my-data path from the confirmation email."""
    sign_in(client, email=email, **fields)
    deliver_due(app)
    message = messages_to(mailbox, email)[-1]
    confirm(client, confirm_path(message))
    return my_data_path(message)


def csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)
