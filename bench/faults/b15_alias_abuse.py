"""B15 — alias abuse (RELIABILITY.md test 15).

gunicorn, a Celery worker and beat, PostgreSQL, a private Redis, the SMTP sink. The sign form is
submitted with one Gmail mailbox written several ways (dots, a +tag, googlemail.com, capitals),
each from its own loopback address and after the form's minimum fill time, as a person would.
Every confirmation link that arrives is then opened and its button pressed.

Reports signatures stored, emails sent (and to which address), and the counted signatures the API
shows. Target: 1 counted signature.
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
    api_count,
    confirm_link,
    form_token,
    log,
    main_wrapper,
    post_signature,
    run_async,
    settled,
    shared_or_own_stack,
    signature_rows,
    wait_for,
)
from campaign.services.emails import canonical_email

ALIASES = ("a.b+x@gmail.com", "ab@googlemail.com", "AB@gmail.com")
MORE = ("A.B@Gmail.com", "a.b+petition@googlemail.com", " ab@GMAIL.COM ")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--more", action="store_true", help=f"also sign as {', '.join(repr(a) for a in MORE)}"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=6.0,
        help="seconds the count is watched after it showed 1 (default: 6)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, web: WebStack | None = None) -> dict[str, Any]:
    aliases = list(ALIASES) + (list(MORE) if args.more else [])
    with shared_or_own_stack(web, "b15", args.keep) as stack:
        fill = float(stack.app.config["SIGNING_MIN_FILL_SECONDS"]) + 0.5
        before = run_async(lambda: api_count(stack.port))
        sink_before = stack.sink.snapshot()

        async def sign_all() -> list[int]:
            token = await form_token(stack.port)
            await asyncio.sleep(fill)  # a person takes a few seconds to fill the form
            statuses = []
            for n, alias in enumerate(aliases):
                answer = await post_signature(stack.port, token, alias, 1000 + n)
                statuses.append(answer.status)
            return statuses

        statuses = run_async(sign_all)
        log(f"signed as {aliases}: HTTP {statuses}")
        wait_for(lambda: stack.sink.snapshot()[ALIASES[0]] >= 1, 60, 0.5)
        settled(stack)

        async def confirm_all() -> list[int]:
            with stack.sink.lock:
                paths = [
                    p
                    for address, links in stack.sink.links.items()
                    for p in links
                    if address in {a.strip().lower() for a in aliases}
                ]
            return [await confirm_link(stack.port, path, "127.0.0.2") for path in paths]

        confirmed = run_async(confirm_all)

        def counted() -> int:
            return run_async(lambda: api_count(stack.port)) - before

        # The count is a periodic aggregate: visible within seconds, exact at rest.
        wait_for(lambda: counted() >= 1, 15, 1.0)
        time.sleep(args.settle)
        rows = signature_rows(stack.app, aliases)
        got = stack.sink.snapshot() - sink_before
        canonical = canonical_email(ALIASES[0])
        figures: dict[str, Any] = {
            "addresses_signed": aliases,
            "http_statuses": statuses,
            "signatures_stored": len(rows),
            "emails_to_the_signer": {a: n for a, n in got.items() if canonical_email(a) == canonical},
            "confirm_posts": confirmed,
            "counted_signatures": counted(),
        }
    return figures


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    return [
        Target(
            "1 counted signature",
            figures["counted_signatures"] == 1,
            f"{figures['counted_signatures']} counted, {figures['signatures_stored']} stored",
        ),
        Target(
            "the same answer to every submission",
            set(figures["http_statuses"]) == {303},
            str(figures["http_statuses"]),
        ),
        # One signature, so every email the form caused goes to the address it was first made with.
        Target(
            "the signer's mail goes to one address",
            len(figures["emails_to_the_signer"]) == 1,
            str(figures["emails_to_the_signer"]),
        ),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("b15", parse_args, run, check))
