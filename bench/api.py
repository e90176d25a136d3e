"""Benchmark of the REST API over HTTP: start, signal, list and read runs, on 1,000,000 runs.

    python bench/api.py [--runs 1000000] [--seconds 10] [--clients 1,10,50]
    python bench/api.py --runs 20000 --seconds 3      # a quick smoke run

The server is the one `make run` starts (the Procfile's `web`): uvicorn on
orchestrator.asgi:application, one process, started here on a free port with DEBUG=0. No Celery
worker runs: a start commits the run, its steps, events and audit entries and publishes one
message to Redis, and a signal commits the signal, so neither waits on a worker; the messages
pile up in the benchmark's Redis database, which is flushed at the start and the end.

The database is dropped and recreated, migrated, and seeded with --runs runs by SQL
(INSERT ... SELECT over generate_series: four workflows, realistic status, business-key and
created_at distributions, one step per run), then ANALYZEd. Clients are httpx async clients, each
with its own bearer token (issued through governance.services.issue_token for an integration
principal with view/change on runs and on the workflows: no superuser shortcut); every phase
issues fresh ones, so the per-token throttle runs at its production rate and never answers 429.
--phases picks a subset of start,signal,list,read,compare. Measured:

- start-run (POST /api/v1/runs with an Idempotency-Key and a business key) and send-signal
  (POST /api/v1/runs/<id>/signals with an Idempotency-Key) at each --clients concurrency, each for
  --seconds in a closed loop: p50, p99 and requests/s;
- list pages (GET /api/v1/runs: the first page, by status, by business key, by workflow, a cursor
  deep in the list) and reads (GET /api/v1/runs/<id>), one client, --requests each: p50, p95;
- an HTTP start against a direct orchestrator.services.start_run in this process, alternated
  one by one, --compare starts each, sequential: the ratio of the medians. In the same loop, the
  same request through Django's test client in this process (the Django/DRF stack without the
  server or a new connection; its query count against start_run's) and the cost of opening a
  database connection, which the server does for every request under ASGI.

Targets (issue #12, on 2 cores): start and signal p99 <= 100 ms at 10 clients, list pages
p95 <= 100 ms on 1M runs, an HTTP start <= 2x a direct start_run. --explain prints the plan of
each list request's slowest query (EXPLAIN ANALYZE, in this process).

Uses BENCH_DATABASE_URL (default postgres://root@127.0.0.1:5432/steward_bench_api; dropped when a
run ends unless --keep; --reuse measures one seeded with --runs runs by an earlier --keep) and
BENCH_REDIS_URL (default redis://127.0.0.1:6379/10). An inherited DATABASE_URL / REDIS_URL is
ignored. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlencode

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT), str(BENCH_DIR)]

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/steward_bench_api")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")

DEFINITION = {
    "description": "One no-op step (bench/api.py).",
    "steps": [{"id": "only", "type": "noop"}],
}
# slug, share of the seeded runs
WORKFLOWS = [
    ("bench-orders", 0.5),
    ("bench-refunds", 0.25),
    ("bench-onboarding", 0.15),
    ("bench-kyc", 0.1),
]
START_WORKFLOW = "bench-orders"
CLIENT = "bench-erp"  # the integration principal the clients act as
TARGET_MS = 100.0
TARGET_RATIO = 2.0
PHASES = ("start", "signal", "list", "read", "compare")


# --- setup ---------------------------------------------------------------------------------------


def _seeded_runs() -> int:
    """Return how many runs the benchmark database holds (0 when it is not set up)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('orchestrator_workflowrun') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(
            "SELECT count(*) FROM orchestrator_workflowrun WHERE request_id LIKE 'seed-%%'"
        )
        return cursor.fetchone()[0]


def _principals():
    """Create (once) the administrator who issues tokens and the integration the clients act as."""
    from django.contrib.auth import get_user_model

    from audit.actors import SYSTEM
    from governance import services as governance
    from orchestrator import services
    from orchestrator.models import Workflow

    User = get_user_model()
    admin = User.objects.filter(username="bench-admin").first()
    if admin is None:
        admin = User.objects.create_superuser("bench-admin", "bench@example.com", None)
    client = User.objects.filter(username=CLIENT).first()
    if client is None:
        client = governance.create_integration_principal(username=CLIENT, owner=admin, actor=SYSTEM)
        role = governance.create_role(name="Bench integrations", owner=admin, actor=SYSTEM)
        governance.add_member(role, client, actor=SYSTEM)
        for perm in ("view_workflowrun", "change_workflowrun"):
            governance.grant(role, f"orchestrator.{perm}", actor=SYSTEM)
        for slug, _ in WORKFLOWS:
            workflow = Workflow.objects.filter(slug=slug).first() or services.create_workflow(
                slug=slug,
                name=slug,
                definition=DEFINITION,
                actor=SYSTEM,
                version_approval_required=False,
            )
            for perm in ("view_workflow", "change_workflow"):
                governance.grant(role, f"orchestrator.{perm}", workflow, actor=SYSTEM)
    return admin, client


def _tokens(admin, client, count: int) -> list[str]:
    """Issue `count` fresh bearer tokens for the integration (one per client of a phase)."""
    from governance import services as governance

    return [
        governance.issue_token(client, actor=admin, name=f"bench/api.py {uuid.uuid4().hex[:8]}")[1]
        for _ in range(count)
    ]


SEED_RUNS = """
WITH g AS (
    SELECT i, random() AS r_workflow, random() AS r_status, random() AS r_key, random() AS r_time
    FROM generate_series(1, %(n)s) AS i
), s AS (
    SELECT g.*,
        CASE WHEN r_workflow < %(w1)s THEN 1 WHEN r_workflow < %(w2)s THEN 2
             WHEN r_workflow < %(w3)s THEN 3 ELSE 4 END AS w,
        CASE WHEN i > %(n)s * 0.97 THEN  -- the newest 3 %%: mostly still open
                  CASE WHEN r_status < 0.70 THEN 'running' WHEN r_status < 0.75 THEN 'paused'
                       WHEN r_status < 0.95 THEN 'succeeded' ELSE 'failed' END
             ELSE CASE WHEN r_status < 0.88 THEN 'succeeded' WHEN r_status < 0.96 THEN 'failed'
                       ELSE 'cancelled' END
        END AS status,
        now() - (%(n)s - i) * (interval '180 days' / %(n)s) - r_time * interval '1 second' AS at
    FROM g
)
INSERT INTO orchestrator_workflowrun (
    workflow_id, version_id, status, input, output, error, started_by_id, started_by_name,
    trigger, business_key, idempotency_key, request_id, created_at, updated_at, finished_at)
SELECT (%(workflows)s::bigint[])[w], (%(versions)s::bigint[])[w], status,
    jsonb_build_object('order', i, 'amount', (r_key * 1000)::int),
    CASE WHEN status = 'succeeded' THEN '{"ok": true}'::jsonb END,
    CASE WHEN status = 'failed' THEN '{"message": "upstream timed out"}'::jsonb END,
    %(client)s, %(client_name)s,
    CASE WHEN r_key < 0.7 THEN 'api' WHEN r_key < 0.9 THEN 'schedule' ELSE 'admin' END,
    CASE WHEN status IN ('running', 'paused') THEN 'open-' || i  -- one open run per key
         WHEN r_key < 0.75 THEN 'order-' || (r_time * 300000)::int  -- a key recurs ~2.5 times
         ELSE '' END,
    NULL, 'seed-' || md5(i::text), at, at + interval '1 minute',
    CASE WHEN status NOT IN ('running', 'paused') THEN at + r_time * interval '10 minutes' END
FROM s ORDER BY i
"""

SEED_STEPS = """
INSERT INTO orchestrator_steprun (
    run_id, step_id, item_index, parent_id, step_type, status, attempt, item, input, output, error,
    ready_at, dispatched_at, lease_token, lease_expires_at, deadline_at, worker, wake_at,
    wait_signal, created_at, started_at, finished_at)
SELECT id, 'only', -1, NULL, 'noop',
    CASE status WHEN 'running' THEN 'ready' WHEN 'paused' THEN 'ready' ELSE status END, 1,
    NULL, '{}'::jsonb, output, error, created_at, NULL, '', NULL, NULL, '', NULL, '',
    created_at, created_at, finished_at
FROM orchestrator_workflowrun WHERE request_id LIKE 'seed-%%'
"""


def seed(runs: int, client) -> float:
    """Insert `runs` runs and their steps by SQL, then ANALYZE; return the seconds it took."""
    from django.db import connection, transaction

    from orchestrator.models import Workflow

    began = time.perf_counter()
    workflows = [Workflow.objects.get(slug=slug) for slug, _ in WORKFLOWS]
    shares = [share for _, share in WORKFLOWS]
    bounds = [sum(shares[: k + 1]) for k in range(3)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            SEED_RUNS,
            {
                "n": runs,
                "w1": bounds[0],
                "w2": bounds[1],
                "w3": bounds[2],
                "workflows": [w.pk for w in workflows],
                "versions": [w.live_version_id for w in workflows],
                "client": client.pk,
                "client_name": client.username,
            },
        )
        cursor.execute(SEED_STEPS)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE orchestrator_workflowrun")
        cursor.execute("VACUUM ANALYZE orchestrator_steprun")
    return time.perf_counter() - began


# --- the server ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(processes, port: int, workers: int):
    """Start the Procfile's web command (uvicorn, one process unless --server-workers)."""
    argv = [sys.executable, "-m", "uvicorn", "orchestrator.asgi:application"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    env = {**os.environ, "STEWARD_FIND_SERVICES": "0"}
    processes.start("web", argv, env)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        processes.check_alive()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/me", timeout=2).status_code == 401:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer:\n{processes.tail('web')}")


# --- measuring -----------------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of the values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def summary(latencies: list[float], elapsed: float | None = None, errors=None) -> dict:
    """p50, p95, p99 and max in ms (and requests/s over `elapsed`) of latencies in seconds."""
    if not latencies:
        return {"n": 0, "errors": dict(errors or {})}
    figures = {"n": len(latencies)}
    for q in (50, 95, 99):
        figures[f"p{q}_ms"] = round(_percentile(latencies, q) * 1000, 2)
    figures["max_ms"] = round(max(latencies) * 1000, 2)
    if elapsed:
        figures["per_s"] = round(len(latencies) / elapsed, 1)
    if errors:
        figures["errors"] = dict(errors)
    return figures


class ConnectionSampler:
    """Sample the benchmark database's server connections every 50 ms in a thread: the peak."""

    def __init__(self, url: str):
        """Watch the database at `url`."""
        self.url = url
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.05):
                count = conn.execute(
                    "SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = current_database()"
                ).fetchone()[0]
                self.peak = max(self.peak, count)


def process_cpu_seconds(group: int) -> float:
    """CPU time (user + system, every thread) used so far by the processes of a process group
    (the server and, with --server-workers, its worker processes), from /proc."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group:  # fields[2] is the process group
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def closed_loop(
    base: str, tokens: list[str], request, seconds: float, server_pid: int | None = None
) -> tuple[dict, list]:
    """Run one client per token, each sending `request(client, k)` until `seconds` have passed.

    With `server_pid`, the figures also hold the server process's CPU time per request: what one
    request costs the server's one process (and its GIL), however busy the rest of the machine is.
    """
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    bodies: list = []
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def one(index: int, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(
            base_url=base, headers=headers, limits=limits, timeout=60
        ) as http:
            k = 0
            while time.perf_counter() < stop_at:
                method, url, kwargs = request(index, k)
                began = time.perf_counter()
                response = await http.request(method, url, **kwargs)
                took = time.perf_counter() - began
                k += 1
                if response.status_code < 300:
                    latencies.append(took)
                    bodies.append(response.json())
                else:
                    key = f"{response.status_code} {response.text[:120]}"
                    errors[key] = errors.get(key, 0) + 1

    stop_at = time.perf_counter() + seconds
    began = time.perf_counter()
    cpu_before = process_cpu_seconds(server_pid) if server_pid else 0.0
    with ConnectionSampler(os.environ["DATABASE_URL"]) as connections:
        await asyncio.gather(*(one(i, token) for i, token in enumerate(tokens)))
    figures = summary(latencies, time.perf_counter() - began, errors)
    if server_pid and latencies:
        used = process_cpu_seconds(server_pid) - cpu_before
        figures["server_cpu_ms_per_request"] = round(used * 1000 / len(latencies), 2)
    # This process holds one connection of its own (issuing tokens); the rest are the server's.
    figures["db_connections_peak"] = connections.peak - 1
    return figures, bodies


def start_request(index: int, k: int):
    """A start of the orders workflow with a fresh Idempotency-Key and business key."""
    key = uuid.uuid4().hex
    body = {
        "workflow": START_WORKFLOW,
        "input": {"order": k, "client": index},
        "business_key": f"bench-{key}",
    }
    return "POST", "/api/v1/runs", {"json": body, "headers": {"Idempotency-Key": key}}


def signal_request_for(run_ids: list[int], clients: int):
    """Signals to the runs the start phase opened, each client on its own share of them."""

    def request(index: int, k: int):
        share = run_ids[index::clients] or run_ids
        run_id = share[k % len(share)]
        body = {"name": "nudge", "payload": {"k": k}}
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        return "POST", f"/api/v1/runs/{run_id}/signals", {"json": body, "headers": headers}

    return request


def _cursor_at(created_at) -> str:
    """DRF's cursor for the page after a run at `created_at` (ordering -created_at, -id)."""
    query = urlencode({"p": str(created_at)})
    return base64.b64encode(query.encode("ascii")).decode("ascii")


def list_paths(runs: int) -> dict[str, str]:
    """The list and read requests to time, with values picked from the seeded data."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT business_key, count(*) FROM orchestrator_workflowrun"
            " WHERE business_key LIKE 'order-%%'"
            " GROUP BY business_key ORDER BY count(*) DESC LIMIT 1"
        )
        key = (cursor.fetchone() or ["order-0"])[0]
        cursor.execute(
            "SELECT created_at FROM orchestrator_workflowrun ORDER BY created_at DESC, id DESC"
            " OFFSET %s LIMIT 1",
            [runs // 2],
        )
        middle = cursor.fetchone()[0]
        cursor.execute(
            "SELECT created_at FROM orchestrator_workflowrun WHERE status = 'failed'"
            " ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
            [max(0, runs * 8 // 100 // 2)],
        )
        failed_middle = (cursor.fetchone() or [middle])[0]
    return {
        "first page": "/api/v1/runs",
        "status=failed": "/api/v1/runs?status=failed",
        "status=running": "/api/v1/runs?status=running",
        "status=paused": "/api/v1/runs?status=paused",
        "status=running,paused": "/api/v1/runs?status=running&status=paused",
        "business_key": f"/api/v1/runs?business_key={key}",
        "workflow": "/api/v1/runs?workflow=bench-kyc",
        "workflow+status": "/api/v1/runs?workflow=bench-kyc&status=failed",
        "cursor at the middle": f"/api/v1/runs?cursor={_cursor_at(middle)}",
        "status=failed, cursor at its middle": (
            f"/api/v1/runs?status=failed&cursor={_cursor_at(failed_middle)}"
        ),
    }


def time_requests(base: str, new_token, paths: dict[str, str], requests: int) -> dict:
    """Time each path `requests` times, one client, after 3 untimed requests.

    Each path has a token of its own (`new_token()`), so the per-token throttle never answers.
    """
    import httpx

    results = {}
    for name, path in paths.items():
        headers = {"Authorization": f"Bearer {new_token()}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            latencies = []
            for k in range(requests + 3):
                began = time.perf_counter()
                response = http.get(path)
                took = time.perf_counter() - began
                response.raise_for_status()
                if k >= 3:
                    latencies.append(took)
        body = response.json()
        figures = summary(latencies)
        figures["rows"] = len(body.get("results", [])) if isinstance(body, dict) else None
        results[name] = figures
    return results


def compare_starts(base: str, tokens: list[str], client, count: int) -> dict:
    """Alternate an HTTP start and a direct services.start_run, one at a time; compare medians.

    Two more figures in the same loop say where the difference goes: the same request through
    Django's test client in this process (the whole Django/DRF stack, on this process's kept
    connection: no server, no socket, no new connection) with its query count, and what opening
    a database connection costs (the server opens one per request under ASGI).
    """
    import httpx
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from orchestrator import services
    from orchestrator.models import Workflow

    workflow = Workflow.objects.get(slug=START_WORKFLOW)
    in_process = Client(HTTP_AUTHORIZATION=f"Bearer {tokens[1]}")

    def over_http() -> None:
        method, url, kwargs = start_request(0, 0)
        assert http.request(method, url, **kwargs).status_code == 201

    def through_django() -> None:
        _, url, kwargs = start_request(0, 0)
        key = kwargs["headers"]["Idempotency-Key"]
        response = in_process.post(
            url, kwargs["json"], content_type="application/json", HTTP_IDEMPOTENCY_KEY=key
        )
        assert response.status_code == 201, response.content

    def direct() -> None:
        services.start_run(
            workflow,
            {"order": 0, "client": 0},
            started_by=client,
            trigger="bench",
            business_key=f"bench-direct-{uuid.uuid4().hex}",
        )

    def connect() -> None:
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")

    ways = {"http": over_http, "in_process": through_django, "direct": direct, "connect": connect}
    times: dict[str, list[float]] = {name: [] for name in ways}
    headers = {"Authorization": f"Bearer {tokens[0]}"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
        for k in range(count + 5):
            for name, way in ways.items():
                began = time.perf_counter()
                way()
                if k >= 5:
                    times[name].append(time.perf_counter() - began)
    queries = {}
    for name in ("in_process", "direct"):
        with CaptureQueriesContext(connection) as captured:
            ways[name]()
        queries[name] = len(captured)
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    return {
        **{name: summary(values) for name, values in times.items()},
        **{f"{name}_median_ms": round(ms, 2) for name, ms in medians.items()},
        "queries": queries,
        "ratio": round(medians["http"] / medians["direct"], 2),
        "in_process_ratio": round(medians["in_process"] / medians["direct"], 2),
    }


def explain(token: str, paths: dict[str, str]) -> None:
    """Print the plan of each list request's slowest query, run in this process."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    http = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    for name, path in paths.items():
        with CaptureQueriesContext(connection) as queries:
            http.get(path)
        slowest = max(queries.captured_queries, key=lambda q: float(q["time"]))
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest["sql"])
            plan = "\n    ".join(row[0] for row in cursor.fetchall())
        print(f"-- {name}: {len(queries)} queries; the slowest:\n    {slowest['sql']}\n    {plan}")


# --- main ----------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, flush=True)


def main() -> None:
    """Seed the database, start the server, and measure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per start/signal phase")
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--requests", type=int, default=100, help="per list/read request")
    parser.add_argument("--compare", type=int, default=200, help="HTTP and direct starts each")
    parser.add_argument("--server-workers", type=int, default=1, help="uvicorn --workers")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"a subset of {','.join(PHASES)}"
    )
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept, seeded database")
    args = parser.parse_args()
    concurrency = [int(c) for c in args.clients.split(",")]
    phases = set(args.phases.split(","))

    def _terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)

    from engine import (
        Processes,
        _admin_url,
        _prepare_environment,
        _recreate_database,
        busy_neighbours,
    )

    database_url = os.environ["BENCH_DATABASE_URL"]
    if not args.reuse:
        _recreate_database(database_url)
    began = time.monotonic()
    load_before = os.getloadavg()
    urls = _prepare_environment()  # migrates
    import redis

    broker = redis.Redis.from_url(urls["redis_url"])
    broker.flushdb()
    from engine import machine

    info = machine()
    admin, client = _principals()
    seeded = _seeded_runs()
    seed_s = None
    if seeded != args.runs:
        if seeded:
            raise SystemExit(
                f"the database holds {seeded} seeded runs, not {args.runs}: drop --reuse"
            )
        log(f"seeding {args.runs:,} runs ...")
        seed_s = seed(args.runs, client)
        log(f"seeded in {seed_s:.1f} s")
    result = {"runs": args.runs, "seconds": args.seconds, "server_workers": args.server_workers}
    processes = Processes(Path(tempfile.mkdtemp(prefix="steward-bench-api-")))
    try:
        port = _free_port()
        start_server(processes, port, args.server_workers)
        server_pid = processes.started["web"].pid  # its own session: the group of its workers
        base = f"http://127.0.0.1:{port}"
        # Warm up: every code path once or more (imports, prepared plans, connections).
        asyncio.run(closed_loop(base, _tokens(admin, client, 2), start_request, 1.0))

        started_ids: list[int] = []
        for clients in concurrency if "start" in phases or "signal" in phases else []:
            figures, bodies = asyncio.run(
                closed_loop(
                    base, _tokens(admin, client, clients), start_request, args.seconds, server_pid
                )
            )
            started_ids += [body["id"] for body in bodies]
            result[f"start_c{clients}"] = figures
            log(f"start, {clients:>2} clients: {_line(figures)}")
        for clients in concurrency if "signal" in phases else []:
            request = signal_request_for(started_ids, clients)
            figures, _ = asyncio.run(
                closed_loop(
                    base, _tokens(admin, client, clients), request, args.seconds, server_pid
                )
            )
            result[f"signal_c{clients}"] = figures
            log(f"signal, {clients:>2} clients: {_line(figures)}")

        def new_token() -> str:
            return _tokens(admin, client, 1)[0]

        token = new_token()
        paths = list_paths(args.runs)
        if "list" in phases:
            lists = time_requests(base, new_token, paths, args.requests)
            for name, figures in lists.items():
                log(f"list {name}: {_line(figures)} ({figures['rows']} rows)")
            result["list"] = lists
        if "read" in phases:
            result["read"] = {}
            for name, urls_ in _read_urls(started_ids).items():
                figures = _time_many(base, new_token(), urls_, args.requests)
                result["read"][name] = figures
                log(f"{name}: {_line(figures)}")
        if "compare" in phases:
            compared = compare_starts(base, _tokens(admin, client, 2), client, args.compare)
            result["compare"] = compared
            log(
                f"HTTP start median {compared['http_median_ms']} ms, direct start_run "
                f"{compared['direct_median_ms']} ms: x{compared['ratio']}; the same start "
                f"through Django in this process {compared['in_process_median_ms']} ms "
                f"(x{compared['in_process_ratio']}, {compared['queries']['in_process']} queries "
                f"against {compared['queries']['direct']}); a new database connection "
                f"{compared['connect_median_ms']} ms"
            )
        if args.explain:
            explain(token, paths)
    finally:
        processes.stop_all()
        broker.flushdb()
    result["targets"] = targets(result, concurrency)
    for name, verdict in result["targets"].items():
        log(f"target {name}: {verdict}")
    result.update(
        {
            "seed_s": round(seed_s, 1) if seed_s else None,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "neighbours": busy_neighbours(),
            "elapsed_s": round(time.monotonic() - began, 1),
            "machine": info,
        }
    )
    if not args.keep:
        from django.db import connections

        connections.close_all()
        import psycopg

        admin_url, name = _admin_url(database_url)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(result))


def _read_urls(started_ids: list[int]) -> dict[str, list[str]]:
    """Twenty seeded runs picked at random, and twenty the start phase opened (with steps)."""
    import random

    from django.db.models import Max, Min

    from orchestrator.models import WorkflowRun

    span = WorkflowRun.objects.filter(request_id__startswith="seed-").aggregate(
        lo=Min("pk"), hi=Max("pk")
    )
    seeded = random.Random(12).sample(range(span["lo"], span["hi"] + 1), 20)
    urls = {"read a seeded run": [f"/api/v1/runs/{pk}" for pk in seeded]}
    if started_ids:
        urls["read an API-started run"] = [f"/api/v1/runs/{pk}" for pk in started_ids[:20]]
    return urls


def _time_many(base: str, token: str, urls: list[str], requests: int) -> dict:
    """Time `requests` GETs cycling through `urls`, one client, after one untimed round."""
    import httpx

    latencies = []
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as http:
        for url in urls:
            http.get(url).raise_for_status()
        for k in range(requests):
            began = time.perf_counter()
            http.get(urls[k % len(urls)]).raise_for_status()
            latencies.append(time.perf_counter() - began)
    return summary(latencies)


def _line(figures: dict) -> str:
    if not figures.get("n"):
        return f"no successful request; errors {figures.get('errors')}"
    text = f"p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, p99 {figures['p99_ms']} ms"
    if "per_s" in figures:
        text += f", {figures['per_s']}/s over {figures['n']} requests"
    if "db_connections_peak" in figures:
        text += f", {figures['db_connections_peak']} server connections at the peak"
    if "server_cpu_ms_per_request" in figures:
        text += f", server CPU {figures['server_cpu_ms_per_request']} ms a request"
    if figures.get("errors"):
        text += f", errors {sum(figures['errors'].values())}: {figures['errors']}"
    return text


def targets(result: dict, concurrency: list[int]) -> dict:
    """Say which of issue #12's targets the figures meet."""
    verdicts = {}
    for kind in ("start", "signal"):
        figures = result.get(f"{kind}_c10")
        if figures and figures.get("n"):
            ok = figures["p99_ms"] <= TARGET_MS and not figures.get("errors")
            verdicts[f"{kind} p99 <= {TARGET_MS:.0f} ms at 10 clients"] = (
                f"{'met' if ok else 'NOT met'} ({figures['p99_ms']} ms)"
            )
    if "list" in result:
        worst = max(result["list"].items(), key=lambda item: item[1]["p95_ms"])
        ok = worst[1]["p95_ms"] <= TARGET_MS
        verdicts[f"list p95 <= {TARGET_MS:.0f} ms on {result['runs']:,} runs"] = (
            f"{'met' if ok else 'NOT met'} (worst: {worst[0]}, {worst[1]['p95_ms']} ms)"
        )
    if "compare" in result:
        ratio = result["compare"]["ratio"]
        verdicts[f"HTTP start <= {TARGET_RATIO:.0f}x direct start_run"] = (
            f"{'met' if ratio <= TARGET_RATIO else 'NOT met'} (x{ratio})"
        )
    return verdicts


if __name__ == "__main__":
    main()
