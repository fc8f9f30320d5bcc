"""What the fault benchmarks share: a fresh PostgreSQL database, a private redis-server, the SMTP
sink that refuses or stalls on command, Celery workers, beat and gunicorn as killable subprocesses,
outbox rows queued in bulk, and JSON results stamped with the commit.

Everything listens on and talks to 127.0.0.0/8 only; every wait has a deadline. A run cleans up
what it started (its processes, its database) even when it fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import queue
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get(
    "BENCH_POSTGRES_URL", os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
)
SLUG = "g20-chechnya"
ALL_QUEUES = "confirmations,letters,bulk,maintenance"
_DONE = re.compile(r"Task (outbox\.send|outbox\.sweep)\[[^\]]+\] succeeded in [^:]+: '?(\w+)'?")
T = TypeVar("T")
_TOKEN = re.compile(rb'name="form_token" type="hidden" value="([^"]+)"')


# --- output ----------------------------------------------------------------------------------

QUIET = False


def log(message: str) -> None:
    if not QUIET:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Target:
    name: str
    ok: bool
    detail: str


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_dirty() -> bool:
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.strip())


def machine() -> dict[str, Any]:
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return {
        "cpus": os.cpu_count(),
        "memory": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def report(
    name: str,
    args: argparse.Namespace,
    figures: dict[str, Any],
    targets: list[Target],
    argv: Sequence[str] | None,
) -> int:
    """Print the figures and the verdicts, write bench/results/faults-<name>-<time>.json.

    Returns the exit status: 0 when every target holds."""
    print(f"\n== {name}: figures ==")
    for key, value in figures.items():
        print(f"  {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    print(f"== {name}: targets ==")
    for target in targets:
        print(f"  {'PASS' if target.ok else 'FAIL'}  {target.name}: {target.detail}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    command = "bench/faults/" + Path(sys.argv[0]).name + (" " + " ".join(argv) if argv else "")
    data = {
        "benchmark": f"faults-{name}",
        "commit": git_commit(),
        "uncommitted_changes": git_dirty(),
        "date": now.isoformat(timespec="seconds"),
        "machine": machine(),
        "command": command,
        "options": {k: v for k, v in vars(args).items() if not callable(v)},
        "figures": figures,
        "targets": [asdict(t) for t in targets],
        "passed": all(t.ok for t in targets),
    }
    path = RESULTS / f"faults-{name}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"results: {path.relative_to(ROOT)}")
    return 0 if data["passed"] else 1


def failed(targets: list[Target]) -> list[str]:
    return [f"{t.name}: {t.detail}" for t in targets if not t.ok]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {}
    return {
        "p50": round(percentile(ms, 50), 1),
        "p95": round(percentile(ms, 95), 1),
        "p99": round(percentile(ms, 99), 1),
        "max": round(max(ms), 1),
        "mean": round(statistics.fmean(ms), 1),
    }


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll until predicate() is truthy; returns its value, or None when the time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end on a fresh event loop in a thread of its own.

    asyncio.run refuses to start inside a thread whose loop is running, as the one Playwright's
    sync API leaves behind in a pytest worker that ran browser tests: a thread never has one."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(make())
        except BaseException as error:  # handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="fault-bench-asyncio")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


# --- services available? ---------------------------------------------------------------------


def services_missing(need_redis_server: bool = True) -> str | None:
    """Why the benchmarks cannot run here, or None."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            pass
    except psycopg.Error as error:
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {error}"
    if need_redis_server and shutil.which("redis-server") is None:
        return "redis-server is not installed"
    return None


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def children_of(pid: int) -> list[int]:
    """Direct children of a process, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
    return sorted(found)


class Process:
    """A subprocess in a session of its own (so its children can be signalled with it), its output
    in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        try:
            self.process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
            )
        except BaseException:
            self._log.close()
            raise
        self.started = time.monotonic()

    def ready_or_stop(self, wait: Callable[[], Any]) -> None:
        """Wait for readiness; a process that never got ready is stopped (and its log closed)
        here, since nobody else holds it yet."""
        try:
            wait()
        except BaseException:
            self.stop(5)
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-lines:])

    def wait_for_log(self, marker: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.text():
                return
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready in {timeout} s:\n{self.tail()}")

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, sig)

    def children(self) -> list[int]:
        return children_of(self.process.pid)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 20.0, term: bool = True) -> None:
        """SIGTERM to the whole group (unless term=False: sent already), then SIGKILL; closes the log."""
        if self.alive():
            if term:
                self.signal_group(signal.SIGTERM)
            if self.wait(timeout) is None:
                self.signal_group(signal.SIGKILL)
                self.wait(5)
        # Orphans of a killed parent (prefork children) share its group.
        self.signal_group(signal.SIGKILL)
        self._log.close()


class CeleryWorker(Process):
    """`celery -A worker worker`, the way the Procfile runs it."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        workdir: Path,
        concurrency: int = 2,
        queues: str = ALL_QUEUES,
        beat: bool = False,
        wait: bool = True,
    ) -> None:
        args = [
            str(BIN / "celery"),
            "-A",
            "worker",
            "worker",
            "--loglevel",
            "INFO",
            "-Q",
            queues,
            "--concurrency",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{name}-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]
        if beat:
            args += ["-B", "--schedule", str(workdir / f"{name}-beat-schedule")]
        super().__init__(name, args, env, workdir)
        if wait:
            self.ready_or_stop(self.wait_ready)

    def wait_ready(self, timeout: float = 90.0) -> CeleryWorker:
        self.wait_for_log(" ready.", timeout)
        return self

    def outcomes(self, task: str = "outbox.send") -> list[str]:
        return [result for name, result in _DONE.findall(self.text()) if name == task]


def stop_all(processes: Sequence[Process]) -> None:
    """SIGTERM to every group at once, then each one waited for (and SIGKILLed if it lingers):
    shutting down side by side instead of one after the other."""
    signalled = []
    for process in processes:
        signalled.append(process.alive())
        if signalled[-1]:
            process.signal_group(signal.SIGTERM)
    for process, term in zip(processes, signalled, strict=True):
        process.stop(term=not term)


def start_workers(
    env: dict[str, str], workdir: Path, names: Sequence[str], concurrency: int = 2, queues: str = ALL_QUEUES
) -> list[CeleryWorker]:
    """Several workers started side by side (start-up is slow on a busy machine), all ready."""
    workers: list[CeleryWorker] = []
    try:
        for name in names:
            workers.append(CeleryWorker(name, env, workdir, concurrency, queues, wait=False))
    except BaseException:
        stop_all(workers)
        raise
    try:
        for worker in workers:
            worker.wait_ready()
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    return workers


class Beat(Process):
    """`celery -A worker beat`: one per deployment, publishing the outbox sweep on schedule."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str = "beat", wait: bool = True) -> None:
        super().__init__(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "worker",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(workdir / f"{name}-schedule"),
            ],
            env,
            workdir,
        )
        if wait:
            self.ready_or_stop(self.wait_ready)

    def wait_ready(self, timeout: float = 90.0) -> Beat:
        self.wait_for_log("beat: Starting", timeout)
        return self


class Gunicorn(Process):
    def __init__(self, env: dict[str, str], workdir: Path, port: int, workers: int) -> None:
        env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers)}
        super().__init__(
            "gunicorn", [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "app:app"], env, workdir
        )
        self.port = port
        self.ready_or_stop(lambda: wait_http(port, "/healthz", self))


class FlaskRun(Process):
    """`flask run`: the embedded default's web server (make run)."""

    def __init__(self, env: dict[str, str], workdir: Path, port: int) -> None:
        super().__init__(
            "flask-run",
            [
                str(BIN / "flask"),
                "--app",
                "app",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-reload",
                "--no-debugger",
            ],
            env,
            workdir,
        )
        self.port = port
        self.ready_or_stop(lambda: wait_http(port, "/healthz", self))


def wait_http(port: int, path: str, process: Process | None = None, timeout: float = 60.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", path)
            with conn.getresponse() as answer:
                answer.read()
                if answer.status == 200:
                    return
        except OSError:
            pass
        finally:
            conn.close()
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited early:\n{process.tail()}")
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} in {timeout} s")


class RedisServer:
    """A private redis-server on a loopback port, without persistence: stopping it loses what it
    held, as a crashed Redis without AOF would. The shared Redis on 6379 is never touched."""

    def __init__(self, workdir: Path, policy: str = "noeviction") -> None:
        self.port = free_port()
        self.workdir = workdir
        self.policy = policy
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 15.0) -> None:
        with open(self.workdir / f"redis-{self.port}.log", "ab") as log_file:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--maxmemory-policy",
                    self.policy,
                    "--protected-mode",
                    "yes",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for(self.ping, timeout, 0.05):
            self.stop()
            raise RuntimeError(f"redis-server on port {self.port} did not start")

    def ping(self) -> bool:
        import redis

        try:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1, socket_connect_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """SIGTERM: Redis exits at once, keeping nothing (no RDB, no AOF)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def pause(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
        self.stop()


class Sink:
    """bench/faults/sink.py as a subprocess; its events are collected by a reader thread."""

    def __init__(self, max_seconds: float = 4 * 3600) -> None:
        self.port = free_port()
        self.lock = threading.Lock()
        self.accepted: Counter[str] = Counter()
        self.arrivals: list[tuple[float, str]] = []
        self.refused: dict[str, list[tuple[float, str]]] = {}
        self.data_seen: list[tuple[float, str]] = []
        self.links: dict[str, list[str]] = {}
        self._acks: queue.Queue[str] = queue.Queue()
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "faults" / "sink.py"),
                "--port",
                str(self.port),
                "--max-seconds",
                str(max_seconds),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._reader: threading.Thread | None = None
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("ready"):
            self.stop()  # its pipes are closed here: nobody else holds this sink yet
            raise RuntimeError(f"SMTP sink did not start: {first!r}")
        self._reader = threading.Thread(target=self._read, name="fault-sink-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.rstrip("\n").split("\t")
            kind = parts[0]
            with self.lock:
                if kind == "A":
                    self.accepted[parts[2]] += 1
                    self.arrivals.append((float(parts[1]), parts[2]))
                elif kind == "R":
                    self.refused.setdefault(parts[2], []).append((float(parts[1]), parts[3]))
                elif kind == "D":
                    self.data_seen.append((float(parts[1]), parts[2]))
                elif kind == "L":
                    self.links.setdefault(parts[2], []).append(parts[3])
            if kind in ("ok", "error"):
                self._acks.put(line.rstrip("\n"))

    def command(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        answer = self._acks.get(timeout=10)
        if not answer.startswith("ok"):
            raise RuntimeError(f"sink refused command {text!r}: {answer}")

    def refuse(self, address: str, reply: str) -> None:
        self.command(f"refuse {address} {reply}")

    def allow(self, address: str) -> None:
        self.command(f"allow {address}")

    def clear(self) -> None:
        self.command("clear")

    def delay(self, seconds: float) -> None:
        self.command(f"delay {seconds}")

    def total(self) -> int:
        with self.lock:
            return sum(self.accepted.values())

    def unique(self) -> int:
        with self.lock:
            return len(self.accepted)

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.accepted)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        if self._reader is not None:
            self._reader.join(10)  # it stops at the end of the sink's output
        if self.process.stdout:
            self.process.stdout.close()


def delivery_figures(sink: Sink, expected: Sequence[str]) -> dict[str, int]:
    """delivered / missing / duplicates, counted by recipient (each row has its own address)."""
    got = sink.snapshot()
    wanted = set(expected)
    return {
        "expected": len(wanted),
        "delivered": sum(1 for a in wanted if got[a] > 0),
        "missing": sum(1 for a in wanted if got[a] == 0),
        "duplicates": sum(got[a] - 1 for a in wanted if got[a] > 1),
        "unexpected": sum(n for a, n in got.items() if a not in wanted),
    }


# --- a loopback TCP proxy that can be cut -------------------------------------------------------


class TcpProxy:
    """127.0.0.1:<port> forwarded to an upstream server; cut() drops every connection through it
    and refuses new ones until restore(): an outage of PostgreSQL or Redis as the app sees it,
    while the shared server itself, which other tests use, keeps running."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.threads: list[threading.Thread] = []
        self.listener: socket.socket | None = None
        self.closed = False
        self.connections = 0
        self._open_listener()

    def _open_listener(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        listener.settimeout(0.2)
        self.listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), name="fault-proxy", daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            with self.lock:
                if self.listener is not listener:
                    break
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:  # cut meanwhile
                    client.close()
                    upstream.close()
                    break
                self.pairs.append((client, upstream))
                self.connections += 1
            pump = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            with self.lock:
                self.threads = [t for t in self.threads if t.is_alive()]
                self.threads.append(pump)
            pump.start()
        listener.close()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        import selectors

        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            try:
                while True:
                    for key, _ in selector.select(0.5):
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                        if not data:
                            raise ConnectionError
                        key.data.sendall(data)
                    with self.lock:
                        if (client, upstream) not in self.pairs:
                            break
            except (OSError, ValueError):
                pass
        self._drop(client, upstream)

    def _drop(self, client: socket.socket, upstream: socket.socket) -> None:
        with self.lock:
            if (client, upstream) in self.pairs:
                self.pairs.remove((client, upstream))
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> int:
        """Drop every open connection and refuse new ones. Returns how many were dropped."""
        with self.lock:
            listener, self.listener = self.listener, None
            pairs, self.pairs = list(self.pairs), []
        if listener is not None:
            listener.close()
        for client, upstream in pairs:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        return len(pairs)

    def restore(self) -> None:
        with self.lock:
            if self.listener is not None or self.closed:
                return
        self._open_listener()

    def close(self) -> None:
        self.closed = True
        self.cut()
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(5)


def through(url: str, port: int) -> str:
    """The same URL (user, database) with its host and port replaced by the proxy's."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(user + "@" if user else "") + f"127.0.0.1:{port}"))


# --- PostgreSQL ------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(prefix: str, keep: bool = False) -> Iterator[str]:
    """A new, empty database with a unique name; dropped afterwards unless keep."""
    import psycopg

    name = f"fault_{prefix}_{os.getpid()}_{time.monotonic_ns() % 10**9}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            for _ in range(30):  # PostgreSQL may still be coming back from a restart (A3)
                try:
                    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    break
                except psycopg.OperationalError:
                    time.sleep(1)


def postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def private_postgres_missing() -> str | None:
    """Why a private PostgreSQL cluster cannot be started here, or None."""
    if postgres_bin() is None:
        return "initdb is not installed (PostgreSQL server binaries)"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root without runuser"
    return None


class PrivatePostgres:
    """A PostgreSQL cluster of our own: initdb into a temporary directory, listening on a free
    loopback port only (no Unix socket outside its directory), trust authentication, fsync off.
    It can be stopped and started at will (a real restart, with `pg_ctl stop -m fast` or
    `-m immediate`, which is a crash followed by recovery), since nothing else uses it; the
    machine's shared server is never touched. initdb refuses root, so as root the cluster runs
    as the postgres user (runuser), its directory owned by it."""

    def __init__(self, name: str = "campaign", max_connections: int = 200) -> None:
        missing = private_postgres_missing()
        if missing:
            raise RuntimeError(missing)
        self.bin = postgres_bin()
        assert self.bin is not None
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-pg-"))
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self.restarts: list[dict[str, Any]] = []
        try:
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                "--locale=C", "--no-sync", timeout=120,
            )  # fmt: skip
            settings = {
                "listen_addresses": "'127.0.0.1'",
                "port": str(self.port),
                "unix_socket_directories": f"'{self.root}'",
                "max_connections": str(max_connections),
                # Safe against a crash of PostgreSQL, which is all a test does (the machine's page
                # cache survives). synchronous_commit stays on: off, an immediate stop loses
                # commits already acknowledged, and A3 then saw "sent" marks vanish (duplicates).
                "fsync": "off",
                "shared_buffers": "64MB",
                "log_min_messages": "warning",
            }
            conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
            self._run("sh", "-c", f"cat >> '{self.data}/postgresql.conf'", stdin=conf, timeout=10)
            self.start()
        except BaseException:
            self.close()
            raise

    def _run(self, program: str, *args: str, timeout: float, stdin: str | None = None) -> str:
        path = str(self.bin / program) if program in {"initdb", "pg_ctl"} and self.bin else program
        command = [path, *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} {' '.join(args)} failed ({done.returncode}): {done.stderr or done.stdout}"
            )
        return done.stdout

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def start(self, timeout: float = 60.0) -> float:
        """pg_ctl start, waiting until it accepts connections; returns the seconds it took."""
        started = time.monotonic()
        wait = str(int(timeout))
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t", wait, "start",
                  timeout=timeout + 10)  # fmt: skip
        if not wait_for(self.accepts, timeout, 0.05):
            raise RuntimeError(f"the private PostgreSQL on port {self.port} did not come up")
        return time.monotonic() - started

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> float:
        """pg_ctl stop -m fast (sessions ended, clean shutdown) or immediate (a crash: no
        checkpoint, recovery at the next start). Returns the seconds it took."""
        started = time.monotonic()
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(int(timeout)), "stop",
                  timeout=timeout + 10)  # fmt: skip
        return time.monotonic() - started

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> dict[str, Any]:
        """Stop, stay down for down_for seconds, start. Returns and keeps what it measured."""
        began = time.monotonic()
        stopping = self.stop(mode)
        time.sleep(down_for)
        starting = self.start()
        done = {
            "stop_mode": mode,
            "stop_s": round(stopping, 2),
            "down_s": round(time.monotonic() - began, 2),
            "start_s": round(starting, 2),
        }
        self.restarts.append(done)
        return done

    def create_database(self, name: str) -> str:
        """A new database in this cluster; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        """Stop the cluster (immediate: nothing in it is kept) and delete its directory."""
        if self.data.exists() and self.running():
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError, OSError):
                self.stop("immediate", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


def terminate_backends(database_url: str) -> int:
    """pg_terminate_backend on every other connection to this database: what a PostgreSQL restart
    does to the app's connections, without restarting the shared server."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(1 for (done,) in rows if done)


# --- the app ---------------------------------------------------------------------------------


def app_config(
    database_url: str,
    broker_url: str,
    smtp_port: int,
    base_url: str = "http://127.0.0.1:8000",
    mode: str = "production",
    **extra: Any,
) -> dict[str, str]:
    """Settings for every process of one run: fresh keys, loopback services. CRASH_POINT needs
    mode="testing" (production refuses it); testing mode gets MAIL_SUPPRESS_SEND=False."""
    import secrets

    from cryptography.fernet import Fernet

    config: dict[str, Any] = {
        "CAMPAIGN_ENV": mode,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "SIGNER_DATA_KEYS": Fernet.generate_key().decode(),
        "BLIND_INDEX_KEY": secrets.token_urlsafe(48),
        "BASE_URL": base_url,
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": smtp_port,
        "MAIL_TIMEOUT": 10.0,
        "MAIL_SUPPRESS_SEND": False,
        "MAIL_DEFAULT_SENDER": "Campaign <no-reply@campaign.bench>",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "INFO",
        # The demo organizer's password is hashed when the demo is seeded: the floor, not 64 MiB.
        "PASSWORD_HASH_MEMORY_KIB": 19456,
        "PASSWORD_HASH_TIME_COST": 2,
        "PASSWORD_HASH_PARALLELISM": 1,
    }
    if broker_url.startswith("redis"):
        config["REDIS_URL"] = broker_url
    config.update(extra)
    return {key: str(value) for key, value in config.items() if value is not None}


def env_for(config: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a subprocess that builds the same app."""
    from campaign.config import SETTINGS

    names = {setting.name for setting in SETTINGS}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST", "CAMPAIGN_", "FLASK_", "GUNICORN_")) and k not in names
    }
    env.update(config)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def make_app(config: dict[str, str], schema: bool = False) -> Any:
    """The app in this process (inserts, queries, publishing), optionally creating the schema and
    the demo petition first."""
    from campaign import create_app
    from campaign.extensions import db

    app = create_app(dict(config))
    if schema:
        from campaign.services.demo import seed_demo

        with app.app_context():
            db.create_all()
            seed_demo(db.session)
            db.session.commit()
            db.session.remove()
    return app


def dispose(app: Any) -> None:
    from campaign.extensions import db

    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def address(label: str, n: int) -> str:
    return f"{label}-{n:06d}@bench.example.org"


def queue_confirmations(app: Any, addresses: Sequence[str], delay: float = 0.0) -> dict[str, int]:
    """Pending signatures and their confirmation emails, inserted in bulk in one transaction,
    without publishing anything. Returns address -> outbox row id."""
    from sqlalchemy import insert

    from campaign.extensions import db
    from campaign.models import OutboundEmail, Signature
    from campaign.services.emails import canonical_email
    from campaign.services.petitions import petition_by_slug
    from campaign.services.privacy import cipher
    from campaign.services.signing import CONFIRMATION

    with app.app_context():
        try:
            petition = petition_by_slug(db.session, SLUG)
            assert petition is not None
            crypt = cipher()
            indexes = [crypt.blind_index(canonical_email(a)) for a in addresses]
            rows = [
                {
                    "petition_id": petition.id,
                    "name_encrypted": crypt.encrypt(f"Fault Signer {i}"),
                    "email_encrypted": crypt.encrypt(a),
                    "email_index": index,
                    "country": "DE",
                }
                for i, (a, index) in enumerate(zip(addresses, indexes, strict=True))
            ]
            signature_ids = list(
                db.session.scalars(
                    insert(Signature).returning(Signature.id, sort_by_parameter_order=True), rows
                )
            )
            due = datetime.now(UTC) + timedelta(seconds=delay)
            outbox = [
                {
                    "idempotency_key": f"form:{sid}:1",
                    "kind": CONFIRMATION,
                    "petition_id": petition.id,
                    "signature_id": sid,
                    "recipient_index": index,
                    "from_public_form": True,
                    "next_attempt_at": due,
                }
                for sid, index in zip(signature_ids, indexes, strict=True)
            ]
            email_ids = list(
                db.session.scalars(
                    insert(OutboundEmail).returning(OutboundEmail.id, sort_by_parameter_order=True), outbox
                )
            )
            db.session.commit()
        finally:
            db.session.remove()
    return dict(zip(addresses, email_ids, strict=True))


def publish(
    app: Any, email_ids: Sequence[int], copies: int = 1, queue_name: str = "confirmations", **options: Any
) -> None:
    """outbox.send for each id, `copies` times in a row, over one broker connection."""
    celery = app.extensions["celery"]
    with celery.producer_or_acquire() as producer:
        for email_id in email_ids:
            for _ in range(copies):
                celery.send_task(
                    "outbox.send", args=[email_id], queue=queue_name, producer=producer, **options
                )


def outbox_rows(app: Any) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from campaign.extensions import db
    from campaign.models import OutboundEmail

    with app.app_context():
        try:
            result = db.session.execute(
                select(
                    OutboundEmail.id,
                    OutboundEmail.status,
                    OutboundEmail.attempts,
                    OutboundEmail.lease_until,
                    OutboundEmail.last_error,
                    OutboundEmail.sent_at,
                    OutboundEmail.next_attempt_at,
                    OutboundEmail.reason,
                )
            )
            return [dict(row._mapping) for row in result]
        finally:
            db.session.remove()


def outbox_summary(app: Any) -> dict[str, Any]:
    rows = outbox_rows(app)
    return {
        "rows": len(rows),
        "by_status": dict(Counter(r["status"] for r in rows)),
        "attempts_histogram": {str(k): v for k, v in sorted(Counter(r["attempts"] for r in rows).items())},
    }


def count_by_status(app: Any, status: str) -> int:
    from sqlalchemy import func, select

    from campaign.extensions import db
    from campaign.models import OutboundEmail

    with app.app_context():
        try:
            return int(
                db.session.scalar(
                    select(func.count()).select_from(OutboundEmail).where(OutboundEmail.status == status)
                )
                or 0
            )
        finally:
            db.session.remove()


def scalar(app: Any, statement: Any) -> Any:
    from campaign.extensions import db

    with app.app_context():
        try:
            return db.session.scalar(statement)
        finally:
            db.session.remove()


# --- HTTP clients --------------------------------------------------------------------------------


def source_address(n: int) -> str:
    """The n-th distinct loopback source address, 127.16.0.1 upwards: per-IP limits see many clients."""
    n = n % (200 * 256 * 254)
    rest = n // 254
    return f"127.{16 + rest // 256}.{rest % 256}.{n % 254 + 1}"


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes


async def http_request(
    port: int,
    method: str,
    path: str,
    source: str = "127.0.0.1",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> HttpResult:
    """One HTTP/1.1 request on its own connection from a loopback source address."""

    async def exchange() -> HttpResult:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            lines = [
                f"{method} {path} HTTP/1.1",
                f"Host: 127.0.0.1:{port}",
                "Connection: close",
                "User-Agent: campaign-fault-bench",
                "Accept: text/html",
            ]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            if body or method == "POST":
                lines.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            raw = await reader.read(-1)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parsed = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            parsed[key.strip().lower()] = value.strip()
        return HttpResult(int(status_line.split()[1]), parsed, payload)

    return await asyncio.wait_for(exchange(), timeout)


async def form_token(port: int, slug: str = SLUG) -> str:
    page = await http_request(port, "GET", f"/petitions/{slug}")
    match = _TOKEN.search(page.body)
    if page.status != 200 or not match:
        raise RuntimeError(f"petition page answered {page.status} without a form token")
    return match.group(1).decode()


async def post_signature(
    port: int, token: str, email: str, n: int, slug: str = SLUG, timeout: float = 30.0
) -> HttpResult:
    form = urlencode(
        {"name": f"Fault Signer {n}", "email": email, "country": "DE", "form_token": token, "source": ""}
    ).encode()
    return await http_request(
        port,
        "POST",
        f"/petitions/{slug}/sign",
        source_address(n),
        form,
        {"Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{port}"},
        timeout=timeout,
    )


_CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')


async def confirm_link(port: int, path: str, source: str = "127.0.0.1") -> int:
    """Open a confirmation link and press its button, as a browser would (session cookie and CSRF)."""
    page = await http_request(port, "GET", path, source)
    match = _CSRF.search(page.body)
    if page.status != 200 or not match:
        return page.status
    cookie = page.headers.get("set-cookie", "").split(";", 1)[0]
    form = urlencode({"csrf_token": match.group(1).decode()}).encode()
    done = await http_request(
        port,
        "POST",
        path,
        source,
        form,
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": cookie,
            "Origin": f"http://127.0.0.1:{port}",
            "Referer": f"http://127.0.0.1:{port}{path}",
        },
    )
    return done.status


async def api_count(port: int, slug: str = SLUG) -> int:
    answer = await http_request(
        port, "GET", f"/api/v1/petitions/{slug}", headers={"Accept": "application/json"}
    )
    return int(json.loads(answer.body)["signature_count"])


@dataclass
class WebStack:
    """gunicorn, a Celery worker and beat on a fresh PostgreSQL database and a private Redis."""

    work: Path
    config: dict[str, str]
    env: dict[str, str]
    app: Any
    port: int
    sink: Sink
    web: Gunicorn
    workers: list[CeleryWorker]


def web_stack(
    stack: contextlib.ExitStack, name: str, keep: bool = False, web_workers: int = 2, **settings: Any
) -> WebStack:
    work = stack.enter_context(workdir(keep))
    database = stack.enter_context(fresh_database(name, keep))
    redis = RedisServer(work)
    stack.callback(redis.close)
    sink = Sink()
    stack.callback(sink.stop)
    port = free_port()
    config = app_config(database, redis.url(), sink.port, base_url=f"http://127.0.0.1:{port}", **settings)
    app = make_app(config, schema=True)
    stack.callback(dispose, app)
    env = env_for(config)
    beat = Beat(env, work, wait=False)
    processes: list[Process] = [beat]
    stack.callback(stop_all, processes)
    workers = start_workers(env, work, ["worker"], 2)
    processes += workers
    web = Gunicorn(env, work, port, web_workers)
    processes.append(web)
    beat.ready_or_stop(beat.wait_ready)
    return WebStack(work, config, env, app, port, sink, web, workers)


@dataclass
class Attempt:
    n: int
    email: str
    sent_at: float  # seconds since the load began
    latency: float = 0.0
    status: int = 0  # 0: no HTTP answer
    error: str = ""


@dataclass
class LoadResult:
    attempts: list[Attempt] = field(default_factory=list)
    shed: int = 0
    seconds: float = 0.0

    def accepted(self) -> list[Attempt]:
        return [a for a in self.attempts if a.status == 303]


def signing_load(
    port: int,
    rate: float,
    seconds: float,
    label: str,
    max_in_flight: int = 256,
    first: int = 0,
    on_tick: Callable[[float], None] | None = None,
    timeout: float = 30.0,
) -> LoadResult:
    """Signatures offered at a fixed rate (open loop) for a time: each a POST of the sign form from
    its own loopback address, with a form token the petition page handed out (one token serves a
    whole run, as one page serves many signers in the same token window). on_tick(elapsed) is
    called about every 0.1 s from the load's own thread, to inject faults on schedule."""
    result = LoadResult()
    total = int(rate * seconds)

    async def main() -> None:
        token = await form_token(port)
        in_flight = 0
        started = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()

        async def one(n: int, offset: float) -> None:
            nonlocal in_flight
            email = address(label, first + n)
            attempt = Attempt(first + n, email, offset)
            begun = time.perf_counter()
            try:
                answer = await post_signature(port, token, email, first + n, timeout=timeout)
                attempt.status = answer.status
            except (TimeoutError, OSError, ValueError, IndexError) as error:
                attempt.error = type(error).__name__
            attempt.latency = time.perf_counter() - begun
            result.attempts.append(attempt)
            in_flight -= 1

        async def ticker() -> None:
            while True:
                if on_tick:
                    await asyncio.to_thread(on_tick, time.perf_counter() - started)
                await asyncio.sleep(0.1)

        tick = asyncio.create_task(ticker())
        for n in range(total):
            offset = n / rate
            delay = started + offset - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                result.shed += 1
                continue
            in_flight += 1
            task = asyncio.create_task(one(n, offset))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout + 5)
        result.seconds = time.perf_counter() - started
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick

    run_async(main)
    return result


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="campaign-faults-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept logs in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def main_wrapper(
    name: str,
    parse: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    check: Callable[[dict[str, Any], argparse.Namespace], list[Target]],
) -> int:
    global QUIET
    # SIGTERM unwinds like Ctrl-C: every run stops what it started and drops its database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    argv = sys.argv[1:]
    args = parse(argv)
    QUIET = bool(getattr(args, "quiet", False))
    figures = run(args)
    return report(name, args, figures, check(figures, args), argv)


# Settings of the web stack the B benchmarks share in the fast suite (each script alone starts
# its own with the same): a quick sweep, and trending checks every few seconds.
B_STACK_SETTINGS: dict[str, Any] = {
    "OUTBOX_SWEEP_INTERVAL": 2,
    "OUTBOX_SWEEP_GRACE": 5,
    "TRENDING_INTERVAL": 2,
}


@contextlib.contextmanager
def shared_or_own_stack(
    web: WebStack | None, name: str, keep: bool = False, **settings: Any
) -> Iterator[WebStack]:
    """The given web stack (left running), or a new one for this run (stopped afterwards)."""
    if web is not None:
        yield web
        return
    with contextlib.ExitStack() as stack:
        yield web_stack(stack, name, keep, **{**B_STACK_SETTINGS, **settings})


def settled(web: WebStack, timeout: float = 60.0) -> None:
    """Wait until no outbox row is queued or being sent (then a moment for the sink's report)."""
    wait_for(
        lambda: outbox_summary(web.app)["by_status"].keys() <= {"sent", "cancelled", "failed"},
        timeout,
        0.5,
    )
    time.sleep(1)


def signature_rows(app: Any, emails: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Stored signatures for these addresses (by blind index): address -> status, time, held."""
    from sqlalchemy import select

    from campaign.extensions import db
    from campaign.models import Signature
    from campaign.services.emails import canonical_email
    from campaign.services.privacy import cipher

    with app.app_context():
        try:
            crypt = cipher()
            by_index = {crypt.blind_index(canonical_email(e.strip().lower())): e for e in emails}
            rows = db.session.execute(
                select(
                    Signature.email_index, Signature.status, Signature.created_at, Signature.held_at
                ).where(Signature.email_index.in_(list(by_index)))
            )
            return {
                by_index[index]: {"status": str(status), "created_at": created, "held": held is not None}
                for index, status, created, held in rows
            }
        finally:
            db.session.remove()
