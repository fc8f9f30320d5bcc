"""Zero-downtime upgrades: the previous release's code still signs, mails and confirms on a database
that the new release's migrations have brought to head (docs/upgrading.md, expand/contract).

"Previous release" is the code just before the newest migration: HEAD while that migration is not
committed yet, else the parent of the commit that added it. While the only migration is the first
one (it came with the first commit, so no earlier code exists), HEAD runs against itself: the same
harness, which then checks every later migration without change.

Checked once with a migration 0002 added uncommitted: a nullable column (expand) passes; the same
column made NOT NULL (backfilled with a server default, then the default dropped, so the upgrade
itself succeeds on the seeded rows) fails: PostgreSQL refuses the old code's INSERT.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask_migrate import upgrade
from sqlalchemy import select

from campaign import create_app
from campaign.extensions import db
from campaign.models import Petition, Signature, SignatureStatus
from campaign.services.counting import signature_count
from campaign.services.demo import DEMO_PETITION_SLUG
from campaign.services.privacy import cipher
from tests.support import ROOT, base_config, confirm_path, env_for

pytestmark = pytest.mark.integration

# Runs inside the old release's checkout, with its own code and its own test helpers (they know
# its pages): sign and deliver, or confirm and read the count.
DRIVER = """
import json, sys
import campaign
from campaign import create_app
from campaign.extensions import db
from tests.support import confirm, deliver_due, sign

app = create_app()
client = app.test_client()
out = {"campaign": campaign.__file__}
if sys.argv[1] == "seed":
    from campaign.services.demo import seed_demo
    with app.app_context():
        seed_demo(db.session)
        db.session.commit()
        db.session.remove()
elif sys.argv[1] == "sign":
    out["status"] = sign(client, name="Previous Release", email="previous.release@example.org").status_code
    out["delivered"] = deliver_due(app)
else:
    out["status"] = confirm(client, sys.argv[2]).status_code
    out["count"] = client.get("/api/v1/petitions/%s" % sys.argv[3]).get_json()["signature_count"]
print("RESULT " + json.dumps(out))
"""


def git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def scripts(root: Path) -> Any:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(root / "migrations"))
    return ScriptDirectory.from_config(config)


def newest_migration() -> Path:
    script = scripts(ROOT)
    heads = script.get_heads()
    assert len(heads) == 1, f"several Alembic heads {heads}: merge them before release"
    revision = script.get_revision(heads[0])
    assert revision is not None and revision.path
    return Path(revision.path).resolve().relative_to(ROOT)


def previous_release() -> tuple[str, str]:
    """The commit whose code is the release before the newest migration, and why."""
    if shutil.which("git") is None or git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("no git history here: the previous release cannot be checked out")
    migration = newest_migration()
    if git("cat-file", "-e", f"HEAD:{migration}").returncode != 0:
        return git("rev-parse", "HEAD").stdout.strip(), f"{migration} is not committed yet: HEAD came before it"
    added = git("log", "-n1", "--diff-filter=A", "--format=%H", "--", str(migration)).stdout.strip()
    if not added:
        pytest.skip(f"git log does not show the commit that added {migration}")
    parent = git("rev-parse", "--verify", "--quiet", f"{added}^")
    if parent.returncode == 0:
        return parent.stdout.strip(), f"{added[:10]} added {migration}: its parent is the previous release"
    if git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        pytest.skip("a shallow clone: `git fetch --unshallow` to check against the previous release")
    return git("rev-parse", "HEAD").stdout.strip(), (
        f"{migration} came with the first commit: there is no earlier code, HEAD runs against itself")


@pytest.fixture
def old_checkout(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    commit, why = previous_release()
    folder = tmp_path / "previous-release"
    added = git("worktree", "add", "--detach", str(folder), commit)
    assert added.returncode == 0, added.stderr
    try:
        yield folder, why
    finally:
        git("worktree", "remove", "--force", str(folder))
        git("worktree", "prune")


def run_old(folder: Path, env: dict[str, str], *args: str) -> dict[str, object]:
    script = folder / "_previous_release_driver.py"
    script.write_text(DRIVER)
    done = subprocess.run([sys.executable, str(script), *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"the previous release failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, object] = json.loads(lines[-1][len("RESULT "):])
    # Its own code ran, not this checkout's (the virtualenv has the project installed editable).
    assert str(result["campaign"]).startswith(str(folder)), result["campaign"]
    return result


def test_previous_release_signs_and_confirms_on_the_new_schema(old_checkout, pg_url, smtp_port, mailbox):
    """As in a deploy: the database at the previous release's head holds its data (the demo,
    seeded by the old code), this release's migrations run on it, and the old code, still serving,
    signs, mails and confirms."""
    folder, why = old_checkout
    (old_head,) = scripts(folder).get_heads()
    config = base_config(pg_url, smtp_port)
    env = env_for(config) | {"PYTHONPATH": str(folder)}
    env.pop("PYTHONSAFEPATH", None)
    new = create_app(config)
    with new.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        upgrade(revision=old_head)
        db.session.remove()
    try:
        run_old(folder, env, "seed")
        with new.app_context():
            upgrade()  # this release's migrations, as `flask db upgrade` runs them before the rollout
            db.session.remove()
        signed = run_old(folder, env, "sign")
        assert signed["status"] == 303, why
        assert signed["delivered"] == {"sent": 1}, why
        assert len(mailbox.messages) == 1
        confirmed = run_old(folder, env, "confirm", confirm_path(mailbox.messages[0]), DEMO_PETITION_SLUG)
        assert confirmed["status"] == 303, why
        assert confirmed["count"] == 1, why

        # And the new release reads what the old one wrote.
        with new.app_context():
            petition_id = db.session.scalar(select(Petition.id).where(Petition.slug == DEMO_PETITION_SLUG))
            assert petition_id is not None
            assert signature_count(db.session, petition_id) == 1
            status, email = db.session.execute(select(Signature.status, Signature.email_encrypted)).one()
            assert status == SignatureStatus.CONFIRMED
            assert cipher().decrypt(email) == "previous.release@example.org"
            db.session.remove()
    finally:
        with new.app_context():
            db.drop_all()
            with db.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
            db.session.remove()
            db.engine.dispose()
