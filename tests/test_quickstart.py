"""The embedded default of `make run` really executes workflows across processes.

With no DATABASE_URL and no REDIS_URL, Steward runs on SQLite and kombu's filesystem transport.
This test migrates a fresh database in a temporary STEWARD_VAR_DIR, starts a real Celery worker
and beat as separate processes (with the worker pool `make run` uses on SQLite), starts a run
from a third process, and polls the database until the run is finished. A second test does what
`make run` does: seeds the demo (twice), lets a real worker and beat run it, and checks that the
scripted agents finish, get denied and wait for bob, whose approvals let the waiting runs finish.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent

DEFINITION = {
    "steps": [
        {
            "id": "lookup",
            "type": "tool",
            "tool": "incident.lookup_service",
            "args": {"service": "search"},
        },
        {
            "id": "health",
            "type": "tool",
            "tool": "incident.check_health",
            "depends_on": ["lookup"],
            "args": {"hosts": "{{ steps.lookup.hosts }}"},
        },
        {
            "id": "each",
            "type": "tool",
            "tool": "echo",
            "depends_on": ["lookup"],
            "foreach": "steps.lookup.hosts",
            "args": {"host": "{{ item }}", "index": "{{ index }}"},
        },
        {"id": "nap", "type": "sleep", "duration": 1, "depends_on": ["health", "each"]},
        {
            "id": "done",
            "type": "set",
            "depends_on": ["nap"],
            "value": {"healthy": "{{ steps.health.healthy }}", "echoed": "{{ steps.each }}"},
        },
    ],
    "output": "{{ steps.done }}",
}

START_RUN = """
import json, os
from agents import services as agents
from agents.models import Tool
from orchestrator import services
for name in ("incident.lookup_service", "incident.check_health", "echo"):  # as an admin would
    agents.update_tool(Tool.objects.get(name=name), actor=None, reason="quickstart", enabled=True)
workflow = services.create_workflow(
    slug="quickstart", name="Quickstart", definition=json.loads(os.environ["QS_DEFINITION"])
)
print("RUN", services.start_run(workflow, {}, trigger="test").pk, os.getpid())
"""


def embedded_env(var_dir: Path) -> dict[str, str]:
    """Return an environment with no database or broker server: SQLite + filesystem transport."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "DATABASE_URL",
            "REDIS_URL",
            "CELERY_BROKER_URL",
            "STEWARD_FIND_SERVICES",
            "STEWARD_TEST_DB_NAME",
            "STEWARD_CLOCK_OFFSET_FILE",
            "STEWARD_TOOL_MODULES",
        }
    }
    env.update(
        STEWARD_VAR_DIR=str(var_dir),
        DJANGO_SETTINGS_MODULE="orchestrator.settings",
        DEBUG="1",
        STEWARD_SWEEP_SECONDS="0.5",
        QS_DEFINITION=json.dumps(DEFINITION),
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    """Run manage.py in its own process and return its output; fail loudly if it fails."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def processes():
    """Start processes in their own sessions; stop every one at the end, even on failure."""
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        handle = log.open("wb")
        process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        started.append((process, log))
        return process

    yield start
    for process, _ in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process, _ in started:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def procfile() -> dict[str, str]:
    """Return the Procfile's commands by process name."""
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            entries[name.strip()] = command.strip()
    return entries


def start_as_make_run(processes, env: dict[str, str], tmp_path: Path) -> dict:
    """Start the Procfile's worker, control and beat as `make run` does on SQLite, by name."""
    commands = procfile()
    assert set(commands) == {"web", "worker", "control", "beat"}
    env = {
        **env,
        "WORKER_ARGS": "--pool solo",  # the Makefile's choice without DATABASE_URL
        "BEAT_SCHEDULE": str(tmp_path / "beat-schedule"),
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    }
    return {
        name: processes(["bash", "-c", commands[name]], env, tmp_path / f"{name}.log")
        for name in ("worker", "control", "beat")
    }


def poll_run(database: Path, run_id: int, timeout: float) -> tuple[str, str | None]:
    """Poll the SQLite database until the run is finished or the time is up."""
    deadline = time.monotonic() + timeout
    status, output = "unknown", None
    while time.monotonic() < deadline:
        with sqlite3.connect(database, timeout=5) as db:
            row = db.execute(
                "SELECT status, output FROM orchestrator_workflowrun WHERE id = ?", [run_id]
            ).fetchone()
        status, output = row
        if status in {"succeeded", "failed", "cancelled"}:
            break
        time.sleep(0.2)
    return status, output


def test_embedded_default_runs_a_workflow_across_processes(tmp_path, processes):
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput", "-v", "0")
    database = tmp_path / "steward.sqlite3"
    assert database.exists()

    worker = start_as_make_run(processes, env, tmp_path)["worker"]
    run_id, starter_pid = manage(env, "shell", "-c", START_RUN).split("RUN ")[1].split()[:2]

    status, output = poll_run(database, int(run_id), timeout=25)

    logs = "\n".join(
        f"--- {name}\n{(tmp_path / name).read_text(errors='replace')[-3000:]}"
        for name in ("worker.log", "control.log", "beat.log")
    )
    assert status == "succeeded", f"run {run_id} is {status} after 25 s\n{logs}"
    assert json.loads(output) == {
        "healthy": 2,
        "echoed": [{"host": "search-1", "index": 0}, {"host": "search-2", "index": 1}],
    }
    with sqlite3.connect(database) as db:
        workers = {
            row[0]
            for row in db.execute(
                "SELECT DISTINCT worker FROM orchestrator_steprun WHERE run_id = ? "
                "AND worker != ''",
                [run_id],
            )
        }
        kinds = [
            row[0]
            for row in db.execute(
                "SELECT kind FROM orchestrator_runevent WHERE run_id = ? ORDER BY id", [run_id]
            )
        ]
    # Every step ran in the worker process, not in the process that started the run.
    assert workers == {f"{socket.gethostname()}:{worker.pid}"}, logs
    assert str(worker.pid) != starter_pid
    assert "fanned_out" in kinds
    assert "timer_fired" in kinds  # beat's sweeper woke the sleep in the worker
    assert kinds[-1] == "run_succeeded"


DECIDE_AS_BOB = """
from django.contrib.auth import get_user_model
from governance import services
bob = get_user_model().objects.get(username="bob")
for request in services.pending_for(bob):
    services.decide_approval(request, user=bob, decision="approve", comment="quickstart test")
    print("APPROVED", request.pk)
"""


def poll_runs(database: Path, wanted: dict[str, str], timeout: float) -> dict[str, str]:
    """Poll until the runs (by business key) have the wanted statuses; return what they have."""
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        with sqlite3.connect(database, timeout=5) as db:
            statuses = dict(
                db.execute(
                    "SELECT business_key, status FROM orchestrator_workflowrun "
                    f"WHERE business_key IN ({', '.join('?' * len(wanted))})",
                    list(wanted),
                ).fetchall()
            )
        if statuses == wanted:
            break
        time.sleep(0.3)
    return statuses


def test_make_run_seeds_the_demo_and_its_agents_work_in_the_worker(tmp_path, processes):
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--noinput", "-v", "0")
    seeded = manage(env, "seed_demo")  # what `make run` does before starting the processes
    assert "INC-2002" in seeded and "bob    / bob-demo" in seeded
    assert manage(env, "seed_demo").count("Demo seeded.") == 1  # again: nothing duplicated
    database = tmp_path / "steward.sqlite3"

    start_as_make_run(processes, env, tmp_path)

    def logs() -> str:
        return "\n".join(
            f"--- {name}\n{(tmp_path / name).read_text(errors='replace')[-3000:]}"
            for name in ("worker.log", "control.log", "beat.log")
        )

    first = {"INC-2001": "succeeded", "INC-2003": "succeeded", "INC-1002": "succeeded"}
    assert poll_runs(database, first, timeout=90) == first, logs()
    with sqlite3.connect(database) as db:
        waiting = db.execute(
            "SELECT action FROM governance_approvalrequest WHERE status = 'pending' ORDER BY action"
        ).fetchall()
        runs = dict(
            db.execute("SELECT business_key, COUNT(*) FROM orchestrator_workflowrun GROUP BY 1")
        )
    # INC-2002's agent, INC-1001's tool step and CHG-3001's approval step each ask bob once;
    # grace's proposed version of production-change waits for a second governance admin.
    assert waiting == [("tool.incident.restart_service",)] * 3 + [("workflow.publish",)], logs()
    assert set(runs.values()) == {1}

    approved = manage(env, "shell", "-c", DECIDE_AS_BOB)
    assert approved.count("APPROVED") == 3, approved
    after = {"INC-2002": "succeeded", "CHG-3001": "succeeded", "INC-1001": "succeeded"}
    assert poll_runs(database, after, timeout=60) == after, logs()
