"""Background exports whose worker dies: the reach job takes back an export whose lease ran out,
queues it again (it then completes, one file) or, after EXPORT_MAX_ATTEMPTS, marks it failed
with the reason on its page. A live lease is left alone. SQLite and PostgreSQL.

A worker's death is played in-process by an exception that run_export does not catch (a
BaseException, like the SystemExit of a stopped process): the row stays running under its lease
and the half-written .part stays on disk, as after a SIGKILL. test_integration_export_kill.py
does it with a real worker process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import update

from campaign.extensions import db
from campaign.models import ExportStatus, SignatureExport
from campaign.models.base import utcnow
from campaign.services import exports
from campaign.services.csv_safe import read_rows
from campaign.services.exports import (
    ABANDONED,
    ExportRequest,
    run_export,
    take_back_abandoned_exports,
    waiting_exports,
)
from tests.organize.conftest import FAST_HASHING
from tests.reach.conftest import World, add_signers, make_world, signed_in


class WorkerDied(BaseException):
    """Not an Exception: run_export must not get to record anything, as after a SIGKILL."""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def world(request: pytest.FixtureRequest, make_app: Callable[..., Flask], tmp_path: Path) -> World:
    factory = request.getfixturevalue("make_pg_app") if request.param == "postgresql" else make_app
    return make_world(factory(EXPORT_DIR=str(tmp_path / "exports"), **FAST_HASHING))


def _queue(world: World) -> int:
    with world.app.app_context():
        # Asked for just now: waiting_exports still publishes it at once once it is taken back.
        job = SignatureExport(campaign_id=world.campaign_id, request=ExportRequest().to_json())
        db.session.add(job)
        db.session.commit()
        return job.id


def _die_while_writing(world: World, export_id: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_export, killed after the header reached the .part file."""
    real = exports.iter_csv

    def dying(records: Iterator[list[Any]], columns: Any) -> Iterator[str]:
        chunks = real(records, columns)
        yield next(chunks)
        raise WorkerDied

    monkeypatch.setattr(exports, "iter_csv", dying)
    with world.app.app_context():
        with pytest.raises(WorkerDied):
            run_export(db.session, export_id)
        db.session.remove()
    monkeypatch.setattr(exports, "iter_csv", real)


def _expire_lease(world: World, export_id: int) -> None:
    with world.app.app_context():
        db.session.execute(update(SignatureExport).where(SignatureExport.id == export_id)
                           .values(lease_until=utcnow() - timedelta(seconds=1)))
        db.session.commit()


def _job(world: World, export_id: int) -> SignatureExport:
    with world.app.app_context():
        job = db.session.get(SignatureExport, export_id)
        assert job is not None
        db.session.expunge(job)
        return job


def _files(world: World, export_id: int) -> list[str]:
    return sorted(p.name for p in Path(world.app.config["EXPORT_DIR"]).glob(f"{export_id}-*"))


def test_an_export_whose_worker_died_is_taken_back_and_written_once(world, monkeypatch):
    add_signers(world.app, world.petition_id, 25)
    dead, alive = _queue(world), _queue(world)
    _die_while_writing(world, dead, monkeypatch)
    _die_while_writing(world, alive, monkeypatch)
    assert [p.endswith(".part") for p in _files(world, dead)] == [True]
    assert _job(world, dead).status == ExportStatus.RUNNING
    # The dead worker had also finished a file it never got to record.
    Path(world.app.config["EXPORT_DIR"], f"{dead}-0123456789abcdef.csv").write_text("stale")
    _expire_lease(world, dead)
    lease_of_alive = _job(world, alive).lease_until
    assert lease_of_alive is not None and lease_of_alive > utcnow()

    with world.app.app_context():
        assert take_back_abandoned_exports(db.session) == (1, 0)
        assert waiting_exports(db.session) == [dead]
        # A task delivered again while the lease holds (acks_late after a kill) does nothing.
        assert run_export(db.session, alive) == "skipped"
        assert run_export(db.session, dead) == "done"
        assert take_back_abandoned_exports(db.session) == (0, 0)
        db.session.remove()

    job = _job(world, dead)
    assert (job.status, job.rows, job.attempts, job.lease_until) == (ExportStatus.DONE, 25, 2, None)
    assert _files(world, dead) == [job.filename]  # no second file, no .part
    text = Path(world.app.config["EXPORT_DIR"], job.filename).read_text(encoding="utf-8")
    assert len(read_rows(text)) == 26
    # The export with a live lease is left alone, its .part with it.
    still = _job(world, alive)
    assert (still.status, still.attempts, still.lease_until) == (ExportStatus.RUNNING, 1, lease_of_alive)
    assert len(_files(world, alive)) == 1
    page = signed_in(world.app).get(f"/organize/exports/{dead}").get_data(as_text=True)
    assert "Download</a>" in page


def test_an_export_whose_worker_dies_every_time_fails_with_the_reason_on_its_page(world, monkeypatch):
    world.app.config["EXPORT_MAX_ATTEMPTS"] = 2
    add_signers(world.app, world.petition_id, 5)
    export_id = _queue(world)
    client = signed_in(world.app)
    for attempt in (1, 2):
        _die_while_writing(world, export_id, monkeypatch)
        _expire_lease(world, export_id)
        with world.app.app_context():
            assert take_back_abandoned_exports(db.session) == ((1, 0) if attempt == 1 else (0, 1))
            db.session.remove()
        if attempt == 1:
            assert _job(world, export_id).status == ExportStatus.QUEUED
            page = client.get(f"/organize/exports/{export_id}").get_data(as_text=True)
            assert "Being prepared again: the worker preparing it stopped." in page

    job = _job(world, export_id)
    assert (job.status, job.error, job.attempts, job.lease_until) == (ExportStatus.FAILED, ABANDONED, 2, None)
    assert job.finished_at is not None
    assert _files(world, export_id) == []  # the half-written file is gone too
    with world.app.app_context():
        assert waiting_exports(db.session) == []
        assert run_export(db.session, export_id) == "skipped"
    page = client.get(f"/organize/exports/{export_id}").get_data(as_text=True)
    assert f"The export failed ({ABANDONED})." in page
    listing = client.get(f"/organize/campaigns/{world.campaign_id}/export").get_data(as_text=True)
    assert "<td>failed</td>" in listing


def test_a_worker_that_outlived_its_lease_does_not_overwrite_the_attempt_that_took_over(world, monkeypatch):
    add_signers(world.app, world.petition_id, 5)
    export_id = _queue(world)
    real = exports.iter_csv
    outcome: list[str] = []
    stalled = []

    def slow(records: Iterator[list[Any]], columns: Any) -> Iterator[str]:
        # Read everything first (on SQLite that ends the read transaction, which would hold the
        # write lock the other worker needs).
        chunks = iter(list(real(records, columns)))
        yield next(chunks)
        if not stalled:  # the first run stalls here past its lease; another worker takes over
            stalled.append(True)
            _expire_lease(world, export_id)
            with world.app.app_context():  # an app context of its own: another session
                assert take_back_abandoned_exports(db.session) == (1, 0)
                outcome.append(run_export(db.session, export_id))
                db.session.remove()
        yield from chunks

    monkeypatch.setattr(exports, "iter_csv", slow)
    with world.app.app_context():
        assert run_export(db.session, export_id) == "superseded"
        db.session.remove()
    assert outcome == ["done"]
    job = _job(world, export_id)
    assert (job.status, job.attempts, job.rows) == (ExportStatus.DONE, 2, 5)
    assert _files(world, export_id) == [job.filename]
