"""Real Steward processes for integration tests: Celery workers and the sweeper, killable with -9.

Each test session gets its own queue name, so parallel sessions on one Redis never share work.
The processes use the test database that pytest-django created.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.conf import settings

from orchestrator.celery import app as celery_app

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """Return a URL for the database the tests run against."""
    db = settings.DATABASES["default"]
    user = db.get("USER") or "root"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


class StewardProcesses:
    """Starts, kills and cleans up worker and sweeper processes for one test."""

    def __init__(self, tmp_path: Path, **engine_settings: float):
        self.queue = f"steward-test-{uuid.uuid4().hex[:10]}"
        self.tmp_path = tmp_path
        self.clock_file = tmp_path / "clock-offset"
        self.clock_file.write_text("0")
        self.workers: list[subprocess.Popen] = []
        self.sweeper: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "STEWARD_QUEUE": self.queue,
            "STEWARD_TOOL_MODULES": "tests.orchestrator.testtools",
            "STEWARD_CLOCK_OFFSET_FILE": str(self.clock_file),
            "STEWARD_LEASE_SECONDS": "2",
            "STEWARD_HEARTBEAT_SECONDS": "0.5",
            "STEWARD_REPUBLISH_AFTER_SECONDS": "2",
            "AUDIT_SIGNING_KEY_FILE": os.environ.get("AUDIT_SIGNING_KEY_FILE", ""),
            "PYTHONPATH": str(ROOT),
            "DEBUG": "1",
        }
        self.env.pop("STEWARD_FIND_SERVICES", None)
        self.env.pop("STEWARD_TEST_DB_NAME", None)
        # Set in this process once anything imports orchestrator.asgi; workers keep connections.
        self.env.pop("STEWARD_DB_CONN_MAX_AGE", None)
        self.env.pop("STEWARD_DB_POOL", None)
        if not self.env["AUDIT_SIGNING_KEY_FILE"]:
            self.env.pop("AUDIT_SIGNING_KEY_FILE")
        self.env.update({key: str(value) for key, value in engine_settings.items()})
        self._previous_queue = celery_app.conf.task_default_queue
        celery_app.conf.task_default_queue = self.queue

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        """Start a process in its own session so a kill reaches all its children."""
        log = open(self.tmp_path / f"{name}.log", "ab")  # noqa: SIM115  (closed with the process)
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self, concurrency: int = 2, wait_ready: bool = False) -> subprocess.Popen:
        """Start a Celery worker on this test's queue; optionally wait until it consumes."""
        log_path = self.tmp_path / f"worker-{len(self.workers)}.log"
        ready_before = (
            log_path.read_text(errors="replace").count(" ready.") if log_path.exists() else 0
        )
        worker = self._spawn(
            [
                "-m",
                "celery",
                "-A",
                "orchestrator",
                "worker",
                "-Q",
                self.queue,
                "-c",
                str(concurrency),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                os.environ.get("STEWARD_TEST_WORKER_LOGLEVEL", "INFO"),
                "-n",
                f"{self.queue}-{len(self.workers)}@%h",
            ],
            f"worker-{len(self.workers)}",
        )
        self.workers.append(worker)
        if wait_ready:
            wait_until(
                lambda: log_path.read_text(errors="replace").count(" ready.") > ready_before,
                timeout=120,
                message=lambda: "the worker did not start:\n" + log_path.read_text()[-2000:],
            )
        return worker

    def start_sweeper(self, interval: float = 0.3) -> subprocess.Popen:
        """Start the sweeper loop (what beat runs in production) as its own process."""
        self.sweeper = self._spawn(
            ["manage.py", "runs", "--system", "sweep", "--loop", "--interval", str(interval)],
            "sweeper",
        )
        return self.sweeper

    def kill(self, process: subprocess.Popen) -> None:
        """Kill a process and its children at once, with SIGKILL."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def kill_workers(self) -> None:
        """SIGKILL every worker started so far."""
        for worker in self.workers:
            if worker.poll() is None:
                self.kill(worker)
        self.workers = [w for w in self.workers if w.poll() is None]

    def move_clock(self, seconds: float) -> None:
        """Move the processes' clock forward (they read the offset file)."""
        current = float(self.clock_file.read_text() or 0)
        self.clock_file.write_text(str(current + seconds))

    def logs(self) -> str:
        """Describe the state of steps, the queue and each process log, for failure messages."""
        import redis
        from django.db.models import Count

        from orchestrator.models import StepRun

        statuses = dict(StepRun.objects.values_list("status").annotate(n=Count("id")))
        broker = redis.Redis.from_url(settings.REDIS_URL)
        state = (
            f"steps by status: {statuses}; queued messages: {broker.llen(self.queue)}; "
            f"unacked: {broker.hlen('unacked')}"
        )
        tails = [
            f"--- {path.name}\n{_without_banners(path.read_text(errors='replace'))[-4000:]}"
            for path in sorted(self.tmp_path.glob("*.log"))
        ]
        return "\n".join([state, *tails])

    def stop(self) -> None:
        """Kill everything this test started and restore the queue."""
        for process in [*self.workers, self.sweeper]:
            if process is not None and process.poll() is None:
                self.kill(process)
        celery_app.conf.task_default_queue = self._previous_queue


# --- recovery after a kill -9 ------------------------------------------------------------------


def _group_pids(pgid: int) -> set[int]:
    """Return the ids of the live processes in a process group (a worker and its children)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == pgid:
                    pids.add(int(entry))
    return pids


def _held_messages(queue: str) -> set[int]:
    """Return the step ids of this queue's messages delivered to a worker and not yet acked."""
    import redis

    held = set()
    broker = redis.Redis.from_url(settings.REDIS_URL)
    for raw in broker.hvals("unacked"):
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
            message, _exchange, routing_key = json.loads(raw)
            if routing_key == queue:
                args = json.loads(base64.b64decode(message["body"]))[0]
                held.add(int(args[0]))
    return held


def kill_and_see(processes: StewardProcesses, worker: subprocess.Popen) -> set[int]:
    """Kill a worker with -9; return the steps it left to others.

    Those are the steps it was running when it died, and the ready steps whose message it
    held (delivered, never acked). Read after the kill, so a step that finished just before it
    is not counted. A held message may be a surviving worker's: its step then starts at once.
    """
    from orchestrator.models import StepRun, StepStatus

    host = socket.gethostname()
    names = [f"{host}:{pid}" for pid in _group_pids(worker.pid)]
    processes.kill(worker)
    running = StepRun.objects.filter(status=StepStatus.RUNNING, worker__in=names)
    held = StepRun.objects.filter(status=StepStatus.READY, pk__in=_held_messages(processes.queue))
    return set(running.values_list("pk", flat=True)) | set(held.values_list("pk", flat=True))


def recovery_seconds(killed: dict[int, dt.datetime]) -> dict[int, float | None]:
    """Return, per step, the seconds from its kill to its next start (None: it never started)."""
    from orchestrator.models import EventKind, RunEvent

    found = {}
    for step_id, at in killed.items():
        started = (
            RunEvent.objects.filter(
                step_run_id=step_id, kind=EventKind.STEP_STARTED, created_at__gt=at
            )
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        found[step_id] = None if started is None else (started - at).total_seconds()
    return found


def percentiles(seconds: list[float]) -> dict[str, float]:
    """Return the p50, p99 and largest of a list of durations (nearest rank)."""
    ordered = sorted(seconds)
    rank = max(0, min(len(ordered) - 1, round(0.99 * len(ordered) + 0.5) - 1))
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[rank],
        "max": ordered[-1],
        "n": len(ordered),
    }


def _without_banners(text: str) -> str:
    """Drop Celery's start-up banner and root warnings from a worker log."""
    noise = ("SecurityWarning", "superuser", "uid=0", "--uid", "_warn_or_raise", "absolutely not")
    return "\n".join(
        line
        for line in text.splitlines()
        if line.strip()
        and not any(n in line for n in noise)
        and not line.lstrip().startswith(("-", "*", ".>"))
    )


def wait_until(predicate, timeout: float, interval: float = 0.2, message="") -> None:
    """Poll a condition until it holds; fail with a message (text or callable) when time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError((message() if callable(message) else message) or "condition not met")


# --- a real ASGI server (websockets) -------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class AsgiServer:
    """Uvicorn serving Steward (HTTP and websockets) on the test database, killable with -9.

    The live server of pytest-django speaks WSGI only; live pages need the websocket. Restarted
    on the same port, the pages' sockets find it again.
    """

    def __init__(self, tmp_path: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp_path = tmp_path
        self.process: subprocess.Popen | None = None
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "REDIS_URL": settings.REDIS_URL or "",
            "PYTHONPATH": str(ROOT),
            "DEBUG": "1",  # static files through the ASGI handler
            **env,
        }
        for name in ("STEWARD_FIND_SERVICES", "STEWARD_TEST_DB_NAME", "DJANGO_ALLOW_ASYNC_UNSAFE"):
            self.env.pop(name, None)
        if not self.env["REDIS_URL"]:
            self.env.pop("REDIS_URL")

    def start(self) -> None:
        """Start uvicorn and wait until it answers."""
        log = open(self.tmp_path / "uvicorn.log", "ab")  # noqa: SIM115  (closed with the process)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "orchestrator.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_until(
            answers,
            timeout=60,
            interval=0.1,
            message=lambda: "uvicorn did not start:\n" + self.logs(),
        )

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): its websockets drop without a close frame."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def logs(self) -> str:
        """Return the end of the server's log."""
        path = self.tmp_path / "uvicorn.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""
