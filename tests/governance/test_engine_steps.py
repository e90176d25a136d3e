"""The engine with governance: the `approval` step type and `on_failure: escalate`."""

from __future__ import annotations

import json

import pytest

from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.actions.escalations import cancel_escalation
from governance.models import ApprovalRequest, ApprovalStatus, Escalation, PolicyRule
from orchestrator import engine
from orchestrator import services as workflows
from orchestrator.models import StepRun
from tests.governance.conftest import fresh
from tests.orchestrator import testtools


def approval_flow(on_failure: str = "fail") -> dict:
    """Prepare an amount, ask for approval of exactly it, then pay."""
    return {
        "steps": [
            {"id": "prepare", "type": "set", "value": {"amount": "{{ input.amount }}"}},
            {
                "id": "approve",
                "type": "approval",
                "rule": "payments",
                "depends_on": ["prepare"],
                "summary": "Pay {{ steps.prepare.amount }} EUR",
                "arguments": {"amount": "{{ steps.prepare.amount }}"},
                "on_failure": on_failure,
            },
            {"id": "pay", "type": "set", "depends_on": ["approve"], "value": "paid"},
            {"id": "done", "type": "noop", "depends_on": ["approve"]},
        ]
    }


@pytest.fixture(autouse=True)
def _clean_tools(governed_tools):
    """Every registered tool is enabled (tool steps need it); no scripted failure is left."""
    testtools.FLAKY_FAILURES.clear()


@pytest.fixture(autouse=True)
def _oscar_starts_payments(company):
    """Oscar may start payment runs (a clerk), and is no approver: he is the runs' initiator."""
    clerks = services.create_role(name="Payment clerks", owner=company.gina, actor=SYSTEM)
    services.add_member(clerks, company.oscar, actor=SYSTEM)
    services.grant(clerks, "orchestrator.change_workflow", company.payments, actor=SYSTEM)


def start(company, definition, amount=5000, by=None):
    """Publish the definition on the payments workflow and start a run as oscar."""
    workflows.publish_version(company.payments, definition, actor=SYSTEM)
    run = workflows.start_run(company.payments, {"amount": amount}, started_by=by or company.oscar)
    engine.drain()
    return run


def statuses(run) -> dict:
    return dict(StepRun.objects.filter(run=run).values_list("step_id", "status"))


def test_approved_run_goes_on_and_the_decision_is_audited_with_the_policy_version(company):
    services.save_rule(
        PolicyRule(
            policy=company.policy,
            name="payments need approval",
            action="workflow.payments.approve",
            effect="require_approval",
            approval_rule=company.rule,
            risk="high",
        ),
        actor=SYSTEM,
        reason="test",
    )
    company.policy.refresh_from_db()
    run = start(company, approval_flow())
    assert statuses(run)["approve"] == "waiting"
    request = ApprovalRequest.objects.get(run_id=run.pk)
    assert request.arguments == {"amount": 5000} and request.summary == "Pay 5000 EUR"
    assert request.policy_version == company.policy.version
    assert request.requested_by == company.oscar and request.run_initiator == company.oscar

    services.decide_approval(request, user=fresh(company.alice), decision="approve")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    approve = StepRun.objects.get(run=run, step_id="approve")
    assert approve.output["approved"] is True and approve.output["decisions"][0]["by"] == "alice"
    decided = AuditEntry.objects.get(action="governance.approval.decided")
    recorded = json.loads(decided.decision)
    assert recorded["policy"] == "payments"
    assert recorded["policy_version"] == company.policy.version
    assert decided.run_id == str(run.pk)


def test_the_run_initiator_cannot_approve_their_own_run(company):
    services.add_member(company.approvers, company.oscar, actor=SYSTEM)
    run = start(company, approval_flow())
    request = ApprovalRequest.objects.get(run_id=run.pk)
    with pytest.raises(services.ApprovalRefused) as refused:
        services.decide_approval(request, user=fresh(company.oscar), decision="approve")
    assert refused.value.code == "requester"
    assert statuses(run)["approve"] == "waiting"


def test_rejected_run_fails_by_default(company):
    run = start(company, approval_flow())
    request = ApprovalRequest.objects.get(run_id=run.pk)
    services.decide_approval(request, user=fresh(company.alice), decision="reject", comment="no")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error["type"] == "ApprovalRejected" and run.error["step"] == "approve"
    assert statuses(run)["pay"] == "cancelled"


def test_rejected_run_follows_on_failure_continue(company):
    run = start(company, approval_flow(on_failure="continue"))
    request = ApprovalRequest.objects.get(run_id=run.pk)
    services.decide_approval(
        request, user=fresh(company.alice), decision="request_changes", comment="lower it"
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert statuses(run)["approve"] == "failed"
    assert StepRun.objects.get(run=run, step_id="approve").error["type"] == "ChangesRequested"


def test_a_deny_policy_fails_the_step_without_a_request(company):
    services.save_rule(
        PolicyRule(
            policy=company.policy,
            name="no big payments",
            action="workflow.payments.*",
            condition="arguments.amount > 1000",
            effect="deny",
            reason="over the limit",
        ),
        actor=SYSTEM,
        reason="test",
    )
    run = start(company, approval_flow())
    run.refresh_from_db()
    assert run.status == "failed" and run.error["type"] == "PolicyDenied"
    assert run.error["message"] == "over the limit"
    assert not ApprovalRequest.objects.exists()


def test_the_sla_timer_escalates_then_expires_and_the_step_fails(company):
    with clock.frozen() as frozen:
        run = start(company, approval_flow(on_failure="continue"))
        approve = StepRun.objects.get(run=run, step_id="approve")
        request = ApprovalRequest.objects.get(run_id=run.pk)
        assert approve.wake_at == request.due_at
        frozen.advance(company.rule.sla_seconds + 1)
        assert engine.sweep()["timers"] == 1
        request.refresh_from_db()
        approve.refresh_from_db()
        assert (request.level, request.role) == (1, company.managers)
        assert approve.status == "waiting" and approve.wake_at == request.due_at
        frozen.advance(company.rule.sla_seconds)
        engine.sweep()
        engine.drain()
    request.refresh_from_db()
    assert request.status == ApprovalStatus.EXPIRED
    assert StepRun.objects.get(run=run, step_id="approve").error["type"] == "ApprovalExpired"
    run.refresh_from_db()
    assert run.status == "succeeded"  # on_failure: continue


def test_cancelling_the_run_cancels_its_pending_request(
    company, django_capture_on_commit_callbacks
):
    run = start(company, approval_flow())
    with django_capture_on_commit_callbacks(execute=True):
        workflows.cancel_run(run, actor=company.gina, reason="not needed")
    request = ApprovalRequest.objects.get(run_id=run.pk)
    assert request.status == ApprovalStatus.CANCELLED


FAILING = {
    "steps": [
        {
            "id": "call",
            "type": "tool",
            "tool": "test.flaky",
            "args": {"fail_times": 1, "error": "FatalToolError"},
            "on_failure": "escalate",
        },
        {"id": "after", "type": "set", "depends_on": ["call"], "value": "{{ steps.call }}"},
    ]
}


def _failed_and_escalated(company):
    run = start(company, FAILING)
    call = StepRun.objects.get(run=run, step_id="call")
    assert call.status == "waiting" and call.error["awaiting"]["escalation"]
    run.refresh_from_db()
    assert run.status == "running"
    escalation = Escalation.objects.get(run_id=run.pk)
    assert escalation.role == company.managers and escalation.parked
    assert services.can(fresh(company.maya), "resolve", escalation)
    return run, escalation


def test_escalate_take_over_supplies_the_result_and_the_run_goes_on(company):
    run, escalation = _failed_and_escalated(company)
    services.resolve_escalation(
        escalation, user=fresh(company.maya), resolution="take_over", result={"attempt": 99}
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert StepRun.objects.get(run=run, step_id="after").output == {"attempt": 99}
    assert AuditEntry.objects.filter(
        action="governance.escalation.resolved", actor_name="maya"
    ).exists()


def test_escalate_retry_sends_the_step_back(company):
    run, escalation = _failed_and_escalated(company)
    services.resolve_escalation(escalation, user=fresh(company.maya), resolution="retry")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert StepRun.objects.get(run=run, step_id="call").attempt == 1


def test_escalate_stop_cancels_the_run(company):
    run, escalation = _failed_and_escalated(company)
    services.resolve_escalation(escalation, user=fresh(company.maya), resolution="stop")
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_only_the_escalation_role_resolves_and_only_once(company):
    run, escalation = _failed_and_escalated(company)
    with pytest.raises(services.NotVisible):
        services.resolve_escalation(escalation, user=fresh(company.alice), resolution="stop")
    services.resolve_escalation(escalation, user=fresh(company.maya), resolution="retry")
    with pytest.raises(services.GovernanceError) as again:
        services.resolve_escalation(escalation, user=fresh(company.maya), resolution="stop")
    assert again.value.code == "already_resolved"
    assert AuditEntry.objects.filter(action="governance.access_denied", actor_name="alice").exists()


# --- a policy that escalates: the approval step waits for a person ------------------------------


@pytest.fixture
def escalating_rule(company):
    """Payments above 1 000 go to the managers as a human escalation, not to the approvers."""
    return services.save_rule(
        PolicyRule(
            policy=company.policy,
            name="big payments go to a manager",
            action="workflow.payments.*",
            condition="arguments.amount > 1000",
            effect="escalate",
            escalate_to=company.managers,
            reason="too big for the approvers alone",
        ),
        actor=SYSTEM,
        reason="test",
    )


def _escalated(company, on_failure="fail"):
    """Start a big payment; check that its approval step waits for the managers' escalation."""
    run = start(company, approval_flow(on_failure=on_failure))
    approve = StepRun.objects.get(run=run, step_id="approve")
    escalation = Escalation.objects.get(run_id=run.pk)
    assert approve.status == "waiting" and approve.wait_signal == escalation.signal_name
    assert approve.input["escalation"] == escalation.pk
    assert approve.input["arguments"] == {"amount": 5000}
    assert approve.input["policy"]["effect"] == "escalate"
    assert (escalation.reason, escalation.role, escalation.parked) == (
        "policy",
        company.managers,
        False,
    )
    assert not ApprovalRequest.objects.exists()
    run.refresh_from_db()
    assert run.status == "running"
    return run, escalation


def test_an_escalating_policy_waits_and_a_take_over_supplies_the_steps_output(
    company, escalating_rule
):
    run, escalation = _escalated(company)
    services.resolve_escalation(
        escalation,
        user=fresh(company.maya),
        resolution="take_over",
        result={"approved": True, "paid_by": "hand"},
        comment="I paid it myself",
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    approve = StepRun.objects.get(run=run, step_id="approve")
    assert approve.output == {"approved": True, "paid_by": "hand"}
    assert statuses(run)["pay"] == "succeeded"


def test_sending_an_escalation_back_asks_the_policy_again(company, escalating_rule):
    run, first = _escalated(company)
    services.resolve_escalation(first, user=fresh(company.maya), resolution="retry")
    engine.drain()
    # Still over the limit: the policy escalates again, to a new task; the step waits for it.
    second = Escalation.objects.filter(run_id=run.pk).exclude(pk=first.pk).get()
    approve = StepRun.objects.get(run=run, step_id="approve")
    assert (approve.status, approve.wait_signal) == ("waiting", second.signal_name)
    assert approve.input["escalation"] == second.pk and approve.attempt == 1
    # The managers lift the rule, then send it back once more: now the approvers are asked.
    escalating_rule.status = "disabled"
    services.save_rule(escalating_rule, actor=SYSTEM, reason="test: rule lifted")
    services.resolve_escalation(second, user=fresh(company.maya), resolution="retry")
    engine.drain()
    request = ApprovalRequest.objects.get(run_id=run.pk)
    approve.refresh_from_db()
    assert (approve.status, approve.wait_signal) == ("waiting", request.signal_name)
    services.decide_approval(request, user=fresh(company.alice), decision="approve")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert Escalation.objects.filter(run_id=run.pk).count() == 2


def test_stopping_an_escalation_cancels_the_run(company, escalating_rule):
    run, escalation = _escalated(company, on_failure="continue")
    services.resolve_escalation(escalation, user=fresh(company.maya), resolution="stop")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "cancelled"
    assert statuses(run)["approve"] == "cancelled" and statuses(run)["pay"] != "succeeded"


def test_the_step_reads_the_escalation_row_not_the_signal_payload(company, escalating_rule):
    run, escalation = _escalated(company)
    # A wake-up whose payload claims a take-over, while the escalation is still open: nothing.
    forged = {"escalation": escalation.pk, "resolution": "take_over", "result": "forged"}
    engine.send_signal(run.pk, escalation.signal_name, forged, owner_app=True, sent_by=SYSTEM)
    engine.drain()
    approve = StepRun.objects.get(run=run, step_id="approve")
    assert (approve.status, approve.wait_signal) == ("waiting", escalation.signal_name)
    assert approve.output is None
    # Cancelled (nobody resolved it): the step fails and the run follows on_failure.
    cancel_escalation(
        Escalation.objects.get(pk=escalation.pk), reason="test: withdrawn", actor=SYSTEM
    )
    engine.send_signal(run.pk, escalation.signal_name, forged, owner_app=True, sent_by=SYSTEM)
    engine.drain()
    run.refresh_from_db()
    assert run.status == "failed" and run.error["type"] == "EscalationCancelled"
    assert statuses(run)["pay"] == "cancelled"
