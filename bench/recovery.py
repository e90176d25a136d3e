"""Benchmark of recovery after kill -9, with the production settings: lease, heartbeat, sweep.

    python bench/recovery.py [--kills 10] [--runs 12]

Two Celery workers (prefork, 2 processes each) and the sweeper loop (every 2 s, as beat runs
it) work through runs of a slow tool step and a fan-out of three. Again and again, one worker
chosen at random is killed with SIGKILL (its process group: the pool children too) and a new
one started, so one always survives. For every step a kill touched (running on the killed
worker, or ready with its message held by it), recovery is the time from the kill to the
step's next start, read from its run events. Prints p50, p99 and the largest, and as its last
line one JSON object. The target (issue #11): p99 <= lease + 10 s.

Uses BENCH_DATABASE_URL (default postgres://root@127.0.0.1:5432/steward_bench_recovery,
created and migrated when missing; its runs are emptied at the start) and BENCH_REDIS_URL
(default redis://127.0.0.1:6379/14, a database number neither the tests nor bench/engine.py
use; a queue of its own in it). Every process it starts is killed on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT), str(BENCH_DIR)]

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/steward_bench_recovery")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")

DEFINITION = {
    "description": "A slow step, then a fan-out of three (bench/recovery.py).",
    "steps": [
        {
            "id": "slow",
            "type": "tool",
            "tool": "test.record_effect",
            "args": {"value": 1, "pause": 2},
            "retry": {"max_attempts": 10},  # the default intervals; kills may land repeatedly
        },
        {
            "id": "fan",
            "type": "tool",
            "tool": "test.record_effect",
            "depends_on": ["slow"],
            "foreach": "[1, 2, 3]",
            "args": {"value": "{{ item }}", "pause": 2},
            "retry": {"max_attempts": 10},
        },
    ],
}


def main() -> None:
    """Kill workers at random under the production settings and report the recovery times."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()

    from engine import _prepare_environment  # bench/engine.py: database, Redis, secrets

    os.environ["STEWARD_TOOL_MODULES"] = "tests.orchestrator.testtools"
    _prepare_environment()

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from orchestrator import services
    from orchestrator.models import RunStatus, Workflow, WorkflowRun
    from tests.processes import (
        StewardProcesses,
        kill_and_see,
        percentiles,
        recovery_seconds,
        wait_until,
    )

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE orchestrator_workflowrun RESTART IDENTITY CASCADE")
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS test_calls"
            " (id bigserial PRIMARY KEY, idempotency_key text, value text)"
        )
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS test_effects (idempotency_key text PRIMARY KEY, value text)"
        )
        cursor.execute("TRUNCATE test_calls, test_effects")
    workflow = Workflow.objects.filter(slug="bench-recovery").first()
    if workflow is None:
        workflow = services.create_workflow(
            slug="bench-recovery", name="Recovery benchmark", definition=DEFINITION
        )
    production = {  # the settings' defaults (orchestrator/settings.py), not the tests' short ones
        "STEWARD_LEASE_SECONDS": 30,
        "STEWARD_HEARTBEAT_SECONDS": 10,
        "STEWARD_REPUBLISH_AFTER_SECONDS": 15,
        "STEWARD_REPUBLISH_MAX_SECONDS": 300,
        "STEWARD_TEST_WORKER_LOGLEVEL": "WARNING",
        "LOG_LEVEL": "WARNING",
    }
    rng = random.Random(args.seed)
    unfinished = WorkflowRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED])
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="steward-recovery-") as tmp:
        processes = StewardProcesses(Path(tmp), **production)
        try:
            processes.start_sweeper(interval=settings.STEWARD_SWEEP_SECONDS)
            processes.start_worker(wait_ready=True)
            processes.start_worker(wait_ready=True)
            killed: dict = {}
            kills = 0
            while kills < args.kills:
                if not unfinished.exists():
                    for _ in range(args.runs):
                        services.start_run(workflow)
                time.sleep(rng.uniform(1.0, 4.0))
                alive = [w for w in processes.workers if w.poll() is None]
                victim = rng.choice(alive)
                at = timezone.now()
                touched = kill_and_see(processes, victim)
                killed.update(dict.fromkeys(touched, at))
                processes.workers.remove(victim)
                processes.start_worker(wait_ready=True)  # the next victim is a working one
                kills += 1
                print(f"kill {kills}: {len(touched)} steps touched", flush=True)
            wait_until(lambda: not unfinished.exists(), 600, message=processes.logs)
        finally:
            processes.stop()
    recovered = recovery_seconds(killed)
    never = [step for step, seconds in recovered.items() if seconds is None]
    figures = percentiles([s for s in recovered.values() if s is not None])
    lease = production["STEWARD_LEASE_SECONDS"]
    print(
        f"{kills} kills, {figures['n']} steps touched, {len(never)} never ran again; "
        f"recovery p50 {figures['p50']:.1f} s, p99 {figures['p99']:.1f} s, "
        f"max {figures['max']:.1f} s; target p99 <= {lease + 10:.0f} s "
        f"({time.monotonic() - started:.0f} s in all, load {os.getloadavg()[0]:.1f})"
    )
    print(json.dumps({"kills": kills, "never_ran_again": len(never), "lease": lease, **figures}))


if __name__ == "__main__":
    main()
