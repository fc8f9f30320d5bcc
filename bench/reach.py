"""Organizer reach at size (issue 7): exports and the dashboard at a million signatures, and
supporter update mail into an SMTP sink, each beside the limit of the layer below it.

1. Fills a fresh PostgreSQL database with --rows signatures of one petition (INSERT ... SELECT
   over generate_series; 95 % confirmed, 20 countries, 10 sources, spread over 30 days, a real
   Fernet ciphertext reused for name and email: decrypting it costs what any row costs).
2. CSV export: campaign.services.exports (server-side cursor, decrypt name and email, neutralize,
   CSV) of the confirmed signatures, default columns, in a child process that reports rows/s and
   its peak RSS; beside PostgreSQL's `COPY (SELECT the same columns) TO STDOUT` of the same rows
   (the ciphertexts, undecrypted), as a ratio.
3. Dashboard: GET of the petition and the campaign dashboard pages (signed in, test client in
   this process), median of --repeat, and the aggregate service alone.
4. Mail: --mail consenting signers of a second petition, --suppressed of them on the suppression
   list; a supporter update sent by `celery -A worker worker -B` (bulk queue) into the SMTP sink
   (its own process). Checks exactly mail - suppressed arrive, each once (the issue's 5,000 / 100
   test); reports messages/s beside a bare smtplib loop sending the same number of messages of
   the same size over one connection into the same sink.

JSON goes to bench/results/reach-*.json. Needs PostgreSQL and Redis on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import smtplib
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    Sink,
    app_environment,
    flask_command,
    flush_redis,
    free_port,
    fresh_database,
    log,
    start_celery,
    versions,
    workdir,
    write_results,
)

COUNTRIES = [
    "DE",
    "FR",
    "GB",
    "US",
    "BR",
    "IN",
    "ZA",
    "RU",
    "TR",
    "IT",
    "ES",
    "PL",
    "NL",
    "SE",
    "MX",
    "AR",
    "JP",
    "KR",
    "CA",
    "AU",
]
APP_KEYS = (
    "CAMPAIGN_ENV",
    "SECRET_KEY",
    "SIGNER_DATA_KEYS",
    "BLIND_INDEX_KEY",
    "BASE_URL",
    "DATABASE_URL",
    "REDIS_URL",
    "MAIL_SERVER",
    "MAIL_PORT",
    "MAIL_DEFAULT_SENDER",
    "REACH_BATCH_SIZE",
    "EXPORT_DIR",
    "PASSWORD_HASH_MEMORY_KIB",
    "PASSWORD_HASH_TIME_COST",
    "PASSWORD_HASH_PARALLELISM",
)
PASSWORD = "bench organizer password"  # noqa: S105 - a throwaway account in a throwaway database
FAST_HASHING = {
    "PASSWORD_HASH_MEMORY_KIB": "19456",
    "PASSWORD_HASH_TIME_COST": "2",
    "PASSWORD_HASH_PARALLELISM": "1",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="signatures to export (default 1000000)")
    parser.add_argument("--mail", type=int, default=5000, help="consenting signers to mail (default 5000)")
    parser.add_argument("--suppressed", type=int, default=100, help="of them suppressed (default 100)")
    parser.add_argument("--repeat", type=int, default=5, help="dashboard page loads to time (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (default 2)")
    parser.add_argument(
        "--parts",
        default="export,dashboard,mail",
        help="what to measure, comma-separated (default export,dashboard,mail)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--export-child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _app(env: dict[str, str]) -> Any:
    from campaign import create_app

    return create_app({key: env[key] for key in APP_KEYS if key in env})


def setup(env: dict[str, str], rows: int) -> dict[str, Any]:
    """A campaign with an owner, petition A (rows signatures) and petition B (for mail)."""
    import psycopg
    from cryptography.fernet import Fernet

    from campaign.extensions import db
    from campaign.models import Campaign, MemberRole, Membership, Petition, PetitionStatus, User, UserStatus
    from campaign.models.base import utcnow
    from campaign.services.accounts import hash_password, new_session_token
    from campaign.services.petitions import create_counter_shards

    app = _app(env)
    with app.app_context():
        campaign = Campaign(
            slug="bench-reach",
            name="Bench reach",
            organization="Bench Coalition",
            sender_name="Bench Coalition",
        )
        db.session.add(campaign)
        db.session.flush()
        ids = []
        for slug in ("bench-export", "bench-mail"):
            petition = Petition(
                campaign_id=campaign.id,
                slug=slug,
                title=f"Petition {slug}",
                summary="s",
                body_markdown="b",
                body_html="<p>b</p>",
                status=PetitionStatus.PUBLISHED,
                published_at=utcnow(),
            )
            db.session.add(petition)
            db.session.flush()
            create_counter_shards(db.session, petition)
            ids.append(petition.id)
        user = User(
            email="owner@bench.example.org",
            name="Bench Owner",
            password_hash=hash_password(PASSWORD),
            session_token=new_session_token(),
            status=UserStatus.ACTIVE,
        )
        db.session.add(user)
        db.session.flush()
        db.session.add(Membership(campaign_id=campaign.id, user_id=user.id, role=MemberRole.OWNER))
        db.session.commit()
        info = {
            "campaign_id": campaign.id,
            "export_petition": ids[0],
            "mail_petition": ids[1],
            "user_id": user.id,
        }
        db.session.remove()
        db.engine.dispose()
    fernet = Fernet(env["SIGNER_DATA_KEYS"].split(",")[0].encode())
    name, email = fernet.encrypt(b"Bench Signer"), fernet.encrypt(b"bench@bench.example.org")
    started = time.perf_counter()
    countries = "ARRAY[" + ",".join(f"'{c}'" for c in COUNTRIES) + "]"
    with psycopg.connect(env["DATABASE_URL"].replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO signatures (petition_id, name_encrypted, email_encrypted, email_index, country, "
            "comment, consent_updates, source, locale, status, created_at, confirmed_at) "
            f"SELECT %s, %s, %s, lpad(to_hex(g), 64, '0'), ({countries})[1 + g %% 20], '', g %% 2 = 0, "
            "'src' || (g %% 10), 'en', CASE WHEN g %% 20 = 0 THEN 'pending' ELSE 'confirmed' END, "
            "now() - make_interval(secs => (g %% 2592000)), now() "
            "FROM generate_series(1, %s) AS g",
            (info["export_petition"], name, email, rows),
        )
        conn.execute("VACUUM ANALYZE signatures")
        conn.execute("CHECKPOINT")
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('signatures'))").fetchone()[0]  # type: ignore[index]
    info.update({"rows": rows, "fill_seconds": round(time.perf_counter() - started, 1), "table_size": size})
    return info


# --- export --------------------------------------------------------------------------------------


def export_child(env_json: str) -> None:
    """Runs in a fresh process: stream the export to nowhere, print rows, seconds and peak RSS."""
    params = json.loads(env_json)
    from campaign.extensions import db
    from campaign.models import Campaign
    from campaign.services.exports import ExportRequest, iter_csv, iter_records

    app = _app(params["env"])
    with app.app_context():
        campaign = db.session.get(Campaign, params["campaign_id"])
        assert campaign is not None
        request = ExportRequest(petition_id=params["petition_id"])
        request.validate()
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows = 0
        written = 0
        started = time.perf_counter()
        first_byte = None

        def counted() -> Any:
            nonlocal rows, first_byte
            for record in iter_records(db.session, campaign, request):
                rows += 1
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                yield record

        for chunk in iter_csv(counted(), request.columns):
            written += len(chunk.encode())
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": seconds,
                "bytes": written,
                "first_row_s": first_byte,
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_before_mib": base_rss / 1024,
            }
        )
    )


def measure_export(env: dict[str, str], info: dict[str, Any]) -> dict[str, Any]:
    params = {"env": env, "campaign_id": info["campaign_id"], "petition_id": info["export_petition"]}
    result = subprocess.run(
        [sys.executable, __file__, "--export-child", json.dumps(params)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    ours = json.loads(result.stdout.strip().splitlines()[-1])
    ours["rows_per_s"] = round(ours["rows"] / ours["seconds"])
    log(
        f"export (service, CSV)   {ours['rows']:,} rows in {ours['seconds']:.1f} s = "
        f"{ours['rows_per_s']:,} rows/s, "
        f"first row after {ours['first_row_s']:.2f} s, peak RSS {ours['peak_rss_mib']:.0f} MiB "
        f"({ours['rss_before_mib']:.0f} MiB before the export)"
    )

    import psycopg

    sql = (
        "COPY (SELECT id, petition_id, name_encrypted, email_encrypted, country, status, consent_updates, "
        f"created_at FROM signatures WHERE petition_id = {int(info['export_petition'])} "
        "AND status = 'confirmed' ORDER BY id) TO STDOUT WITH (FORMAT csv)"
    )
    with psycopg.connect(env["DATABASE_URL"].replace("+psycopg", ""), autocommit=True) as conn:
        started = time.perf_counter()
        written = 0
        with conn.cursor() as cursor, cursor.copy(sql) as copy:
            for data in copy:
                written += len(data)
        copy_seconds = time.perf_counter() - started
    copy_rows = ours["rows"]
    baseline = {
        "rows": copy_rows,
        "seconds": round(copy_seconds, 2),
        "bytes": written,
        "rows_per_s": round(copy_rows / copy_seconds),
    }
    log(
        f"COPY ... TO STDOUT       {copy_rows:,} rows in {copy_seconds:.1f} s = "
        f"{baseline['rows_per_s']:,} rows/s"
    )
    ratio = round(ours["rows_per_s"] / baseline["rows_per_s"], 3)
    log(f"export / COPY            {ratio:.3f}")
    return {"service": ours, "copy_to_stdout": baseline, "ratio_service_to_copy": ratio}


# --- dashboard -----------------------------------------------------------------------------------


def measure_dashboard(env: dict[str, str], info: dict[str, Any], repeat: int) -> dict[str, Any]:
    from campaign.extensions import db
    from campaign.services.dashboard import build_dashboard

    # Testing mode only so the test client's plain-HTTP session cookie is kept (production's is
    # __Host- and Secure); the pages and queries are the same.
    app = _app(env | {"CAMPAIGN_ENV": "testing"})
    app.config["RATELIMIT_ENABLED"] = False
    app.config["DASHBOARD_CACHE_SECONDS"] = 0  # every load counts again (cold figures)
    client = app.test_client()
    page = client.get("/account/login").get_data(as_text=True)
    match = re.search(r'name="(?:[a-z]+-)?csrf_token" (?:type="hidden" )?value="([^"]+)"', page)
    assert match, "no CSRF token on the sign-in page"
    token = match.group(1)
    response = client.post(
        "/account/login", data={"email": "owner@bench.example.org", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302, response.status_code
    out: dict[str, Any] = {}
    for label, path in (
        ("petition_day", f"/organize/petitions/{info['export_petition']}/dashboard"),
        ("petition_hour", f"/organize/petitions/{info['export_petition']}/dashboard?by=hour"),
        ("campaign_day", f"/organize/campaigns/{info['campaign_id']}/dashboard"),
    ):
        client.get(path)  # warm
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
        out[label] = {"median_ms": round(statistics.median(times) * 1000), "max_ms": round(max(times) * 1000)}
        log(f"dashboard {label:14s} median {out[label]['median_ms']} ms (max {out[label]['max_ms']} ms)")
    app.config["DASHBOARD_CACHE_SECONDS"] = 30
    path = f"/organize/petitions/{info['export_petition']}/dashboard"
    client.get(path)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        client.get(path)
        times.append(time.perf_counter() - started)
    out["petition_day_cached"] = {"median_ms": round(statistics.median(times) * 1000, 1)}
    log(f"dashboard petition_day, cached: median {out['petition_day_cached']['median_ms']} ms")
    with app.app_context():
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            board = build_dashboard(db.session, [info["export_petition"]])
            times.append(time.perf_counter() - started)
        out["service_only_median_ms"] = round(statistics.median(times) * 1000)
        out["confirmed"] = board.confirmed
        db.session.remove()
        db.engine.dispose()
    return out


# --- mail ----------------------------------------------------------------------------------------


def add_mail_signers(env: dict[str, str], info: dict[str, Any], count: int, suppressed: int) -> list[str]:
    from sqlalchemy import insert

    from campaign.extensions import db
    from campaign.models import Signature, Suppression
    from campaign.models.base import utcnow
    from campaign.services.emails import canonical_email
    from campaign.services.privacy import cipher

    app = _app(env)
    addresses = [f"supporter{n}@bench.example.net" for n in range(count)]
    with app.app_context():
        crypt = cipher()
        now = utcnow()
        rows = [
            {
                "petition_id": info["mail_petition"],
                "name_encrypted": crypt.encrypt(f"Supporter{n} Bench"),
                "email_encrypted": crypt.encrypt(a),
                "email_index": crypt.blind_index(canonical_email(a)),
                "country": "DE",
                "comment": "",
                "consent_updates": True,
                "source": "",
                "locale": "en",
                "status": "confirmed",
                "created_at": now,
                "confirmed_at": now,
            }
            for n, a in enumerate(addresses)
        ]
        for start in range(0, len(rows), 2000):
            db.session.execute(insert(Signature), rows[start : start + 2000])
        step = max(count // max(suppressed, 1), 1)
        chosen = addresses[::step][:suppressed]
        db.session.execute(
            insert(Suppression),
            [
                {
                    "email_index": crypt.blind_index(canonical_email(a)),
                    "reason": "unsubscribe",
                    "campaign_id": info["campaign_id"],
                }
                for a in chosen
            ],
        )
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return chosen


def measure_mail(
    env: dict[str, str], info: dict[str, Any], args: argparse.Namespace, work: Path, sink: Sink
) -> dict[str, Any]:
    from campaign.extensions import db
    from campaign.models import SupporterUpdate, User
    from campaign.services.updates import UpdateInput, create_update, progress, schedule_update

    suppressed = add_mail_signers(env, info, args.mail, args.suppressed)
    expected = args.mail - len(suppressed)
    flush_redis()
    worker = start_celery(env, args.workers, work, beat=True, queues="bulk,maintenance", name="reach-worker")
    app = _app(env)
    try:
        before = sink.count
        with app.app_context():
            actor = db.session.get(User, info["user_id"])
            row = create_update(
                db.session,
                actor,
                info["campaign_id"],
                UpdateInput(
                    subject="We delivered it",
                    petition_id=info["mail_petition"],
                    body_markdown="Hello {{ first_name }},\n\nWe delivered **{{ petition_title }}**: "
                    "[see it]({{ petition_link }}).",
                ),
            )
            schedule_update(db.session, actor, row.id, None)
            db.session.commit()
            update_id = row.id
            started = time.perf_counter()
            app.extensions["celery"].send_task("reach.run", queue="maintenance")
            while True:
                db.session.remove()
                status = db.session.get(SupporterUpdate, update_id).status  # type: ignore[union-attr]
                if status in ("sent", "cancelled") or time.perf_counter() - started > 3600:
                    break
                time.sleep(0.25)
            seconds = time.perf_counter() - started
            counts = progress(db.session, update_id)
            db.session.remove()
        time.sleep(1)
        arrived = sink.count - before
        with sink.lock:
            distinct = sum(1 for a in sink.arrivals if a.startswith("supporter"))
        exact = arrived == expected and distinct == expected and counts["sent"] == expected
        ours = {
            "recipients": args.mail,
            "suppressed": len(suppressed),
            "expected": expected,
            "arrived": arrived,
            "distinct_recipients": distinct,
            "exactly_once": exact,
            "seconds": round(seconds, 2),
            "messages_per_s": round(expected / seconds, 1),
            "counts": counts,
            "worker_processes": args.workers,
            "batch_size": int(env["REACH_BATCH_SIZE"]),
        }
        log(
            f"update mail             {arrived:,} arrived ({distinct:,} distinct, {expected:,} expected: "
            f"{'exact' if exact else 'NOT EXACT'}) in {seconds:.1f} s = {ours['messages_per_s']} messages/s"
        )
    finally:
        worker.stop()

    # The limit: one smtplib connection sending the same number of messages of the same size.
    sample = _sample_message(env, info)
    started = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as smtp:
        for n in range(expected):
            smtp.sendmail("no-reply@campaign.bench", [f"bare{n}@bench.example.org"], sample)
    bare_seconds = time.perf_counter() - started
    bare = {
        "messages": expected,
        "seconds": round(bare_seconds, 2),
        "messages_per_s": round(expected / bare_seconds, 1),
        "message_bytes": len(sample),
    }
    log(f"bare smtplib loop       {expected:,} in {bare_seconds:.1f} s = {bare['messages_per_s']} messages/s")
    ratio = round(ours["messages_per_s"] / bare["messages_per_s"], 3)
    log(f"update mail / bare      {ratio:.3f}")
    return {"update": ours, "bare_smtplib": bare, "ratio_update_to_bare": ratio}


def _sample_message(env: dict[str, str], info: dict[str, Any]) -> bytes:
    from campaign.extensions import db
    from campaign.mail.messages import build_message
    from campaign.models import Campaign
    from campaign.services.updates import Compiled, _draft

    app = _app(env)
    with app.app_context(), app.test_request_context():
        campaign = db.session.get(Campaign, info["campaign_id"])
        assert campaign is not None
        compiled = Compiled(
            "We delivered it",
            "Hello {{ first_name }},\n\nWe delivered **{{ petition_title }}**: "
            "[see it]({{ petition_link }}).",
        )
        values = {
            "first_name": "Supporter1",
            "petition_title": "Petition bench-mail",
            "petition_link": env["BASE_URL"] + "/petitions/bench-mail",
            "unsubscribe_link": env["BASE_URL"],
        }
        draft = _draft(
            campaign,
            compiled.render(values),
            "bare@bench.example.org",
            env["BASE_URL"] + "/unsubscribe/x",
            "<bare@campaign.bench>",
        )
        data = build_message(draft, env["MAIL_DEFAULT_SENDER"]).as_bytes()
        db.session.remove()
        db.engine.dispose()
    return bytes(data)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.export_child:
        export_child(args.export_child)
        return 0
    results: dict[str, Any] = {
        "conditions": {
            "rows": args.rows,
            "mail": args.mail,
            "suppressed": args.suppressed,
            "celery_worker_processes": args.workers,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "versions": versions(),
    }
    sink = Sink()
    try:
        with workdir(args.keep) as work, fresh_database("reach", keep=args.keep) as url:
            env = app_environment(
                url,
                free_port(),
                sink.port,
                REACH_BATCH_SIZE="200",
                REACH_INTERVAL="1",
                EXPORT_DIR=str(work / "exports"),
                **FAST_HASHING,
                OUTBOX_SWEEP_INTERVAL="60",
                DELIVERIES_INTERVAL="600",
            )
            flask_command(env, "db", "upgrade")
            log(f"filling {args.rows:,} signatures ...")
            info = setup(env, args.rows)
            log(f"filled in {info['fill_seconds']} s; signatures table {info['table_size']}")
            results["fill"] = info
            parts = set(args.parts.split(","))
            if "export" in parts:
                results["export"] = measure_export(env, info)
            if "dashboard" in parts:
                results["dashboard"] = measure_dashboard(env, info, args.repeat)
            if "mail" in parts:
                results["mail"] = measure_mail(env, info, args, work, sink)
    finally:
        sink.stop()
    path = write_results("reach", results)
    log(f"wrote {path.relative_to(ROOT)}")
    return 0 if "mail" not in results or results["mail"]["update"]["exactly_once"] else 1


if __name__ == "__main__":
    sys.exit(main())
