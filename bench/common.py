"""What the benchmarks share: a fresh PostgreSQL database, gunicorn, Celery workers and the SMTP
sink as subprocesses, browser-like HTTP clients on distinct loopback addresses, and the JSON
results stamped with the commit.

Everything listens on and talks to 127.0.0.0/8 only, and every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
_held_locks: list[Any] = []


def lock_redis_db(numbers: Iterable[int]) -> int | None:
    """The first Redis database number of `numbers` that no other process holds, locked by a file
    until this process exits; None if all are held. The tests (tests/conftest.py, from 1 up) and
    the benches (from 15 down) share these locks, so a FLUSHDB never empties another run's data."""
    import atexit
    import fcntl

    for number in numbers:
        handle = open(Path(tempfile.gettempdir()) / f"campaign-test-redis-{number}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held_locks.append(handle)
        atexit.register(handle.close)
        return number
    return None


def redis_url() -> str:
    """BENCH_REDIS_URL, or a database number of this process's own, taken on first use."""
    if not os.environ.get("BENCH_REDIS_URL"):
        number = lock_redis_db(range(15, 0, -1))
        if number is None:
            raise SystemExit("every Redis database 1-15 is held by a test run; set BENCH_REDIS_URL")
        os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:6379/{number}"  # the subprocesses' too
    return os.environ["BENCH_REDIS_URL"]
SLUG = "g20-chechnya"
TOKEN = re.compile(rb'name="form_token" type="hidden" value="([^"]+)"')


# --- conditions and results -------------------------------------------------------------------

# The checkout whose commit the results are stamped with: this one, unless BENCH_GIT_DIR names
# the checkout that an exported copy of the code was taken from.
GIT_DIR = Path(os.environ.get("BENCH_GIT_DIR") or ROOT)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=GIT_DIR, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def git_dirty() -> bool:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=GIT_DIR,
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.strip())


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("flask", "werkzeug", "sqlalchemy", "flask-sqlalchemy", "psycopg", "celery", "kombu",
                 "redis", "gunicorn", "jinja2", "itsdangerous"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    found["postgresql"] = _query_one(PG_ADMIN_URL, "SHOW server_version") or "unknown"
    with contextlib.suppress(Exception):
        import redis

        found["redis-server"] = str(redis.Redis.from_url(redis_url(), socket_timeout=3).info("server")
                                    ["redis_version"])
    return found


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "memory": _memory(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()]}


def write_results(kind: str, data: dict[str, Any]) -> Path:
    """bench/results/<kind>-<timestamp>.json, with the commit and the machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data = {"benchmark": kind, "commit": git_commit(), "uncommitted_changes": git_dirty(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), **data}
    path = RESULTS / f"{kind}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50_ms": round(percentile(ms, 50), 1), "p95_ms": round(percentile(ms, 95), 1),
            "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(max(ms), 1) if ms else float("nan"),
            "mean_ms": round(statistics.fmean(ms), 1) if ms else float("nan")}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- PostgreSQL ------------------------------------------------------------------------------

def _query_one(url: str, sql: str) -> Any:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute(sql).fetchone()
            return row[0] if row else None
    except psycopg.Error:
        return None


@contextlib.contextmanager
def fresh_database(prefix: str, keep: bool = False) -> Iterator[str]:
    """A new, empty database with a unique name; dropped afterwards unless keep."""
    import psycopg

    name = f"bench_{prefix}_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        if keep:
            log(f"kept database {name}")
        else:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_stat(url: str) -> dict[str, int]:
    """Counters of this database that tell lock waits and work done (pg_stat_database)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, deadlocks, blks_hit, blks_read, tup_inserted, "
            "tup_updated FROM pg_stat_database WHERE datname = current_database()").fetchone()
    keys = ("xact_commit", "xact_rollback", "deadlocks", "blks_hit", "blks_read", "tup_inserted",
            "tup_updated")
    return dict(zip(keys, [int(v) for v in row], strict=True)) if row else {}


class LockSampler:
    """Samples pg_stat_activity every interval: backends waiting on a lock, and on which relation.

    This is how 'lock waits on the counter rows' is answered: a sample that finds a backend
    waiting on a lock is counted, grouped by wait event and the relation it is waiting for.
    """

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url = url
        self.interval = interval
        self.samples = 0
        self.waiting: dict[str, int] = {}
        self.max_waiting = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        import psycopg

        # The waiting statement's first words name the table even when the lock is a
        # transaction id (a row lock held by another transaction), as for the counter upsert.
        sql = ("SELECT a.wait_event_type || ':' || a.wait_event || ' on ' || "
               "coalesce(c.relname, l.locktype, '?') || ' in: ' || left(regexp_replace(a.query, "
               "'\\s+', ' ', 'g'), 60) "
               "FROM pg_stat_activity a "
               "LEFT JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted "
               "LEFT JOIN pg_class c ON c.oid = l.relation "
               "WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'")
        with psycopg.connect(self.url, autocommit=True) as conn:
            deadline = time.monotonic() + 3600
            while not self._stop.is_set() and time.monotonic() < deadline:
                rows = conn.execute(sql).fetchall()
                self.samples += 1
                self.max_waiting = max(self.max_waiting, len(rows))
                for (what,) in rows:
                    self.waiting[what] = self.waiting.get(what, 0) + 1
                self._stop.wait(self.interval)

    def summary(self) -> dict[str, Any]:
        return {"samples": self.samples, "samples_with_lock_waits_by_kind": self.waiting,
                "max_backends_waiting_on_a_lock": self.max_waiting}


# --- processes -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# What sign.py, surge.py and page.py pass to app_environment: the load generator posts within
# milliseconds of the GET, all from one email domain, which the abuse checks (where the code has
# them) would hold as a bot; held signatures get no email. Each address is already distinct.
# Names the app does not know are ignored, so this is harmless on code without those checks.
LOAD_TEST_SETTINGS = {"SIGNING_MIN_FILL_SECONDS": "0", "SIGNING_DOMAIN_BURST": "100000000/60"}


def app_environment(database_url: str, port: int, smtp_port: int, **extra: str) -> dict[str, str]:
    """The environment of a production-mode app on loopback: fresh keys for each run."""
    import secrets

    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "CAMPAIGN_", "FLASK_"))}
    env.update({
        "CAMPAIGN_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "SIGNER_DATA_KEYS": Fernet.generate_key().decode(),
        "BLIND_INDEX_KEY": secrets.token_urlsafe(48),
        "BASE_URL": f"http://127.0.0.1:{port}",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url(),
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": str(smtp_port),
        "MAIL_DEFAULT_SENDER": "Campaign <no-reply@campaign.bench>",
        "PYTHONPATH": str(ROOT),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    env.update(extra)
    return env


def flask_command(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(BIN / "flask"), "--app", "app", *args], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=300)


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(redis_url(), socket_timeout=5).flushdb()


class Process:
    """A subprocess whose output goes to a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_for_log(self, marker: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log_path.read_bytes():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready in {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            # The process group: gunicorn's and Celery's own children go with their parent.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and its children so far (from /proc)."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in _process_tree(self.process.pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        return total


def _process_tree(root: int) -> list[int]:
    pids = [root]
    with contextlib.suppress(OSError):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                    if int(stat[2]) == root or os.getpgid(int(entry)) == os.getpgid(root):
                        pids.append(int(entry))
    return sorted(set(pids))


def start_gunicorn(app_spec: str, env: dict[str, str], port: int, workers: int, workdir: Path,
                   name: str = "gunicorn") -> Process:
    """gunicorn with the project's gunicorn.conf.py, on a loopback port, WEB_CONCURRENCY workers."""
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": str(workers)}
    process = Process(name, [str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), app_spec],
                      env, workdir)
    wait_http(port, "/healthz", process)
    return process


def wait_http(port: int, path: str, process: Process | None = None, timeout: float = 60.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        if process is not None and process.process.poll() is not None:
            raise RuntimeError(f"{process.name} exited early:\n{process.tail()}")
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} in {timeout} s")


def start_celery(env: dict[str, str], concurrency: int, workdir: Path, beat: bool = False,
                 queues: str = "confirmations,letters,bulk,maintenance", name: str = "celery") -> Process:
    args = [str(BIN / "celery"), "-A", "worker", "worker", "--loglevel", "WARNING", "-Q", queues,
            "--concurrency", str(concurrency), "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-n", f"{name}-{os.getpid()}@%h"]
    if beat:
        args += ["-B", "--schedule", str(workdir / "celerybeat-schedule")]
    process = Process(name, [*args, "--loglevel", "INFO"], env, workdir)
    try:
        process.wait_for_log(b" ready.", 60)
    except BaseException:
        process.stop()  # a worker that never said ready must not live on and take tasks
        raise
    return process


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="campaign-bench-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept logs in {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


# --- the SMTP sink, in its own process ---------------------------------------------------------

class Sink:
    """bench/sink_process.py (campaign.mail.sink.start_sink on loopback) as a subprocess.

    Arrivals come back as lines on its standard output: arrival time, recipient, confirm path.
    A process of its own, so the load generator's threads do not slow the SMTP server down.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.arrivals: dict[str, tuple[float, str]] = {}
        self.count = 0
        self.lock = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "sink_process.py"), "--port", str(self.port)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("ready"):
            raise RuntimeError(f"SMTP sink did not start: {first!r}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                with self.lock:
                    self.count += 1
                    self.arrivals.setdefault(parts[1].lower(), (float(parts[0]), parts[2]))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


# --- browser-like clients --------------------------------------------------------------------

def source_address(n: int) -> str:
    """The n-th distinct loopback source address: 127.16.0.1 upwards, skipping .0 and .255."""
    n = n % (200 * 256 * 254)
    host = n % 254 + 1
    rest = n // 254
    return f"127.{16 + rest // 256}.{rest % 256}.{host}"


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes


async def http_request(port: int, method: str, path: str, source: str, body: bytes = b"",
                       headers: dict[str, str] | None = None, timeout: float = 30.0) -> HttpResult:
    """One HTTP/1.1 request on its own connection from the given loopback source address.

    gunicorn's sync workers close the connection after each response, as this client asks;
    so does a browser's first visit. The body is read to the end of the connection.
    """
    async def exchange() -> HttpResult:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
                     "User-Agent: campaign-bench", "Accept: text/html"]
            for key, value in (headers or {}).items():
                lines.append(f"{key}: {value}")
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
        parsed: dict[str, str] = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            parsed[key.strip().lower()] = value.strip()
        if parsed.get("transfer-encoding", "").lower() == "chunked":
            payload = _dechunk(payload)
        return HttpResult(int(status_line.split()[1]), parsed, payload)

    return await asyncio.wait_for(exchange(), timeout)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)


@dataclass
class SignResult:
    ok: bool
    error: str = ""
    total: float = 0.0
    post: float = 0.0
    posted_at: float = 0.0  # wall clock when the POST was sent


async def browser_sign(port: int, source: str, email: str, name: str, country: str = "DE",
                       follow: bool = True, slug: str = SLUG) -> SignResult:
    """What a browser does: GET the page, take form_token, POST, follow the 303."""
    started = time.perf_counter()
    try:
        page = await http_request(port, "GET", f"/petitions/{slug}", source)
        if page.status != 200:
            return SignResult(False, f"GET {page.status}")
        match = TOKEN.search(page.body)
        if not match:
            return SignResult(False, "no form_token")
        form = urlencode({"name": name, "email": email, "country": country,
                          "form_token": match.group(1).decode(), "source": ""}).encode()
        post_started = time.perf_counter()
        posted_at = time.time()
        answer = await http_request(port, "POST", f"/petitions/{slug}/sign", source, form,
                                    {"Content-Type": "application/x-www-form-urlencoded",
                                     "Origin": f"http://127.0.0.1:{port}"})
        post_time = time.perf_counter() - post_started
        if answer.status == 200 and not follow:
            return SignResult(True, total=time.perf_counter() - started, post=post_time, posted_at=posted_at)
        if answer.status != 303:
            return SignResult(False, f"POST {answer.status}")
        if follow:
            location = urlsplit(answer.headers.get("location", ""))
            target = location.path + (f"?{location.query}" if location.query else "")
            landing = await http_request(port, "GET", target, source)
            if landing.status != 200:
                # The signature was accepted (303); only the page after it failed.
                return SignResult(True, f"follow {landing.status}", time.perf_counter() - started,
                                  post_time, posted_at)
        return SignResult(True, total=time.perf_counter() - started, post=post_time, posted_at=posted_at)
    except (TimeoutError, OSError, ValueError, IndexError) as error:
        return SignResult(False, type(error).__name__)


@dataclass
class LevelResult:
    concurrency: int
    seconds: float
    accepted: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    totals: list[float] = field(default_factory=list)
    posts: list[float] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "duration_s": round(self.seconds, 2),
            "accepted": self.accepted,
            "accepted_per_s": round(self.accepted / self.seconds, 1) if self.seconds else 0.0,
            "errors": sum(self.errors.values()),
            "errors_by_kind": self.errors,
            "signature_latency": latency_summary(self.totals),
            "post_latency": latency_summary(self.posts),
        }


def run_closed_loop(port: int, concurrency: int, seconds: float, max_count: int, label: str,
                    first_address: int, follow: bool = True) -> LevelResult:
    """C clients, each signing again as soon as it is done, until the time or count runs out."""
    result = LevelResult(concurrency, seconds)
    counter = iter(range(max_count))

    async def client() -> None:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            n = next(counter, None)
            if n is None:
                return
            email = f"{label}-{n}@d{n % 1000}.bench.example.org"  # spread as real sign-ups are
            outcome = await browser_sign(port, source_address(first_address + n), email,
                                         f"Bench Signer {n}", follow=follow)
            if outcome.ok:
                result.accepted += 1
                result.totals.append(outcome.total)
                result.posts.append(outcome.post)
                result.emails.append(email)
            if outcome.error:
                result.errors[outcome.error] = result.errors.get(outcome.error, 0) + 1

    async def main() -> None:
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started

    asyncio.run(main())
    return result


def cpu_of_this_process() -> float:
    times = os.times()
    return times.user + times.system


def timed(function: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        out.append(time.perf_counter() - started)
    return out


# --- profiles --------------------------------------------------------------------------------

class PySpy:
    """py-spy (the `bench` extra) sampling a process and its children into collapsed stacks."""

    def __init__(self, pid: int, seconds: float, output: Path) -> None:
        self.output = output
        exe = BIN / "py-spy"
        self.process: subprocess.Popen[bytes] | None = None
        if not exe.exists():
            log("py-spy is not installed (pip install -e '.[bench]'): no profile")
            return
        self.process = subprocess.Popen(
            [str(exe), "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--function",
             "--gil", "--duration", str(int(seconds)), "--rate", "50", "--format", "raw",
             "--output", str(output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self, top: int = 25) -> dict[str, Any]:
        if self.process is None:
            return {}
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return {}
        return summarize_collapsed(self.output, top)


def _frame_file(frame: str) -> str:
    return frame.rsplit("(", 1)[-1].rstrip(")").rsplit(":", 1)[0] if "(" in frame else ""


def summarize_collapsed(path: Path, top: int = 25) -> dict[str, Any]:
    """From py-spy's collapsed stacks (GIL-holding samples only, i.e. Python CPU): the share of
    samples by the package of the innermost frame (self time), and the share in which each of
    the app's functions is on the stack (inclusive), busiest first."""
    if not path.exists():
        return {}
    by_package: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        frames = [frame for frame in stack.split(";") if not frame.startswith("process ")]
        if not frames:
            continue
        count = int(count_text)
        total += count
        leaf_file = _frame_file(frames[-1])
        package = leaf_file.split("/", 1)[0] if "/" in leaf_file else (leaf_file or "?")
        by_package[package] = by_package.get(package, 0) + count
        for frame in set(frames):
            if _frame_file(frame).startswith(("campaign/", "worker/", "templates/", "bench/")):
                inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return {}
    def ranked(counts: dict[str, int]) -> dict[str, float]:
        return {name: round(n / total, 3) for name, n in sorted(counts.items(), key=lambda i: -i[1])[:top]}

    return {"samples": total, "self_by_package": ranked(by_package),
            "inclusive_app_functions": ranked(inclusive)}


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _label(pid: int, mine: bool) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    if cmdline.startswith("postgres"):
        # A backend's title names its database: ours are bench_*; anything else is someone else's.
        return "postgresql" if (" bench_" in cmdline or ": " not in cmdline or "writer" in cmdline
                                or "checkpointer" in cmdline or "walwriter" in cmdline) else "other"
    if "redis-server" in cmdline and "6379" in cmdline:
        return "redis"
    if not mine:
        return "other"
    if pid == os.getpid():
        return "load generator"
    for marker, label in (("baseline_app", "gunicorn (baseline)"), ("gunicorn", "gunicorn (app)"),
                          ("celery", "celery"), ("sink_process", "smtp sink"), ("py-spy", "py-spy")):
        if marker in cmdline:
            return label
    return "bench (other)"


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds used so far by every process on the machine, grouped by role (from /proc).

    Roles are this benchmark's own processes (its descendants), PostgreSQL (the postmaster's
    helpers and the backends of bench_* databases) and Redis; "other" is everything else on the
    machine, e.g. someone else's test suite: the noise the figures were measured under."""
    tick = os.sysconf("SC_CLK_TCK")
    parents = _parents()
    me = os.getpid()

    def descends(pid: int) -> bool:
        for _ in range(50):
            if pid == me:
                return True
            pid = parents.get(pid, 0)
            if pid <= 1:
                return False
        return False

    totals: dict[str, float] = {}
    for pid in parents:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / tick
            label = _label(pid, descends(pid))
            totals[label] = totals.get(label, 0.0) + seconds
    return totals


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy since boot, and stolen by the hypervisor."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot_with_machine() -> dict[str, float]:
    snapshot = cpu_snapshot()
    snapshot["_machine"] = _machine_busy()
    return snapshot


def cpu_delta(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """Cores used by each role between two snapshots (CPU seconds / wall seconds).

    With machine totals in both snapshots, "other" is the machine's busy time minus this
    benchmark's roles: what other work on the machine took (processes that came and went
    between the snapshots included), and "idle" what nobody used."""
    roles = {label: (after.get(label, 0.0) - before.get(label, 0.0)) / wall
             for label in after if not label.startswith("_") and label != "other"}
    out = {label: round(value, 3) for label, value in sorted(roles.items()) if value > 0.01}
    if "_machine" in after and "_machine" in before:
        busy = (after["_machine"] - before["_machine"]) / wall
        out["other"] = round(max(0.0, busy - sum(roles.values())), 3)
        out["idle"] = round(max(0.0, (os.cpu_count() or 1) - busy), 2)
    return out


def cpu_ms_per_item(cores: dict[str, float], per_second: float) -> dict[str, float]:
    """CPU milliseconds each role spent per accepted signature or request."""
    if not per_second:
        return {}
    return {label: round(value * 1000 / per_second, 2) for label, value in cores.items()
            if label not in {"other", "idle"}}


def run_closed_loop_get(port: int, path: str, concurrency: int, seconds: float, max_count: int,
                        first_address: int = 0) -> LevelResult:
    """C clients, each GETting path again as soon as the last answer came, bounded in time and count.

    No If-None-Match: every answer is a full page, as for a first visit."""
    result = LevelResult(concurrency, seconds)
    counter = iter(range(max_count))

    async def client() -> None:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            n = next(counter, None)
            if n is None:
                return
            started = time.perf_counter()
            try:
                answer = await http_request(port, "GET", path, source_address(first_address + n))
                error = "" if answer.status == 200 else f"GET {answer.status}"
            except (TimeoutError, OSError, ValueError, IndexError) as exc:
                error = type(exc).__name__
            if error:
                result.errors[error] = result.errors.get(error, 0) + 1
            else:
                result.accepted += 1
                result.totals.append(time.perf_counter() - started)

    async def main() -> None:
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - started

    asyncio.run(main())
    return result
