"""Workflow `tool` steps pass the enforcement point, acting for the run's initiator.

Oscar (a payment clerk, no approver) starts the runs; alice and bob approve under the `payments`
rule. Every verdict is the enforcement point's (agents/actions/enforcement.py), the one an
agent's call gets: deny, require approval, escalate; and at the moment the call executes,
everything that can have changed while it waited is checked again.
"""

from __future__ import annotations

import json

import pytest
from guardian.shortcuts import assign_perm, remove_perm

from agents import services as agents
from agents.models import Tool, ToolInvocation
from audit import clock
from audit.models import AuditEntry
from governance import services
from governance.models import ApprovalRequest, Escalation, PolicyRule
from orchestrator import engine
from orchestrator import services as workflows
from orchestrator.models import EffectJournal, StepRun
from tests.governance.conftest import fresh
from tests.orchestrator import testtools

ADD = {"a": 2, "b": 3}


def add_flow(**step) -> dict:
    """One tool step that adds 2 and 3, and a step after it."""
    return {
        "steps": [
            {"id": "add", "type": "tool", "tool": "test.add", "args": dict(ADD), **step},
            {"id": "after", "type": "noop", "depends_on": ["add"]},
        ]
    }


@pytest.fixture(autouse=True)
def _setup(company, governed_tools):
    """Oscar may start payment runs (a clerk); every registered tool is enabled."""
    testtools.CALLS.clear()
    testtools.FLAKY_FAILURES.clear()
    clerks = services.create_role(name="Payment clerks", owner=company.gina)
    services.add_member(clerks, company.oscar, actor=None)
    services.grant(clerks, "orchestrator.change_workflow", company.payments, actor=None)


def start(company, definition, run_input=None):
    """Publish the definition on the payments workflow, start a run as oscar, drain."""
    workflows.publish_version(company.payments, definition)
    run = workflows.start_run(company.payments, run_input or {}, started_by=company.oscar)
    engine.drain()
    run.refresh_from_db()
    return run


def rule(company, action: str, effect: str, condition: str = "", **fields) -> PolicyRule:
    """Add a rule to the payments policy (a new policy version) as the system."""
    return services.save_rule(
        PolicyRule(
            policy=company.policy,
            name=f"{effect} {action}",
            action=action,
            condition=condition,
            effect=effect,
            **fields,
        ),
        actor=None,
        reason="test",
    )


def step_of(run, step_id: str = "add") -> StepRun:
    """Return a run's top-level step row."""
    return StepRun.objects.get(run=run, step_id=step_id, item_index=-1)


def audited(action: str, run) -> list[AuditEntry]:
    """Return the audit entries of an action in a run, oldest first."""
    return list(AuditEntry.objects.filter(action=action, run_id=str(run.pk)).order_by("id"))


def require_approval(company) -> PolicyRule:
    """Payments' additions need an approver."""
    return rule(
        company,
        "tool.test.add",
        "require_approval",
        reason="additions need an approver",
        approval_rule=company.rule,
    )


# --- deny, require approval, escalate -------------------------------------------------------------


def test_a_policy_denial_fails_the_tool_step_naming_policy_version_and_rule(company):
    denial = rule(company, "tool.test.add", "deny", reason="no additions in payments")
    run = start(company, add_flow())
    step = step_of(run)
    assert run.status == "failed" and step.status == "failed"
    assert step.error["type"] == "ToolCallDenied"
    message = step.error["message"]
    assert f"policy 'payments' v{denial.version}, rule {denial.pk}" in message
    assert "'deny tool.test.add'" in message and "no additions in payments" in message
    assert testtools.CALLS == []  # the tool never ran
    invocation = ToolInvocation.objects.get(run_id=run.pk)
    assert (invocation.caller_kind, invocation.caller_name, invocation.agent) == (
        "user",
        "oscar",
        None,
    )
    assert (invocation.verdict, invocation.stage, invocation.policy_rule) == (
        "deny",
        "policy",
        denial.pk,
    )
    [entry] = audited("agents.tool.decided", run)
    assert (entry.actor_name, entry.actor_kind) == ("oscar", "user")
    assert json.loads(entry.decision)["policy_version"] == denial.version


def test_a_denied_tool_step_follows_its_on_failure(company):
    rule(company, "tool.test.add", "deny", reason="no additions in payments")
    run = start(company, add_flow(on_failure="continue"))
    assert step_of(run).status == "failed"
    assert step_of(run, "after").status == "succeeded"
    assert run.status == "succeeded" and testtools.CALLS == []


def test_the_policy_decides_with_the_workflow_and_run_in_its_context(company):
    rule(company, "tool.test.add", "deny", "run.workflow == 'hr-onboarding'", reason="not in HR")
    run = start(company, add_flow())
    assert run.status == "succeeded" and len(testtools.CALLS) == 1
    decided = AuditEntry.objects.filter(action="governance.policy.decided", run_id=str(run.pk))
    context = json.loads(decided.first().body_row.content)["context"]
    assert context["run"] == {"id": run.pk, "step": "add", "workflow": "payments"}
    assert context["actor"]["username"] == "oscar"


def test_require_approval_waits_on_a_request_bound_to_the_digest_the_initiator_cannot_approve(
    company,
):
    services.add_member(company.approvers, company.oscar, actor=None)  # even as an approver
    require_approval(company)
    run = start(company, add_flow())
    step = step_of(run)
    request = ApprovalRequest.objects.get(run_id=run.pk)
    assert step.status == "waiting" and step.wait_signal == request.signal_name
    assert step.wake_at == request.due_at  # the SLA is the step's timer
    assert (request.action, request.arguments) == ("tool.test.add", ADD)
    assert request.arguments_digest == services.digest(ADD)
    assert request.requested_by == request.run_initiator == company.oscar
    assert testtools.CALLS == []

    with pytest.raises(services.ApprovalRefused, match="Separation of duties"):
        services.decide_approval(request, user=fresh(company.oscar), decision="approve")
    services.decide_approval(request, user=company.bob, decision="approve")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert step_of(run).output == {"sum": 5} and len(testtools.CALLS) == 1
    invocation = ToolInvocation.objects.get(run_id=run.pk)
    assert (invocation.verdict, invocation.approval_request) == ("approval", request.pk)
    assert invocation.executed_at is not None and invocation.outcome["ok"] is True
    [called] = audited("agents.tool.called", run)
    assert called.actor_name == "oscar"
    assert ApprovalRequest.objects.filter(run_id=run.pk).count() == 1


def test_a_rejected_approval_fails_the_tool_step_without_a_call(company):
    require_approval(company)
    run = start(company, add_flow())
    request = ApprovalRequest.objects.get(run_id=run.pk)
    services.decide_approval(request, user=company.alice, decision="reject", comment="no")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "failed"
    assert step_of(run).error["type"] == "ApprovalRejected"
    assert f"approval request #{request.pk} was rejected" in step_of(run).error["message"]
    assert testtools.CALLS == []


def test_an_escalation_waits_for_a_person_who_supplies_the_result(company):
    rule(
        company,
        "tool.test.add",
        "escalate",
        reason="a manager adds these by hand",
        escalate_to=company.managers,
    )
    run = start(company, add_flow())
    step = step_of(run)
    escalation = Escalation.objects.get(run_id=run.pk)
    assert step.status == "waiting" and step.wait_signal == escalation.signal_name
    assert (escalation.reason, escalation.role, escalation.raised_by) == (
        "policy",
        company.managers,
        company.oscar,
    )
    assert escalation.step_run_id == step.pk
    services.resolve_escalation(
        escalation, user=company.maya, resolution="take_over", result={"sum": 5, "by": "maya"}
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert step_of(run).output == {"sum": 5, "by": "maya"}
    assert testtools.CALLS == []  # the person did it instead
    assert ToolInvocation.objects.get(run_id=run.pk).escalation == escalation.pk


def test_an_escalation_sent_back_has_the_policy_decide_anew(company):
    escalating = rule(
        company,
        "tool.test.add",
        "escalate",
        reason="a manager looks first",
        escalate_to=company.managers,
    )
    run = start(company, add_flow())
    escalation = Escalation.objects.get(run_id=run.pk)
    services.delete_rule(escalating, actor=None, reason="no longer needed")
    services.resolve_escalation(escalation, user=company.maya, resolution="retry", comment="go")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert step_of(run).output == {"sum": 5} and len(testtools.CALLS) == 1
    first, second = ToolInvocation.objects.filter(run_id=run.pk).order_by("pk")
    assert (first.verdict, second.verdict) == ("escalate", "allow")
    assert second.key == first.key + ".1"


def test_a_tool_step_of_a_run_without_initiator_acts_as_the_system(company):
    rule(company, "tool.test.add", "deny", "actor.kind == 'system'", reason="nobody asked")
    workflows.publish_version(company.payments, add_flow())
    run = workflows.start_run(company.payments, {})
    engine.drain()
    assert step_of(run).error["type"] == "ToolCallDenied"
    invocation = ToolInvocation.objects.get(run_id=run.pk)
    assert (invocation.caller_kind, invocation.caller_name) == ("system", "the system")


def test_a_tool_that_needs_a_permission_on_its_target_needs_the_initiator_to_hold_it(company):
    ticket = agents.create_ticket(title="Refund 120 EUR", actor=None)
    flow = {
        "steps": [
            {
                "id": "add",
                "type": "tool",
                "tool": "ticket.update",
                "args": {"ticket": ticket.pk, "status": "closed"},
            }
        ]
    }
    run = start(company, flow)
    assert step_of(run).error["type"] == "ToolCallDenied"
    assert f"oscar may not change ticket {ticket.pk}" in step_of(run).error["message"]
    ticket.refresh_from_db()
    assert ticket.status == "open"


# --- no asking twice ----------------------------------------------------------------------------


def approve_then_add(approved: dict) -> dict:
    """An approval step that approves an addition, then the tool step that makes one."""
    return {
        "steps": [
            {
                "id": "approve",
                "type": "approval",
                "rule": "payments",
                "action": "tool.test.add",
                "arguments": approved,
                "summary": "Add {{ input.a }} and 3",
            },
            {
                "id": "add",
                "type": "tool",
                "tool": "test.add",
                "depends_on": ["approve"],
                "args": {"a": "{{ input.a }}", "b": 3},
            },
        ]
    }


def test_the_runs_approval_step_for_the_same_action_and_digest_satisfies_the_policy(company):
    require_approval(company)
    run = start(company, approve_then_add({"a": "{{ input.a }}", "b": 3}), {"a": 2})
    asked = ApprovalRequest.objects.get(run_id=run.pk)
    assert (asked.step_id, asked.arguments) == ("approve", ADD)
    services.decide_approval(asked, user=company.alice, decision="approve")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert list(ApprovalRequest.objects.filter(run_id=run.pk)) == [asked]  # asked once
    invocation = ToolInvocation.objects.get(run_id=run.pk)
    assert (invocation.verdict, invocation.approval_request) == ("approval", asked.pk)
    assert len(testtools.CALLS) == 1


def test_an_approval_step_for_other_arguments_does_not_satisfy_the_policy(company):
    require_approval(company)
    run = start(company, approve_then_add({"a": 1, "b": 3}), {"a": 2})
    services.decide_approval(
        ApprovalRequest.objects.get(run_id=run.pk), user=company.alice, decision="approve"
    )
    engine.drain()
    step = step_of(run)
    second = ApprovalRequest.objects.get(run_id=run.pk, step_id="add")
    assert step.status == "waiting" and second.status == "pending"
    assert second.arguments == ADD and testtools.CALLS == []


# --- redelivery ---------------------------------------------------------------------------------


def test_a_redelivered_tool_step_neither_decides_again_nor_opens_a_second_request(
    company, monkeypatch, settings
):
    settings.STEWARD_LEASE_SECONDS = 10
    require_approval(company)
    real_finish = engine._finish

    def die_before_waiting(*args, **kwargs):
        raise engine.LeaseLost(args[0])  # the worker died after the verdict was journaled

    with clock.frozen() as frozen:
        workflows.publish_version(company.payments, add_flow())
        run = workflows.start_run(company.payments, {}, started_by=company.oscar)
        monkeypatch.setattr(engine, "_finish", die_before_waiting)
        engine.run_step(step_of(run).pk)
        monkeypatch.setattr(engine, "_finish", real_finish)
        assert step_of(run).status == "running"  # as the dead worker left it
        frozen.advance(11)
        assert engine.sweep()["reclaimed"] == 1
        frozen.advance(60)  # the retry's backoff
        engine.sweep()
        engine.drain()
        step = step_of(run)
        request = ApprovalRequest.objects.get(run_id=run.pk)
        assert step.status == "waiting" and step.attempt == 2
        assert step.wait_signal == request.signal_name
        assert ToolInvocation.objects.filter(run_id=run.pk).count() == 1
        assert len(audited("agents.tool.decided", run)) == 1
        services.decide_approval(request, user=company.bob, decision="approve")
        engine.drain()
    assert step_of(run).status == "succeeded" and len(testtools.CALLS) == 1
    assert EffectJournal.objects.filter(run_id=run.pk).count() == 2  # the verdict, the call


# --- checked again when the call executes ---------------------------------------------------------


def waiting_for_approval(company, definition=None):
    """Start a run whose tool step waits for an approval; return it and the request."""
    require_approval(company)
    run = start(company, definition or add_flow())
    return run, ApprovalRequest.objects.get(run_id=run.pk)


def approve_and_drain(company, request, run):
    """Bob approves; the engine resumes the step; return the refreshed step."""
    services.decide_approval(request, user=company.bob, decision="approve")
    engine.drain()
    run.refresh_from_db()
    return step_of(run)


def assert_refused(step, run, *, stage: str, says: str) -> None:
    """The approved call did not run: the step failed saying what changed, and it is audited."""
    assert step.status == "failed" and step.error["type"] == "ToolCallRefused", step.error
    assert step.error["stage"] == stage
    assert says in step.error["message"], step.error["message"]
    assert testtools.CALLS == []
    [refused] = audited("agents.tool.refused", run)
    assert says in json.loads(refused.body_row.content)["reason"]
    invocation = ToolInvocation.objects.get(run_id=run.pk)
    assert invocation.executed_at is None and invocation.outcome["refused"] is True


def test_a_tool_disabled_while_its_approval_waits_does_not_run(company):
    run, request = waiting_for_approval(company)
    agents.update_tool(Tool.objects.get(name="test.add"), actor=None, reason="off", enabled=False)
    step = approve_and_drain(company, request, run)
    assert_refused(step, run, stage="disabled", says="tool 'test.add' was disabled since")


def test_an_initiator_deactivated_while_the_approval_waits_does_not_act(company):
    run, request = waiting_for_approval(company)
    company.oscar.is_active = False
    company.oscar.save(update_fields=["is_active"])
    step = approve_and_drain(company, request, run)
    assert_refused(step, run, stage="status", says="oscar's account is deactivated")


def test_a_permission_withdrawn_while_the_approval_waits_refuses_the_call(company):
    ticket = agents.create_ticket(title="Refund 120 EUR", actor=None)
    assign_perm("agents.change_ticket", company.oscar, ticket)
    services.grant(company.approvers, "agents.view_ticket", ticket, actor=None)
    flow = {
        "steps": [
            {
                "id": "add",
                "type": "tool",
                "tool": "ticket.update",
                "args": {"ticket": ticket.pk, "status": "closed"},
            }
        ]
    }
    rule(
        company,
        "tool.ticket.update",
        "require_approval",
        reason="closing needs an approver",
        approval_rule=company.rule,
    )
    run = start(company, flow)
    request = ApprovalRequest.objects.get(run_id=run.pk)
    remove_perm("agents.change_ticket", company.oscar, ticket)
    step = approve_and_drain(company, request, run)
    assert step.error["type"] == "ToolCallRefused" and step.error["stage"] == "permission"
    assert f"oscar may not change ticket {ticket.pk} any more" in step.error["message"]
    ticket.refresh_from_db()
    assert ticket.status == "open"


def test_a_policy_that_now_denies_refuses_the_approved_call(company):
    run, request = waiting_for_approval(company)
    denial = rule(company, "tool.test.add", "deny", reason="frozen for the audit", position=1)
    step = approve_and_drain(company, request, run)
    assert_refused(
        step,
        run,
        stage="policy",
        says=f"the policy now denies it: policy 'payments' v{denial.version}, rule {denial.pk}",
    )


def test_a_policy_that_now_needs_another_approval_refuses_the_approved_call(company):
    run, request = waiting_for_approval(company)
    other = services.create_approval_rule(slug="treasury", name="Treasury", role=company.managers)
    rule(
        company,
        "tool.test.add",
        "require_approval",
        reason="the treasury decides now",
        approval_rule=other,
        position=1,
    )
    step = approve_and_drain(company, request, run)
    assert_refused(step, run, stage="policy", says="it now needs an approval under 'treasury'")


def test_an_approved_call_still_needing_the_same_approval_runs_under_a_new_policy_version(
    company,
):
    run, request = waiting_for_approval(company)
    rule(company, "tool.test.sub", "deny", reason="another action")  # a new policy version
    step = approve_and_drain(company, request, run)
    assert step.status == "succeeded" and len(testtools.CALLS) == 1
    rechecked = AuditEntry.objects.filter(
        action="governance.policy.decided", run_id=str(run.pk)
    ).order_by("id")
    versions = [json.loads(entry.decision)["policy_version"] for entry in rechecked]
    assert versions[-1] == versions[0] + 1  # decided again, on the current version


def test_an_allowed_call_is_checked_again_on_its_next_attempt(company):
    flow = {
        "steps": [
            {
                "id": "add",
                "type": "tool",
                "tool": "test.flaky",
                "args": {"fail_times": 1},
                "retry": {"max_attempts": 3, "initial_interval": 0},
            }
        ]
    }
    workflows.publish_version(company.payments, flow)
    run = workflows.start_run(company.payments, {}, started_by=company.oscar)
    engine.run_step(step_of(run).pk)  # attempt 1: allowed, the tool fails, a retry is due
    assert step_of(run).status == "ready" and len(testtools.CALLS) == 1
    agents.update_tool(Tool.objects.get(name="test.flaky"), actor=None, reason="off", enabled=False)
    engine.drain()
    step = step_of(run)
    assert step.attempt == 2 and step.error["type"] == "ToolCallRefused"
    assert "tool 'test.flaky' was disabled since the call was decided" in step.error["message"]
    assert len(testtools.CALLS) == 1  # the second attempt did not call
