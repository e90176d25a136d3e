"""Durability with real processes: workers killed with -9, and a broker that loses everything."""

import random
import time

import pytest
import redis
from django.conf import settings
from django.db import connection

from orchestrator import services
from orchestrator.models import RunStatus, StepRun, WorkflowRun
from tests.processes import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RETRY = {"max_attempts": 50, "initial_interval": 0.05, "max_interval": 0.3}
EFFECTS = {
    "steps": [
        {
            "id": "one",
            "type": "tool",
            "tool": "test.record_effect",
            "args": {"value": 1},
            "retry": RETRY,
        },
        {
            "id": "two",
            "type": "tool",
            "tool": "test.record_effect",
            "depends_on": ["one"],
            "args": {"value": 2},
            "retry": RETRY,
        },
        {
            "id": "each",
            "type": "tool",
            "tool": "test.record_effect",
            "depends_on": ["two"],
            "foreach": "[1, 2, 3]",
            "args": {"value": "{{ item }}"},
            "retry": RETRY,
        },
        {
            "id": "side",
            "type": "tool",
            "tool": "test.record_effect",
            "depends_on": ["one"],
            "args": {"value": "s"},
            "retry": RETRY,
        },
        {
            "id": "last",
            "type": "tool",
            "tool": "test.record_effect",
            "depends_on": ["each", "side"],
            "args": {"value": 9},
            "retry": RETRY,
        },
    ]
}
EFFECTS_PER_RUN = 7


@pytest.fixture
def effects_table():
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS test_effects"
            " (id bigserial PRIMARY KEY, idempotency_key text, value text)"
        )
        cursor.execute("TRUNCATE test_effects")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE test_effects")


def unfinished_runs() -> int:
    return WorkflowRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED]).count()


def repeated_effects() -> list:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT idempotency_key, count(*) FROM test_effects GROUP BY 1 HAVING count(*) > 1"
        )
        return cursor.fetchall()


def test_workers_killed_at_random_never_lose_a_run_or_repeat_an_effect(
    steward_processes, effects_table
):
    rng = random.Random(2026)
    workflow = services.create_workflow(slug="effects", name="Effects", definition=EFFECTS)
    steward_processes.start_sweeper()
    runs = [services.start_run(workflow, idempotency_key=f"crash-{n}") for n in range(50)]
    kills = 0
    deadline = time.monotonic() + 240
    while unfinished_runs() and time.monotonic() < deadline:
        # Kill only a worker that is up, at a random moment of its work: a slow start under load
        # must not turn this into a test where no worker ever runs.
        steward_processes.start_worker(wait_ready=True)
        time.sleep(rng.uniform(0.3, 3.0))
        steward_processes.kill_workers()
        kills += 1
    steward_processes.start_worker()
    wait_until(
        lambda: unfinished_runs() == 0,
        60,
        message=lambda: "runs did not finish:\n" + steward_processes.logs(),
    )

    statuses = set(
        WorkflowRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)
    )
    assert statuses == {RunStatus.SUCCEEDED}
    assert kills >= 5, "the workers should have been killed mid-run several times"
    assert repeated_effects() == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(DISTINCT idempotency_key), count(*) FROM test_effects")
        distinct, total = cursor.fetchone()
    assert distinct == total == 50 * EFFECTS_PER_RUN
    retried = StepRun.objects.filter(attempt__gt=1).count()
    print(f"{kills} kills, {retried} steps needed more than one attempt")


def test_flushing_the_broker_mid_run_loses_nothing(steward_processes, effects_table):
    definition = {
        "steps": [
            {"id": "nap", "type": "sleep", "duration": 1},
            {
                "id": "after",
                "type": "tool",
                "tool": "test.record_effect",
                "depends_on": ["nap"],
                "args": {"value": 1},
            },
            {
                "id": "fan",
                "type": "tool",
                "tool": "test.record_effect",
                "depends_on": ["after"],
                "foreach": "[1, 2]",
                "args": {"value": "{{ item }}"},
            },
        ]
    }
    workflow = services.create_workflow(slug="flush", name="Flush", definition=definition)
    steward_processes.start_worker()
    runs = [services.start_run(workflow) for _ in range(20)]
    wait_until(lambda: StepRun.objects.filter(step_id="nap", status="waiting").count() == 20, 30)
    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # every queued message is gone
    steward_processes.start_sweeper()
    wait_until(
        lambda: unfinished_runs() == 0,
        60,
        message=lambda: "runs did not finish:\n" + steward_processes.logs(),
    )
    assert set(
        WorkflowRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)
    ) == {"succeeded"}
    assert repeated_effects() == []
