"""Shared parts of the kill -9 tests: the stand-in external system and the kill loop."""

from __future__ import annotations

import random
import time

import pytest
from django.db import connection
from django.utils import timezone

from orchestrator.models import RunStatus, WorkflowRun
from tests.processes import kill_and_see


@pytest.fixture(autouse=True)
def _tools_enabled(_tools_enabled_for_db_tests):
    """Workflows here call tools through tool steps: their governed rows exist and are enabled."""


@pytest.fixture
def effects_table():
    """The stand-in external system's tables: every call, and each key's one effect."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS test_calls"
            " (id bigserial PRIMARY KEY, idempotency_key text, value text)"
        )
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS test_effects (idempotency_key text PRIMARY KEY, value text)"
        )
        cursor.execute("TRUNCATE test_calls, test_effects")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE test_calls, test_effects")


def unfinished_runs() -> int:
    """Count the runs that have not ended yet."""
    return WorkflowRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED]).count()


def kill_workers_until_done(
    processes, rng: random.Random, *, longest: float, give_up_after: float, killed=None
) -> int:
    """Start a worker, kill it -9 at a random moment, again, until every run ended; count kills.

    Only a worker that is up is killed, so a slow start under load cannot turn this into a test
    where no worker ever runs. `killed`, a dict, receives each step the kills touched (running,
    or its message held) with the time of its last kill.
    """
    kills = 0
    deadline = time.monotonic() + give_up_after
    while unfinished_runs() and time.monotonic() < deadline:
        worker = processes.start_worker(wait_ready=True)
        time.sleep(rng.uniform(0.3, longest))
        at = timezone.now()  # a few ms before the kill: recovery is counted a little long
        touched = kill_and_see(processes, worker)
        processes.kill_workers()
        if killed is not None:
            killed.update(dict.fromkeys(touched, at))
        kills += 1
    return kills
