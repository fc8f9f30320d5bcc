"""A database dump without the keys names nobody: checked on a real pg_dump."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from campaign.extensions import db
from campaign.services.demo import seed_demo
from tests.support import sign

pytestmark = pytest.mark.integration

SIGNERS = [(f"Secretname{n} Hiddenfamily", f"hidden.person{n}@example.com") for n in range(100)]


def test_pg_dump_holds_no_signer_name_email_postcode_or_comment(make_pg_app, pg_url, mailbox):
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump not installed: apt-get install postgresql-client")
    app = make_pg_app()
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
    client = app.test_client()
    for name, email in SIGNERS:
        assert sign(client, name=name, email=email, postcode="364051",
                    comment="Privatecommentword from Grozny").status_code == 303
    dump = subprocess.run(["pg_dump", "--data-only", pg_url.replace("+psycopg", "")],
                          capture_output=True, timeout=60, check=True).stdout
    assert b"signatures" in dump and len(dump) > 10_000
    hits = [secret for name, email in SIGNERS for secret in (name.split()[0], email.split("@")[0])
            if secret.encode() in dump]
    assert hits == []
    assert b"364051" not in dump
    assert b"Privatecommentword" not in dump
