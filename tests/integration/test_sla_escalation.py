"""An approval's SLA escalates along its chain of roles with real processes and a moved clock.

A real Celery worker runs the workflow and the engine's sweeper fires the approval step's SLA
timer; the clock of every process is moved through the offset file the processes read, so
nothing sleeps for the SLA. The test then decides as a member of the next role through the
decision service (the engine resumes on governance's signal), and the run completes.
"""

from __future__ import annotations

import json

import pytest

from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from governance.models import ApprovalRequest, ApprovalStatus
from orchestrator import services as workflows
from orchestrator.models import RunStatus, StepRun, WorkflowRun
from tests.processes import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SLA_SECONDS = 3600
DEFINITION = {
    "steps": [
        {"id": "prepare", "type": "set", "value": {"amount": "{{ input.amount }}"}},
        {
            "id": "approve",
            "type": "approval",
            "rule": "refunds",
            "depends_on": ["prepare"],
            "summary": "Refund {{ steps.prepare.amount }} EUR",
            "arguments": {"amount": "{{ steps.prepare.amount }}"},
        },
        {"id": "pay", "type": "set", "depends_on": ["approve"], "value": "paid"},
    ]
}


@pytest.fixture
def shared_clock(steward_processes):
    """Let this process read the same clock offset file as the worker and the sweeper."""
    previous = clock._offset_file
    clock.set_offset_file(str(steward_processes.clock_file))
    yield steward_processes
    clock.set_offset_file(previous)


def build_company():
    """People, a chain of three roles that may see the workflow, a clerk, the approval rule."""
    people = {
        name: governance.create_person(username=name, password=f"pw-{name}-123", actor=SYSTEM)
        for name in ("ivan", "alice", "maya", "dan", "gina")
    }
    workflow = workflows.create_workflow(
        slug="refunds",
        name="Refunds",
        definition={"steps": [{"id": "draft", "type": "noop"}]},
        actor=SYSTEM,
    )
    roles = {}
    for name, member in [("Approvers", "alice"), ("Managers", "maya"), ("Directors", "dan")]:
        role = governance.create_role(name=name, owner=people["gina"], actor=SYSTEM)
        governance.add_member(role, people[member], actor=SYSTEM)
        governance.grant(role, "orchestrator.view_workflow", workflow, actor=SYSTEM)
        roles[name] = role
    clerks = governance.create_role(name="Refund clerks", owner=people["gina"], actor=SYSTEM)
    governance.add_member(clerks, people["ivan"], actor=SYSTEM)  # ivan starts the runs
    governance.grant(clerks, "orchestrator.change_workflow", workflow, actor=SYSTEM)
    rule = governance.create_approval_rule(
        slug="refunds",
        name="Refund approval",
        role=roles["Approvers"],
        sla_seconds=SLA_SECONDS,
        escalation=[roles["Managers"], roles["Directors"]],
        actor=SYSTEM,
    )
    workflows.publish_version(workflow, DEFINITION, actor=SYSTEM)  # the rule it names exists now
    return people, roles, workflow, rule


def test_an_overdue_approval_escalates_to_the_next_role_who_approves_and_the_run_completes(
    shared_clock,
):
    processes = shared_clock
    people, roles, workflow, rule = build_company()
    processes.start_worker()
    processes.start_sweeper()
    run = workflows.start_run(workflow, {"amount": 120}, started_by=people["ivan"])

    def request():
        return ApprovalRequest.objects.filter(run_id=run.pk).first()

    wait_until(
        lambda: StepRun.objects.filter(run=run, step_id="approve", status="waiting").exists(),
        120,
        message=lambda: "the approval step never waited:\n" + processes.logs(),
    )
    opened = request()
    assert (opened.level, opened.role, opened.status) == (0, roles["Approvers"], "pending")
    assert opened.arguments == {"amount": 120}
    step = StepRun.objects.get(run=run, step_id="approve")
    assert step.wake_at == opened.due_at  # the step's timer is the SLA
    assert not governance.pending_for(people["maya"]).filter(pk=opened.pk).exists()

    processes.move_clock(SLA_SECONDS + 1)
    wait_until(
        lambda: request().level == 1,
        60,
        message=lambda: "the request did not escalate:\n" + processes.logs(),
    )
    escalated = request()
    assert escalated.role == roles["Managers"] and escalated.status == ApprovalStatus.PENDING
    assert escalated.due_at == opened.due_at + (opened.due_at - opened.created_at)
    hops = AuditEntry.objects.filter(
        action="governance.approval.escalated", target_id=str(opened.pk)
    )
    assert hops.count() == 1
    hop = json.loads(hops.get().body_row.content)
    assert (hop["from_role"], hop["to_role"], hop["level"]) == ("Approvers", "Managers", 1)
    wait_until(  # the worker set the step's next timer: the next level's SLA
        lambda: StepRun.objects.get(pk=step.pk).wake_at == escalated.due_at,
        30,
        message=lambda: "the step did not wait for the next level:\n" + processes.logs(),
    )
    assert StepRun.objects.get(pk=step.pk).status == "waiting"
    assert governance.pending_for(people["maya"]).filter(pk=opened.pk).exists()

    decision = governance.decide_approval(
        escalated.pk, user=people["maya"], decision="approve", comment="refund is fine"
    )
    assert decision.role_name == "Managers"
    wait_until(
        lambda: WorkflowRun.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED,
        60,
        message=lambda: "the run did not complete:\n" + processes.logs(),
    )
    approve = StepRun.objects.get(pk=step.pk)
    assert approve.output["approved"] is True
    assert [row["by"] for row in approve.output["decisions"]] == ["maya"]
    assert StepRun.objects.get(run=run, step_id="pay").output == "paid"
    assert request().status == ApprovalStatus.APPROVED and request().level == 1
    assert AuditEntry.objects.filter(
        action="governance.approval.decided", actor_name="maya", target_id=str(opened.pk)
    ).exists()
