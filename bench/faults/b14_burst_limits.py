"""B14 — burst and sustained limits, and held signatures indistinguishable (RELIABILITY.md test 14).

gunicorn, a Celery worker and beat, PostgreSQL, a private Redis, the SMTP sink. One client address
signs the petition twice within the shortest SIGNING_IP_BURST window, then 6 more times within the
longest (with the defaults 1/60, 5/300: twice within 60 s, then 6 times within 5 minutes, so this
part takes 5 minutes), each time as a new signer. The signatures the server held are compared with
what the configured rules say should be held, replayed on the stored signing times (held ones
count too, as they do on the server).

Then --trials pairs of a normal and a held signature (the hidden field filled), interleaved, each
from an address of its own: status, headers (but Date and the request id) and body must be
identical; the median POST times are reported, and with --trials 200 or more their difference
must be within --noise-ms (5 ms). Shorter runs (the fast suite) check only that the answers are
identical: timing is for this benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.harness import (
    SLUG,
    Target,
    WebStack,
    form_token,
    http_request,
    log,
    main_wrapper,
    run_async,
    shared_or_own_stack,
    signature_rows,
    source_address,
)

VOLATILE = {"date", "x-request-id"}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=1000, help="normal/held pairs (default: 1000)")
    parser.add_argument("--noise-ms", type=float, default=5.0, help="largest median difference (ms)")
    parser.add_argument("--burst-ip", default="127.250.0.1", help="the one client address of the burst")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def read_rules(text: str) -> list[tuple[int, int]]:
    """Parse "1/60, 5/300" into [(1, 60), (5, 300)], here rather than with the app's own parser, so
    that a parser that drifts from the documented meaning is caught."""
    pairs = [part.strip().split("/") for part in text.replace(";", ",").split(",") if part.strip()]
    return [(int(count), int(seconds)) for count, seconds in pairs]


def schedule(rules: list[tuple[int, int]]) -> list[float]:
    """Seconds from the first signature: 2 inside the shortest window, 6 more inside the longest."""
    shortest = min(seconds for _n, seconds in rules)
    longest = max(seconds for _n, seconds in rules)
    first, last = 1.1 * shortest, 0.95 * longest
    return [0.0, 0.5 * shortest] + [first + k * (last - first) / 5 for k in range(6)]


def expected_held(times: list[Any], rules: list[tuple[int, int]]) -> list[bool]:
    """The rules replayed: held when an earlier signature count in any window reaches its limit."""
    held = []
    for i, moment in enumerate(times):
        held.append(
            any(
                sum(1 for earlier in times[:i] if earlier >= moment - timedelta(seconds=seconds)) >= limit
                for limit, seconds in rules
            )
        )
    return held


def form(email: str, token: str, held: bool = False) -> bytes:
    return urlencode(
        {
            "name": "Same Length Name",
            "email": email,
            "country": "DE",
            "form_token": token,
            "source": "",
            "website": "x" if held else "",
        }
    ).encode()


def run(args: argparse.Namespace, web: WebStack | None = None) -> dict[str, Any]:
    with shared_or_own_stack(web, "b14", args.keep) as stack:
        port = stack.port
        rules = read_rules(stack.app.config["SIGNING_IP_BURST"])
        fill = float(stack.app.config["SIGNING_MIN_FILL_SECONDS"]) + 0.5
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{port}"}
        stamp = time.monotonic_ns() % 10**9
        burst_emails = [f"b14-{stamp}-{n}@b14-{stamp}-{n}.example.net" for n in range(8)]

        async def burst() -> list[int]:
            token = await form_token(port)
            await asyncio.sleep(fill)
            started = time.monotonic()
            statuses = []
            for email, at in zip(burst_emails, schedule(rules), strict=True):
                await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                answer = await http_request(
                    port, "POST", f"/petitions/{SLUG}/sign", args.burst_ip, form(email, token), headers
                )
                statuses.append(answer.status)
            return statuses

        log(f"burst from {args.burst_ip} under {rules}: {schedule(rules)[-1]:.0f} s")
        burst_statuses = run_async(burst)
        rows = signature_rows(stack.app, burst_emails)
        stored = [rows[e] for e in burst_emails if e in rows]
        times = [r["created_at"] for r in stored]
        held = [r["held"] for r in stored]
        expected = expected_held(times, rules)

        async def pairs() -> dict[str, Any]:
            token = await form_token(port)
            await asyncio.sleep(fill)
            seconds: dict[str, list[float]] = {"normal": [], "held": []}
            shapes: dict[str, set[tuple[Any, ...]]] = {"normal": set(), "held": set()}
            for n in range(args.trials * 2):
                kind = "held" if n % 2 else "normal"
                # A domain of its own per trial: a shared one would trip the domain burst rule.
                email = f"t{stamp}-{n:07d}@d{stamp}-{n:07d}.example.net"
                begun = time.perf_counter()
                answer = await http_request(
                    port,
                    "POST",
                    f"/petitions/{SLUG}/sign",
                    source_address(400_000 + n),
                    form(email, token, held=kind == "held"),
                    headers,
                )
                seconds[kind].append(time.perf_counter() - begun)
                kept = tuple(sorted((k, v) for k, v in answer.headers.items() if k not in VOLATILE))
                shapes[kind].add((answer.status, answer.body, kept))
            return {"seconds": seconds, "shapes": shapes}

        compared = run_async(pairs)
        trial_emails = [f"t{stamp}-{n:07d}@d{stamp}-{n:07d}.example.net" for n in range(args.trials * 2)]
        trial_rows = signature_rows(stack.app, trial_emails)

    shapes = compared["shapes"]
    medians = {k: statistics.median(v) * 1000 for k, v in compared["seconds"].items()}
    shape = next(iter(shapes["normal"]))
    return {
        "rules": [f"{n}/{s}" for n, s in rules],
        "burst_offsets_s": [round(t, 1) for t in schedule(rules)],
        "burst_http_statuses": burst_statuses,
        "burst_stored": len(stored),
        "burst_held": sum(held),
        "burst_expected_held": sum(expected),
        "burst_held_matches_rules": held == expected and len(stored) == len(burst_emails),
        "trials_each": args.trials,
        "trials_held_stored": sum(1 for r in trial_rows.values() if r["held"]),
        "trials_normal_stored": sum(1 for r in trial_rows.values() if not r["held"]),
        "responses_identical": shapes["normal"] == shapes["held"] and len(shapes["normal"]) == 1,
        "distinct_responses": {k: len(v) for k, v in shapes.items()},
        "status": shape[0],
        "body_bytes": len(shape[1]),
        "median_post_ms": {k: round(v, 2) for k, v in medians.items()},
        "median_difference_ms": round(medians["held"] - medians["normal"], 2),
    }


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    targets = [
        Target(
            "held signatures match the configured limits",
            figures["burst_held_matches_rules"],
            f"{figures['burst_held']} held, {figures['burst_expected_held']} by the rules "
            f"{figures['rules']} ({figures['burst_stored']} of 8 stored)",
        ),
        Target(
            "the sign form never refuses",
            set(figures["burst_http_statuses"]) == {303},
            str(figures["burst_http_statuses"]),
        ),
        Target(
            "every held trial held, no normal one",
            figures["trials_held_stored"] == figures["trials_normal_stored"] == args.trials,
            f"{figures['trials_held_stored']} held, {figures['trials_normal_stored']} not",
        ),
        Target(
            "held and normal answers identical (status, headers, body)",
            figures["responses_identical"],
            f"distinct answers {figures['distinct_responses']}, status {figures['status']}, "
            f"{figures['body_bytes']} bytes",
        ),
    ]
    if args.trials >= 200:
        targets.append(
            Target(
                f"median time within noise (< {args.noise_ms} ms)",
                abs(figures["median_difference_ms"]) < args.noise_ms,
                f"{figures['median_difference_ms']:+.2f} ms ({figures['median_post_ms']})",
            )
        )
    return targets


if __name__ == "__main__":
    sys.exit(main_wrapper("b14", parse_args, run, check))
