"""RELIABILITY.md section B, tests 15 and 16, through gunicorn, a Celery worker and the SMTP sink.

Each was run against a deliberately broken copy of the code and failed; each says which break in
a comment, and bench/faults/prove_failing.py repeats the check on demand.
"""

from __future__ import annotations

import pytest

from bench.faults import b15_alias_abuse, b16_mail_bomb
from tests.faults.conftest import assert_targets

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("services")]


def test_b15_one_gmail_mailbox_written_three_ways_counts_once() -> None:
    # Broken variant: googlemail.com no longer an alias of gmail.com -> 2 counted signatures.
    assert_targets(b15_alias_abuse, "--settle 2")


def test_b16_twenty_submissions_for_one_victim_send_at_most_five() -> None:
    # Broken variant: the per-address cap removed -> the victim gets 20 emails.
    assert_targets(b16_mail_bomb, "--submissions 20")
