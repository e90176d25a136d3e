"""The end of a run: governance closed after the commit, and only when something is open."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.actors import SYSTEM
from governance import services as governance
from governance.models import Escalation, EscalationStatus
from orchestrator import engine, services
from orchestrator.models import StepRun

pytestmark = pytest.mark.django_db

NOOPS = {
    "steps": [
        {"id": "a", "type": "noop"},
        {"id": "b", "type": "noop", "depends_on": ["a"]},
    ]
}


def after_commit_queries(django_capture_on_commit_callbacks, work):
    """Run `work`, then its on-commit callbacks; return the SQL the callbacks sent."""
    with django_capture_on_commit_callbacks() as callbacks:
        work()
    with CaptureQueriesContext(connection) as queries:
        for callback in callbacks:
            callback()
    return [query["sql"] for query in queries.captured_queries]


def test_a_run_ending_with_nothing_open_costs_one_read_after_its_commit(
    make_workflow, django_capture_on_commit_callbacks
):
    wf = make_workflow(NOOPS)
    run = services.start_run(wf, started_by=SYSTEM)
    sql = after_commit_queries(django_capture_on_commit_callbacks, engine.drain)
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert len(sql) == 1, sql
    assert "governance_approvalrequest" in sql[0] and "governance_escalation" in sql[0]


def test_a_cancelled_run_still_closes_its_open_escalation(
    make_workflow, django_capture_on_commit_callbacks
):
    wf = make_workflow({"steps": [{"id": "w", "type": "wait", "signal": "go", "timeout": "1h"}]})
    run = services.start_run(wf, started_by=SYSTEM)
    engine.drain()
    step = StepRun.objects.get(run=run)
    escalation = governance.open_escalation(
        reason="test",
        summary="left open",
        run_id=run.pk,
        step_run_id=step.pk,
        step_id="w",
        raised_by=SYSTEM,
    )
    other = governance.open_escalation(
        reason="test", summary="another run's", run_id=run.pk + 1, raised_by=SYSTEM
    )
    sql = after_commit_queries(
        django_capture_on_commit_callbacks,
        lambda: engine.cancel_run(run.pk, reason="stop", actor=SYSTEM),
    )
    escalation.refresh_from_db()
    other.refresh_from_db()
    assert escalation.status == EscalationStatus.CANCELLED
    assert other.status == EscalationStatus.OPEN
    assert len(sql) > 1  # the read found it, the cancellations ran
    assert Escalation.objects.filter(run_id=run.pk, status=EscalationStatus.OPEN).count() == 0
