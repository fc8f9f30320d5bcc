"""B17 — trending IP alert (RELIABILITY.md test 17).

gunicorn, a Celery worker and beat (which runs the trending check every TRENDING_INTERVAL
seconds), PostgreSQL, a private Redis, the SMTP sink. --signatures signatures come from one client
address within the hour (each a new signer with an address of its own; after the first they are
held by the burst rules, and still counted by the check). TRENDING_IP_PER_HOUR is the threshold.

Reports the detection latency (from the signature that reached the threshold to the alert row,
and to the alert email arriving at the organizer) and the alert email: it must name no signer's
address. Target: an alert within one job period (TRENDING_INTERVAL plus the time to send it),
no email address of a signer in it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
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
    shared_or_own_stack,
    wait_for,
)

ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--signatures", type=int, default=200, help="from one address (default: 200)")
    parser.add_argument("--threshold", type=int, default=100, help="TRENDING_IP_PER_HOUR (default: 100)")
    parser.add_argument("--interval", type=float, default=60.0, help="TRENDING_INTERVAL s (default: 60)")
    parser.add_argument("--source", type=int, default=900_000, help="which loopback client address")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def alert_state(app: Any, since: float) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from campaign.extensions import db
    from campaign.models import TrendingAlert

    with app.app_context():
        try:
            alerts = db.session.scalars(select(TrendingAlert).where(TrendingAlert.kind == "ip"))
            return [
                {"id": a.id, "count": a.count, "threshold": a.threshold, "at": a.created_at.timestamp()}
                for a in alerts
                if a.created_at.timestamp() >= since - 1
            ]
        finally:
            db.session.remove()


def alert_emails(app: Any, alert_ids: Sequence[int]) -> list[str]:
    """The alert emails as sent (built by the worker's own code), as text."""
    from sqlalchemy import select

    from campaign.extensions import db
    from campaign.mail.messages import build_message
    from campaign.models import OutboundEmail
    from campaign.services.abuse import TRENDING_ALERT, trending_alert_email

    texts = []
    with app.app_context():
        try:
            rows = db.session.scalars(select(OutboundEmail).where(OutboundEmail.kind == TRENDING_ALERT))
            for row in rows:
                if int(row.idempotency_key.split(":")[1]) not in alert_ids:
                    continue
                draft = trending_alert_email(db.session, row)
                if draft is not None:
                    message = build_message(draft, app.config["MAIL_DEFAULT_SENDER"])
                    texts.append(message.as_string())
        finally:
            db.session.remove()
    return texts


def run(args: argparse.Namespace, web: WebStack | None = None) -> dict[str, Any]:
    from campaign.services.demo import DEMO_ORGANIZER_EMAIL

    settings = {"TRENDING_IP_PER_HOUR": args.threshold, "TRENDING_INTERVAL": args.interval}
    with shared_or_own_stack(web, "b17", args.keep, **settings) as stack:
        threshold = int(stack.app.config["TRENDING_IP_PER_HOUR"])
        interval = float(stack.app.config["TRENDING_INTERVAL"])
        stamp = time.monotonic_ns() % 10**9
        # A domain per signer: the test is about one address, not one domain.
        emails = [f"b17-{stamp}-{n}@b17-{stamp}-{n}.example.net" for n in range(args.signatures)]
        fill = float(stack.app.config["SIGNING_MIN_FILL_SECONDS"]) + 0.5
        reached: dict[str, float] = {}
        started = time.time()

        async def sign_all() -> list[int]:
            token = await form_token(stack.port)
            await asyncio.sleep(fill)
            statuses = []
            for n, email in enumerate(emails):
                # post_signature picks the client address from its number: one number, one address.
                answer = await post_signature(stack.port, token, email, args.source)
                statuses.append(answer.status)
                if n + 1 == threshold:
                    reached["at"] = time.time()
            return statuses

        statuses = run_async(sign_all)
        log(f"{len(statuses)} signatures from one address; threshold {threshold}, check every {interval} s")
        found = wait_for(lambda: alert_state(stack.app, started), interval + 60, 0.25) or []
        alert_ids = [a["id"] for a in found]
        wait_for(lambda: stack.sink.snapshot()[DEMO_ORGANIZER_EMAIL] >= 1, 60, 0.25)
        with stack.sink.lock:
            mailed = [t for t, a in stack.sink.arrivals if a == DEMO_ORGANIZER_EMAIL and t >= started]
        texts = alert_emails(stack.app, alert_ids)
    named = sorted(
        {m.group(0) for text in texts for m in ADDRESS.finditer(text)} & {e.lower() for e in emails}
    )
    at = reached.get("at")
    return {
        "signatures": len(statuses),
        "http_statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "threshold_per_hour": threshold,
        "check_interval_s": interval,
        "alerts": [{k: v for k, v in a.items() if k != "at"} for a in found],
        "alert_after_threshold_s": round(min(a["at"] for a in found) - at, 1) if found and at else None,
        "email_after_threshold_s": round(min(mailed) - at, 1) if mailed and at else None,
        "alert_emails": len(texts),
        "signer_addresses_in_alert": named,
    }


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    limit = figures["check_interval_s"] + 30
    latency = figures["email_after_threshold_s"]
    return [
        Target("one IP alert", len(figures["alerts"]) == 1, str(figures["alerts"])),
        Target(
            f"alert email within one job period (<= {limit:.0f} s)",
            latency is not None and latency <= limit,
            f"row after {figures['alert_after_threshold_s']} s, email after {latency} s",
        ),
        Target(
            "no signer address in the alert",
            figures["alert_emails"] >= 1 and not figures["signer_addresses_in_alert"],
            f"{figures['alert_emails']} alert emails; named: {figures['signer_addresses_in_alert']}",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("b17", parse_args, run, check))
