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
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.harness import (
    Target,
    api_count,
    confirm_link,
    form_token,
    log,
    main_wrapper,
    outbox_summary,
    post_signature,
    wait_for,
    web_stack,
)

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


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import func, select

    from bench.faults.harness import scalar
    from campaign.models import Signature
    from campaign.services.emails import canonical_email

    aliases = list(ALIASES) + (list(MORE) if args.more else [])
    with contextlib.ExitStack() as stack:
        web = web_stack(stack, "b15", args.keep, OUTBOX_SWEEP_INTERVAL=2, OUTBOX_SWEEP_GRACE=5)
        fill = float(web.app.config["SIGNING_MIN_FILL_SECONDS"]) + 0.5

        async def sign_all() -> list[int]:
            token = await form_token(web.port)
            await asyncio.sleep(fill)  # a person takes a few seconds to fill the form
            statuses = []
            for n, alias in enumerate(aliases):
                answer = await post_signature(web.port, token, alias, 1000 + n)
                statuses.append(answer.status)
            return statuses

        statuses = asyncio.run(sign_all())
        log(f"signed as {aliases}: HTTP {statuses}")
        wait_for(
            lambda: (
                web.sink.total() >= 1
                and outbox_summary(web.app)["by_status"].keys() <= {"sent", "cancelled", "failed"}
            ),
            60,
            0.5,
        )
        time.sleep(1)

        async def confirm_all() -> list[int]:
            with web.sink.lock:
                paths = [p for links in web.sink.links.values() for p in links]
            return [await confirm_link(web.port, path, "127.0.0.2") for path in paths]

        confirmed = asyncio.run(confirm_all())

        async def counted() -> int:
            return await api_count(web.port)

        # The count is a periodic aggregate: visible within seconds, exact at rest.
        wait_for(lambda: asyncio.run(counted()) >= 1, 15, 1.0)
        time.sleep(args.settle)
        figures: dict[str, Any] = {
            "addresses_signed": aliases,
            "http_statuses": statuses,
            "signatures_stored": scalar(web.app, select(func.count()).select_from(Signature)),
            "emails_to_the_signer": {
                a: n
                for a, n in web.sink.snapshot().items()
                if canonical_email(a) == canonical_email(ALIASES[0])
            },
            "letters_to_officials": sum(
                n for a, n in web.sink.snapshot().items() if canonical_email(a) != canonical_email(ALIASES[0])
            ),
            "confirm_posts": confirmed,
            "counted_signatures": asyncio.run(counted()),
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
