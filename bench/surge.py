"""Surge: signatures offered at a fixed rate for a long time, then a sample confirmed by email.

Starts gunicorn (gunicorn.conf.py) on a fresh PostgreSQL database with the demo petition, Redis,
Celery workers with beat (as the Procfile runs them) and the loopback SMTP sink
(campaign.mail.sink.start_sink, bench/sink_process.py). Signatures arrive at --rate per second
for --seconds (open loop: an arrival does not wait for earlier ones; at most --max-in-flight at
once, beyond that an arrival is counted as shed), each doing what a browser does from its own
127.x.y.z address. Then checks that every accepted signature is stored (lost must be 0), waits
for the confirmation emails (delay from POST to arrival in the sink), and confirms a sample
through the links in them, checking the count. JSON goes to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    LOAD_TEST_SETTINGS,
    LockSampler,
    Process,
    Sink,
    app_environment,
    browser_sign,
    cpu_delta,
    cpu_ms_per_item,
    cpu_snapshot_with_machine,
    flask_command,
    flush_redis,
    free_port,
    fresh_database,
    http_request,
    latency_summary,
    log,
    percentile,
    source_address,
    start_celery,
    start_gunicorn,
    versions,
    workdir,
    write_results,
)
from bench.sign import check_signatures, outbox_backlog

CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=330.0,
                        help="signatures offered per second (default: 330)")
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="duration of the offered load (default: 600)")
    parser.add_argument("--max-in-flight", type=int, default=512,
                        help="most signatures in progress at once; later arrivals are shed (default: 512)")
    parser.add_argument("--sample", type=int, default=300,
                        help="signatures to confirm by email (default: 300)")
    parser.add_argument("--confirmers", type=int, default=32,
                        help="concurrent confirmations of the sample (default: 32)")
    parser.add_argument("--email-wait", type=float, default=900.0,
                        help="longest wait for the confirmation emails after the load (default: 900 s)")
    parser.add_argument("--web-workers", type=int, default=None,
                        help="gunicorn workers (default: gunicorn.conf.py's, 2 x CPUs + 1)")
    parser.add_argument("--celery-workers", type=int, default=2,
                        help="Celery worker processes (prefork concurrency), plus beat (default: 2)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    return parser.parse_args(argv)


def offered_load(port: int, rate: float, seconds: float, max_in_flight: int) -> dict[str, Any]:
    total = int(rate * seconds)
    accepted: list[tuple[str, float]] = []  # (email, posted_at)
    errors: dict[str, int] = {}
    from_arrival: list[float] = []
    service: list[float] = []
    posts: list[float] = []
    state = {"shed": 0, "in_flight": 0, "max_in_flight_seen": 0, "started": 0}

    async def arrival(n: int, scheduled: float) -> None:
        email = f"surge-{n}@d{n % 1000}.bench.example.org"  # spread as real sign-ups are
        begun = time.perf_counter()
        try:
            outcome = await browser_sign(port, source_address(n), email, f"Surge Signer {n}")
        finally:
            state["in_flight"] -= 1
        if outcome.ok:
            accepted.append((email, outcome.posted_at))
            from_arrival.append(time.perf_counter() - scheduled)
            service.append(time.perf_counter() - begun)
            posts.append(outcome.post)
        if outcome.error:
            errors[outcome.error] = errors.get(outcome.error, 0) + 1

    async def main() -> float:
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        for n in range(total):
            scheduled = started + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if state["in_flight"] >= max_in_flight:
                state["shed"] += 1
                continue
            state["in_flight"] += 1
            state["started"] += 1
            state["max_in_flight_seen"] = max(state["max_in_flight_seen"], state["in_flight"])
            task = asyncio.create_task(arrival(n, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        offered_for = time.perf_counter() - started
        if tasks:  # every request has its own timeout, so this ends
            await asyncio.wait(tasks, timeout=300)
        return offered_for

    offered_for = asyncio.run(main())
    return {
        "offered_rate_per_s": rate, "offered": total, "offered_for_s": round(offered_for, 1),
        "started": state["started"], "shed_by_client_limit": state["shed"],
        "max_in_flight_seen": state["max_in_flight_seen"],
        "accepted": len(accepted),
        "accepted_per_s": round(len(accepted) / offered_for, 1) if offered_for else 0,
        "errors": sum(errors.values()), "errors_by_kind": errors,
        "error_rate": round(sum(errors.values()) / max(1, state["started"]), 4),
        "latency_from_scheduled_arrival": latency_summary(from_arrival),
        "signature_latency": latency_summary(service), "post_latency": latency_summary(posts),
        "_accepted": accepted,
    }


async def confirm_one(port: int, path: str, source: str) -> tuple[bool, float, str]:
    started = time.perf_counter()
    try:
        page = await http_request(port, "GET", path, source)
        match = CSRF.search(page.body)
        cookie = page.headers.get("set-cookie", "").split(";", 1)[0]
        if page.status != 200 or not match or not cookie:
            return False, 0.0, f"GET {page.status}"
        body = urlencode({"csrf_token": match.group(1).decode()}).encode()
        answer = await http_request(port, "POST", path, source, body, {
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie,
            "Origin": f"http://127.0.0.1:{port}"})
        if answer.status != 303:
            return False, 0.0, f"POST {answer.status}"
        return True, time.perf_counter() - started, ""
    except (TimeoutError, OSError, ValueError, IndexError) as error:
        return False, 0.0, type(error).__name__


def confirm_sample(port: int, paths: list[str], concurrency: int) -> dict[str, Any]:
    results: list[tuple[bool, float, str]] = []
    queue = iter(enumerate(paths))

    async def worker() -> None:
        for n, path in queue:
            results.append(await confirm_one(port, path, source_address(50_000_000 + n)))

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout=600)
        return time.perf_counter() - started

    took = asyncio.run(main())
    errors: dict[str, int] = {}
    for ok, _, error in results:
        if not ok:
            errors[error] = errors.get(error, 0) + 1
    return {"sample": len(paths), "confirmed_ok": sum(ok for ok, _, _ in results), "errors": errors,
            "seconds": round(took, 1), "latency": latency_summary([t for ok, t, _ in results if ok])}


def counts(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        confirmed = conn.execute("SELECT count(*) FROM signatures WHERE status = 'confirmed'").fetchone()
        shards = conn.execute("SELECT coalesce(sum(confirmed), 0) FROM petition_counters").fetchone()
    return {"confirmed_rows": int(confirmed[0]) if confirmed else -1,
            "counter_shards_sum": int(shards[0]) if shards else -1}


def celery_pool_processes(process: Process) -> int:
    from bench.common import _process_tree

    return max(0, len(_process_tree(process.process.pid)) - 1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import os

    web_workers = args.web_workers or min(2 * len(os.sched_getaffinity(0)) + 1, 16)
    conditions: dict[str, Any] = {
        "gunicorn_workers": web_workers, "gunicorn_worker_class": "sync (gunicorn.conf.py)",
        "celery_worker_processes": args.celery_workers, "celery_beat": True,
        "offered_rate_per_s": args.rate, "seconds": args.seconds, "max_in_flight": args.max_in_flight,
        "sample": args.sample, "confirmers": args.confirmers,
        "client": "asyncio open loop, one connection per request, "
                  "each signature from its own 127.x.y.z address",
        "flow": "GET /petitions/<slug>, POST /petitions/<slug>/sign, follow the 303",
        "versions": versions(),
        "app_settings_for_the_load_generator": LOAD_TEST_SETTINGS,
    }
    log(f"conditions: {conditions}")
    with workdir(args.keep) as work, fresh_database("surge", keep=args.keep) as url:
        sink = Sink()
        port = free_port()
        env = app_environment(url, port, sink.port, **LOAD_TEST_SETTINGS)
        processes: list[Process] = []
        try:
            flask_command(env, "db", "upgrade")
            flask_command(env, "seed-demo")
            flush_redis()
            celery = start_celery(env, args.celery_workers, work, beat=True)
            processes.append(celery)
            processes.append(start_gunicorn("app:app", env, port, web_workers, work))
            pool_processes = celery_pool_processes(celery)

            log(f"offering {args.rate:g} signatures/s for {args.seconds:g} s")
            before, wall = cpu_snapshot_with_machine(), time.monotonic()
            with LockSampler(url, interval=0.1) as load_locks:
                load = offered_load(port, args.rate, args.seconds, args.max_in_flight)
            cores = cpu_delta(before, cpu_snapshot_with_machine(), time.monotonic() - wall)
            load_end = time.time()
            accepted = load.pop("_accepted")
            log(f"accepted {load['accepted']} of {load['offered']} offered ({load['accepted_per_s']}/s), "
                f"shed {load['shed_by_client_limit']}, errors {load['errors']}")
            backlog_at_end = outbox_backlog(url)
            check = check_signatures(url, env, [email for email, _ in accepted])
            log(f"stored vs accepted: {check}")

            log("waiting for the confirmation emails")
            deadline = time.monotonic() + args.email_wait
            wanted = {email for email, _ in accepted}
            while time.monotonic() < deadline:
                with sink.lock:
                    missing = len(wanted - sink.arrivals.keys())
                if not missing:
                    break
                time.sleep(1.0)
            with sink.lock:
                arrivals = dict(sink.arrivals)
            delays = [arrivals[email][0] - posted for email, posted in accepted if email in arrivals]
            last_arrival = max((arrivals[email][0] for email in wanted if email in arrivals),
                               default=load_end)
            emails = {
                "arrived": len(delays), "missing_after_wait": len(wanted) - len(delays),
                "delay_p50_s": round(percentile(delays, 50), 1),
                "delay_p95_s": round(percentile(delays, 95), 1),
                "delay_max_s": round(max(delays), 1) if delays else None,
                "outbox_backlog_at_load_end": backlog_at_end,
                "drained_s_after_load_end": round(last_arrival - load_end, 1),
                "celery_worker_processes": args.celery_workers, "celery_pool_processes_seen": pool_processes,
            }
            log(f"confirmation emails: {emails}")

            links = [arrivals[email][1] for email, _ in accepted if email in arrivals and arrivals[email][1]]
            sample = random.Random(9).sample(links, min(args.sample, len(links)))
            log(f"confirming {len(sample)} signatures through their emails, {args.confirmers} at a time")
            with LockSampler(url, interval=0.02) as confirm_locks:
                confirmed = confirm_sample(port, sample, args.confirmers)
            confirmed["count_check"] = counts(url)
            confirmed["lock_waits"] = confirm_locks.summary()
            log(f"confirmations: {confirmed}")
        finally:
            for process in reversed(processes):
                process.stop()
            sink.stop()
            flush_redis()  # leave no task behind for whoever uses this Redis database next

    count_ok = (confirmed["count_check"]["confirmed_rows"] == confirmed["count_check"]["counter_shards_sum"]
                == confirmed["confirmed_ok"])
    print()
    print(f"offered {load['offered']} at {args.rate:g}/s for {args.seconds:g} s; accepted {load['accepted']} "
          f"({load['accepted_per_s']}/s); shed {load['shed_by_client_limit']}; errors {load['errors']}")
    print(f"lost {check['lost']} (accepted but not stored), duplicated {check['duplicated']}")
    print(f"signature latency from arrival: p50 {load['latency_from_scheduled_arrival']['p50_ms']:.0f} ms, "
          f"p95 {load['latency_from_scheduled_arrival']['p95_ms']:.0f} ms, "
          f"p99 {load['latency_from_scheduled_arrival']['p99_ms']:.0f} ms")
    print(f"confirmation email delay: p50 {emails['delay_p50_s']} s, p95 {emails['delay_p95_s']} s, "
          f"max {emails['delay_max_s']} s; missing {emails['missing_after_wait']}; "
          f"{args.celery_workers} Celery worker processes")
    print(f"confirmed {confirmed['confirmed_ok']} of {confirmed['sample']}; count matches: {count_ok}; "
          f"lock waits during confirmations: "
          f"{confirmed['lock_waits']['samples_with_lock_waits_by_kind'] or 'none'}")
    path = write_results("surge", {
        "conditions": conditions, "load": load, "cores_used_by_role_during_load": cores,
        "cpu_ms_per_accepted_signature": cpu_ms_per_item(cores, load["accepted_per_s"]),
        "lock_waits_during_load": load_locks.summary(), "stored_check": check, "emails": emails,
        "confirmations": confirmed, "count_matches": count_ok,
    })
    print(f"results: {path}")
    return 0 if check["lost"] == 0 and count_ok else 1


if __name__ == "__main__":
    sys.exit(main())
