"""Signature exports for organizers: CSV (formula-neutralized) or JSON lines, with chosen
columns, filtered by status, country, date and consent.

Rows are streamed: the query runs with yield_per (a server-side cursor on PostgreSQL) and the
output is produced a chunk at a time, so a 1,000,000-row export starts at once and never holds
the whole set in memory. Larger exports can be prepared as a file by a worker and downloaded
through a signed link that expires (EXPORT_LINK_MAX_AGE). Every export is in the audit log.

Privacy: an email address is exported only for signers who consented to hear from the
organizers (DESIGN, privacy by default); for the others the cell is empty.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import and_, or_, select, update

from campaign.models import (
    Campaign,
    ExportStatus,
    Petition,
    Signature,
    SignatureExport,
    SignatureStatus,
    User,
)
from campaign.models.base import utcnow
from campaign.services.audit import record
from campaign.services.countries import is_country
from campaign.services.csv_safe import neutralize
from campaign.services.organizing import NotFound, OrganizingError, campaign_for
from campaign.services.privacy import cipher
from campaign.services.types import DbSession

# Column name -> heading; the order here is the order in the file.
COLUMNS: dict[str, str] = {
    "id": "Signature id",
    "petition": "Petition",
    "name": "Name",
    "email": "Email",
    "country": "Country",
    "postcode": "Postcode",
    "comment": "Comment",
    "source": "Source",
    "locale": "Language",
    "status": "Status",
    "consent_updates": "Consents to updates",
    "created_at": "Signed at",
    "confirmed_at": "Confirmed at",
}
DEFAULT_COLUMNS = ("id", "petition", "name", "email", "country", "status", "consent_updates", "created_at")
FORMATS = ("csv", "jsonl")
CONSENT = ("any", "yes", "no")
CHUNK = 1000
_LINK_SALT = "campaign.export-download"


class ExportError(OrganizingError):
    """An export request that cannot be run as asked (shown next to the form)."""


@dataclass
class ExportRequest:
    columns: list[str] = field(default_factory=lambda: list(DEFAULT_COLUMNS))
    format: str = "csv"
    petition_id: int | None = None
    statuses: list[str] = field(default_factory=lambda: [SignatureStatus.CONFIRMED.value])
    countries: list[str] = field(default_factory=list)
    since: date | None = None
    until: date | None = None
    consent: str = "any"

    def validate(self) -> None:
        unknown = [c for c in self.columns if c not in COLUMNS]
        if unknown or not self.columns:
            raise ExportError("Choose at least one of the listed columns.", "columns")
        if self.format not in FORMATS:
            raise ExportError("Choose CSV or JSON lines.", "format")
        if any(s not in set(SignatureStatus) for s in self.statuses):
            raise ExportError("Choose listed statuses only.", "statuses")
        if any(not is_country(c) for c in self.countries):
            raise ExportError("Choose listed countries only.", "countries")
        if self.consent not in CONSENT:
            raise ExportError("Choose a listed consent option.", "consent")
        if self.since and self.until and self.since > self.until:
            raise ExportError("The first day is after the last day.", "until")
        # Keep the file's columns in the documented order, whatever order the form sent.
        self.columns = [c for c in COLUMNS if c in set(self.columns)]

    def to_json(self) -> str:
        data = asdict(self)
        data["since"] = self.since.isoformat() if self.since else None
        data["until"] = self.until.isoformat() if self.until else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ExportRequest:
        data = json.loads(text)
        for key in ("since", "until"):
            data[key] = date.fromisoformat(data[key]) if data.get(key) else None
        return cls(**data)

    def describe(self) -> str:
        """For the audit log: what was exported, never who."""
        parts = [
            f"format {self.format}",
            "columns " + ",".join(self.columns),
            "status " + (",".join(self.statuses) or "any"),
            f"consent {self.consent}",
        ]
        if self.petition_id:
            parts.append(f"petition {self.petition_id}")
        if self.countries:
            parts.append("countries " + ",".join(self.countries))
        if self.since or self.until:
            parts.append(f"dates {self.since or '…'} to {self.until or '…'}")
        return "; ".join(parts)


def _petition_ids(session: DbSession, campaign: Campaign, request: ExportRequest) -> list[int]:
    ids = list(session.scalars(select(Petition.id).where(Petition.campaign_id == campaign.id)))
    if request.petition_id is not None:
        if request.petition_id not in ids:
            raise NotFound
        return [request.petition_id]
    return ids


def _query(session: DbSession, campaign: Campaign, request: ExportRequest) -> Any:
    columns: list[Any] = [Signature.id, Signature.petition_id, Signature.consent_updates]
    wanted = set(request.columns)
    extra: dict[str, Any] = {
        "name": Signature.name_encrypted,
        "email": Signature.email_encrypted,
        "postcode": Signature.postcode_encrypted,
        "country": Signature.country,
        "comment": Signature.comment,
        "source": Signature.source,
        "locale": Signature.locale,
        "status": Signature.status,
        "created_at": Signature.created_at,
        "confirmed_at": Signature.confirmed_at,
    }
    columns += [column for name, column in extra.items() if name in wanted]
    query = select(*columns).where(Signature.petition_id.in_(_petition_ids(session, campaign, request)))
    if request.statuses:
        query = query.where(Signature.status.in_(request.statuses))
    if request.countries:
        query = query.where(Signature.country.in_(request.countries))
    if request.since:
        query = query.where(Signature.created_at >= datetime.combine(request.since, time(), tzinfo=_utc()))
    if request.until:
        end = datetime.combine(request.until, time(), tzinfo=_utc()) + timedelta(days=1)
        query = query.where(Signature.created_at < end)
    if request.consent != "any":
        query = query.where(Signature.consent_updates.is_(request.consent == "yes"))
    return query.order_by(Signature.id)


def _utc() -> Any:
    from datetime import UTC

    return UTC


def _decrypt(value: bytes | None) -> str:
    if not value:
        return ""
    try:
        return cipher().decrypt(value)
    except ValueError:
        return ""  # anonymized, or under a key no longer configured


def iter_records(session: DbSession, campaign: Campaign, request: ExportRequest) -> Iterator[list[Any]]:
    """The rows, one list per signature in the order of request.columns, read yield_per."""
    slugs = dict(
        session.execute(select(Petition.id, Petition.slug).where(Petition.campaign_id == campaign.id)).all()
    )
    for row in _rows(session, _query(session, campaign, request)):
        values = row._mapping
        out: list[Any] = []
        for name in request.columns:
            if name == "id":
                out.append(values[Signature.id])
            elif name == "petition":
                out.append(slugs.get(values[Signature.petition_id], ""))
            elif name == "name":
                out.append(_decrypt(values[Signature.name_encrypted]))
            elif name == "email":
                consented = bool(values[Signature.consent_updates])
                out.append(_decrypt(values[Signature.email_encrypted]) if consented else "")
            elif name == "postcode":
                out.append(_decrypt(values[Signature.postcode_encrypted]))
            elif name == "consent_updates":
                out.append(bool(values[Signature.consent_updates]))
            elif name in ("created_at", "confirmed_at"):
                moment = values[getattr(Signature, name)]
                out.append(moment.isoformat() if moment else None)
            else:
                out.append(values[getattr(Signature, name)])
        yield out


def _rows(session: DbSession, query: Any) -> Iterator[Any]:
    """PostgreSQL: one query on a server-side cursor (yield_per). SQLite: pages by id, each in
    its own short transaction, since an open SQLite transaction here holds the write lock and
    would stall signing for as long as the download takes."""
    if session.get_bind().dialect.name != "sqlite":
        yield from session.execute(query.execution_options(yield_per=CHUNK))
        return
    last = 0
    while True:
        page = session.execute(query.where(Signature.id > last).limit(CHUNK)).all()
        session.rollback()
        if not page:
            return
        yield from page
        last = page[-1]._mapping[Signature.id]


def iter_csv(records: Iterator[list[Any]], columns: Sequence[str]) -> Iterator[str]:
    """RFC 4180 text in chunks: a byte order mark and the header first, every cell neutralized."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, dialect="excel", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow([COLUMNS[c] for c in columns])
    yield "\ufeff" + buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    pending = 0
    for values in records:
        writer.writerow([neutralize(v) for v in values])
        pending += 1
        if pending == CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending:
        yield buffer.getvalue()


def iter_jsonl(records: Iterator[list[Any]], columns: Sequence[str]) -> Iterator[str]:
    """One JSON object per line. Not for spreadsheets, so values are left as they are."""
    lines: list[str] = []
    for values in records:
        lines.append(json.dumps(dict(zip(columns, values, strict=True)), ensure_ascii=False))
        if len(lines) == CHUNK:
            yield "\n".join(lines) + "\n"
            lines = []
    if lines:
        yield "\n".join(lines) + "\n"


def stream(session: DbSession, campaign: Campaign, request: ExportRequest) -> Iterator[str]:
    records = iter_records(session, campaign, request)
    if request.format == "jsonl":
        return iter_jsonl(records, request.columns)
    return iter_csv(records, request.columns)


def filename_for(campaign: Campaign, request: ExportRequest) -> str:
    stamp = utcnow().strftime("%Y%m%d-%H%M")
    return f"{campaign.slug}-signatures-{stamp}.{'jsonl' if request.format == 'jsonl' else 'csv'}"


def start_export(session: DbSession, actor: User, campaign_id: int, request: ExportRequest) -> Campaign:
    """Check the actor and the request and write the audit event for a streamed export.
    The caller commits, then streams `stream(...)`. Raises NotFound or ExportError."""
    campaign = campaign_for(session, actor, campaign_id)
    request.validate()
    _petition_ids(session, campaign, request)
    record(
        session,
        actor,
        "signatures.export",
        campaign_id=campaign.id,
        object_type="campaign",
        object_id=campaign.id,
        summary="streamed: " + request.describe(),
    )
    return campaign


def queue_export(
    session: DbSession, actor: User, campaign_id: int, request: ExportRequest
) -> SignatureExport:
    """An export to be prepared by a worker (exports.run): a row, and its audit event. The caller
    commits and publishes the task."""
    campaign = campaign_for(session, actor, campaign_id)
    request.validate()
    _petition_ids(session, campaign, request)
    job = SignatureExport(campaign_id=campaign.id, created_by_id=actor.id, request=request.to_json())
    session.add(job)
    session.flush()
    record(
        session,
        actor,
        "signatures.export",
        campaign_id=campaign.id,
        object_type="export",
        object_id=job.id,
        summary="as a file: " + request.describe(),
    )
    return job


def export_for(session: DbSession, actor: User, export_id: int) -> tuple[SignatureExport, Campaign]:
    job = session.get(SignatureExport, export_id)
    if job is None:
        raise NotFound
    return job, campaign_for(session, actor, job.campaign_id)


def export_folder() -> Path:
    folder = Path(current_app.config["EXPORT_DIR"])
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def run_export(session: DbSession, export_id: int) -> str:
    """Write the export's file (worker side). Idempotent: only a queued export is taken, with a
    conditional UPDATE that also sets a lease (EXPORT_LEASE_SECONDS), so a task delivered twice
    writes one file; the reach job takes back an export whose lease ran out
    (take_back_abandoned_exports). Returns skipped, done or superseded (a later attempt took the
    export over while this one ran). Commits."""
    lease = utcnow() + timedelta(seconds=int(current_app.config["EXPORT_LEASE_SECONDS"]))
    taken = session.execute(
        update(SignatureExport)
        .where(SignatureExport.id == export_id, SignatureExport.status == ExportStatus.QUEUED)
        .values(status=ExportStatus.RUNNING, attempts=SignatureExport.attempts + 1, lease_until=lease)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return "skipped"
    job = session.get(SignatureExport, export_id, populate_existing=True)
    assert job is not None
    # The attempt number fences every outcome this run writes: a worker that outlived its lease
    # must not overwrite the attempt that took over from it.
    ours = and_(SignatureExport.id == export_id, SignatureExport.status == ExportStatus.RUNNING,
                SignatureExport.attempts == job.attempts)
    campaign = session.get(Campaign, job.campaign_id)
    assert campaign is not None
    request = ExportRequest.from_json(job.request)
    # Whatever an earlier attempt left (a .part, or a whole file it never recorded) is an orphan
    # now: no second file for one export.
    _remove_files(export_id)
    name = f"{job.id}-{secrets.token_hex(8)}.{'jsonl' if request.format == 'jsonl' else 'csv'}"
    path = export_folder() / name
    # Written under a temporary name and renamed when complete, so a file with the final name is
    # never half written.
    partial = path.with_suffix(".part")
    rows = 0
    try:
        records = iter_records(session, campaign, request)

        def counted() -> Iterator[list[Any]]:
            nonlocal rows
            for values in records:
                rows += 1
                yield values

        chunks = (
            iter_jsonl(counted(), request.columns)
            if request.format == "jsonl"
            else iter_csv(counted(), request.columns)
        )
        crash = current_app.config.get("CRASH_POINT") == "export_writing"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            for chunk in chunks:
                handle.write(chunk)
                if crash:  # fault tests: the worker dies with the file half written
                    handle.flush()
                    os._exit(70)
        partial.replace(path)
    except Exception as error:
        session.rollback()
        partial.unlink(missing_ok=True)
        failed = session.execute(
            update(SignatureExport)
            .where(ours)
            .values(status=ExportStatus.FAILED, error=type(error).__name__, finished_at=utcnow(),
                    lease_until=None)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if failed.rowcount != 1:  # type: ignore[attr-defined]
            # Taken over (and its files cleared) by a later attempt: this run's error is moot.
            return "superseded"
        raise
    now = utcnow()
    recorded = session.execute(
        update(SignatureExport)
        .where(ours)
        .values(
            status=ExportStatus.DONE,
            rows=rows,
            filename=name,
            finished_at=now,
            lease_until=None,
            expires_at=now + timedelta(seconds=int(current_app.config["EXPORT_LINK_MAX_AGE"])),
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if recorded.rowcount != 1:  # type: ignore[attr-defined]
        path.unlink(missing_ok=True)
        return "superseded"
    return "done"


ABANDONED = "the worker preparing it stopped on every attempt"


def take_back_abandoned_exports(session: DbSession) -> tuple[int, int]:
    """Running exports whose lease ran out (their worker died: SIGKILL, out of memory, a deploy):
    queued again while attempts remain (waiting_exports then publishes them), otherwise marked
    failed with a reason the export's page shows. Returns (queued again, failed). Commits."""
    now = utcnow()
    limit = int(current_app.config["EXPORT_MAX_ATTEMPTS"])
    abandoned = and_(SignatureExport.status == ExportStatus.RUNNING, SignatureExport.lease_until < now)
    queued = session.execute(
        update(SignatureExport)
        .where(abandoned, SignatureExport.attempts < limit)
        .values(status=ExportStatus.QUEUED, lease_until=None)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    failed = list(
        session.scalars(
            update(SignatureExport)
            .where(abandoned, SignatureExport.attempts >= limit)
            .values(status=ExportStatus.FAILED, lease_until=None, error=ABANDONED, finished_at=now)
            .returning(SignatureExport.id)
            .execution_options(synchronize_session=False)
        )
    )
    session.commit()
    for export_id in failed:
        _remove_files(export_id)
    return int(queued), len(failed)


def _remove_files(export_id: int) -> None:
    for leftover in export_folder().glob(f"{export_id}-*"):
        leftover.unlink(missing_ok=True)


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=_LINK_SALT)


def download_token(job: SignatureExport) -> str:
    return _serializer().dumps({"e": job.id, "f": job.filename})


def file_for_download(session: DbSession, actor: User, export_id: int, token: str) -> tuple[Path, str]:
    """The file behind a signed link, for a signed-in organizer of its campaign. The link must be
    this export's, unexpired. Raises NotFound (also for a bad or expired link) and records the
    download in the audit log."""
    job, campaign = export_for(session, actor, export_id)
    try:
        data = _serializer().loads(token, max_age=int(current_app.config["EXPORT_LINK_MAX_AGE"]))
    except (SignatureExpired, BadSignature):
        raise NotFound from None
    if not isinstance(data, dict) or data.get("e") != job.id or data.get("f") != job.filename:
        raise NotFound
    if job.status != ExportStatus.DONE or not job.filename or (job.expires_at and job.expires_at <= utcnow()):
        raise NotFound
    path = export_folder() / job.filename
    if not path.is_file():
        raise NotFound
    record(
        session,
        actor,
        "signatures.export_download",
        campaign_id=campaign.id,
        object_type="export",
        object_id=job.id,
        summary=f"{job.rows} rows",
    )
    request = ExportRequest.from_json(job.request)
    return path, filename_for(campaign, request)


def waiting_exports(session: DbSession, older_than: float = 60.0) -> list[int]:
    """Exports still queued a while after they were asked for: their task was never published
    (broker down) or was lost; and exports queued again after their worker died, at once.
    Publishing again is safe (run_export takes a row once)."""
    since = utcnow() - timedelta(seconds=older_than)
    ids = list(
        session.scalars(
            select(SignatureExport.id)
            .where(
                SignatureExport.status == ExportStatus.QUEUED,
                # A taken-back export has no task on its way: nothing to wait for.
                or_(SignatureExport.created_at < since, SignatureExport.attempts > 0),
            )
            .order_by(SignatureExport.id)
            .limit(100)
        )
    )
    session.rollback()
    return ids


def delete_expired_exports(session: DbSession) -> int:
    """Delete the files whose links expired (the rows stay, for the record). Commits."""
    jobs = session.scalars(
        select(SignatureExport).where(
            SignatureExport.status == ExportStatus.DONE,
            SignatureExport.filename.is_not(None),
            SignatureExport.expires_at <= utcnow(),
        )
    ).all()
    for job in jobs:
        if job.filename:
            (Path(current_app.config["EXPORT_DIR"]) / job.filename).unlink(missing_ok=True)
        job.filename = None
    session.commit()
    return len(jobs)
