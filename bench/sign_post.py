"""The signing POST alone, in one process: database round trips and wall time per request.

Builds the production app (gunicorn.conf.py's pool and microcache settings) on a fresh PostgreSQL database
with the demo petition, then sends --requests sign POSTs through Flask's test client, each from
its own address with a new email, and counts the SQL statements each one sent (every
statement is a round trip, BEGIN/COMMIT/SAVEPOINT included). With --profile, pyinstrument's
profile of the loop is printed. A quick check of the hot path's shape before bench/sign.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LOAD_TEST_SETTINGS, TOKEN, app_environment, flask_command, fresh_database, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="print a pyinstrument profile")
    args = parser.parse_args(argv)
    with fresh_database("post") as url:
        env = app_environment(url, 5000, 2525, **LOAD_TEST_SETTINGS, SQLALCHEMY_POOL_SIZE="1",
                              SQLALCHEMY_MAX_OVERFLOW="2", PAGE_MICROCACHE="1")
        flask_command(env, "db", "upgrade")
        flask_command(env, "seed-demo")
        os.environ.update(env)
        from sqlalchemy import event

        from campaign import create_app
        from campaign.extensions import db

        app = create_app()
        statements: list[str] = []
        with app.app_context():
            event.listen(db.engine, "before_cursor_execute",
                         lambda _c, _cur, sql, *_a: statements.append(sql))
        client = app.test_client()
        page = client.get("/petitions/g20-chechnya", headers={"Sec-Fetch-Site": "same-origin"})
        token = TOKEN.search(page.data)
        assert token is not None
        per_request: list[int] = []
        kinds: dict[str, int] = {}
        times: list[float] = []

        def one(n: int) -> None:
            before = len(statements)
            started = time.perf_counter()
            response = client.post(
                "/petitions/g20-chechnya/sign",
                data={"name": f"Signer {n}", "email": f"signer{n}@d{n % 1000}.bench.example.org",
                      "country": "DE", "form_token": token.group(1).decode()},
                headers={"Sec-Fetch-Site": "same-origin"},
                environ_base={"REMOTE_ADDR": f"127.{16 + n // 65536 % 16}.{n // 256 % 256}.{n % 256}"})
            times.append(time.perf_counter() - started)
            assert response.status_code == 303, response.status_code
            per_request.append(len(statements) - before)
            for sql in statements[before:]:
                kinds[sql.split()[0].upper()] = kinds.get(sql.split()[0].upper(), 0) + 1

        for n in range(20):  # warm-up: imports, caches, pool
            one(1_000_000 + n)
        per_request.clear(), kinds.clear(), times.clear()
        cpu_started = time.process_time()
        profiler = None
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            profiler.start()
        for n in range(args.requests):
            one(n)
        cpu = (time.process_time() - cpu_started) / max(1, len(times))
        if os.environ.get("SHOW_SQL"):
            print("\n".join(" ".join(sql.split())[:160] for sql in statements[-per_request[-1]:]))
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=False, color=False, show_all=False))
        count = len(per_request)
        log(f"{count} POSTs: {statistics.mean(per_request):.1f} statements each (min {min(per_request)}, "
            f"max {max(per_request)}); by verb: " +
            ", ".join(f"{k} {v / count:.2f}" for k, v in sorted(kinds.items())))
        log(f"wall per POST: median {statistics.median(times) * 1000:.2f} ms, "
            f"p95 {sorted(times)[int(count * 0.95)] * 1000:.2f} ms; CPU of this process per POST "
            f"{cpu * 1000:.2f} ms; load average {os.getloadavg()[0]:.1f}")
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
