"""API signing throughput beside the HTML form, in the same run on the same server.

Starts gunicorn (gunicorn.conf.py) against a fresh PostgreSQL database with the demo petition,
Redis as the broker and a loopback SMTP sink. At each concurrency C it runs, one after the other:

- form: C clients do what a browser does (GET the petition page, take form_token, POST the
  form, get the 303; the redirect is not followed);
- api:  C clients POST a JSON signature to /api/v1/petitions/<slug>/signatures and get the 202.

Each signature has a unique email and comes from its own 127.x.y.z source address, so per-client
rate limits and bursts see many clients. Each level lasts --seconds (after --warmup) or
--max-signatures, whichever ends first. Confirmation emails stay in the outbox (no Celery worker
runs): this measures the web path. At the end, stored signatures are checked against accepted
responses. Prints signatures/s and latency for both paths and their ratio; JSON with the commit
goes to bench/results/api_sign-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SLUG,
    LevelResult,
    Process,
    Sink,
    app_environment,
    flask_command,
    flush_redis,
    free_port,
    fresh_database,
    http_request,
    log,
    run_closed_loop,
    source_address,
    start_gunicorn,
    versions,
    workdir,
    write_results,
)

# Checks that would hold bench traffic (one email domain, forms posted at machine speed) are
# relaxed for both paths alike, so both do the same work as a real signer's request.
RELAXED = {"SIGNING_DOMAIN_BURST": "100000000/60", "SIGNING_MIN_FILL_SECONDS": "0",
           "RATELIMIT_API": "100000000 per minute"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="8,32", help="comma-separated concurrency levels (8,32)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="measured seconds per path and level (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each (2)")
    parser.add_argument("--max-signatures", type=int, default=20_000, help="most signatures per run (20000)")
    parser.add_argument("--web-workers", type=int, default=None,
                        help="gunicorn workers (default: gunicorn.conf.py's, 2 x CPUs + 1)")
    parser.add_argument("--schema", choices=["migrations", "models"], default="migrations",
                        help="build the schema with `flask db upgrade` (default) or from the models")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    return parser.parse_args(argv)


async def api_sign(port: int, source: str, email: str, name: str) -> tuple[bool, str, float]:
    body = json.dumps({"name": name, "email": email, "country": "DE", "source": "bench"}).encode()
    started = time.perf_counter()
    try:
        answer = await http_request(port, "POST", f"/api/v1/petitions/{SLUG}/signatures", source, body,
                                    {"Content-Type": "application/json", "Accept": "application/json"})
    except (TimeoutError, OSError, ValueError, IndexError) as error:
        return False, type(error).__name__, time.perf_counter() - started
    elapsed = time.perf_counter() - started
    if answer.status != 202:
        return False, f"POST {answer.status}", elapsed
    return True, "", elapsed


def run_api_loop(port: int, concurrency: int, seconds: float, max_count: int, label: str,
                 first_address: int) -> LevelResult:
    """C clients, each sending the next signature as soon as the last is answered."""
    result = LevelResult(concurrency, seconds)
    counter = iter(range(max_count))

    async def client() -> None:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            n = next(counter, None)
            if n is None:
                return
            email = f"{label}-{n}@bench.example.org"
            ok, error, elapsed = await api_sign(port, source_address(first_address + n), email,
                                                f"Bench Api {n}")
            if ok:
                result.accepted += 1
                result.totals.append(elapsed)
                result.posts.append(elapsed)
                result.emails.append(email)
            if error:
                result.errors[error] = result.errors.get(error, 0) + 1

    async def main() -> None:
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started

    asyncio.run(main())
    return result


_CREATE_ALL = """
from campaign import create_app
from campaign.extensions import db
app = create_app()
with app.app_context():
    db.create_all()
"""


def create_schema(env: dict[str, str], how: str) -> str:
    """The database schema: from the migrations (what production runs), or from the models
    (db.create_all, as the tests do) when the migrations lag behind work in progress."""
    import subprocess

    if how == "migrations":
        flask_command(env, "db", "upgrade")
    else:
        subprocess.run([sys.executable, "-c", _CREATE_ALL], cwd=Path(__file__).resolve().parent.parent,
                       env=env, check=True, capture_output=True, timeout=120)
    return how


def stored_signatures(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT source, count(*) FROM signatures GROUP BY source").fetchall()
        held = conn.execute("SELECT count(*) FROM signatures WHERE status = 'held'").fetchone()
    counts = {str(source): int(n) for source, n in rows}
    counts["held"] = int(held[0]) if held else 0
    return counts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    web_workers = args.web_workers or min(2 * len(os.sched_getaffinity(0)) + 1, 16)
    conditions: dict[str, Any] = {
        "gunicorn_workers": web_workers, "celery_workers": 0, "concurrency_levels": levels,
        "seconds_per_path_and_level": args.seconds, "warmup_seconds": args.warmup,
        "max_signatures_per_run": args.max_signatures,
        "form_flow": "GET /petitions/<slug>, POST /petitions/<slug>/sign -> 303 (not followed)",
        "api_flow": "POST /api/v1/petitions/<slug>/signatures (JSON) -> 202",
        "client": "asyncio, one connection per request, each signature from its own 127.x.y.z address",
        "relaxed_settings": RELAXED, "versions": versions(),
    }
    log(f"conditions: {conditions}")
    rows: list[dict[str, Any]] = []
    accepted = {"form": 0, "api": 0}
    with workdir(args.keep) as work, fresh_database("apisign", keep=args.keep) as url:
        sink = Sink()
        port = free_port()
        env = app_environment(url, port, sink.port, **RELAXED)
        processes: list[Process] = []
        try:
            conditions["schema"] = create_schema(env, args.schema)
            flask_command(env, "seed-demo")
            flush_redis()
            web = start_gunicorn("app:app", env, port, web_workers, work)
            processes.append(web)
            address = 0
            for level in levels:
                row: dict[str, Any] = {"concurrency": level}
                for path in ("form", "api"):
                    def one(seconds: float, label: str, first: int, path: str = path,
                            level: int = level) -> LevelResult:
                        if path == "form":
                            return run_closed_loop(port, level, seconds, args.max_signatures, label, first,
                                                   follow=False)
                        return run_api_loop(port, level, seconds, args.max_signatures, label, first)

                    if args.warmup > 0:
                        warm = one(args.warmup, f"warm-{path}-{level}", address)
                        address += warm.accepted + sum(warm.errors.values()) + level
                        accepted[path] += warm.accepted
                    result = one(args.seconds, f"{path}-{level}", address)
                    address += result.accepted + sum(result.errors.values()) + level
                    accepted[path] += result.accepted
                    figures = result.figures()
                    row[path] = figures
                    lat = figures["signature_latency"]
                    log(f"{path:4s} C={level:4d}: {figures['accepted_per_s']:8.1f} signatures/s  "
                        f"p50 {lat['p50_ms']:.0f} ms  p95 {lat['p95_ms']:.0f} ms  "
                        f"p99 {lat['p99_ms']:.0f} ms  errors {figures['errors']}")
                form_rate, api_rate = row["form"]["accepted_per_s"], row["api"]["accepted_per_s"]
                row["api_over_form"] = round(api_rate / form_rate, 2) if form_rate else None
                rows.append(row)
            time.sleep(1)
            stored = stored_signatures(url)
        finally:
            for process in reversed(processes):
                process.stop()
            sink.stop()
            flush_redis()

    total_stored = sum(n for key, n in stored.items() if key != "held")
    check = {"accepted_form": accepted["form"], "accepted_api": accepted["api"],
             "stored": total_stored, "stored_by_source": stored,
             "lost": accepted["form"] + accepted["api"] - total_stored}
    print()
    print(f"{'C':>5} {'form sig/s':>11} {'api sig/s':>10} {'api/form':>9} {'form p50':>9} {'form p99':>9} "
          f"{'api p50':>8} {'api p99':>8} {'errors':>7}")
    for row in rows:
        form, api = row["form"], row["api"]
        print(f"{row['concurrency']:>5} {form['accepted_per_s']:>11.1f} {api['accepted_per_s']:>10.1f} "
              f"{row['api_over_form'] or 0:>9.2f} {form['signature_latency']['p50_ms']:>7.0f}ms "
              f"{form['signature_latency']['p99_ms']:>7.0f}ms {api['signature_latency']['p50_ms']:>6.0f}ms "
              f"{api['signature_latency']['p99_ms']:>6.0f}ms {form['errors'] + api['errors']:>7}")
    print(f"stored {check['stored']} = accepted {accepted['form']} (form) + {accepted['api']} (api)? "
          f"lost {check['lost']}")
    path = write_results("api_sign", {"conditions": conditions, "levels": rows, "check": check})
    print(f"results: {path}")
    return 0 if check["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
