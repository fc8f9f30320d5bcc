"""B18 — bulk invalidation (RELIABILITY.md test 18), with the services organizers' pages call.

A fresh PostgreSQL database with the demo petition and --rows signatures inserted in bulk (70%
confirmed and in the count, the rest pending or held), from 1,000 /24 networks, 50 email domains
and spread over the last 10 days. Then, in turn: invalidate by an IPv4 CIDR (a /16 and a /28),
by email domain, and by time window; each time the preview count is taken first and compared
with the rows the action changed. After each step the petition's count is compared with the
number of confirmed signatures left (COUNT(*)).

Reports per filter: preview, changed, seconds; and whether the count is exact. Target: preview
equals changed, count exact.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.harness import (
    SLUG,
    Target,
    app_config,
    dispose,
    free_port,
    fresh_database,
    log,
    main_wrapper,
    make_app,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="signatures (default: 100,000)")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def ip_of(n: int) -> str:
    # 1,000 networks: 10.<a>.<b>.x, where (a, b) run over 4 x 250.
    network = n % 1000
    return f"10.{network // 250}.{network % 250}.{n // 1000 % 250 + 1}"


def populate(app: Any, rows: int, now: datetime) -> None:
    from sqlalchemy import insert

    from campaign.extensions import db
    from campaign.models import Signature
    from campaign.services.abuse import domain_hash
    from campaign.services.counting import add_to_count
    from campaign.services.petitions import petition_by_slug
    from campaign.services.privacy import cipher

    with app.app_context():
        try:
            petition = petition_by_slug(db.session, SLUG)
            assert petition is not None
            crypt = cipher()
            name = crypt.encrypt("Bulk Signer")  # one ciphertext for all: the test reads no names
            domains = [domain_hash(crypt, f"bulk{d}.example.net") for d in range(50)]
            networks: dict[str, tuple[str | None, str | None]] = {}
            confirmed = 0
            batch = []
            for n in range(rows):
                ip = ip_of(n)
                ip_hash, net_hash = networks.get(ip) or networks.setdefault(ip, crypt.ip_hashes(ip))
                status = "confirmed" if n % 10 < 7 else ("held" if n % 10 == 9 else "pending")
                confirmed += status == "confirmed"
                created = now - timedelta(seconds=(n * 8.64 * 10**5 / rows))  # over 10 days
                batch.append(
                    {
                        "petition_id": petition.id,
                        "name_encrypted": name,
                        "email_encrypted": name,
                        "email_index": crypt.blind_index(f"bulk-{n}@bulk{n % 50}.example.net"),
                        "email_domain_hash": domains[n % 50],
                        "country": "DE",
                        "status": status,
                        "ip_hash": ip_hash,
                        "network_hash": net_hash,
                        "created_at": created,
                        "confirmed_at": created if status == "confirmed" else None,
                        "held_at": created if status == "held" else None,
                        "hold_reasons": "ip_burst" if status == "held" else None,
                    }
                )
                if len(batch) == 5000:
                    db.session.execute(insert(Signature), batch)
                    batch = []
            if batch:
                db.session.execute(insert(Signature), batch)
            add_to_count(db.session, petition.id, confirmed)
            db.session.commit()
        finally:
            db.session.remove()


def step(app: Any, filters: dict[str, Any]) -> dict[str, Any]:
    from sqlalchemy import func, select

    from campaign.extensions import db
    from campaign.models import Signature, User
    from campaign.services import abuse
    from campaign.services.counting import signature_count
    from campaign.services.petitions import petition_by_slug

    with app.app_context():
        try:
            petition = petition_by_slug(db.session, SLUG)
            assert petition is not None
            actor = db.session.scalar(select(User).where(User.is_admin.is_(True)).limit(1))
            if actor is None:
                actor = db.session.scalar(select(User).limit(1))
            selection = abuse.Selection(**filters)
            started = time.perf_counter()
            preview = abuse.preview_invalidation(db.session, petition, selection)
            previewed = time.perf_counter()
            result = abuse.invalidate_matching(db.session, actor, petition, selection, "bench run")
            db.session.commit()
            done = time.perf_counter()
            shown = signature_count(db.session, petition.id)
            confirmed = db.session.scalar(
                select(func.count())
                .select_from(Signature)
                .where(Signature.petition_id == petition.id, Signature.status == "confirmed")
            )
            return {
                "filter": {k: str(v) for k, v in filters.items()},
                "preview": preview,
                "changed": result.changed,
                "counted_change": result.counted,
                "preview_s": round(previewed - started, 2),
                "invalidate_s": round(done - previewed, 2),
                "count_shown": shown,
                "confirmed_rows": int(confirmed or 0),
            }
        finally:
            db.session.remove()


def run(args: argparse.Namespace) -> dict[str, Any]:
    now = datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        database = stack.enter_context(fresh_database("b18", args.keep))
        app = make_app(app_config(database, "memory://localhost/", free_port()), schema=True)
        stack.callback(dispose, app)
        started = time.perf_counter()
        populate(app, args.rows, now)
        log(f"{args.rows} signatures inserted in {time.perf_counter() - started:.1f} s")
        steps = [
            {"ip": "10.1.0.0/16"},  # 250 networks of the 1,000
            {"ip": "10.2.3.0/28"},  # narrower than a stored /24: expanded into addresses
            {"domain": "bulk13.example.net"},
            {"since": now - timedelta(days=2, hours=1), "until": now - timedelta(days=1)},
        ]
        results = []
        for filters in steps:
            results.append(step(app, filters))
            log(f"invalidated {results[-1]}")
    return {"rows": args.rows, "steps": results}


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    steps = figures["steps"]
    return [
        Target(
            "preview equals invalidated",
            all(s["preview"] == s["changed"] > 0 for s in steps),
            "; ".join(f"{s['filter']}: {s['preview']} / {s['changed']}" for s in steps),
        ),
        Target(
            "count exact after each step",
            all(s["count_shown"] == s["confirmed_rows"] for s in steps),
            "; ".join(f"{s['count_shown']} / {s['confirmed_rows']}" for s in steps),
        ),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("b18", parse_args, run, check))
