"""RELIABILITY.md section B, tests 13-19, at small sizes: through gunicorn, a Celery worker, beat
and the SMTP sink for 13-17 (one stack, in one test: its settings scale the burst windows and
the trending threshold down, through the documented environment variables), and with the
services organizers' pages and beat call for 18-19, on PostgreSQL databases of their own.

Each was run against a deliberately broken copy of the code and failed; each says which break in
a comment, and bench/faults/prove_failing.py repeats the checks on demand.
"""

from __future__ import annotations

import contextlib

import pytest

from bench.faults import (
    b13_signing_load,
    b14_burst_limits,
    b15_alias_abuse,
    b16_mail_bomb,
    b17_trending_alert,
    b18_bulk_invalidation,
    b19_official_flood,
    harness,
)
from tests.faults.conftest import assert_targets

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("services")]

# The burst rules 30 times shorter than e-petitions' 1/60 s, 5/300 s; an alert at 12 signatures
# from one address an hour; domain alerts out of the way of the load test's one domain; a form
# may be sent 1 s after the page was served (3 s by default): less waiting.
FAST_STACK = {
    "SIGNING_IP_BURST": "1/2, 5/10",
    "TRENDING_IP_PER_HOUR": 12,
    "TRENDING_DOMAIN_PER_HOUR": 100_000,
    "SIGNING_MIN_FILL_SECONDS": 1,
}


# (name, script, options); above each, what a deliberately broken copy of the code did to it.
THROUGH_ONE_STACK = (
    # Broken: the canonical address without its local part (signers of one domain collide) ->
    # emails missing. The p95 bound: this runs beside the rest of the suite on 2 cores; the
    # bench holds it to 500 ms.
    (
        "B13",
        b13_signing_load,
        "--rate 20 --seconds 3 --surge-rate 60 --surge-seconds 1 --p95-ms 3000 --drain-timeout 60",
    ),
    # Broken: each burst rule allowing one more signature -> fewer held than the rules say.
    ("B14", b14_burst_limits, "--trials 3"),
    # Broken: googlemail.com no longer an alias of gmail.com -> 2 counted signatures.
    ("B15", b15_alias_abuse, "--settle 2"),
    # Broken: the per-address cap removed -> the victim gets 20 emails.
    ("B16", b16_mail_bomb, "--submissions 20"),
    # Broken: the check alerting only at twice the threshold -> no alert.
    ("B17", b17_trending_alert, "--signatures 12"),
)


def test_b13_to_b17_signing_load_bursts_aliases_mail_bomb_and_trending_through_one_stack() -> None:
    """One test, so that pytest-xdist cannot split them over two stacks: starting one costs more
    than most of these take. Every part runs; the failure lists each part that missed a target."""
    missing = harness.services_missing()
    if missing:
        pytest.skip(missing)
    failures = []
    with contextlib.ExitStack() as exits:
        stack = harness.web_stack(exits, "btest", **{**harness.B_STACK_SETTINGS, **FAST_STACK})
        for name, module, options in THROUGH_ONE_STACK:
            try:
                assert_targets(module, options, web=stack)
            except AssertionError as error:
                failures.append(f"{name}: {error}")
    assert not failures, "\n".join(failures)


def test_b18_bulk_invalidation_preview_equals_changed_and_count_stays_exact() -> None:
    # Broken variant: the invalidation leaving the counter as it was -> count not exact.
    assert_targets(b18_bulk_invalidation, "--rows 2000")


def test_b19_one_official_gets_at_most_the_cap_and_no_unconsented_name() -> None:
    # Broken variant: the hourly cap not taken -> 150 letters to one official.
    assert_targets(b19_official_flood, "--signers 150 --cap 20")
