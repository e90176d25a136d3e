"""Benchmark of the run engine against its peers: per-step overhead and throughput, 10-step runs.

    python bench/engine.py [--repetitions 5] [--latency-runs 20] [--throughput-runs 100]
    python bench/engine.py --kpi-ab [--repetitions 5] [--throughput-runs 100]

Uses BENCH_DATABASE_URL (default postgres://root@127.0.0.1:5432/steward_bench), creating and
migrating the database when missing, and BENCH_REDIS_URL (default redis://127.0.0.1:6379/15, a
database number no test uses; only it is flushed, at the start and the end). An inherited
DATABASE_URL / REDIS_URL is ignored, so a benchmark never empties a real database. It empties
the run and audit tables of the benchmark database first, and drops and recreates DBOS's own
database (the benchmark database's name + "_dbos"). Three systems, each with two worker
processes, on the same PostgreSQL and Redis:

- Steward: a workflow of ten sequential `noop` steps, started with orchestrator.services.start_run
  from this process and executed by a real `celery -A ... worker -c 2` (prefork, the Procfile's
  worker on PostgreSQL) of orchestrator's own Celery app, through the real path: one message per
  run, then engine.run_step runs each next step in-process, one transaction per step with its
  RunEvents and their audit entries. bench/steward_worker.py adds two hooks: a completion notice
  on Redis (so waiting needs no polling) and an audit toggle (runs with the business key
  "bench-audit-off" skip the audit receiver), so steps with and without the audit are measured by
  the same workers, interleaved. No beat: the sweeper and the audit sequencer do not run (the
  sequencer's cost and lag are bench/audit.py's subject).
- Celery: a chain of ten no-op tasks (bench/celery_peer.py) on the same Redis as broker and
  result backend, worker `-c 2` prefork with Steward's options (acks_late, prefetch 1).
- DBOS Transact: a workflow of ten @DBOS.step no-ops (bench/dbos_peer.py) on its own PostgreSQL
  database, in two processes; a workflow runs in the process that calls it (DBOS is a library),
  so DBOS has no broker hop and no client/worker split.

Per repetition: sequential latency (--latency-runs runs, one after another: start, wait until it
has succeeded, repeat; per-step overhead = median run latency / 10) and throughput (--throughput-
runs runs at once; steps/s = steps / time from the first start to the last completion; two
executions in flight for each system: 2 prefork processes with prefetch 1, or 2 DBOS processes
each running one workflow at a time; DBOS with 4 threads per process is reported as an extra).
The figures are medians over the repetitions. The last line printed is one JSON object with
steward_step_ms, dbos_step_ms, celery_step_ms, steward_steps_per_s, dbos_steps_per_s,
celery_steps_per_s, the audit's cost as ratios measured in the same run, and the machine.

--kpi-ab measures only Steward, the cost of keeping the KPI rollups (orchestrator/kpis.py, issue
#15: "<= 5 % of engine throughput, with and without, same run"): per repetition, one throughput
batch with the rollups and one without (audit on in both), taking turns going first (A/B, B/A,
...), on the same workers: bench/steward_worker.py's KPI toggle skips the rollups for runs with
the business key "bench-kpi-off", as STEWARD_KPI_ROLLUPS=0 does for every run. The cost is
1 - the median over repetitions of each repetition's with/without throughput ratio; the last line
is one JSON object with both throughputs, the cost and the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import secrets
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# The project first: bench/audit.py must not shadow the `audit` app. Then bench/, for the helpers.
sys.path[:0] = [str(ROOT), str(BENCH_DIR)]
DEFAULT_URL = "postgres://root@127.0.0.1:5432/steward_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"
STEWARD_QUEUE = "steward-bench"
STEPS = 10
WORKFLOW_SLUG = "bench-ten-noops"
DEFINITION = {
    "description": "Ten sequential no-op steps (bench/engine.py).",
    "steps": [
        {"id": f"s{i}", "type": "noop", **({"depends_on": [f"s{i - 1}"]} if i else {})}
        for i in range(STEPS)
    ],
}
AUDIT_TABLES = (
    "audit_auditbody",
    "audit_auditleaf",
    "audit_auditcheckpoint",
    "audit_audittreestate",
    "audit_auditentry",
)


# --- environment ---------------------------------------------------------------------------------


def _prepare_environment() -> dict[str, str]:
    """Point Django at the benchmark database and Redis with throwaway secrets; set it up."""
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit.keys import encode_private_key

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    redis_url = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS)
    for name in ("STEWARD_CLOCK_OFFSET_FILE", "STEWARD_TEST_DB_NAME", "CELERY_BROKER_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "BENCH_REDIS_URL": redis_url,
            "STEWARD_QUEUE": STEWARD_QUEUE,
            "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
            "STEWARD_FIND_SERVICES": "0",
            "DEBUG": "0",  # as in production: no query log, no DEBUG-only defaults
            "SECRET_KEY": secrets.token_urlsafe(40),
            "AUDIT_SIGNING_KEY": encode_private_key(Ed25519PrivateKey.generate()),
            "STEWARD_SECRETS_KEY": Fernet.generate_key().decode(),
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(BENCH_DIR)]),
        }
    )
    for name in ("AUDIT_SIGNING_KEY_FILE", "SECRET_KEY_FILE", "STEWARD_SECRETS_KEY_FILE"):
        os.environ.pop(name, None)
    _create_database(database_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return {"database_url": database_url, "redis_url": redis_url}


def _admin_url(url: str) -> tuple[str, str]:
    """Return (the URL of the server's `postgres` database, the database name) for a URL."""
    parsed = urlparse(url)
    return parsed._replace(path="/postgres").geturl(), parsed.path.lstrip("/")


def _create_database(url: str) -> None:
    """Create the benchmark database when it does not exist."""
    import psycopg

    admin_url, name = _admin_url(url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _recreate_database(url: str) -> None:
    """Drop (if present) and create an empty database for DBOS."""
    import psycopg

    admin_url, name = _admin_url(url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _reset_steward() -> None:
    """Empty the run and audit tables (audit triggers skipped as a superuser's replica session)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE orchestrator_workflowrun RESTART IDENTITY CASCADE")
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(f"TRUNCATE {', '.join(AUDIT_TABLES)} RESTART IDENTITY")
        cursor.execute("SET session_replication_role = DEFAULT")


def _workflow():
    """Return the benchmark workflow, publishing the definition when it is missing or changed."""
    from audit.actors import SYSTEM
    from orchestrator import services
    from orchestrator.models import Workflow

    workflow = Workflow.objects.filter(slug=WORKFLOW_SLUG).first()
    if workflow is None:
        return services.create_workflow(
            slug=WORKFLOW_SLUG, name="Benchmark: ten no-ops", definition=DEFINITION, actor=SYSTEM
        )
    latest = workflow.latest_version()
    if latest is None or latest.definition != DEFINITION:
        services.publish_version(workflow, DEFINITION, actor=SYSTEM, note="bench/engine.py")
    return workflow


def machine() -> dict:
    """Describe the machine and the services the figures come from."""
    import redis
    from django.db import connection

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    versions = {}
    for package in ("celery", "dbos", "django", "psycopg"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[package] = version(package)
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "postgres": postgres,
        "redis": client.info("server")["redis_version"],
        "packages": versions,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def busy_neighbours() -> list[str]:
    """Name other processes that are known to load the machine (a test suite, other benches)."""
    found = []
    own = {os.getpid()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            text = " ".join(part.decode(errors="replace") for part in argv if part)
            if "pytest" in text and "/bin/sh" not in text:
                found.append(f"pytest (pid {entry.name})")
    return found


# --- processes -----------------------------------------------------------------------------------


class Processes:
    """The processes this benchmark starts, each in its own session; stopped on every exit."""

    def __init__(self, log_dir: Path):
        """Keep the logs in `log_dir`."""
        self.log_dir = log_dir
        self.started: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], pipes=False):
        """Start a process (its stdout/stderr to a log file, or stdin/stdout piped)."""
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115  (closed with the process)
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else log,
            stderr=log,
            start_new_session=True,
            text=pipes,
            bufsize=1 if pipes else -1,
        )
        self.started[name] = process
        return process

    def tail(self, name: str, chars: int = 3000) -> str:
        """Return the end of a process's log."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def check_alive(self) -> None:
        """Fail with the log of any process that stopped."""
        for name, process in self.started.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{self.tail(name)}")

    def stop_all(self) -> None:
        """Stop every started process and its children: SIGTERM, then SIGKILL after 5 s."""
        for process in self.started.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in self.started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group: prefork children too
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def _celery_argv(app: str, queue: str, name: str) -> list[str]:
    """Return the command line of a two-process prefork Celery worker."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-Q",
        queue,
        "-c",
        "2",
        "--pool",
        "prefork",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "WARNING",
        "-n",
        f"{name}@%h",
    ]


# --- Steward -------------------------------------------------------------------------------------


class Steward:
    """Starts runs of the benchmark workflow and waits for their completion notices."""

    def __init__(self, redis_url: str):
        """Find or publish the workflow and subscribe to the completion notices."""
        import redis
        from steward_worker import DONE_CHANNEL

        self.workflow = _workflow()
        self.pubsub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(DONE_CHANNEL)
        self.audited: list[int] = []
        self.unaudited: list[int] = []
        self.kpi_on: list[int] = []
        self.kpi_off: list[int] = []

    def start(self, audit: bool, kpis: bool = True) -> int:
        """Start one run through the service layer (audit or KPI rollups off: not both)."""
        from steward_worker import AUDIT_OFF_KEY, KPI_OFF_KEY

        from audit.actors import SYSTEM
        from orchestrator import services

        key = KPI_OFF_KEY if not kpis else ("" if audit else AUDIT_OFF_KEY)
        run = services.start_run(self.workflow, business_key=key, started_by=SYSTEM)
        (self.audited if audit else self.unaudited).append(run.pk)
        (self.kpi_on if kpis else self.kpi_off).append(run.pk)
        return run.pk

    def wait(self, run_ids: set[int], timeout: float) -> None:
        """Wait until every run has announced that it succeeded."""
        pending = set(run_ids)
        deadline = time.monotonic() + timeout
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(pending)} Steward runs did not finish in {timeout} s")
            message = self.pubsub.get_message(timeout=min(left, 1.0))
            if message is None:
                continue
            run_id, status = message["data"].decode().split()
            if int(run_id) in pending:
                if status != "succeeded":
                    raise RuntimeError(f"Steward run {run_id} {status}")
                pending.discard(int(run_id))

    def latency(self, runs: int, audit: bool) -> dict:
        """Run one run after another; return the median latency and the in-worker step time."""
        seconds, ids = [], []
        for _ in range(runs):
            began = time.perf_counter()
            run_id = self.start(audit)
            self.wait({run_id}, timeout=60)
            seconds.append(time.perf_counter() - began)
            ids.append(run_id)
        return {"run_s": statistics.median(seconds), **_step_times(ids)}

    def throughput(self, runs: int, audit: bool, kpis: bool = True) -> dict:
        """Start `runs` runs at once, wait for all; return steps/s from first start to last end."""
        began = time.perf_counter()
        ids = {self.start(audit, kpis) for _ in range(runs)}
        submitted = time.perf_counter() - began
        self.wait(ids, timeout=60 + runs)
        elapsed = time.perf_counter() - began
        return {"steps_per_s": runs * STEPS / elapsed, "elapsed_s": elapsed, "submit_s": submitted}

    def kpi_sanity(self) -> dict:
        """Count the KPI rows the runs with and without the rollups left (ends, started counts)."""
        from orchestrator.models import KpiDay, KpiRunEnd

        def ends(ids: list[int]) -> float:
            """Return the mean number of KpiRunEnd rows per run among `ids`."""
            return KpiRunEnd.objects.filter(run_id__in=ids).count() / len(ids) if ids else 0.0

        started = sum(
            KpiDay.objects.filter(workflow=self.workflow).values_list("started", flat=True)
        )
        return {
            "kpi_run_ends_per_run_on": ends(self.kpi_on),
            "kpi_run_ends_per_run_off": ends(self.kpi_off),
            "kpi_started_counted": started,
            "kpi_runs_on": len(self.kpi_on),
            "kpi_runs_off": len(self.kpi_off),
        }

    def sanity(self) -> dict:
        """Count audit entries per run with and without the audit, and steps run inline."""
        from audit.models import AuditEntry
        from orchestrator.models import EventKind, RunEvent

        def per_run(ids: list[int]) -> float:
            """Return the mean number of audit entries per run among `ids`."""
            if not ids:
                return 0.0
            count = AuditEntry.objects.filter(run_id__in=[str(i) for i in ids]).count()
            return count / len(ids)

        runs = self.audited + self.unaudited
        inline = RunEvent.objects.filter(
            run_id__in=runs, kind=EventKind.STEP_STARTED, data__inline=True
        ).count()
        return {
            "audit_entries_per_run": per_run(self.audited),
            "audit_entries_per_unaudited_run": per_run(self.unaudited),
            "steward_inline_steps_per_run": inline / len(runs),
            "steward_runs": len(runs),
        }


def _step_times(run_ids: list[int]) -> dict:
    """Median per run, from the engine's own timestamps: dispatch delay and in-worker step time."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT EXTRACT(EPOCH FROM MIN(s.started_at) - r.created_at),
                   EXTRACT(EPOCH FROM MAX(s.finished_at) - MIN(s.started_at))
            FROM orchestrator_workflowrun r JOIN orchestrator_steprun s ON s.run_id = r.id
            WHERE r.id = ANY(%s) GROUP BY r.id
            """,
            [list(run_ids)],
        )
        rows = cursor.fetchall()
    return {
        "dispatch_s": statistics.median(float(row[0]) for row in rows),
        "in_worker_step_s": statistics.median(float(row[1]) / STEPS for row in rows),
    }


# --- Celery --------------------------------------------------------------------------------------


class CeleryPeer:
    """Sends chains of ten no-op tasks to the peer worker and waits for their results."""

    def latency(self, runs: int) -> dict:
        """Run one chain after another; return the median latency."""
        from celery_peer import ten_steps

        seconds = []
        for _ in range(runs):
            began = time.perf_counter()
            ten_steps(STEPS).apply_async().get(timeout=60)
            seconds.append(time.perf_counter() - began)
        return {"run_s": statistics.median(seconds)}

    def throughput(self, runs: int) -> dict:
        """Send `runs` chains at once and wait for all; return steps/s."""
        from celery_peer import ten_steps

        began = time.perf_counter()
        results = [ten_steps(STEPS).apply_async() for _ in range(runs)]
        for result in results:
            result.get(timeout=60 + runs)
        elapsed = time.perf_counter() - began
        return {"steps_per_s": runs * STEPS / elapsed, "elapsed_s": elapsed}


# --- DBOS ----------------------------------------------------------------------------------------


class DbosPeers:
    """Talks to the DBOS peer processes over their stdin/stdout."""

    def __init__(self, processes: list[subprocess.Popen]):
        """Keep the peer processes, already launched and ready."""
        self.processes = processes

    @staticmethod
    def read(process: subprocess.Popen, timeout: float) -> dict:
        """Read one JSON reply from a peer, failing after `timeout` seconds."""
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        line = process.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"DBOS peer {process.pid} did not answer (exit {process.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"DBOS peer: {reply['error']}")
        return reply

    @staticmethod
    def send(process: subprocess.Popen, command: dict) -> None:
        """Send one command to a peer."""
        process.stdin.write(json.dumps(command) + "\n")
        process.stdin.flush()

    def latency(self, runs: int) -> dict:
        """Run workflows one after another in the first peer; return the median latency."""
        self.send(self.processes[0], {"cmd": "latency", "runs": runs})
        seconds = self.read(self.processes[0], timeout=60 + runs)["seconds"]
        return {"run_s": statistics.median(seconds)}

    def throughput(self, runs: int, in_flight: int = 1) -> dict:
        """Run `runs` workflows split over the peers from a common start; return steps/s."""
        start_at = time.time() + 0.3
        share = runs // len(self.processes)
        for process in self.processes:
            command = {"cmd": "throughput", "runs": share, "start_at": start_at}
            self.send(process, {**command, "in_flight": in_flight})
        replies = [self.read(process, timeout=60 + runs) for process in self.processes]
        elapsed = max(reply["end"] for reply in replies) - start_at
        return {"steps_per_s": share * len(self.processes) * STEPS / elapsed, "elapsed_s": elapsed}

    def quit(self) -> None:
        """Ask every peer to stop (the benchmark kills any that does not)."""
        for process in self.processes:
            with contextlib.suppress(OSError, ValueError):
                self.send(process, {"cmd": "quit"})


# --- the benchmark -------------------------------------------------------------------------------


def _start_everything(processes: Processes, urls: dict) -> tuple[Steward, CeleryPeer, DbosPeers]:
    """Start the Steward workers, the Celery peer worker and two DBOS peers; warm each up."""
    import redis

    env = dict(os.environ)
    steward_worker = processes.start(
        "steward-worker", _celery_argv("steward_worker", STEWARD_QUEUE, "steward-bench"), env
    )
    peer_env = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
    from celery_peer import QUEUE

    processes.start("celery-peer", _celery_argv("celery_peer", QUEUE, "celery-peer"), peer_env)
    parsed = urlparse(urls["database_url"])
    dbos_url = parsed._replace(scheme="postgresql", path=parsed.path + "_dbos").geturl()
    _recreate_database(dbos_url)
    dbos = []
    for index in range(2):  # one after another: the first creates DBOS's schema
        peer = processes.start(
            f"dbos-peer-{index}",
            [
                sys.executable,
                str(BENCH_DIR / "dbos_peer.py"),
                "--url",
                dbos_url,
                "--id",
                str(index),
            ],
            peer_env,
            pipes=True,
        )
        DbosPeers.read(peer, timeout=120)
        dbos.append(peer)
    redis.Redis.from_url(urls["redis_url"]).ping()
    steward, celery, peers = Steward(urls["redis_url"]), CeleryPeer(), DbosPeers(dbos)
    log(f"warming up (Steward worker pid {steward_worker.pid})")
    steward.wait({steward.start(audit=True)}, timeout=120)  # also: the workers are up
    steward.latency(5, audit=True)
    steward.latency(5, audit=False)
    steward.throughput(20, audit=True)
    celery.latency(1)
    celery.latency(5)
    celery.throughput(20)
    peers.latency(5)
    peers.throughput(20)
    processes.check_alive()
    return steward, celery, peers


def repetition(index: int, args, steward: Steward, celery: CeleryPeer, dbos: DbosPeers) -> dict:
    """Measure every system once, alternating the order of audit on and off."""
    result: dict[str, dict] = {}
    orders = [True, False] if index % 2 == 0 else [False, True]
    for audit in orders:
        name = "steward" if audit else "steward_noaudit"
        result[name] = steward.latency(args.latency_runs, audit)
    result["celery"] = celery.latency(args.latency_runs)
    result["dbos"] = dbos.latency(args.latency_runs)
    for audit in orders:
        name = "steward" if audit else "steward_noaudit"
        result[name].update(steward.throughput(args.throughput_runs, audit))
    result["celery"].update(celery.throughput(args.throughput_runs))
    result["dbos"].update(dbos.throughput(args.throughput_runs))
    result["dbos_threads"] = dbos.throughput(args.throughput_runs, in_flight=4)
    for figures in result.values():
        if "run_s" in figures:
            figures["step_ms"] = figures["run_s"] / STEPS * 1000
    return result


def log(message: str) -> None:
    """Print progress to stderr."""
    print(message, file=sys.stderr, flush=True)


def _median(reps: list[dict], system: str, key: str) -> float:
    """Return the median of one figure over the repetitions."""
    return statistics.median(rep[system][key] for rep in reps)


def summarize(reps: list[dict], info: dict) -> dict:
    """Return the medians, the ratios and the context as the final JSON object."""
    med = {
        system: {key: _median(reps, system, key) for key in reps[0][system]} for system in reps[0]
    }
    step_ratio = statistics.median(
        rep["steward"]["step_ms"] / rep["steward_noaudit"]["step_ms"] for rep in reps
    )
    worker_ratio = statistics.median(
        rep["steward"]["in_worker_step_s"] / rep["steward_noaudit"]["in_worker_step_s"]
        for rep in reps
    )
    throughput_ratio = statistics.median(
        rep["steward"]["steps_per_s"] / rep["steward_noaudit"]["steps_per_s"] for rep in reps
    )
    summary = {
        "steward_step_ms": round(med["steward"]["step_ms"], 3),
        "dbos_step_ms": round(med["dbos"]["step_ms"], 3),
        "celery_step_ms": round(med["celery"]["step_ms"], 3),
        "steward_steps_per_s": round(med["steward"]["steps_per_s"], 1),
        "dbos_steps_per_s": round(med["dbos"]["steps_per_s"], 1),
        "celery_steps_per_s": round(med["celery"]["steps_per_s"], 1),
        "steward_noaudit_step_ms": round(med["steward_noaudit"]["step_ms"], 3),
        "steward_noaudit_steps_per_s": round(med["steward_noaudit"]["steps_per_s"], 1),
        "steward_in_worker_step_ms": round(med["steward"]["in_worker_step_s"] * 1000, 3),
        "steward_noaudit_in_worker_step_ms": round(
            med["steward_noaudit"]["in_worker_step_s"] * 1000, 3
        ),
        "steward_dispatch_ms": round(med["steward"]["dispatch_s"] * 1000, 3),
        "steward_submit_s": round(med["steward"]["submit_s"], 2),
        "steward_throughput_elapsed_s": round(med["steward"]["elapsed_s"], 2),
        "dbos_threads_steps_per_s": round(med["dbos_threads"]["steps_per_s"], 1),
        "audit_step_cost_ratio": round(step_ratio, 3),
        "audit_in_worker_step_cost_ratio": round(worker_ratio, 3),
        "audit_throughput_ratio": round(throughput_ratio, 3),
        "steward_vs_dbos_step_ratio": round(med["steward"]["step_ms"] / med["dbos"]["step_ms"], 3),
        "steward_vs_dbos_throughput_ratio": round(
            med["steward"]["steps_per_s"] / med["dbos"]["steps_per_s"], 3
        ),
        "steward_vs_celery_step_ratio": round(
            med["steward"]["step_ms"] / med["celery"]["step_ms"], 3
        ),
        "steward_vs_celery_throughput_ratio": round(
            med["steward"]["steps_per_s"] / med["celery"]["steps_per_s"], 3
        ),
        **info,
    }
    return summary


def report(summary: dict) -> None:
    """Print the figures and ratios for people (the JSON line follows)."""
    s = summary
    rows = [
        ("Steward (audit on)", s["steward_step_ms"], s["steward_steps_per_s"]),
        ("Steward (audit off)", s["steward_noaudit_step_ms"], s["steward_noaudit_steps_per_s"]),
        ("DBOS", s["dbos_step_ms"], s["dbos_steps_per_s"]),
        ("Celery chain", s["celery_step_ms"], s["celery_steps_per_s"]),
    ]
    print(f"{'system':<22}{'per-step ms':>12}{'steps/s':>10}")
    for name, step_ms, per_s in rows:
        print(f"{name:<22}{step_ms:>12.3f}{per_s:>10.1f}")
    print(f"DBOS, 4 threads per process: {s['dbos_threads_steps_per_s']:.1f} steps/s")
    print(
        f"Steward inside the worker: {s['steward_in_worker_step_ms']:.3f} ms/step with the audit, "
        f"{s['steward_noaudit_in_worker_step_ms']:.3f} without; start to first step "
        f"{s['steward_dispatch_ms']:.2f} ms"
    )
    print(
        f"Steward throughput: starting the runs took {s['steward_submit_s']:.2f} s of "
        f"{s['steward_throughput_elapsed_s']:.2f} s; {s['steward_inline_steps_per_run']:.1f} "
        f"of {STEPS} steps per run ran inline (no broker hop); "
        f"{s['audit_entries_per_run']:.1f} audit entries per audited run, "
        f"{s['audit_entries_per_unaudited_run']:.1f} per unaudited one"
    )
    print(
        f"audit cost: x{s['audit_step_cost_ratio']:.3f} per-step latency, "
        f"x{s['audit_in_worker_step_cost_ratio']:.3f} in-worker step time, "
        f"x{s['audit_throughput_ratio']:.3f} throughput (with / without, same run)"
    )
    print(
        f"Steward/DBOS: x{s['steward_vs_dbos_step_ratio']:.3f} per-step overhead (target <= 1), "
        f"x{s['steward_vs_dbos_throughput_ratio']:.3f} throughput (target >= 1)"
    )
    print(
        f"Steward/Celery: x{s['steward_vs_celery_step_ratio']:.3f} per-step overhead, "
        f"x{s['steward_vs_celery_throughput_ratio']:.3f} throughput"
    )
    if s["neighbours"]:
        print(f"note: other load on the machine during the run: {', '.join(s['neighbours'])}")


def _start_steward(processes: Processes, urls: dict) -> Steward:
    """Start the Steward workers alone and warm them up, with and without the rollups."""
    worker = processes.start(
        "steward-worker",
        _celery_argv("steward_worker", STEWARD_QUEUE, "steward-bench"),
        dict(os.environ),
    )
    steward = Steward(urls["redis_url"])
    log(f"warming up (Steward worker pid {worker.pid})")
    steward.wait({steward.start(audit=True)}, timeout=120)  # also: the workers are up
    for kpis in (True, False, True, False):
        steward.throughput(20, audit=True, kpis=kpis)
    processes.check_alive()
    return steward


def kpi_ab(args) -> None:
    """Measure the KPI rollups' cost: throughput with and without them, alternated in one run."""
    began = time.monotonic()
    urls = _prepare_environment()
    import redis

    broker = redis.Redis.from_url(urls["redis_url"])
    info = machine()
    neighbours = busy_neighbours()
    load_before = os.getloadavg()
    log(f"machine: {json.dumps(info)}")
    log(f"load average {load_before}; other load: {', '.join(neighbours) or 'none found'}")
    _reset_steward()
    from django.db import connection

    with connection.cursor() as cursor:  # the rollups' rows of earlier invocations
        cursor.execute("TRUNCATE orchestrator_kpiday, orchestrator_kpistepday")
    broker.flushdb()
    import steward_worker  # noqa: F401  (the same hooks in this process: the start's rollup)

    reps = []
    with tempfile.TemporaryDirectory(prefix="steward-bench-") as log_dir:
        processes = Processes(Path(log_dir))
        try:
            steward = _start_steward(processes, urls)
            for index in range(args.repetitions):
                orders = [True, False] if index % 2 == 0 else [False, True]
                rep = {}
                for kpis in orders:
                    rep["on" if kpis else "off"] = steward.throughput(
                        args.throughput_runs, audit=True, kpis=kpis
                    )
                processes.check_alive()
                rep["ratio"] = rep["on"]["steps_per_s"] / rep["off"]["steps_per_s"]
                reps.append(rep)
                log(
                    f"repetition {index + 1}/{args.repetitions} "
                    f"({'on first' if orders[0] else 'off first'}): "
                    f"with rollups {rep['on']['steps_per_s']:.0f} steps/s, "
                    f"without {rep['off']['steps_per_s']:.0f} steps/s, x{rep['ratio']:.3f}"
                )
            checks = steward.kpi_sanity()
        except Exception:
            for name in processes.started:
                log(f"--- {name} log\n{processes.tail(name, 1500)}")
            raise
        finally:
            processes.stop_all()
            with contextlib.suppress(Exception):
                broker.flushdb()
    ratio = statistics.median(rep["ratio"] for rep in reps)
    ratios = sorted(rep["ratio"] for rep in reps)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratio, ratio, ratio]
    summary = {
        "kpi_on_steps_per_s": round(statistics.median(r["on"]["steps_per_s"] for r in reps), 1),
        "kpi_off_steps_per_s": round(statistics.median(r["off"]["steps_per_s"] for r in reps), 1),
        "kpi_throughput_ratio": round(ratio, 4),
        "kpi_cost_percent": round((1 - ratio) * 100, 2),
        "kpi_ratios": [round(r["ratio"], 4) for r in reps],
        "kpi_ratio_quartiles": [round(quartiles[0], 4), round(quartiles[2], 4)],
        "kpi_pairs_slower_with_rollups": sum(r < 1 for r in ratios),
        "kpi_cost_target_percent": 5.0,
        **checks,
        "repetitions": args.repetitions,
        "throughput_runs": args.throughput_runs,
        "in_flight": 2,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "neighbours": sorted(set(neighbours) | set(busy_neighbours())),
        "seconds": round(time.monotonic() - began, 1),
        "machine": info,
    }
    s = summary
    print(
        f"Steward throughput with the KPI rollups {s['kpi_on_steps_per_s']:.1f} steps/s, without "
        f"{s['kpi_off_steps_per_s']:.1f} steps/s (medians of {args.repetitions} repetitions)"
    )
    print(
        f"KPI rollups' cost: {s['kpi_cost_percent']:.2f} % of throughput (target <= 5 %; "
        f"x{s['kpi_throughput_ratio']:.4f} with / without, quartiles of the per-repetition "
        f"ratios {s['kpi_ratio_quartiles']}, {s['kpi_pairs_slower_with_rollups']} of "
        f"{len(reps)} repetitions slower with the rollups)"
    )
    print(
        f"check: {s['kpi_run_ends_per_run_on']:.2f} KpiRunEnd rows per run with the rollups, "
        f"{s['kpi_run_ends_per_run_off']:.2f} without; load average {s['load_average_before']} "
        f"-> {s['load_average_after']}"
    )
    if s["neighbours"]:
        print(f"note: other load on the machine during the run: {', '.join(s['neighbours'])}")
    print(json.dumps(summary))


def main() -> None:
    """Start the systems, measure them over the repetitions, print figures and the JSON last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--throughput-runs", type=int, default=100)
    parser.add_argument(
        "--kpi-ab",
        action="store_true",
        help="measure only Steward's throughput with and without the KPI rollups, alternated",
    )
    args = parser.parse_args()
    if args.kpi_ab:
        kpi_ab(args)
        return

    def _terminate(signum, frame):
        """Turn SIGTERM / SIGHUP into a normal exit, so the cleanup below runs."""
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    began = time.monotonic()
    urls = _prepare_environment()
    import redis

    broker = redis.Redis.from_url(urls["redis_url"])
    info = machine()
    neighbours = busy_neighbours()
    load_before = os.getloadavg()
    log(f"machine: {json.dumps(info)}")
    if neighbours:
        log(f"other load on the machine: {', '.join(neighbours)}")
    _reset_steward()
    broker.flushdb()  # only the benchmark's Redis database
    import steward_worker  # noqa: F401  (the same hooks in this process: the audit toggle)

    with tempfile.TemporaryDirectory(prefix="steward-bench-") as log_dir:
        processes = Processes(Path(log_dir))
        peers = None
        try:
            steward, celery, peers = _start_everything(processes, urls)
            reps = []
            for index in range(args.repetitions):
                rep = repetition(index, args, steward, celery, peers)
                processes.check_alive()
                reps.append(rep)
                log(
                    f"repetition {index + 1}/{args.repetitions}: "
                    + ", ".join(
                        (f"{name} {fig['step_ms']:.2f} ms/step," if "step_ms" in fig else name)
                        + f" {fig['steps_per_s']:.0f} steps/s"
                        for name, fig in rep.items()
                    )
                )
            checks = steward.sanity()
        except Exception:
            for name in processes.started:
                log(f"--- {name} log\n{processes.tail(name, 1500)}")
            raise
        finally:
            if peers is not None:
                peers.quit()
            processes.stop_all()
            with contextlib.suppress(Exception):
                broker.flushdb()
    neighbours = sorted(set(neighbours) | set(busy_neighbours()))
    summary = summarize(
        reps,
        {
            **checks,
            "repetitions": args.repetitions,
            "latency_runs": args.latency_runs,
            "throughput_runs": args.throughput_runs,
            "in_flight": 2,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "neighbours": neighbours,
            "seconds": round(time.monotonic() - began, 1),
            "machine": info,
        },
    )
    report(summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
