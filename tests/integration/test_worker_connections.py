"""A worker keeps its database connection from one task to the next, as Django does per request."""

import pytest

from audit.actors import SYSTEM
from orchestrator import services
from orchestrator.models import RunStatus, WorkflowRun
from tests.processes import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def test_a_worker_process_reuses_its_connection_across_tasks(steward_processes):
    """Celery's Django fixup would reconnect around every task; CONN_MAX_AGE decides instead."""
    workflow = services.create_workflow(
        slug="pid",
        name="Backend pid",
        definition={"steps": [{"id": "pid", "type": "tool", "tool": "test.backend_pid"}]},
        actor=SYSTEM,
    )
    steward_processes.start_worker(concurrency=1)
    pids = []
    for _ in range(3):  # one after another: each run is a task of the one worker child
        run = services.start_run(workflow, started_by=SYSTEM)
        wait_until(
            lambda run=run: WorkflowRun.objects.get(pk=run.pk).status != RunStatus.RUNNING,
            60,
            message=lambda: steward_processes.logs(),
        )
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, run.error
        pids.append(run.output["pid"]["pid"])
    assert len(set(pids)) == 1, f"a new connection per task: backends {pids}"
