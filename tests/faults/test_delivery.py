"""RELIABILITY.md section A, tests 1-12, at small sizes: real worker processes killed, a private
Redis stopped, database connections cut, an SMTP sink that refuses. bench/faults/ runs them full size.

Every test here was run against a deliberately broken copy of the code and failed; each says
which break in a comment, and bench/faults/prove_failing.py repeats the check on demand.
"""

from __future__ import annotations

import pytest

from bench.faults import (
    a01_worker_killed,
    a02_redis_down,
    a03_database_down,
    a04_smtp_temporary,
    a05_smtp_permanent,
    a06_eta_visibility,
    a07_double_delivery,
    a08_poison_message,
    a09_transaction_coupling,
    a10_graceful_deploy,
    a11_redis_eviction,
    a12_sqlite_mode,
)
from tests.faults.conftest import assert_targets

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("services")]


def test_a01_worker_killed_mid_batch_loses_and_duplicates_nothing() -> None:
    # A whole worker SIGKILLed, a pool child SIGKILLed; then the crash-after-SMTP gap, measured.
    # Broken variant: the sweep no longer takes over rows whose lease ran out -> emails missing.
    options = "--emails 60 --kills 1 --child-kills 1 --lease 4 --sweep-interval 1 --grace 2"
    assert_targets(a01_worker_killed, options + " --gap-emails 3 --timeout 60")


def test_a02_redis_down_while_signing_loses_nothing_and_never_stalls() -> None:
    # Broken variant: the publisher's first connect retried after kombu's 2 s sleep (what
    # max_retries=0 in campaign/queue.py removed) -> each publish stalls 2 s while Redis is down.
    options = "--rate 15 --seconds 8 --down-at 2 --down-for 4 --web-workers 2 --sweep-interval 1 --grace 2"
    assert_targets(a02_redis_down, options + " --drain-timeout 60")


@pytest.mark.usefixtures("private_postgres")
def test_a03_database_restarted_during_sends_and_relay() -> None:
    # A PostgreSQL cluster of the test's own (the shared server is never restarted) really
    # stopped for 2 s while sends are in flight (pg_ctl stop -m fast) and while only the sweep
    # relays (-m immediate, a crash). Broken variant: a send's outcome written once, not retried
    # -> the sends cut off after SMTP accepted them go out twice.
    options = "--mode restart --down-for 2 --emails 16 --relay-emails 12 --smtp-delay 0.6 --lease 6"
    figures = assert_targets(a03_database_down, options + " --sweep-interval 1 --grace 1 --timeout 60")
    assert [c["stop_mode"] for c in figures["cuts"]] == ["fast", "immediate"]


def test_a04_smtp_421_is_retried_with_jittered_backoff_until_delivered() -> None:
    # Broken variant: backoff without jitter -> every message given the same delay.
    options = "--emails 8 --outage 5 --backoff-base 1 --backoff-max 8 --sweep-interval 1 --grace 0"
    assert_targets(a04_smtp_temporary, options + " --timeout 40")


def test_a05_smtp_550_is_never_retried_and_the_address_is_suppressed() -> None:
    # Broken variants: a 5xx answer treated as temporary -> the refused addresses are retried;
    # the outbox not suppressing on a refused mailbox -> 0 of 3 suppressed and the second
    # confirmations reach SMTP.
    figures = assert_targets(a05_smtp_permanent, "--emails 10 --refused 3 --watch 4 --timeout 60")
    assert figures["suppression_of_refused"] == ["bounce"] * 3
    assert figures["smtp_attempts_after_suppression"] == 0


def test_a06_sends_due_later_go_once_by_next_attempt_at_and_despite_broker_redelivery() -> None:
    # Broken variants: the sweep ignoring next_attempt_at -> the email leaves before it is due;
    # the claim without its status condition -> the task that Redis handed to the second worker
    # after the visibility timeout sends a second email.
    options = "--parts outbox,countdown --visibility 3 --delay 10 --second-at 4 --settle 2"
    assert_targets(a06_eta_visibility, options)


def test_a07_the_same_task_twice_at_the_same_moment_sends_once() -> None:
    # Broken variant: the claim without its status condition -> duplicates.
    assert_targets(a07_double_delivery, "--emails 60 --timeout 60")


def test_a08_poison_message_stops_at_the_attempt_limit() -> None:
    # Broken variant: abandoned claims taken over without the attempt limit -> attempts unbounded.
    assert_targets(a08_poison_message, "--rows 1 --max-attempts 3 --lease 2 --watch 3 --timeout 40")


def test_a09_rolled_back_signature_sends_nothing_committed_one_sends_once() -> None:
    # Broken variant: sign_petition commits on its own -> rows and emails survive the rollback.
    assert_targets(a09_transaction_coupling, "--rounds 3 --timeout 60")


def test_a10_workers_stopped_mid_batch_lose_no_task() -> None:
    # Broken variant: no soft shutdown (worker_soft_shutdown_timeout not set) -> the sends running
    # at SIGTERM are cancelled; those SMTP had accepted go out again after their lease.
    # A soft timeout of 8 s for 0.4 s sends: with 3 s, a send slowed past it by a loaded machine
    # was cancelled and its row left to the sweep (counted as a lost task) once in a full run.
    options = "--emails 30 --deploys 1 --smtp-delay 0.4 --soft-timeout 8 --lease 3 --stall 4"
    assert_targets(a10_graceful_deploy, options + " --timeout 90")


def test_a11_redis_that_may_evict_fails_the_check() -> None:
    # Broken variant: the Redis checks accepting any maxmemory-policy -> allkeys-lru passes.
    assert_targets(a11_redis_eviction, "")


def test_a12_sqlite_mode_relay_killed_down_and_transaction_coupling() -> None:
    # Broken variants: no outbox sweep in the embedded relay -> what the filesystem broker dropped
    # with a killed relay is never sent; the relay keeping the prefork pool on this broker -> the
    # pool-child target fails (and a child SIGKILLed while idle wedges the pool, emails unsent);
    # sign_petition committing on its own (as for A9). The signing-rate ramp (a measurement, not a
    # pass/fail) is left to the bench. Sends take 0.3 s at the sink, so the relay is always mid-send
    # when killed: that claimed email comes back only through the sweep's lease takeover.
    options = "--parts kill,down,coupling --rate 5 --seconds 4 --kills 1 --child-kills 1 --down-for 2"
    options += " --smtp-delay 0.3"
    fast = " --lease 3 --sweep-interval 2 --sweep-grace 5 --backoff-base 2"
    assert_targets(a12_sqlite_mode, options + fast + " --rounds 2 --drain-timeout 60")
