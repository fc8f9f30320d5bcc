"""B19 — mail to officials (RELIABILITY.md test 19), with the services the web and beat call.

A fresh PostgreSQL database with the demo petition (letters to each signer's own leader) and a
daily batched delivery for Germany's leader. --signers signers from Germany sign and confirm
within the hour (confirming routes each one: a letter while the official's hourly cap allows,
else folded into the next delivery); then the deliveries job runs twice. Every message queued to
an official is then built by the worker's own code, as it would be sent.

Reports per official the messages in the hour and in the day, and whether any message names a
signer who did not tick "add my name" (name or address). Target: letters per official per hour
<= LETTERS_PER_TARGET_PER_HOUR (plus the one daily delivery), 0 names or addresses without
consent. Near-identical texts: the platform does not deduplicate letters (it caps them), so this
reports how many letters carried a comment at all.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
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

COUNTRY = "DE"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--signers", type=int, default=50_000, help="signers of one official (default: 50,000)"
    )
    parser.add_argument("--cap", type=int, default=20, help="LETTERS_PER_TARGET_PER_HOUR (default: 20)")
    parser.add_argument("--named-every", type=int, default=10, help="every n-th signer ticks 'add my name'")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def name_of(n: int) -> str:
    return f"Qx{n:07d} Signer"


def email_of(n: int) -> str:
    return f"b19-{n:07d}@b19.example.net"


def sign_and_confirm(app: Any, signers: int, named_every: int) -> dict[str, Any]:
    from sqlalchemy import select

    from campaign.extensions import db
    from campaign.models import Petition, Signature, SignatureStatus, Target
    from campaign.models.base import utcnow
    from campaign.models.deliveries import Cadence
    from campaign.services.deliveries import set_cadence
    from campaign.services.emails import canonical_email
    from campaign.services.petitions import petition_by_slug
    from campaign.services.privacy import cipher
    from campaign.services.signing import confirm_signature

    with app.app_context():
        try:
            petition = petition_by_slug(db.session, SLUG)
            assert isinstance(petition, Petition)
            official = db.session.scalar(select(Target).where(Target.country == COUNTRY).limit(1))
            assert official is not None
            set_cadence(
                db.session, petition, official.id, Cadence.DAILY, first_at=utcnow() - timedelta(minutes=1)
            )
            db.session.commit()
            crypt = cipher()
            started = time.perf_counter()
            for n in range(signers):
                named = n % named_every == 0
                signature = Signature(
                    petition_id=petition.id,
                    name_encrypted=crypt.encrypt(name_of(n)),
                    email_encrypted=crypt.encrypt(email_of(n)),
                    email_index=crypt.blind_index(canonical_email(email_of(n))),
                    country=COUNTRY,
                    comment=f"Comment of {name_of(n)}" if named else "",
                    consent_name_to_targets=named,
                    status=SignatureStatus.PENDING,
                    created_at=utcnow(),
                )
                db.session.add(signature)
                db.session.flush()
                confirm_signature(db.session, signature)
                db.session.commit()
                if n and n % 5000 == 0:
                    log(f"{n} signed and confirmed ({n / (time.perf_counter() - started):.0f}/s)")
            return {
                "official": official.name,
                "official_id": official.id,
                "sign_s": time.perf_counter() - started,
            }
        finally:
            db.session.remove()


def official_messages(app: Any) -> list[dict[str, Any]]:
    """Every message queued to an official, built as the worker would build it."""
    from email import message_from_bytes, policy

    from sqlalchemy import select

    from campaign.extensions import db
    from campaign.mail.messages import build_message
    from campaign.models import OutboundEmail
    from campaign.services import outbox

    built = []
    with app.app_context():
        try:
            rows = db.session.scalars(
                select(OutboundEmail).where(
                    OutboundEmail.kind.in_(["letter_to_target", "delivery_to_target"])
                )
            )
            for row in rows:
                builder = outbox._builders.get(row.kind)
                draft = builder(db.session, row) if builder else None
                if draft is None:
                    continue
                raw = build_message(draft, app.config["MAIL_DEFAULT_SENDER"]).as_bytes()
                message = message_from_bytes(raw, policy=policy.default)
                text = []
                for part in message.walk():
                    if not part.is_multipart():
                        payload = part.get_payload(decode=True)
                        text.append(payload.decode("utf-8", "replace") if isinstance(payload, bytes) else "")
                built.append(
                    {
                        "kind": row.kind,
                        "to": draft.to_address,
                        "created": row.created_at,
                        "text": str(message["Reply-To"] or "") + "\n".join(text),
                    }
                )
        finally:
            db.session.remove()
    return built


def run(args: argparse.Namespace) -> dict[str, Any]:
    from campaign.extensions import db
    from campaign.services.deliveries import run_mailings

    with contextlib.ExitStack() as stack:
        database = stack.enter_context(fresh_database("b19", args.keep))
        config = app_config(
            database, "memory://localhost/", free_port(), LETTERS_PER_TARGET_PER_HOUR=args.cap
        )
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        signed = sign_and_confirm(app, args.signers, args.named_every)
        log(f"{args.signers} signers confirmed in {signed['sign_s']:.0f} s")
        with app.app_context():
            try:
                runs = []
                for _ in range(2):  # twice: the second run must not send another batch today
                    runs.append(len(run_mailings(db.session, route_limit=args.signers).deliveries))
                    db.session.commit()
            finally:
                db.session.remove()
        messages = official_messages(app)
    per_official = Counter(m["to"] for m in messages)
    by_kind = Counter((m["to"], m["kind"]) for m in messages)
    hours = Counter((m["to"], m["created"].replace(minute=0, second=0, microsecond=0)) for m in messages)
    unnamed = [n for n in range(args.signers) if n % args.named_every]
    leaks = (
        sum(1 for m in messages for n in unnamed if name_of(n) in m["text"] or email_of(n) in m["text"])
        if args.signers <= 5000
        else None
    )
    if leaks is None:  # at full size: one pass over each text with a pattern, not 45,000 searches
        import re

        pattern = re.compile(r"Qx(\d{7}) Signer|b19-(\d{7})@")
        leaks = sum(
            1
            for m in messages
            for match in pattern.finditer(m["text"])
            if int(match.group(1) or match.group(2)) % args.named_every
        )
    return {
        "signers": args.signers,
        "cap_per_hour": args.cap,
        "official": signed["official"],
        "deliveries_planned_per_run": runs,
        "messages_per_official": dict(per_official),
        "messages_by_kind": {f"{to} {kind}": n for (to, kind), n in by_kind.items()},
        "max_messages_per_official_hour": max(hours.values(), default=0),
        "max_letters_per_official_hour": max(
            (n for (to, kind), n in by_kind.items() if kind == "letter_to_target"), default=0
        ),
        "unconsented_names_or_addresses_in_messages": leaks,
        "letters_with_a_comment": sum(1 for m in messages if "Comment of" in m["text"]),
        # The scan does read the letters and the CSV: the names that were consented are found.
        "consented_names_seen": len(
            {n for n in range(0, args.signers, args.named_every) for m in messages if name_of(n) in m["text"]}
        ),
    }


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    letters = figures["max_letters_per_official_hour"]
    most = figures["max_messages_per_official_hour"]
    return [
        Target(
            "letters per official per hour <= the cap",
            0 < letters <= args.cap,
            f"{letters} letters, {most} messages in all in the busiest hour (cap {args.cap})",
        ),
        Target(
            "one batched delivery a day",
            figures["deliveries_planned_per_run"] == [1, 0],
            str(figures["deliveries_planned_per_run"]),
        ),
        Target(
            "no name or address without consent",
            figures["unconsented_names_or_addresses_in_messages"] == 0
            and figures["consented_names_seen"] > 0,
            f"{figures['unconsented_names_or_addresses_in_messages']} without consent "
            f"({figures['consented_names_seen']} consented names seen)",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("b19", parse_args, run, check))
