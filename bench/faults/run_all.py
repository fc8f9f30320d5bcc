"""Run every fault benchmark (RELIABILITY.md A1-A12, B13-B19) one after the other with short
sizes, about 45 minutes in all; each writes its JSON to bench/results/ and this prints one line
per run.

Nothing here stops or restarts the machine's shared PostgreSQL or Redis: Redis outages use a
private redis-server, database outages a loopback proxy that is cut. A3's real restart of
PostgreSQL (--mode restart --allow-restart) is only ever run by hand. The full RELIABILITY.md
sizes are each script's defaults: bench/faults/<script>.py --help.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, script, options): short runs that still inject every fault for real.
RUNS = (
    ("a01", "a01_worker_killed.py", "--emails 2000 --lease 30 --sweep-interval 5 --grace 10 --gap-emails 50"),
    ("a02", "a02_redis_down.py", "--rate 20 --seconds 90 --down-at 20 --down-for 30"),
    ("a03", "a03_database_down.py", "--emails 500 --relay-emails 300 --lease 20 --down-for 10"),
    (
        "a04",
        "a04_smtp_temporary.py",
        "--emails 50 --outage 60 --backoff-base 3 --backoff-max 360 --sweep-interval 1 --grace 1",
    ),
    ("a05", "a05_smtp_permanent.py", "--watch 15"),
    ("a06", "a06_eta_visibility.py", ""),
    ("a07", "a07_double_delivery.py", ""),
    ("a08", "a08_poison_message.py", ""),
    ("a09", "a09_transaction_coupling.py", "--rounds 50"),
    ("a10", "a10_graceful_deploy.py", "--emails 2000 --deploys 2"),
    ("a10-warm", "a10_graceful_deploy.py", "--emails 1000 --deploys 1 --shutdown warm"),
    ("a11", "a11_redis_eviction.py", ""),
    (
        "a12",
        "a12_sqlite_mode.py",
        "--seconds 60 --down-for 20 --rounds 20 --ramp 20,40,80,160 --ramp-seconds 10",
    ),
    ("b13", "b13_signing_load.py", "--rate 33 --seconds 120 --surge-rate 333 --surge-seconds 30"),
    ("b14", "b14_burst_limits.py", "--trials 300"),
    ("b15", "b15_alias_abuse.py", "--more"),
    ("b16", "b16_mail_bomb.py", ""),
    ("b16-aliases", "b16_mail_bomb.py", "--aliases --concurrent"),
    ("b17", "b17_trending_alert.py", ""),
    ("b18", "b18_bulk_invalidation.py", ""),
    ("b19", "b19_official_flood.py", "--signers 10000"),
)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip", default="", help="comma-separated names to leave out, e.g. a03")
    parser.add_argument("--only", default="", help="comma-separated names to run, e.g. a01,a07")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds per run at most (default: 1800)"
    )
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    outcomes = []
    for name, script, options in RUNS:
        if name in skip or (only and name not in only):
            continue
        command = [sys.executable, str(HERE / script), *options.split()]
        print(f"\n##### {name}: bench/faults/{script} {options}", flush=True)
        started = time.monotonic()
        try:
            code = subprocess.run(command, timeout=args.timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            code = -1
        outcomes.append((name, code, time.monotonic() - started))
    print("\n##### summary")
    for name, code, seconds in outcomes:
        verdict = {0: "all targets held", -1: "timed out"}.get(code, "a target was missed (see above)")
        print(f"  {name:<12} {seconds:6.0f} s  {verdict}")
    return 0 if all(code == 0 for _, code, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
