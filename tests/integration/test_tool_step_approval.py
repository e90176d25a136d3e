"""A workflow's tool step waits for an approval with real processes, across a killed worker.

A real Celery worker runs the tool step: the Production policy requires an approval of the call,
so the step waits; the worker is killed -9 while it waits and another one starts; an approver
decides through the decision service, governance's signal wakes the step, and the call is made
exactly once, against the stand-in external system.
"""

from __future__ import annotations

import pytest
from django.db import connection

from audit.models import AuditEntry
from governance import services as governance
from governance.models import ApprovalRequest, PolicyRule
from orchestrator import services as workflows
from orchestrator.models import RunStatus, StepRun, WorkflowRun
from tests.processes import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DEFINITION = {
    "steps": [
        {"id": "change", "type": "tool", "tool": "test.record_effect", "args": {"value": "v2"}},
    ]
}


def test_a_tool_step_waits_for_its_approval_across_a_killed_worker_and_calls_once(
    steward_processes, effects_table
):
    processes = steward_processes
    ivan, bob, gina = (
        governance.create_person(username=name, password=f"pw-{name}-123")
        for name in ("ivan", "bob", "gina")
    )
    workflow = workflows.create_workflow(slug="deploys", name="Deploys", definition=DEFINITION)
    approvers = governance.create_role(name="Approvers", owner=gina)
    governance.add_member(approvers, bob, actor=None)
    governance.add_member(approvers, ivan, actor=None)  # ivan starts the run: he cannot approve
    engineers = governance.create_role(name="Engineers", owner=gina)
    governance.add_member(engineers, ivan, actor=None)
    governance.grant(engineers, "orchestrator.change_workflow", workflow, actor=None)
    rule = governance.create_approval_rule(slug="deploys", name="Deploys", role=approvers)
    policy = governance.create_policy(slug="production", name="Production")
    governance.save_rule(
        PolicyRule(
            policy=policy,
            name="deploys need an approver",
            action="tool.test.record_effect",
            effect="require_approval",
            reason="a deploy needs an approver",
            approval_rule=rule,
        ),
        actor=None,
        reason="test",
    )
    first = processes.start_worker()
    processes.start_sweeper()
    run = workflows.start_run(workflow, {}, started_by=ivan)

    wait_until(
        lambda: StepRun.objects.filter(run=run, step_id="change", status="waiting").exists(),
        120,
        message=lambda: "the tool step never waited:\n" + processes.logs(),
    )
    request = ApprovalRequest.objects.get(run_id=run.pk)
    assert request.requested_by == request.run_initiator == ivan
    processes.kill(first)
    processes.start_worker()
    with pytest.raises(governance.ApprovalRefused, match="Separation of duties"):
        governance.decide_approval(request.pk, user=ivan, decision="approve")
    governance.decide_approval(request.pk, user=bob, decision="approve")

    wait_until(
        lambda: WorkflowRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        120,
        message=lambda: "the run did not complete:\n" + processes.logs(),
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM test_calls")
        assert cursor.fetchone()[0] == 1
    assert ApprovalRequest.objects.filter(run_id=run.pk).count() == 1
    decided = AuditEntry.objects.filter(action="agents.tool.decided", run_id=str(run.pk))
    assert decided.count() == 1
    assert AuditEntry.objects.filter(action="agents.tool.called", run_id=str(run.pk)).count() == 1
