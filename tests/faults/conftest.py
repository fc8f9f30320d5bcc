"""The fault tests: the benchmarks of bench/faults/ at small sizes, with the same targets.

Each test runs the script's own run() on loopback (its own PostgreSQL database, private
redis-server, SMTP sink and Celery processes) and fails on any target the script would report as
FAIL. Each was shown once to fail against a deliberately broken copy of the code:
bench/faults/prove_failing.py does that again on demand.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.faults import harness


@pytest.fixture
def services() -> None:
    """PostgreSQL on 127.0.0.1 and the redis-server program (private servers are started)."""
    missing = harness.services_missing()
    if missing:
        pytest.skip(missing)


@pytest.fixture
def private_postgres() -> None:
    """initdb and pg_ctl, to start a PostgreSQL cluster of the test's own (A3 restarts it)."""
    missing = harness.private_postgres_missing()
    if missing:
        pytest.skip(missing)


def assert_targets(module: Any, options: str, **shared: Any) -> dict[str, Any]:
    """Run a fault benchmark with these command-line options (and a shared web stack, for those
    that take one); fail with every missed target."""
    args = module.parse_args([*options.split(), "--quiet"])
    figures = module.run(args, **shared)
    failed = harness.failed(module.check(figures, args))
    assert not failed, "targets missed:\n  " + "\n  ".join(failed) + f"\nfigures: {figures}"
    return figures
