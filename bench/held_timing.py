"""Held vs normal signatures, compared from outside (R14's second half): 1,000 trials each.

gunicorn (production settings, PROXY_FIX_HOPS=0) on loopback with PostgreSQL and Redis. Each
trial POSTs one signature from an address of its own, normal and held trials interleaved (so a
drift in the machine's speed hits both alike). A held trial fills the hidden field, which holds
the signature for review; otherwise the two requests are alike (same form token, same fields,
fresh addresses). Prints whether status, headers and body are identical (apart from the date
and request id) and the median POST time of each and their difference. Target: identical, and
a median difference within noise (< 5 ms). JSON to bench/results/.

With --compare enumeration (R33): an address that has already signed against a new one. First
`trials` addresses sign once (each from an address of its own); then the trials alternate a new
address with one of those, each used once, so the repeat stays under the per-address email cap.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bot_burst import create_schema
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
    start_gunicorn,
    versions,
    workdir,
    write_results,
)

VOLATILE = {"date", "x-request-id"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000, help="trials of each kind (default: 1000)")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (default: 2)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--compare", choices=["held", "enumeration"], default="held",
                        help="held vs normal (R14, default) or already signed vs new (R33)")
    return parser.parse_args(argv)


def _form(token: str, email: str, honeypot: str = "") -> bytes:
    return urlencode({"name": "Same Length Name", "email": email, "country": "DE", "form_token": token,
                      "source": "", "website": honeypot}).encode()


async def _post(port: int, source: str, body: bytes) -> Any:
    return await http_request(port, "POST", f"/petitions/{SLUG}/sign", source, body,
                              {"Content-Type": "application/x-www-form-urlencoded",
                               "Origin": f"http://127.0.0.1:{port}"})


async def enumeration_trials(port: int, count: int) -> dict[str, Any]:
    """Already signed vs new addresses (R33), interleaved, each address used once."""
    page = await http_request(port, "GET", f"/petitions/{SLUG}", source_address(1))
    match = TOKEN.search(page.body)
    if page.status != 200 or not match:
        raise RuntimeError(f"the petition page answered {page.status} without a form token")
    token = match.group(1).decode()
    await asyncio.sleep(4.0)
    for n in range(count):  # the addresses that have signed before
        answer = await _post(port, source_address(200_000 + n), _form(token, f"s{n:07d}@e{n:07d}.example"))
        if answer.status != 303:
            raise RuntimeError(f"signing before the trials answered {answer.status}")
    times: dict[str, list[float]] = {"new": [], "signed": []}
    shapes: dict[str, set[tuple[Any, ...]]] = {"new": set(), "signed": set()}
    for n in range(count * 2):
        kind = "signed" if n % 2 else "new"
        email = f"s{n // 2:07d}@e{n // 2:07d}.example" if kind == "signed" else f"n{n:07d}@f{n:07d}.example"
        started = time.perf_counter()
        answer = await _post(port, source_address(1000 + n), _form(token, email))
        times[kind].append(time.perf_counter() - started)
        headers = tuple(sorted((k, v) for k, v in answer.headers.items() if k not in VOLATILE))
        shapes[kind].add((answer.status, len(answer.body), answer.body, headers))
    return {"times": times, "shapes": shapes}


async def trials(port: int, count: int) -> dict[str, Any]:
    page = await http_request(port, "GET", f"/petitions/{SLUG}", source_address(1))
    match = TOKEN.search(page.body)
    if page.status != 200 or not match:
        raise RuntimeError(f"the petition page answered {page.status} without a form token")
    token = match.group(1).decode()
    # Older than SIGNING_MIN_FILL_SECONDS, so the normal trials are not held for speed.
    await asyncio.sleep(4.0)
    times: dict[str, list[float]] = {"normal": [], "held": []}
    shapes: dict[str, set[tuple[Any, ...]]] = {"normal": set(), "held": set()}
    for n in range(count * 2):
        kind = "held" if n % 2 else "normal"
        # A domain of its own per trial: a shared one would trip the domain burst check.
        body = urlencode({"name": "Same Length Name", "email": f"t{n:07d}@d{n:07d}.example", "country": "DE",
                          "form_token": token, "source": "",
                          "website": "x" if kind == "held" else ""}).encode()
        started = time.perf_counter()
        answer = await http_request(port, "POST", f"/petitions/{SLUG}/sign", source_address(1000 + n), body,
                                    {"Content-Type": "application/x-www-form-urlencoded",
                                     "Origin": f"http://127.0.0.1:{port}"})
        times[kind].append(time.perf_counter() - started)
        headers = tuple(sorted((k, v) for k, v in answer.headers.items() if k not in VOLATILE))
        shapes[kind].add((answer.status, len(answer.body), answer.body, headers))
    return {"times": times, "shapes": shapes}


def statuses(url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT status, count(*) FROM signatures GROUP BY status").fetchall()
    return {str(status): int(n) for status, n in rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    conditions = {"trials_each": args.trials, "web_workers": args.web_workers, "proxy_fix_hops": 0,
                  "held_by": "the hidden field filled (HoldReason.HONEYPOT)", "order": "interleaved",
                  "client": "one request at a time, a new connection and source address each",
                  "compare": args.compare, "versions": versions()}
    if args.compare == "enumeration":
        conditions["held_by"] = "none: an address that signed before vs a new one"
    log(f"conditions: {conditions}")
    with workdir(args.keep) as work, fresh_database("heldtiming", keep=args.keep) as url:
        sink = Sink()
        port = free_port()
        env = app_environment(url, port, sink.port, PROXY_FIX_HOPS="0")
        processes: list[Process] = []
        try:
            create_schema(env)
            flask_command(env, "seed-demo")
            flush_redis()
            processes.append(start_gunicorn("app:app", env, port, args.web_workers, work))
            run = enumeration_trials if args.compare == "enumeration" else trials
            result = asyncio.run(run(port, args.trials))
            stored = statuses(url)
        finally:
            for process in reversed(processes):
                process.stop()
            sink.stop()

    times, shapes = result["times"], result["shapes"]
    base, other = ("new", "signed") if args.compare == "enumeration" else ("normal", "held")
    identical = shapes[base] == shapes[other] and len(shapes[base]) == 1
    medians = {kind: statistics.median(values) * 1000 for kind, values in times.items()}
    difference = medians[other] - medians[base]
    shape = next(iter(shapes[base]))
    print()
    expected = (f"{args.trials * 2} pending" if args.compare == "enumeration"
                else f"{args.trials} pending and {args.trials} held")
    print(f"stored: {stored} (expected {expected})")
    print(f"responses identical (status, headers, body): {identical}; status {shape[0]}, "
          f"body {shape[1]} bytes; distinct shapes {base} {len(shapes[base])}, "
          f"{other} {len(shapes[other])}")
    print(f"median POST: {base} {medians[base]:.2f} ms, {other} {medians[other]:.2f} ms, "
          f"difference {difference:+.2f} ms over {args.trials} trials each")
    path = write_results("held-timing" if args.compare == "held" else "enumeration-timing", {
        "conditions": conditions, "stored": stored, "identical": identical,
        "status": shape[0], "body_bytes": shape[1],
        "median_ms": {k: round(v, 3) for k, v in medians.items()},
        "median_difference_ms": round(difference, 3),
        "latency": {kind: latency_summary(values) for kind, values in times.items()},
    })
    print(f"results: {path}")
    if args.compare == "enumeration":
        ok = identical and abs(difference) < 5.0 and stored.get("pending") == args.trials * 2
    else:
        ok = identical and abs(difference) < 5.0 and stored.get("held") == args.trials
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
