"""Bulk review at scale (R18): preview and invalidate by address, network, email domain and time
window on a petition of 100,000 signatures, on PostgreSQL, through the services the moderation
page calls (campaign.services.abuse). In one process: this measures the queries, not HTTP.

Signatures are written straight into the table (keyed hashes as the signing path computes them;
one encrypted name and email shared by all, which nothing here reads): 80% confirmed and counted,
15% pending, 5% held, from 2,000 client addresses in 200 networks, over 10 email domains, spread
over 30 days. Then, in turn, each selection is previewed, invalidated and checked: the preview
must equal the rows changed, and the petition's count must equal the confirmed rows left.

Prints one line per selection; JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import app_environment, free_port, fresh_database, log, write_results

DOMAINS = [f"org{n}.example" for n in range(10)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="signatures (default: 100000)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    return parser.parse_args(argv)


def address(n: int) -> str:
    # 2,000 addresses: 10 per /24, in 200 networks of 198.18.0.0/15 (a benchmarking range).
    network, host = divmod(n % 2000, 10)
    return f"198.{18 + network // 256}.{network % 256}.{host + 1}"


def seed(app: Any, rows: int, rng: random.Random) -> dict[str, int]:
    from sqlalchemy import func, insert, select

    from campaign.extensions import db
    from campaign.models import Petition, Signature, SignatureStatus
    from campaign.models.base import utcnow
    from campaign.services.abuse import domain_hash
    from campaign.services.counting import add_to_count
    from campaign.services.privacy import cipher

    crypt = cipher()
    petition = db.session.scalar(select(Petition).order_by(Petition.id).limit(1))
    assert petition is not None
    hashes = [crypt.ip_hashes(address(n)) for n in range(2000)]
    domains = [domain_hash(crypt, domain) for domain in DOMAINS]
    name, email = crypt.encrypt("Bench Signer"), crypt.encrypt("bench@example.org")
    now = utcnow()
    batch: list[dict[str, Any]] = []
    confirmed = 0
    for n in range(rows):
        roll = rng.random()
        status = (SignatureStatus.CONFIRMED if roll < 0.80 else
                  SignatureStatus.PENDING if roll < 0.95 else SignatureStatus.HELD)
        confirmed += status == SignatureStatus.CONFIRMED
        ip_hash, network_hash = hashes[rng.randrange(2000)]
        created = now - timedelta(seconds=rng.randrange(30 * 86400))
        batch.append({
            "petition_id": petition.id, "name_encrypted": name, "email_encrypted": email,
            "email_index": f"bench:{n}", "country": rng.choice(["DE", "FR", "GB", "US", "BR"]),
            "status": status, "ip_hash": ip_hash, "network_hash": network_hash,
            "email_domain_hash": domains[n % len(domains)], "created_at": created,
            "confirmed_at": created if status == SignatureStatus.CONFIRMED else None,
            "hold_reasons": "ip_burst" if status == SignatureStatus.HELD else None,
            "held_at": created if status == SignatureStatus.HELD else None,
            "comment": "", "consent_updates": False, "source": "", "locale": "en",
        })
        if len(batch) == 5000:
            db.session.execute(insert(Signature), batch)
            batch = []
    if batch:
        db.session.execute(insert(Signature), batch)
    add_to_count(db.session, petition.id, confirmed)
    db.session.commit()
    stored = db.session.scalar(select(func.count()).select_from(Signature))
    return {"petition_id": petition.id, "rows": int(stored or 0), "confirmed": confirmed}


def confirmed_rows(petition_id: int) -> int:
    from sqlalchemy import func, select

    from campaign.extensions import db
    from campaign.models import Signature, SignatureStatus

    return int(db.session.scalar(select(func.count()).select_from(Signature).where(
        Signature.petition_id == petition_id, Signature.status == SignatureStatus.CONFIRMED)) or 0)


def run_selections(petition_id: int) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from campaign.extensions import db
    from campaign.models import Petition, User
    from campaign.models.base import utcnow
    from campaign.services.abuse import Selection, invalidate_matching, preview_invalidation
    from campaign.services.counting import signature_count

    petition = db.session.get(Petition, petition_id)
    actor = db.session.scalar(select(User).order_by(User.id).limit(1))
    assert petition is not None
    assert actor is not None
    now = utcnow()
    day = timedelta(days=1)
    selections = [
        ("one address", Selection(ip=address(7))),
        ("a /24 network", Selection(ip="198.18.3.0/24")),
        ("a /20 (16 networks)", Selection(ip="198.18.16.0/20")),
        ("a /28 (16 addresses)", Selection(ip="198.18.40.0/28")),
        ("an email domain", Selection(domain=DOMAINS[3])),
        ("a 6-hour window", Selection(since=now - 10 * day - timedelta(hours=6), until=now - 10 * day)),
        ("a country and a day", Selection(country="BR", since=now - 3 * day, until=now - 2 * day)),
    ]
    results = []
    for label, selection in selections:
        started = time.perf_counter()
        preview = preview_invalidation(db.session, petition, selection)
        preview_ms = (time.perf_counter() - started) * 1000
        db.session.rollback()
        started = time.perf_counter()
        result = invalidate_matching(db.session, actor, petition, selection, f"bench: {label}")
        db.session.commit()
        apply_ms = (time.perf_counter() - started) * 1000
        shown, actual = signature_count(db.session, petition_id), confirmed_rows(petition_id)
        results.append({"selection": label, "preview": preview, "invalidated": result.changed,
                        "uncounted": -result.counted, "preview_ms": round(preview_ms, 1),
                        "apply_ms": round(apply_ms, 1), "count_shown": shown, "confirmed_rows": actual,
                        "exact": preview == result.changed and shown == actual})
        log(f"{label}: preview {preview}, invalidated {result.changed} "
            f"({preview_ms:.0f} ms + {apply_ms:.0f} ms); count {shown}, confirmed rows {actual}")
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    with fresh_database("bulkreview", keep=args.keep) as url:
        env = app_environment(url, free_port(), free_port(), CAMPAIGN_ENV="testing")
        from campaign import create_app
        from campaign.extensions import db
        from campaign.services.demo import seed_demo

        config = {key: value for key, value in env.items() if key.isupper() and key in {
            "CAMPAIGN_ENV", "SECRET_KEY", "SIGNER_DATA_KEYS", "BLIND_INDEX_KEY", "BASE_URL", "DATABASE_URL"}}
        app = create_app(config)
        with app.app_context():
            db.create_all()
            seed_demo(db.session)
            db.session.commit()
            started = time.perf_counter()
            seeded = seed(app, args.rows, rng)
            log(f"seeded {seeded['rows']:,} signatures in {time.perf_counter() - started:.1f} s")
            results = run_selections(seeded["petition_id"])
            db.session.remove()
            db.engine.dispose()
    exact = all(r["exact"] for r in results)
    print()
    for r in results:
        print(f"{r['selection']:<22} preview {r['preview']:>6,}  invalidated {r['invalidated']:>6,}  "
              f"preview {r['preview_ms']:>7.1f} ms  apply {r['apply_ms']:>7.1f} ms  "
              f"count {r['count_shown']:,} = confirmed rows {r['confirmed_rows']:,}: {r['exact']}")
    path = write_results("bulk-invalidation", {"conditions": {"rows": args.rows, "database": "PostgreSQL",
                                                              "addresses": 2000, "networks": 200,
                                                              "domains": len(DOMAINS), "days": 30},
                                               "seeded": seeded, "selections": results, "all_exact": exact})
    print(f"all previews equal to the rows changed and counts exact: {exact}")
    print(f"results: {path}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
