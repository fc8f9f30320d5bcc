"""A11 — Redis eviction guard (RELIABILITY.md test 11).

A Redis that evicts keys under memory pressure silently drops queued tasks (and rate-limit
counters). Two private redis-servers are started, one with maxmemory-policy noeviction and one
with allkeys-lru; `flask --app app check-redis` (the start-up check) runs against each, and
/readyz is asked with each as the broker.

Reports each server's setting, the command's exit status and first line, and /readyz's status.
Target: the check passes on noeviction and fails (non-zero exit, /readyz 503) on anything else.
If the command does not exist yet, that is reported and the target fails.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.harness import (
    BIN,
    ROOT,
    RedisServer,
    Target,
    app_config,
    dispose,
    env_for,
    fresh_database,
    main_wrapper,
    make_app,
    workdir,
)

POLICIES = ("noeviction", "allkeys-lru")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def command_exists(env: dict[str, str]) -> bool:
    listing = subprocess.run(
        [str(BIN / "flask"), "--app", "app", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return any(line.split()[:1] == ["check-redis"] for line in listing.stdout.splitlines())


def run(args: argparse.Namespace) -> dict[str, Any]:
    import redis

    figures: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        database = stack.enter_context(fresh_database("a11", args.keep))
        servers = {}
        for policy in POLICIES:
            servers[policy] = RedisServer(work, policy=policy)
            stack.callback(servers[policy].close)
        base = app_config(database, servers["noeviction"].url(), 2525)
        dispose(make_app(base, schema=True))
        exists = command_exists(env_for(base))
        figures["check_redis_command"] = "present" if exists else "missing (another engineer is adding it)"
        for policy, server in servers.items():
            client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=3)
            try:
                setting = client.config_get("maxmemory-policy").get("maxmemory-policy")
            finally:
                client.close()
            config = {**base, "CELERY_BROKER_URL": server.url(), "REDIS_URL": server.url()}
            result: dict[str, Any] = {"maxmemory_policy": setting}
            if exists:
                done = subprocess.run(
                    [str(BIN / "flask"), "--app", "app", "check-redis"],
                    cwd=ROOT,
                    env=env_for(config),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                output = (done.stdout + done.stderr).strip().splitlines()
                result["check_redis_exit"] = done.returncode
                result["check_redis_says"] = output[-1] if output else ""
            result["readyz"] = readyz(config)
            figures[policy] = result
    return figures


def readyz(config: dict[str, str]) -> Any:
    app = make_app(config)
    try:
        response = app.test_client().get("/readyz")
        body = response.get_json(silent=True)
        return {"status": response.status_code, "body": body} if response.status_code != 404 else "no /readyz"
    finally:
        dispose(app)


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    good, bad = figures["noeviction"], figures["allkeys-lru"]
    targets = [
        Target(
            "check-redis command exists",
            figures["check_redis_command"] == "present",
            figures["check_redis_command"],
        )
    ]
    if figures["check_redis_command"] == "present":
        targets += [
            Target("passes on noeviction", good["check_redis_exit"] == 0, good["check_redis_says"]),
            Target("fails the build on allkeys-lru", bad["check_redis_exit"] != 0, bad["check_redis_says"]),
        ]
    if isinstance(good["readyz"], dict):
        # The schema here comes from the models, not the migrations, so /readyz's migration check
        # is not ready either way; its broker check is the one this test is about.
        good_broker = (good["readyz"].get("body") or {}).get("checks", {}).get("broker")
        bad_broker = (bad["readyz"].get("body") or {}).get("checks", {}).get("broker")
        targets.append(
            Target(
                "/readyz's broker check: ok on noeviction, not ready on allkeys-lru",
                good_broker == "ok" and bad_broker not in (None, "ok") and bad["readyz"]["status"] == 503,
                f"{good_broker!r} / {bad_broker!r} ({bad['readyz']['status']})",
            )
        )
    return targets


if __name__ == "__main__":
    sys.exit(main_wrapper("a11", parse_args, run, check))
