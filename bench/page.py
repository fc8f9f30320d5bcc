"""Petition page under load with a million confirmed signatures, beside a bare template render.

Fills a fresh PostgreSQL database with --rows confirmed signatures of the demo petition (one
INSERT ... SELECT over generate_series: a real Fernet ciphertext reused as placeholder, since the
page never decrypts them), sets the counter shards to match, then, under gunicorn with the
project's gunicorn.conf.py, C clients GET the petition page for --seconds (never with
If-None-Match, so every answer is a full page). In the same run, under the same gunicorn
settings, bench/baseline_app.py renders a static template holding a copy of the same page's
HTML. Also times the count read at that size: campaign.services.counting.signature_count vs a
COUNT(*) over the petition's confirmed signatures. JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOAD_TEST_SETTINGS,
    SLUG,
    Process,
    app_environment,
    cpu_delta,
    cpu_ms_per_item,
    cpu_snapshot_with_machine,
    flask_command,
    flush_redis,
    free_port,
    fresh_database,
    http_request,
    log,
    run_closed_loop_get,
    start_gunicorn,
    timed,
    versions,
    workdir,
    write_results,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="confirmed signatures in the database (default: 1000000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default: 32)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="duration of each measurement (default: 20)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="unmeasured seconds before each (default: 3)")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="most requests per measurement (default: 200000)")
    parser.add_argument("--web-workers", type=int, default=None,
                        help="gunicorn workers (default: gunicorn.conf.py's, 2 x CPUs + 1)")
    parser.add_argument("--no-uncached", action="store_true",
                        help="skip the extra measurements with the microcache (PAGE_MICROCACHE=0) and the "
                             "render cache (PAGE_CACHE_SIZE=0) off")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    return parser.parse_args(argv)


def fill(url: str, env: dict[str, str], rows: int) -> dict[str, Any]:
    """rows confirmed signatures for the demo petition, and counter shards that add up to them."""
    import psycopg
    from cryptography.fernet import Fernet

    placeholder_name = Fernet(env["SIGNER_DATA_KEYS"].encode()).encrypt(b"Bench Signer")
    placeholder_email = Fernet(env["SIGNER_DATA_KEYS"].encode()).encrypt(b"bench@bench.example.org")
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        petition_id = conn.execute("SELECT id FROM petitions WHERE slug = %s", (SLUG,)).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO signatures (petition_id, name_encrypted, email_encrypted, email_index, country, "
            "comment, consent_updates, source, locale, status, created_at, confirmed_at) "
            "SELECT %s, %s, %s, lpad(to_hex(g), 64, '0'), "
            "(ARRAY['DE','FR','GB','US','BR','IN','ZA'])[1 + g %% 7], '', false, '', 'en', 'confirmed', "
            "now() - make_interval(secs => g), now() - make_interval(secs => g) "
            "FROM generate_series(1, %s) AS g",
            (petition_id, placeholder_name, placeholder_email, rows))
        shards = conn.execute("SELECT count(*) FROM petition_counters WHERE petition_id = %s",
                              (petition_id,)).fetchone()[0]  # type: ignore[index]
        shards = int(shards) or 1
        # Spread the count over the shards as confirmations would.
        conn.execute(
            "UPDATE petition_counters SET confirmed = %s / %s + CASE WHEN shard < %s %% %s THEN 1 ELSE 0 END "
            "WHERE petition_id = %s", (rows, shards, rows, shards, petition_id))
        conn.execute("VACUUM ANALYZE signatures")
        conn.execute("VACUUM ANALYZE petition_counters")
        # Write the fill out now, so the checkpointer does not compete with the measurement.
        conn.execute("CHECKPOINT")
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('signatures'))").fetchone()[0]  # type: ignore[index]
    return {"petition_id": int(petition_id), "rows": rows, "counter_shards": shards,
            "fill_seconds": round(time.perf_counter() - started, 1), "signatures_table_size": size}


def count_costs(url: str, env: dict[str, str], petition_id: int, rows: int) -> dict[str, Any]:
    """signature_count (counter shards) vs COUNT(*) over the signatures, at this many rows."""
    import psycopg

    from campaign import create_app
    from campaign.extensions import db
    from campaign.services.counting import signature_count

    app = create_app({key: env[key] for key in ("CAMPAIGN_ENV", "SECRET_KEY", "SIGNER_DATA_KEYS",
                                                "BLIND_INDEX_KEY", "BASE_URL", "DATABASE_URL", "REDIS_URL")})
    with app.app_context():
        assert signature_count(db.session, petition_id) == rows, "the counter shards do not match the rows"
        shard_times = timed(lambda: signature_count(db.session, petition_id), 2000)
        db.session.remove()
        db.engine.dispose()
    count_sql = ("SELECT count(*) FROM signatures WHERE petition_id = %s AND status = 'confirmed'")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(count_sql, (petition_id,))  # warm the cache
        scan_times = timed(lambda: conn.execute(count_sql, (petition_id,)).fetchone(), 5)
        plan = [row[0] for row in conn.execute(
            "EXPLAIN SELECT coalesce(sum(confirmed), 0) FROM petition_counters WHERE petition_id = %s",
            (petition_id,)).fetchall()]
    shard_ms = statistics.median(shard_times) * 1000
    scan_ms = statistics.median(scan_times) * 1000
    return {"rows": rows, "signature_count_median_ms": round(shard_ms, 3),
            "signature_count_p99_ms": round(sorted(shard_times)[int(len(shard_times) * 0.99)] * 1000, 3),
            "count_star_median_ms": round(scan_ms, 1), "count_star_runs": len(scan_times),
            "speedup": round(scan_ms / shard_ms, 1) if shard_ms else None,
            "signature_count_plan": plan}


def measure(port: int, path: str, args: argparse.Namespace, label: str) -> dict[str, Any]:
    if args.warmup > 0:
        run_closed_loop_get(port, path, args.clients, args.warmup, args.max_requests)
    before, wall = cpu_snapshot_with_machine(), time.monotonic()
    result = run_closed_loop_get(port, path, args.clients, args.seconds, args.max_requests, 1_000_000)
    row = result.figures()
    row = {"what": label, "path": path, "concurrency": row["concurrency"], "duration_s": row["duration_s"],
           "requests": row["accepted"], "requests_per_s": row["accepted_per_s"], "errors": row["errors"],
           "errors_by_kind": row["errors_by_kind"], "latency": row["signature_latency"],
           "cores_used_by_role": cpu_delta(before, cpu_snapshot_with_machine(), time.monotonic() - wall)}
    row["cpu_ms_per_request"] = cpu_ms_per_item(row["cores_used_by_role"], row["requests_per_s"])
    lat = row["latency"]
    log(f"{label:28s} {row['requests_per_s']:8.1f} requests/s  p50 {lat['p50_ms']:.0f} ms  "
        f"p99 {lat['p99_ms']:.0f} ms  errors {row['errors']}")
    log(f"{'':28s} cores {row['cores_used_by_role']}; CPU ms per request {row['cpu_ms_per_request']}")
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import os

    web_workers = args.web_workers or min(2 * len(os.sched_getaffinity(0)) + 1, 16)
    conditions: dict[str, Any] = {
        "gunicorn_workers": web_workers, "gunicorn_worker_class": "sync (gunicorn.conf.py)",
        "celery_worker_processes": 0, "concurrency": args.clients, "seconds": args.seconds,
        "app_settings": "gunicorn.conf.py defaults (PAGE_MICROCACHE=1, pool 1+2) "
                        "unless the row says otherwise",
        "warmup_seconds": args.warmup, "rows": args.rows, "if_none_match_sent": False,
        "client": "asyncio, one connection per request, each from its own 127.x.y.z address",
        "versions": versions(),
        "app_settings_for_the_load_generator": LOAD_TEST_SETTINGS,
    }
    log(f"conditions: {conditions}")
    rows: list[dict[str, Any]] = []
    with workdir(args.keep) as work, fresh_database("page", keep=args.keep) as url:
        port = free_port()
        env = app_environment(url, port, free_port(), **LOAD_TEST_SETTINGS)
        flask_command(env, "db", "upgrade")
        flask_command(env, "seed-demo")
        flush_redis()
        log(f"inserting {args.rows:,} confirmed signatures")
        filled = fill(url, env, args.rows)
        log(f"filled: {filled}")
        counts = count_costs(url, env, filled["petition_id"], args.rows)
        log(f"count read at {args.rows:,} rows: signature_count {counts['signature_count_median_ms']} ms "
            f"(median of 2000), COUNT(*) {counts['count_star_median_ms']} ms (median of 5)")
        processes: list[Process] = []
        try:
            web = start_gunicorn("app:app", env, port, web_workers, work)
            processes.append(web)
            import asyncio

            page = asyncio.run(http_request(port, "GET", f"/petitions/{SLUG}", "127.0.0.1"))
            assert page.status == 200, page.status
            assert f"{args.rows:,}".encode() in page.body, "the page does not show the count"
            rows.append(measure(port, f"/petitions/{SLUG}", args, "petition page"))
            web.stop()
            processes.remove(web)
            if not args.no_uncached:
                variants = (("petition page, no microcache", {"PAGE_MICROCACHE": "0"}),
                            ("petition page, no caches", {"PAGE_MICROCACHE": "0", "PAGE_CACHE_SIZE": "0"}))
                for number, (label, settings) in enumerate(variants):
                    web = start_gunicorn("app:app", {**env, **settings}, port, web_workers, work,
                                         name=f"gunicorn-variant{number}")
                    processes.append(web)
                    rows.append(measure(port, f"/petitions/{SLUG}", args, label))
                    web.stop()
                    processes.remove(web)
            templates = work / "templates"
            templates.mkdir()
            # The same bytes as the real page, as a static template: only the work differs.
            (templates / "static.html").write_bytes(b"{% raw %}" + page.body + b"{% endraw %}")
            base_port = free_port()
            base = start_gunicorn("bench.baseline_app:create_baseline_app()",
                                  {**env, "BASELINE_DATABASE_URL": url, "BASELINE_TEMPLATES": str(templates)},
                                  base_port, web_workers, work, name="baseline")
            processes.append(base)
            rows.append(measure(base_port, "/static-page", args, "bare Flask static template"))
        finally:
            for process in reversed(processes):
                process.stop()
            flush_redis()

    bare = rows[-1]["requests_per_s"]
    ratios = {row["what"]: round(row["requests_per_s"] / bare, 3) if bare else None for row in rows[:-1]}
    print()
    print(f"{'':30s} {'req/s':>9} {'p50':>7} {'p99':>7} {'ratio':>6}")
    for row in rows:
        ratio = row["requests_per_s"] / bare if bare else 0.0
        print(f"{row['what']:30s} {row['requests_per_s']:>9.1f} {row['latency']['p50_ms']:>5.0f}ms "
              f"{row['latency']['p99_ms']:>5.0f}ms {ratio:>6.2f}")
    print(f"count at {args.rows:,} rows: signature_count {counts['signature_count_median_ms']} ms, "
          f"COUNT(*) {counts['count_star_median_ms']} ms ({counts['speedup']}x)")
    path = write_results("page", {"conditions": conditions, "fill": filled, "pages": rows,
                                  "ratios_to_bare_render": ratios, "count_read": counts})
    print(f"results: {path}")
    return 0 if all(row["errors"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
