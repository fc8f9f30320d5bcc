"""Bot burst beside real signers (issue 6): 2,000 signing attempts from 5 client addresses and
300 real signers, each from an address of its own, at the same time, on one petition.

gunicorn (production settings, PROXY_FIX_HOPS=0, so the client address is the TCP source) on
loopback, PostgreSQL, Redis (broker and rate-limit storage), Celery workers and a loopback SMTP
sink. Every client binds its own 127.x.y.z source address. Real signers behave as people do:
they open the page, take 3 to 8 seconds to fill the form, sign with their own (varied) mailbox
and confirm from the email; their browsers run the page's script, which fetches the signed
opening time (form-started). Bots fire as fast as they can from 5 addresses: half fill every
field including the hidden one (plain scripts), half leave it empty and fetch form-started as a
headless browser would; their addresses are throwaway, bot-farm or webmail ones; they never
confirm (they cannot read the inboxes).

Prints: real signers accepted (303) and counted after confirming (target: all 300), and bot
attempts held, refused (any answer but 303; the sign form never answers 429) or left pending
(unconfirmed: never counted, purged after UNCONFIRMED_RETENTION_DAYS). JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SLUG,
    TOKEN,
    Process,
    Sink,
    app_environment,
    flask_command,
    flush_redis,
    free_port,
    fresh_database,
    http_request,
    latency_summary,
    log,
    source_address,
    start_celery,
    start_gunicorn,
    versions,
    workdir,
    write_results,
)

COMMON = ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "gmx.de", "web.de"]
BOT_DOMAINS = ["mailinator.com", "yopmail.com", "bot-farm.example", "gmail.com"]
BOT_ADDRESSES = [f"127.99.0.{n}" for n in range(1, 6)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bots", type=int, default=2000, help="bot signing attempts (default: 2000)")
    parser.add_argument("--real", type=int, default=300, help="real signers (default: 300)")
    parser.add_argument("--bot-concurrency", type=int, default=20,
                        help="bot requests in flight (default: 20)")
    parser.add_argument("--real-concurrency", type=int, default=60,
                        help="real signers at once (default: 60)")
    parser.add_argument("--web-workers", type=int, default=5, help="gunicorn workers (default: 5)")
    parser.add_argument("--celery-workers", type=int, default=2, help="Celery processes (default: 2)")
    parser.add_argument("--email-wait", type=float, default=300.0, help="longest wait for the emails (s)")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    return parser.parse_args(argv)


def form_body(token: str, name: str, email: str, honeypot: str = "", started: str = "") -> bytes:
    return urlencode({"name": name, "email": email, "country": "DE", "form_token": token, "source": "",
                      "website": honeypot, "form_started": started}).encode()


async def sign(port: int, source: str, name: str, email: str, think: float,
               honeypot: str, script: bool = True) -> tuple[int, float]:
    """GET the page (and, with `script`, its form-started note, as the page's script does), wait
    `think` seconds, POST. Returns the POST's status and latency."""
    page = await http_request(port, "GET", f"/petitions/{SLUG}", source)
    match = TOKEN.search(page.body)
    if page.status != 200 or not match:
        return -page.status, 0.0
    started = ""
    if script:
        note = await http_request(port, "GET", f"/petitions/{SLUG}/form-started", source)
        started = note.body.decode().strip() if note.status == 200 else ""
    if think:
        await asyncio.sleep(think)
    started = time.perf_counter()
    answer = await http_request(port, "POST", f"/petitions/{SLUG}/sign", source,
                                form_body(match.group(1).decode(), name, email, honeypot, started),
                                {"Content-Type": "application/x-www-form-urlencoded",
                                 "Origin": f"http://127.0.0.1:{port}"})
    return answer.status, time.perf_counter() - started


async def run_burst(port: int, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    real = [(f"Real Person {n}", f"person{n}@{COMMON[n % len(COMMON)] if n % 5 else f'org{n % 40}.example'}",
             source_address(n), 3.0 + rng.random() * 5.0) for n in range(args.real)]
    bots = [(f"Bot {n}", f"bot{n}-{rng.randrange(10**9)}@{BOT_DOMAINS[n % len(BOT_DOMAINS)]}",
             BOT_ADDRESSES[n % len(BOT_ADDRESSES)], "http://spam.example" if n % 2 else "")
            for n in range(args.bots)]
    real_results: dict[str, tuple[int, float]] = {}
    bot_results: list[tuple[int, float]] = []

    async def real_worker(queue: list[Any]) -> None:
        while queue:
            name, email, source, think = queue.pop()
            try:
                real_results[email] = await sign(port, source, name, email, think, "")
            except (TimeoutError, OSError) as error:
                real_results[email] = (0, 0.0)
                log(f"real signer error: {type(error).__name__}")

    async def bot_worker(queue: list[Any]) -> None:
        while queue:
            name, email, source, honeypot = queue.pop()
            try:
                bot_results.append(await sign(port, source, name, email, 0.0, honeypot,
                                              script=not honeypot))
            except (TimeoutError, OSError):
                bot_results.append((0, 0.0))

    started = time.perf_counter()
    real_queue, bot_queue = list(reversed(real)), list(reversed(bots))
    await asyncio.wait_for(asyncio.gather(
        *(real_worker(real_queue) for _ in range(args.real_concurrency)),
        *(bot_worker(bot_queue) for _ in range(args.bot_concurrency))), timeout=1800)
    took = time.perf_counter() - started
    statuses: dict[int, int] = {}
    for status, _ in bot_results:
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "seconds": round(took, 1),
        "real": {"signers": len(real), "accepted_303": sum(s == 303 for s, _ in real_results.values()),
                 "statuses": sorted({s for s, _ in real_results.values()}),
                 "post_latency": latency_summary([t for s, t in real_results.values() if s == 303])},
        "bots": {"attempts": len(bots), "statuses": statuses,
                 "post_latency": latency_summary([t for s, t in bot_results if s == 303])},
        "_real_emails": [email for _, email, _, _ in real],
    }


async def confirm_all(port: int, paths: dict[str, str], concurrency: int) -> dict[str, int]:
    import re

    csrf = re.compile(rb'name="csrf_token" value="([^"]+)"')
    outcome = {"confirmed": 0, "failed": 0}
    queue = list(paths.items())

    async def worker(n: int) -> None:
        while queue:
            _email, path = queue.pop()
            source = source_address(60_000 + len(queue))
            page = await http_request(port, "GET", path, source)
            match = csrf.search(page.body)
            cookie = page.headers.get("set-cookie", "").split(";", 1)[0]
            if page.status != 200 or not match:
                outcome["failed"] += 1
                continue
            form = urlencode({"csrf_token": match.group(1).decode()}).encode()
            answer = await http_request(port, "POST", path, source, form, {
                "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie,
                "Origin": f"http://127.0.0.1:{port}"})
            outcome["confirmed" if answer.status == 303 else "failed"] += 1

    await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(concurrency))), timeout=900)
    return outcome


def database_figures(url: str, env: dict[str, str], real_emails: list[str]) -> dict[str, Any]:
    """Statuses of the real signers' and the bots' signatures, and the count, from the database."""
    import psycopg

    blind = blind_indexes(env, real_emails)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT email_index, status, hold_reasons, confirmed_at IS NOT NULL "
                            "FROM signatures").fetchall()
        counted = conn.execute("SELECT coalesce(sum(confirmed), 0) FROM petition_counters").fetchone()
    real = [r for r in rows if r[0] in blind]
    bots = [r for r in rows if r[0] not in blind]
    reasons: dict[str, int] = {}
    for row in bots:
        for reason in (row[2] or "").split(","):
            if reason:
                reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "real_stored": len(real),
        "real_by_status": _by(real, 1),
        "real_held": sum(r[1] == "held" for r in real),
        "bot_stored": len(bots),
        "bot_by_status": _by(bots, 1),
        "bot_hold_reasons": reasons,
        "bot_counted": sum(r[1] == "confirmed" for r in bots),
        "count_shown": int(counted[0]) if counted else -1,
    }


def _by(rows: list[Any], column: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in rows:
        out[row[column]] = out.get(row[column], 0) + 1
    return out


def create_schema(env: dict[str, str]) -> None:
    """The models' tables on the fresh database (create_all, not the migrations: this measures
    abuse handling, and works before the migrations of new columns are written)."""
    import subprocess

    code = ("from campaign import create_app; from campaign.extensions import db; "
            "app = create_app(); app.app_context().push(); db.create_all()")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=120)


def blind_indexes(env: dict[str, str], emails: list[str]) -> set[str]:
    from campaign.services.emails import parse_email
    from campaign.services.privacy import SignerCipher

    crypt = SignerCipher(env["SIGNER_DATA_KEYS"], env["BLIND_INDEX_KEY"])
    return {crypt.blind_index(parse_email(email).canonical) for email in emails}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    conditions = {"bots": args.bots, "bot_addresses": BOT_ADDRESSES, "real_signers": args.real,
                  "real_think_seconds": "3 to 8", "web_workers": args.web_workers,
                  "celery_worker_processes": args.celery_workers, "proxy_fix_hops": 0,
                  "bot_mix": "half fill the hidden field; domains " + ", ".join(BOT_DOMAINS),
                  "settings": "production defaults (SIGNING_IP_BURST 1/60, 5/300; SIGNING_DOMAIN_BURST "
                              "30/60, 100/300; SIGNING_RATELIMIT_PER_IP 20 per minute, 200 per hour; "
                              "SIGNING_RATELIMIT_PER_PETITION 2 per minute, 10 per hour; "
                              "SIGNING_MIN_FILL_SECONDS 3; FORM_TOKEN_BUCKET 60)",
                  "redis": "BENCH_REDIS_URL (broker and rate-limit storage)",
                  "versions": versions()}
    log(f"conditions: {conditions}")
    with workdir(args.keep) as work, fresh_database("botburst", keep=args.keep) as url:
        sink = Sink()
        port = free_port()
        env = app_environment(url, port, sink.port, PROXY_FIX_HOPS="0")
        processes: list[Process] = []
        try:
            create_schema(env)
            flask_command(env, "seed-demo")
            flush_redis()
            processes.append(start_celery(env, args.celery_workers, work, beat=True))
            processes.append(start_gunicorn("app:app", env, port, args.web_workers, work))
            log(f"{args.bots} bot attempts from {len(BOT_ADDRESSES)} addresses "
                f"beside {args.real} real signers")
            burst = asyncio.run(run_burst(port, args, rng))
            real_emails = burst.pop("_real_emails")
            log(f"burst done in {burst['seconds']} s: {burst}")
            deadline = time.monotonic() + args.email_wait
            while time.monotonic() < deadline:
                with sink.lock:
                    missing = [e for e in real_emails if e.lower() not in sink.arrivals]
                if not missing:
                    break
                time.sleep(1.0)
            with sink.lock:
                paths = {e: sink.arrivals[e.lower()][1] for e in real_emails if e.lower() in sink.arrivals}
                emails_sent = sink.count
            log(f"{len(paths)} of {len(real_emails)} real signers got their email; confirming")
            confirmed = asyncio.run(confirm_all(port, paths, 20))
            time.sleep(1.0)
            figures = database_figures(url, env, real_emails)
        finally:
            for process in reversed(processes):
                process.stop()
            sink.stop()

    bots = burst["bots"]
    held = figures["bot_by_status"].get("held", 0)
    refused = sum(n for status, n in bots["statuses"].items() if status != 303)
    pending = figures["bot_by_status"].get("pending", 0)
    real_ok = (burst["real"]["accepted_303"] == args.real and confirmed["confirmed"] == args.real
               and figures["real_by_status"].get("confirmed", 0) == args.real)
    print()
    print(f"real signers: {burst['real']['accepted_303']} of {args.real} accepted, "
          f"{len(paths)} got their email, {confirmed['confirmed']} confirmed, "
          f"{figures['real_by_status'].get('confirmed', 0)} counted, {figures['real_held']} held")
    print(f"bot attempts: {bots['attempts']}: {held} held, {refused} refused (statuses {bots['statuses']}), "
          f"{pending} accepted as pending (never confirmed, never counted); "
          f"hold reasons {figures['bot_hold_reasons']}")
    real_confirmed = figures["real_by_status"].get("confirmed", 0)
    print(f"count shown {figures['count_shown']} (real confirmed {real_confirmed}, "
          f"bots counted {figures['bot_counted']}); 429 answers: {bots['statuses'].get(429, 0)}; "
          f"emails at the sink once the real signers' had all arrived {emails_sent}")
    print(f"POST latency: real p50 {burst['real']['post_latency']['p50_ms']} ms, "
          f"p95 {burst['real']['post_latency']['p95_ms']} ms; bots p50 {bots['post_latency']['p50_ms']} ms")
    path = write_results("bot-burst", {"conditions": conditions, "burst": burst, "confirmations": confirmed,
                                       "database": figures, "emails_sent": emails_sent,
                                       "real_all_accepted_and_counted": real_ok,
                                       "bot_attempts_held": held, "bot_attempts_refused": refused,
                                       "bot_attempts_pending_unconfirmed": pending})
    print(f"results: {path}")
    return 0 if real_ok and figures["bot_counted"] == 0 and bots["statuses"].get(429, 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
