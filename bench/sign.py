"""Signing throughput: the real sign path vs a bare-INSERT Flask app, side by side in one run.

Starts gunicorn (gunicorn.conf.py) against a fresh PostgreSQL database with the demo petition,
Redis as the broker, Celery workers and a loopback SMTP sink. At each concurrency C, C clients do
what a browser does (GET the petition page, take form_token, POST a unique signature with a
unique email, follow the 303), each signature from its own 127.x.y.z source address, for
--seconds or --max-signatures per level. Then the same clients (GET a trivial page, POST) against
bench/baseline_app.py (one INSERT into a table with a unique index) under the same gunicorn
settings. Prints accepted/s, latency and errors for both, the ratio sign/baseline, and checks in
the database that stored signatures equal accepted responses. JSON goes to bench/results/.

By default the confirmation emails wait in the outbox during the levels and are sent (and
counted in the sink) after them: the ratio compares request path with request path, as the
baseline sends no email, and in the deployment the `confirmations` workers run on cores of
their own. --celery-workers 2 measures the one-box case, workers sending during the levels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOAD_TEST_SETTINGS,
    RESULTS,
    LevelResult,
    LockSampler,
    Process,
    PySpy,
    Sink,
    app_environment,
    cpu_delta,
    cpu_ms_per_item,
    cpu_of_this_process,
    cpu_snapshot_with_machine,
    flask_command,
    flush_redis,
    free_port,
    fresh_database,
    log,
    pg_stat,
    run_closed_loop,
    start_celery,
    start_gunicorn,
    versions,
    workdir,
    write_results,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32,128",
                        help="comma-separated concurrency levels (default: 1,8,32,128)")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each level (default: 20)")
    parser.add_argument("--warmup", type=float, default=3.0,
                        help="seconds of load before each level that are not measured (default: 3)")
    parser.add_argument("--max-signatures", type=int, default=50_000,
                        help="most signatures per level (default: 50000)")
    parser.add_argument("--web-workers", type=int, default=None,
                        help="gunicorn workers (default: gunicorn.conf.py's, 2 x CPUs + 1)")
    parser.add_argument("--celery-workers", type=int, default=0,
                        help="Celery worker processes (prefork concurrency) sending confirmations "
                             "during the levels; 0 leaves mail in the outbox and sends it after them "
                             "(default: 0)")
    parser.add_argument("--drain-seconds", type=float, default=120.0,
                        help="longest wait for the confirmation backlog after each level (default: 120)")
    parser.add_argument("--profile", type=int, default=32, metavar="C",
                        help="profile gunicorn and Celery with py-spy during the sign level at this "
                             "concurrency (0: no profile; default: 32)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    return parser.parse_args(argv)


def default_web_workers() -> int:
    import os

    return min(2 * len(os.sched_getaffinity(0)) + 1, 16)


def outbox_backlog(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM outbound_emails WHERE status IN ('queued', 'sending')").fetchone()
    return int(row[0]) if row else 0


def wait_for_drain(url: str, limit: float) -> tuple[float, int]:
    started = time.monotonic()
    backlog = outbox_backlog(url)
    while backlog and time.monotonic() - started < limit:
        time.sleep(0.5)
        backlog = outbox_backlog(url)
    return time.monotonic() - started, backlog


def run_level(port: int, level: int, args: argparse.Namespace, label: str, follow: bool, address: int,
              sampler_url: str | None = None) -> tuple[dict[str, Any], list[str], int]:
    """Warm up, then measure one concurrency level. Returns the figures, the accepted emails and
    the next free source-address number."""
    emails: list[str] = []
    if args.warmup > 0:
        warm = run_closed_loop(port, level, args.warmup, args.max_signatures, f"{label}-warm{level}",
                               address, follow=follow)
        address += warm.accepted + sum(warm.errors.values()) + level
        emails += warm.emails
    cpu_before = cpu_of_this_process()
    machine_before, wall_before = cpu_snapshot_with_machine(), time.monotonic()
    sampler = LockSampler(sampler_url) if sampler_url else None
    if sampler:
        sampler.__enter__()
    result: LevelResult = run_closed_loop(port, level, args.seconds, args.max_signatures,
                                          f"{label}-c{level}", address, follow=follow)
    if sampler:
        sampler.__exit__(None, None, None)
    address += result.accepted + sum(result.errors.values()) + level
    emails += result.emails
    row = result.figures()
    row["load_generator_cpu_s"] = round(cpu_of_this_process() - cpu_before, 2)
    row["cores_used_by_role"] = cpu_delta(machine_before, cpu_snapshot_with_machine(),
                                          time.monotonic() - wall_before)
    # CPU per signature does not depend on how much of the machine others took meanwhile.
    row["cpu_ms_per_signature"] = cpu_ms_per_item(row["cores_used_by_role"], row["accepted_per_s"])
    if sampler:
        row["lock_waits"] = sampler.summary()
    lat = row["signature_latency"]
    log(f"{label:8s} C={level:4d}: {row['accepted_per_s']:8.1f} accepted/s  "
        f"p50 {lat['p50_ms']:.0f} ms  p95 {lat['p95_ms']:.0f} ms  p99 {lat['p99_ms']:.0f} ms  "
        f"POST p99 {row['post_latency']['p99_ms']:.0f} ms  errors {row['errors']}")
    log(f"{'':8s}         cores {row['cores_used_by_role']}; "
        f"CPU ms per signature {row['cpu_ms_per_signature']}")
    return row, emails, address


def profile_level(port: int, args: argparse.Namespace, pids: dict[str, int],
                  first_address: int) -> dict[str, Any]:
    """One more, unmeasured pass at C=--profile with py-spy on gunicorn and Celery (GIL samples)."""
    spies = {name: PySpy(pid, args.seconds, RESULTS / f"profile-sign-{name}-c{args.profile}.txt")
             for name, pid in pids.items()}
    result = run_closed_loop(port, args.profile, args.seconds, args.max_signatures, "profile", first_address)
    out: dict[str, Any] = {"concurrency": args.profile, "accepted_per_s_under_profiler":
                           result.figures()["accepted_per_s"], "emails": result.emails}
    for name, spy in spies.items():
        summary = spy.finish()
        out[name] = summary
        log(f"py-spy {name}, C={args.profile}: Python CPU by package (self), and app functions (inclusive)")
        for package, share in list(summary.get("self_by_package", {}).items())[:8]:
            print(f"    {share:6.1%}  {package}")
        for function, share in list(summary.get("inclusive_app_functions", {}).items())[:12]:
            print(f"    {share:6.1%}  {function}")
    return out


def check_signatures(url: str, env: dict[str, str], emails: list[str]) -> dict[str, int]:
    """Stored signatures vs accepted responses, by blind index: lost, unexpected and duplicated."""
    import psycopg

    from campaign.services.emails import canonical_email
    from campaign.services.privacy import SignerCipher

    crypt = SignerCipher(env["SIGNER_DATA_KEYS"], env["BLIND_INDEX_KEY"])
    accepted = {crypt.blind_index(canonical_email(email)) for email in emails}
    with psycopg.connect(url, autocommit=True) as conn:
        stored = [row[0] for row in conn.execute("SELECT email_index FROM signatures").fetchall()]
        confirmations = conn.execute(
            "SELECT count(*) FROM outbound_emails WHERE kind = 'signature_confirmation'").fetchone()
    stored_set = set(stored)
    return {"accepted_responses": len(emails), "distinct_accepted": len(accepted),
            "stored_signatures": len(stored), "lost": len(accepted - stored_set),
            "stored_without_accepted_response": len(stored_set - accepted),
            "duplicated": len(stored) - len(stored_set),
            "confirmation_emails_queued": int(confirmations[0]) if confirmations else 0}


def check_baseline(url: str, emails: list[str]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        stored = [row[0] for row in conn.execute("SELECT email FROM baseline_signatures").fetchall()]
    accepted = set(emails)
    return {"accepted_responses": len(emails), "stored": len(stored), "lost": len(accepted - set(stored)),
            "duplicated": len(stored) - len(set(stored))}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    web_workers = args.web_workers or default_web_workers()
    conditions: dict[str, Any] = {
        "gunicorn_workers": web_workers, "gunicorn_worker_class": "sync (gunicorn.conf.py)",
        "celery_worker_processes": args.celery_workers, "concurrency_levels": levels,
        "seconds_per_level": args.seconds, "warmup_seconds_per_level": args.warmup,
        "max_signatures_per_level": args.max_signatures,
        "client": "asyncio, one connection per request, each signature from its own 127.x.y.z address",
        "sign_flow": "GET /petitions/<slug>, POST /petitions/<slug>/sign, follow the 303",
        "baseline_flow": "GET a trivial page, POST one INSERT with a unique index, 200",
        "versions": versions(),
        "app_settings_for_the_load_generator": LOAD_TEST_SETTINGS,
    }
    log(f"conditions: {conditions}")
    with workdir(args.keep) as work, fresh_database("sign", keep=args.keep) as url:
        sink = Sink()
        port = free_port()
        env = app_environment(url, port, sink.port, **LOAD_TEST_SETTINGS)
        processes: list[Process] = []
        try:
            flask_command(env, "db", "upgrade")
            flask_command(env, "seed-demo")
            flush_redis()
            celery = start_celery(env, args.celery_workers, work) if args.celery_workers else None
            if celery:
                processes.append(celery)
            web = start_gunicorn("app:app", env, port, web_workers, work)
            processes.append(web)
            stats_before = pg_stat(url)

            def drain() -> dict[str, Any]:
                if not celery:
                    return {}
                waited, left = wait_for_drain(url, args.drain_seconds)
                return {"confirmation_backlog_drain_s": round(waited, 1), "backlog_left": left}

            import psycopg

            from bench.baseline_app import TABLE_SQL

            with psycopg.connect(url, autocommit=True) as conn:
                for statement in TABLE_SQL:
                    conn.execute(statement)
            base_port = free_port()
            base_env = {**env, "BASELINE_DATABASE_URL": url}
            processes.append(start_gunicorn("bench.baseline_app:create_baseline_app()", base_env, base_port,
                                            web_workers, work, name="baseline"))

            # Level by level, the sign path and then the baseline, so both meet the machine in the
            # same state (this VM's speed drifts over minutes). The confirmation backlog is drained
            # before the baseline runs, so the Celery workers are idle during it.
            web_cpu = web.cpu_seconds()
            sign_rows: list[dict[str, Any]] = []
            base_rows: list[dict[str, Any]] = []
            sign_emails: list[str] = []
            base_emails: list[str] = []
            sign_address, base_address = 0, 0
            for level in levels:
                row, emails, sign_address = run_level(port, level, args, "sign", True, sign_address, url)
                row.update(drain())
                sign_rows.append(row)
                sign_emails += emails
                row, emails, base_address = run_level(base_port, level, args, "baseline", False, base_address)
                base_rows.append(row)
                base_emails += emails
            web_cpu = web.cpu_seconds() - web_cpu
            profile: dict[str, Any] = {}
            if args.profile:
                pids = {"gunicorn": web.process.pid} | ({"celery": celery.process.pid} if celery else {})
                profile = profile_level(port, args, pids, 100_000_000)
                sign_emails += profile.pop("emails")
                profile.update(drain())
            if not celery:
                # Mail was left in the outbox during the levels; send it now, so the check below
                # still sees every confirmation arrive.
                log("sending the queued confirmations (2 Celery workers, after the levels)")
                processes.append(start_celery(env, 2, work))
                drained_s, _left = wait_for_drain(url, max(args.drain_seconds, 600))
                conditions["mail_sent_after_levels_s"] = round(drained_s, 1)
                time.sleep(1)
            sign_check = check_signatures(url, env, sign_emails)
            sign_check["emails_in_sink"] = sink.count
            stats = {k: v - stats_before.get(k, 0) for k, v in pg_stat(url).items()}
            log(f"sign check: {sign_check}")
            base_check = check_baseline(url, base_emails)
            log(f"baseline check: {base_check}")
        finally:
            for process in reversed(processes):
                process.stop()
            sink.stop()
            flush_redis()  # leave no task behind for whoever uses this Redis database next

    print()
    print(f"{'C':>5} {'sign/s':>9} {'base/s':>9} {'ratio':>6} {'sign p50':>9} {'p95':>7} {'p99':>7} "
          f"{'POST p99':>9} {'base p99':>9} {'errors':>7}")
    ratios = []
    for sign_row, base_row in zip(sign_rows, base_rows, strict=True):
        ratio = sign_row["accepted_per_s"] / base_row["accepted_per_s"] if base_row["accepted_per_s"] else 0.0
        # The throughput ratio on a machine with nothing else running, estimated from CPU cost:
        # everything this benchmark ran (app, workers, database, sink, load generator) per signature.
        sign_cpu = sum(sign_row["cpu_ms_per_signature"].values())
        base_cpu = sum(base_row["cpu_ms_per_signature"].values())
        ratios.append({"concurrency": sign_row["concurrency"], "ratio": round(ratio, 3),
                       "sign_cpu_ms_per_signature": round(sign_cpu, 2),
                       "baseline_cpu_ms_per_signature": round(base_cpu, 2),
                       "cpu_cost_ratio": round(base_cpu / sign_cpu, 3) if sign_cpu else None})
        lat = sign_row["signature_latency"]
        base_p99 = base_row["signature_latency"]["p99_ms"]
        print(f"{sign_row['concurrency']:>5} {sign_row['accepted_per_s']:>9.1f} "
              f"{base_row['accepted_per_s']:>9.1f} {ratio:>6.2f} {lat['p50_ms']:>7.0f}ms "
              f"{lat['p95_ms']:>5.0f}ms {lat['p99_ms']:>5.0f}ms {sign_row['post_latency']['p99_ms']:>7.0f}ms "
              f"{base_p99:>7.0f}ms {sign_row['errors'] + base_row['errors']:>7}")
    for entry in ratios:
        print(f"C={entry['concurrency']}: CPU per signature, sign {entry['sign_cpu_ms_per_signature']} ms vs "
              f"baseline {entry['baseline_cpu_ms_per_signature']} ms: cost ratio {entry['cpu_cost_ratio']}")
    print(f"sign: stored {sign_check['stored_signatures']} = accepted {sign_check['accepted_responses']}? "
          f"lost {sign_check['lost']}, duplicated {sign_check['duplicated']}, "
          f"stored without an accepted response {sign_check['stored_without_accepted_response']}")
    print(f"baseline: stored {base_check['stored']}, lost {base_check['lost']}, "
          f"duplicated {base_check['duplicated']}")
    path = write_results("sign", {
        "conditions": conditions, "sign": sign_rows, "baseline": base_rows, "ratios": ratios,
        "sign_check": sign_check, "baseline_check": base_check,
        "app_gunicorn_cpu_s_during_levels": round(web_cpu, 1),
        "postgres_stats_whole_run": stats, "profile": profile,
    })
    print(f"results: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    ok = sign_check["lost"] == 0 and sign_check["duplicated"] == 0 and base_check["lost"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
