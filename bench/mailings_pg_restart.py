"""The mail-to-officials integration tests while PostgreSQL restarts again and again (issue 4).

tests/mailings/test_integration.py must not fail because someone restarts PostgreSQL in the middle of
a run. This starts a private PostgreSQL (initdb in a temporary folder, a free loopback port, fsync
off), points the tests at it (TEST_POSTGRES_URL), restarts it (`pg_ctl restart -m fast`) every
--every seconds while they run, and reports the restarts and the tests' outcome. The machine's
shared PostgreSQL is never touched.

    .venv/bin/python bench/mailings_pg_restart.py --every 25

Writes bench/results/mailings-pg-restart-<time>.json with the commit.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port, log, write_results

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def as_postgres(args: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user then."""
    if os.geteuid() != 0:
        return args
    return ["su", "postgres", "-c", " ".join(f"'{a}'" for a in args)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=25.0, help="seconds between restarts")
    parser.add_argument("--first", type=float, default=20.0, help="seconds before the first restart")
    parser.add_argument("--tests", default="tests/mailings/test_integration.py")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="campaign-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        os.chmod(folder, 0o700)
    data, port = folder / "data", free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o", options]
    restarts: list[dict[str, float]] = []
    stop = threading.Event()
    try:
        subprocess.run(as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                    "-E", "UTF8"]), check=True, capture_output=True)
        subprocess.run(as_postgres([*ctl, "start"]), check=True, capture_output=True)
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                        "CREATE DATABASE test"], check=True, capture_output=True)
        log(f"private PostgreSQL on 127.0.0.1:{port} ({pwd.getpwuid(os.geteuid()).pw_name})")

        def restarter() -> None:
            if stop.wait(args.first):
                return
            while not stop.is_set():
                began = time.monotonic()
                done = subprocess.run(as_postgres([*ctl, "-m", "fast", "restart"]), capture_output=True)
                restarts.append({"at": round(time.time(), 1), "seconds": round(time.monotonic() - began, 2),
                                 "ok": done.returncode == 0})
                log(f"PostgreSQL restarted in {restarts[-1]['seconds']} s")
                if stop.wait(args.every):
                    return

        thread = threading.Thread(target=restarter, daemon=True)
        env = {**os.environ, "TEST_POSTGRES_URL": f"postgresql://postgres@127.0.0.1:{port}/test"}
        began = time.monotonic()
        thread.start()
        result = subprocess.run([sys.executable, "-m", "pytest", args.tests, "-p", "no:randomly", "-n", "0",
                                 "-q", "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True,
                                text=True)
        seconds = time.monotonic() - began
        stop.set()
        thread.join(60)
    finally:
        stop.set()
        subprocess.run(as_postgres([*ctl, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-500:]
    print(result.stdout[-3000:])
    print(f"restarts during the run: {len(restarts)} (every {args.every:g} s); pytest: {summary}; "
          f"{seconds:.0f} s")
    path = write_results("mailings-pg-restart", {
        "figures": {"restarts": len(restarts), "restart_seconds": [r["seconds"] for r in restarts],
                    "pytest_exit": result.returncode, "pytest_summary": summary,
                    "seconds": round(seconds, 1)},
        "conditions": {"tests": args.tests, "every_s": args.every, "first_s": args.first,
                       "postgresql": "private instance, fsync off, pg_ctl restart -m fast"}})
    print(f"results: {path.relative_to(ROOT)}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
