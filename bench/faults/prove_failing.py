"""Show that each fault test in tests/faults can fail (DESIGN.md: "Tests that can fail").

For each test: copy the working tree to a temporary folder, break the code in one named way
(an exact text replacement that must match once), run that one test there with pytest, and expect
it to fail on an assertion. Prints one line per test and exits non-zero if a test passed against
its broken copy (it would not catch that regression) or a sabotage no longer applies.

    .venv/bin/python bench/faults/prove_failing.py            # all, about 20 minutes
    .venv/bin/python bench/faults/prove_failing.py a03 b18    # the tests whose id contains these
    .venv/bin/python bench/faults/prove_failing.py "burst rule"  # or by the break's description
    (B13-B17 are one test: "b13" runs the five breaks of it, each against the whole test.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sabotage:
    test: str
    what: str
    edits: tuple[tuple[str, str, str], ...]  # (file, exact old text, new text)


OUTBOX = "campaign/services/outbox.py"
TAKEOVER = """        and_(OutboundEmail.status == OutboxStatus.SENDING, OutboundEmail.lease_until < now,
             OutboundEmail.attempts < max_attempts),"""
CLAIM = "        .where(OutboundEmail.id == email_id, _claimable(now))"
SIGN_END = """    if row is None:  # a concurrent repeat already queued this email
        return SignOutcome.RACED
    return outcome
"""
DELIVERY = "tests/faults/test_delivery.py::"
ABUSE = "tests/faults/test_abuse.py::"
A05 = DELIVERY + "test_a05_smtp_550_is_never_retried_and_the_address_is_suppressed"
A06 = DELIVERY + "test_a06_sends_due_later_go_once_by_next_attempt_at_and_despite_broker_redelivery"
A12 = DELIVERY + "test_a12_sqlite_mode_relay_killed_down_and_transaction_coupling"
B13_TO_B17 = ABUSE + "test_b13_to_b17_signing_load_bursts_aliases_mail_bomb_and_trending_through_one_stack"

SABOTAGES = (
    Sabotage(
        DELIVERY + "test_a01_worker_killed_mid_batch_loses_and_duplicates_nothing",
        "the sweep no longer takes over a claim whose lease ran out",
        (
            (
                OUTBOX,
                TAKEOVER,
                TAKEOVER.replace("OutboundEmail.attempts < max_attempts", "OutboundEmail.attempts < 0"),
            ),
        ),
    ),
    Sabotage(
        DELIVERY + "test_a02_redis_down_while_signing_loses_nothing_and_never_stalls",
        "the publisher's first connect retried after kombu's 2 s sleep (max_retries=0 removed)",
        (("campaign/queue.py", '"max_retries": 0}', "}"),),
    ),
    Sabotage(
        DELIVERY + "test_a03_database_restarted_during_sends_and_relay",
        "the outcome of a send written once, not retried while the lease lasts",
        ((OUTBOX, "            if left <= 0:\n", "            if True:\n"),),
    ),
    Sabotage(
        DELIVERY + "test_a04_smtp_421_is_retried_with_jittered_backoff_until_delivered",
        "backoff without jitter",
        (
            (
                OUTBOX,
                "return top / 2 + random.uniform(0, top / 2)",
                "return top / 2 + 0 * random.uniform(0, 1)",
            ),
        ),
    ),
    Sabotage(
        A05,
        "a 5xx answer treated as temporary",
        (
            (
                OUTBOX,
                "    except TemporaryFailure as error:",
                "    except (TemporaryFailure, PermanentFailure) as error:",
            ),
        ),
    ),
    Sabotage(
        A05,
        "a refused mailbox not put on the suppression list",
        ((OUTBOX, "        if error.mailbox and index is not None:", "        if False:"),),
    ),
    Sabotage(
        A06,
        "the sweep ignores next_attempt_at",
        ((OUTBOX, "OutboundEmail.next_attempt_at <= now),", "OutboundEmail.next_attempt_at.is_not(None)),"),),
    ),
    Sabotage(
        A06,
        "the claim without its status condition",
        ((OUTBOX, CLAIM, "        .where(OutboundEmail.id == email_id)"),),
    ),
    Sabotage(
        DELIVERY + "test_a07_the_same_task_twice_at_the_same_moment_sends_once",
        "the claim without its status condition",
        ((OUTBOX, CLAIM, "        .where(OutboundEmail.id == email_id)"),),
    ),
    Sabotage(
        DELIVERY + "test_a08_poison_message_stops_at_the_attempt_limit",
        "abandoned claims taken over without the attempt limit",
        (
            (
                OUTBOX,
                TAKEOVER,
                TAKEOVER.replace("OutboundEmail.attempts < max_attempts", "OutboundEmail.attempts < 1000"),
            ),
            (
                OUTBOX,
                'OutboundEmail.attempts >= int(current_app.config["OUTBOX_MAX_ATTEMPTS"]))',
                "OutboundEmail.attempts >= 1000)",
            ),
        ),
    ),
    Sabotage(
        DELIVERY + "test_a09_rolled_back_signature_sends_nothing_committed_one_sends_once",
        "sign_petition commits on its own",
        (
            (
                "campaign/services/signing.py",
                SIGN_END,
                SIGN_END.replace("    return outcome\n", "    session.commit()\n    return outcome\n"),
            ),
        ),
    ),
    Sabotage(
        DELIVERY + "test_a10_workers_stopped_mid_batch_lose_no_task",
        "no soft shutdown (worker_soft_shutdown_timeout not set)",
        (
            (
                "campaign/queue.py",
                '        "worker_soft_shutdown_timeout": float(config["CELERY_SOFT_SHUTDOWN_TIMEOUT"]),\n',
                "",
            ),
        ),
    ),
    Sabotage(
        DELIVERY + "test_a11_redis_that_may_evict_fails_the_check",
        "the Redis checks accept any maxmemory-policy",
        (
            ("campaign/ops_commands.py", '            if policy != "noeviction":', "            if False:"),
            ("campaign/services/health.py", '    if policy != "noeviction":', "    if False:"),
        ),
    ),
    Sabotage(
        A12,
        "no outbox sweep in the relay (scheduled once an hour)",
        (
            (
                "campaign/queue.py",
                '                "schedule": float(config["OUTBOX_SWEEP_INTERVAL"]),',
                '                "schedule": 3600.0,',
            ),
        ),
    ),
    Sabotage(
        A12,
        "the relay on the filesystem broker keeps the prefork pool",
        (("campaign/queue.py", '        pool["worker_pool"] = "solo"\n', ""),),
    ),
    Sabotage(
        A12,
        "sign_petition commits on its own",
        (
            (
                "campaign/services/signing.py",
                SIGN_END,
                SIGN_END.replace("    return outcome\n", "    session.commit()\n    return outcome\n"),
            ),
        ),
    ),
    Sabotage(
        B13_TO_B17,
        "the canonical address drops its local part: signers of one domain collide as one",
        (
            (
                "campaign/services/emails.py",
                '    local = unicodedata.normalize("NFKC", local).casefold()\n',
                '    local = ""\n',
            ),
        ),
    ),
    Sabotage(
        B13_TO_B17,
        "each burst rule allows one more signature than configured",
        (
            (
                "campaign/services/abuse.py",
                "rules.append((int(count), int(seconds)))",
                "rules.append((int(count) + 1, int(seconds)))",
            ),
        ),
    ),
    Sabotage(
        B13_TO_B17,
        "googlemail.com no longer an alias of gmail.com",
        (
            (
                "campaign/services/emails.py",
                '_ALIASES = {"googlemail.com": "gmail.com", "ya.ru": "yandex.ru"}',
                "_ALIASES: dict[str, str] = {}",
            ),
        ),
    ),
    Sabotage(
        B13_TO_B17,
        "the per-address cap removed",
        (
            (
                "campaign/services/signing.py",
                'if (sent_for_petition >= int(config["EMAILS_PER_ADDRESS_PER_PETITION"])',
                "if (sent_for_petition >= 1000",
            ),
        ),
    ),
    Sabotage(
        B13_TO_B17,
        "the trending check alerts only at twice the threshold",
        (
            (
                "campaign/services/abuse.py",
                ".group_by(column).having(func.count() >= threshold))",
                ".group_by(column).having(func.count() >= 2 * threshold))",
            ),
        ),
    ),
    Sabotage(
        ABUSE + "test_b18_bulk_invalidation_preview_equals_changed_and_count_stays_exact",
        "invalidation leaves the petition's counter as it was",
        (
            (
                "campaign/services/abuse.py",
                "    if confirmed:\n        add_to_count(session, petition.id, -confirmed)\n",
                "",
            ),
        ),
    ),
    Sabotage(
        ABUSE + "test_b19_one_official_gets_at_most_the_cap_and_no_unconsented_name",
        "the hourly letter cap never reached",
        (
            (
                "campaign/services/letters.py",
                "        where=LetterQuota.used < cap,\n",
                "        where=LetterQuota.used < 1_000_000,\n",
            ),
        ),
    ),
)

IGNORE = shutil.ignore_patterns(
    ".venv",
    ".git",
    "instance",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "results",
    "test-artifacts",
    "node_modules",
    "*.egg-info",
)


def prove(sabotage: Sabotage, timeout: float) -> tuple[bool, str]:
    """(True, detail) if the test failed against the broken copy."""
    with tempfile.TemporaryDirectory(prefix="campaign-broken-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(ROOT, copy, ignore=IGNORE)
        for file, old, new in sabotage.edits:
            path = copy / file
            text = path.read_text()
            if text.count(old) != 1:
                return (
                    False,
                    f"sabotage no longer applies: {file} has {text.count(old)} copies of {old.strip()!r}",
                )
            path.write_text(text.replace(old, new))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CI")}
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                sabotage.test,
                "-q",
                "-p",
                "no:cacheprovider",
                "-x",
                "--no-header",
            ],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        took = time.monotonic() - started
        out = done.stdout + done.stderr
        lines = [line for line in out.splitlines() if "targets missed" in line or line.startswith("E  ")]
        if done.returncode == 1 and " failed" in out and "AssertionError" in out:
            first = next(
                (
                    line.strip()
                    for line in out.splitlines()
                    if line.strip().startswith("E ") and "targets missed" not in line
                ),
                "",
            )
            return True, f"failed as it should ({took:.0f} s): {first[:160]}"
        return False, f"exit {done.returncode} after {took:.0f} s: {(lines or out.splitlines()[-3:])}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("only", nargs="*", help="breaks whose test id or description has one of these")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per test (default: 300)")
    args = parser.parse_args()
    chosen = [s for s in SABOTAGES if not args.only or any(o in s.test or o in s.what for o in args.only)]
    bad = 0
    for sabotage in chosen:
        ok, detail = prove(sabotage, args.timeout)
        bad += not ok
        name = sabotage.test.split("::")[-1]
        print(f"{'OK  ' if ok else 'BAD '} {name}\n     broken: {sabotage.what}\n     {detail}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
