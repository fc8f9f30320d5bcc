"""A3 — database down (RELIABILITY.md test 3).

Two Celery workers and beat on a fresh PostgreSQL database, a private Redis, the SMTP sink.
1. During a send: --emails rows are queued and published; when --at of them are delivered,
   PostgreSQL is restarted while sends are in flight: claims, SMTP conversations and the "sent"
   updates are cut off.
2. During relay: --relay-emails rows are queued but not published, so only the outbox sweep (the
   relay) hands them to the workers; PostgreSQL is restarted while it does.
Every 2 s the outbox is sampled for rows still in `sending` more than a minute after their lease
ran out; at the end the sink's messages are counted per recipient.

--mode restart (the default) starts a PostgreSQL cluster of its own (initdb into a temporary
directory, a free loopback port; as the postgres user when run as root) and points the app, the
workers and beat at it, then really restarts it: `pg_ctl stop` with the --stop-modes in turn
(fast: sessions ended and a clean shutdown; immediate: a crash, recovery at the next start),
down for --down-for seconds, `pg_ctl start`.
--mode proxy runs the workers and beat through a loopback TCP proxy to the shared PostgreSQL and
cuts it: every connection dropped, new ones refused for --down-for seconds.
--mode terminate cuts the workers' connections with pg_terminate_backend (no down time).
The machine's shared PostgreSQL is never stopped or restarted.
Target: 0 rows stuck in sending after lease + 1 min, 0 duplicates, 0 missing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.faults.harness import (
    Beat,
    PrivatePostgres,
    RedisServer,
    Sink,
    Target,
    TcpProxy,
    address,
    app_config,
    delivery_figures,
    dispose,
    env_for,
    fresh_database,
    log,
    main_wrapper,
    make_app,
    outbox_summary,
    publish,
    queue_confirmations,
    start_workers,
    stop_all,
    terminate_backends,
    through,
    wait_for,
    workdir,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--emails", type=int, default=2000, help="emails sent when the first cut comes (default: 2000)"
    )
    parser.add_argument(
        "--relay-emails",
        type=int,
        default=1000,
        help="emails only the sweep relays when the second cut comes (default: 1000; 0: skip)",
    )
    parser.add_argument(
        "--at", type=float, default=0.3, help="share delivered when the cut comes (default: 0.3)"
    )
    parser.add_argument(
        "--mode",
        choices=("restart", "proxy", "terminate"),
        default="restart",
        help="restart a private PostgreSQL cluster, cut a proxy to the shared one, or terminate the "
        "app's connections (default: restart)",
    )
    parser.add_argument(
        "--down-for",
        type=float,
        default=5.0,
        help="seconds the database is down (restart: between stop and start; proxy: refused) (default: 5)",
    )
    parser.add_argument(
        "--stop-modes",
        default="fast,immediate",
        help="restart mode: pg_ctl stop -m for each restart in turn (default: fast,immediate)",
    )
    parser.add_argument(
        "--smtp-delay",
        type=float,
        default=0.05,
        help="seconds the sink holds each DATA, so sends are in flight (default: 0.05)",
    )
    parser.add_argument("--lease", type=int, default=30, help="OUTBOX_LEASE_SECONDS (default: 30)")
    parser.add_argument(
        "--sweep-interval", type=float, default=5.0, help="OUTBOX_SWEEP_INTERVAL (default: 5)"
    )
    parser.add_argument("--grace", type=float, default=10.0, help="OUTBOX_SWEEP_GRACE (default: 10)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (default: 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait for the drain (s)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


class StuckSampler:
    """Every interval: rows in `sending` whose lease ran out more than a minute ago."""

    def __init__(self, database_url: str, interval: float = 2.0) -> None:
        self.url = database_url
        self.interval = interval
        self.max_stuck = 0
        self.max_sending = 0
        self.samples = 0
        self.failed_samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psycopg

        deadline = time.monotonic() + 4 * 3600
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                with psycopg.connect(self.url, connect_timeout=2, autocommit=True) as conn:
                    limit = datetime.now(UTC) - timedelta(seconds=60)
                    row = conn.execute(
                        "SELECT count(*) FILTER (WHERE lease_until < %s), count(*) FROM outbound_emails "
                        "WHERE status = 'sending'",
                        (limit,),
                    ).fetchone()
                    assert row is not None
                    self.max_stuck = max(self.max_stuck, int(row[0]))
                    self.max_sending = max(self.max_sending, int(row[1]))
                    self.samples += 1
            except psycopg.Error:
                self.failed_samples += 1
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def run(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {"mode": args.mode}
    stop_modes = [m.strip() for m in args.stop_modes.split(",") if m.strip()]
    if args.mode == "restart" and (not stop_modes or set(stop_modes) - {"fast", "immediate", "smart"}):
        raise SystemExit("--stop-modes: a list of fast, immediate or smart")
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(workdir(args.keep))
        cluster: PrivatePostgres | None = None
        if args.mode == "restart":
            cluster = PrivatePostgres("a03")
            stack.callback(cluster.close)
            database = cluster.create_database(f"fault_a03_{os.getpid()}")
            log(f"private PostgreSQL on 127.0.0.1:{cluster.port} ({cluster.root})")
        else:
            database = stack.enter_context(fresh_database("a03", args.keep))
        proxy: TcpProxy | None = None
        if args.mode == "proxy":
            parts = urlsplit(database)
            proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
            stack.callback(proxy.close)
        redis = RedisServer(work)
        stack.callback(redis.close)
        sink = Sink()
        stack.callback(sink.stop)
        sink.delay(args.smtp_delay)
        config = app_config(
            database,
            redis.url(),
            sink.port,
            OUTBOX_LEASE_SECONDS=args.lease,
            OUTBOX_SWEEP_INTERVAL=args.sweep_interval,
            OUTBOX_SWEEP_GRACE=args.grace,
            DATABASE_CONNECT_TIMEOUT=2,
        )
        app = make_app(config, schema=True)
        stack.callback(dispose, app)
        if proxy is not None:  # the workers and beat reach the database through the proxy only
            config["DATABASE_URL"] = through(database, proxy.port)
        env = env_for(config)
        beat = Beat(env, work, wait=False)
        stack.callback(beat.stop)
        workers = start_workers(env, work, ["w0", "w1"], args.concurrency)
        stack.callback(stop_all, workers)
        beat.wait_ready()
        sampler = StuckSampler(database)
        stack.callback(sampler.stop)

        def in_flight() -> int:
            # Messages whose DATA the sink has but not yet answered: SMTP is about to say yes.
            with sink.lock:
                return len(sink.data_seen) - sum(sink.accepted.values())

        def cut(label: str) -> dict[str, Any]:
            # Cut while a send is in flight, so its outcome is the write that meets the fault.
            wait_for(lambda: in_flight() > 0, 10, 0.01)
            flying = in_flight()
            if proxy is not None:
                dropped = proxy.cut()
                time.sleep(args.down_for)
                proxy.restore()
                log(f"{label}: proxy cut, {dropped} connections dropped, refused for {args.down_for:.0f} s")
                return {
                    "phase": label,
                    "connections_dropped": dropped,
                    "down_s": args.down_for,
                    "smtp_in_flight": flying,
                }
            if cluster is not None:
                mode = stop_modes[len(cluster.restarts) % len(stop_modes)]
                done = cluster.restart(mode, args.down_for)
                log(f"{label}: private PostgreSQL stopped ({mode}) and started, down {done['down_s']:.1f} s")
                return {"phase": label, **done, "smtp_in_flight": flying}
            killed = terminate_backends(database)
            log(f"{label}: {killed} connections terminated")
            return {"phase": label, "connections_terminated": killed, "smtp_in_flight": flying}

        cuts = []
        # 1. During a send.
        sends = [address("a03send", i) for i in range(args.emails)]
        ids = queue_confirmations(app, sends)
        started = time.monotonic()
        publish(app, list(ids.values()))
        threshold = max(1, int(args.at * args.emails))
        wait_for(lambda: sum(1 for a in sends if sink.snapshot()[a]) >= threshold, args.timeout, 0.05)
        cuts.append(cut("during a send"))

        # 2. During relay: nothing published; the sweep is the only way these rows go out.
        relayed: list[str] = []
        if args.relay_emails:
            relayed = [address("a03relay", i) for i in range(args.relay_emails)]
            queue_confirmations(app, relayed)
            threshold = max(1, int(args.at * args.relay_emails))
            wait_for(lambda: sum(1 for a in relayed if sink.snapshot()[a]) >= threshold, args.timeout, 0.05)
            cuts.append(cut("during relay"))

        everyone = sends + relayed
        done = wait_for(lambda: all(sink.snapshot()[a] for a in everyone), args.timeout, 1.0)
        drained = time.monotonic() - started
        # Long enough for a row that was cut off after SMTP accepted it to come back (lease,
        # grace, a sweep): a duplicate would show up here.
        settle = args.lease + args.grace + 2 * args.sweep_interval + 5
        log(f"all delivered: {bool(done)}; waiting {settle:.0f} s for anything sent twice")
        time.sleep(settle)
        sampler.stop()
        figures.update(delivery_figures(sink, everyone))
        figures["cuts"] = cuts
        figures["time_to_drain_s"] = round(drained, 1) if done else None
        figures["max_rows_stuck_after_lease_plus_1min"] = sampler.max_stuck
        figures["max_rows_in_sending"] = sampler.max_sending
        figures["samples"] = {"ok": sampler.samples, "database_unreachable": sampler.failed_samples}
        figures["outbox"] = outbox_summary(app)
        figures["rows_in_sending_at_end"] = figures["outbox"]["by_status"].get("sending", 0)
        figures["worker_errors_logged"] = sum(w.text().count("raised unexpected") for w in workers)
        figures["finish_retries_logged"] = sum(
            w.text().count("recording the outcome of email") for w in workers
        )
    return figures


def check(figures: dict[str, Any], args: argparse.Namespace) -> list[Target]:
    return [
        Target(
            "stuck in sending after lease + 1 min",
            figures["max_rows_stuck_after_lease_plus_1min"] == 0 and figures["rows_in_sending_at_end"] == 0,
            f"max {figures['max_rows_stuck_after_lease_plus_1min']} sampled, "
            f"{figures['rows_in_sending_at_end']} at the end",
        ),
        Target("duplicates", figures["duplicates"] == 0, str(figures["duplicates"])),
        Target("missing", figures["missing"] == 0, f"{figures['missing']} of {figures['expected']}"),
    ]


if __name__ == "__main__":
    sys.exit(main_wrapper("a03", parse_args, run, check))
