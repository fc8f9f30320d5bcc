"""B16 — mail-bomb a victim (RELIABILITY.md test 16).

gunicorn, a Celery worker and beat, PostgreSQL, a private Redis, the SMTP sink. The sign form is
submitted --submissions times with one victim's address, each from its own loopback address (an
attacker with many IPs), in the ways a person could write it (case, spaces, and with --aliases a
Gmail victim's dots and +tags). The per-address cap (EMAILS_PER_ADDRESS_PER_PETITION, 5, as
e-petitions) counts every email the form causes to that mailbox.

Reports the emails the victim received and the HTTP answers. Target: <= 5 emails.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.harness import (
    Target,
    WebStack,
    form_token,
    log,
    main_wrapper,
    post_signature,
    run_async,
    settled,
    shared_or_own_stack,
    wait_for,
)

PLAIN = ("victim@example.org", "VICTIM@example.org", " victim@Example.org ", "Victim@EXAMPLE.ORG")
GMAIL = ("vic.tim@gmail.com", "victim+1@gmail.com", "VICTIM@googlemail.com", "v.i.c.t.i.m+x@gmail.com")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--submissions", type=int, default=20, help="sign form submissions (default: 20)")
    parser.add_argument(
        "--aliases", action="store_true", help="a Gmail victim, written with dots, +tags and googlemail.com"
    )
    parser.add_argument("--concurrent", action="store_true", help="all submissions at once")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, web: WebStack | None = None) -> dict[str, Any]:
    from campaign.services.emails import canonical_email

    forms = GMAIL if args.aliases else PLAIN
    with shared_or_own_stack(web, "b16", args.keep) as stack:
        fill = float(stack.app.config["SIGNING_MIN_FILL_SECONDS"]) + 0.5
        victim = canonical_email(forms[0].strip().lower())
        sink_before = stack.sink.snapshot()

        async def bomb() -> list[int]:
            token = await form_token(stack.port)
            await asyncio.sleep(fill)
            calls = [
                post_signature(stack.port, token, forms[n % len(forms)], 2000 + n)
                for n in range(args.submissions)
            ]
            if args.concurrent:
                answers = await asyncio.gather(*calls)
            else:
                answers = [await call for call in calls]
            return [a.status for a in answers]

        started = time.monotonic()
        statuses = run_async(bomb)
        log(f"{len(statuses)} submissions in {time.monotonic() - started:.1f} s: {set(statuses)}")
        wait_for(
            lambda: any(canonical_email(a) == victim for a in stack.sink.snapshot() - sink_before), 60, 0.5
        )
        settled(stack)  # a row is marked sent after the sink accepted it: nothing is left on its way
        got = stack.sink.snapshot() - sink_before
        received = {a: n for a, n in got.items() if canonical_email(a) == victim}
        figures: dict[str, Any] = {
            "submissions": args.submissions,
            "written_as": list(forms),
            "http_statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "emails_to_victim": sum(received.values()),
            "emails_by_address": received,
            "cap": int(stack.app.config["EMAILS_PER_ADDRESS_PER_PETITION"]),
        }
    return figures


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    return [
        Target(
            "victim receives <= 5 emails",
            figures["emails_to_victim"] <= 5,
            f"{figures['emails_to_victim']} emails for {figures['submissions']} submissions",
        ),
        Target(
            "the same answer to every submission",
            list(figures["http_statuses"]) == ["303"],
            str(figures["http_statuses"]),
        ),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("b16", parse_args, run, check))
