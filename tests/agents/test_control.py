"""The control layer around agent steps: policy denials, approvals, escalations, kill switch."""

import json

import pytest

from agents import services
from agents.models import AgentStatus, Ticket, ToolInvocation
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from governance.models import ApprovalRequest, Escalation
from orchestrator import engine
from tests.agents.conftest import add_policy_rule, enable, step_of

pytestmark = pytest.mark.django_db

CLOSE_TICKET = [
    {
        "when": "turn == 1",
        "tool_calls": [
            {
                "tool": "ticket.update",
                "arguments": {"ticket": "{{ input.ticket }}", "status": "closed"},
            }
        ],
    },
    {"when": "results[0].ok", "final": {"closed": True}, "confidence": 1},
    {"final": {"closed": False, "why": "{{ results[0].reason }}"}, "confidence": 1},
]


@pytest.fixture
def ticket(world):
    return services.create_ticket(title="Disk full on db-1", actor=SYSTEM)


@pytest.fixture
def closer(world, make_agent, ticket):
    agent = make_agent("closer", CLOSE_TICKET, tools=["ticket.update"])
    from guardian.shortcuts import assign_perm

    assign_perm("agents.change_ticket", agent.user, ticket)
    assign_perm("agents.view_ticket", agent.user, ticket)
    return agent


def test_a_policy_denial_goes_back_to_the_model_as_a_refusal(world, closer, ticket, run_agent):
    add_policy_rule("tool.ticket.update", "deny", reason="tickets are closed by people")
    run = run_agent("closer", {"ticket": ticket.pk})
    assert run.status == "succeeded"
    assert step_of(run).output["result"] == {
        "closed": False,
        "why": "tickets are closed by people",
    }
    ticket.refresh_from_db()
    assert ticket.status == "open"
    invocation = ToolInvocation.objects.get()
    assert (invocation.verdict, invocation.stage, invocation.executed_at) == (
        "deny",
        "policy",
        None,
    )
    decided = AuditEntry.objects.get(action="agents.tool.decided")
    assert json.loads(decided.decision)["policy_version"] == invocation.policy_version


def test_approval_pauses_the_step_durably_and_runs_the_call_once_approved(
    world, closer, ticket, run_agent
):
    enable("ticket.update", approval_rule=world.approval)
    run = run_agent("closer", {"ticket": ticket.pk})
    step = step_of(run)
    assert run.status == "running" and step.status == "waiting"
    request = ApprovalRequest.objects.get()
    assert step.wait_signal == request.signal_name
    assert request.arguments == {"ticket": ticket.pk, "status": "closed"}
    assert request.requested_by == closer.user and request.accountable_owner == world.owen
    ticket.refresh_from_db()
    assert ticket.status == "open"  # nothing happened yet

    with pytest.raises(governance.ApprovalRefused):  # the owner may not approve
        governance.decide_approval(request, user=world.owen, decision="approve")
    governance.decide_approval(request, user=world.alice, decision="approve", comment="ok")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    ticket.refresh_from_db()
    assert ticket.status == "closed"
    assert step_of(run).output["result"] == {"closed": True}
    assert ticket.history.first().history_user == closer.user


def test_a_rejected_approval_is_a_refusal_for_the_model(world, closer, ticket, run_agent):
    enable("ticket.update", approval_rule=world.approval)
    run = run_agent("closer", {"ticket": ticket.pk})
    governance.decide_approval(
        ApprovalRequest.objects.get(), user=world.bob, decision="reject", comment="not now"
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert "was rejected" in step_of(run).output["result"]["why"]
    ticket.refresh_from_db()
    assert ticket.status == "open"


def test_an_approval_does_not_cover_changed_arguments(world, make_agent, ticket, run_agent):
    rules = [
        {
            "when": "turn == 1",
            "tool_calls": [
                {"tool": "ticket.update", "arguments": {"ticket": ticket.pk, "priority": "p4"}}
            ],
        },
        {
            "when": "turn == 2",
            "tool_calls": [
                {"tool": "ticket.update", "arguments": {"ticket": ticket.pk, "status": "closed"}}
            ],
        },
        {"final": {"results": "{{ history }}"}, "confidence": 1},
    ]
    agent = make_agent("sneaky", rules, tools=["ticket.update"])
    from guardian.shortcuts import assign_perm

    assign_perm("agents.change_ticket", agent.user, ticket)
    enable("ticket.update", approval_rule=world.approval)
    run = run_agent("sneaky", {})
    first = ApprovalRequest.objects.get()
    governance.decide_approval(first, user=world.alice, decision="approve")
    engine.drain()
    # The approved call ran; the next one, with other arguments, needs its own approval.
    ticket.refresh_from_db()
    assert (ticket.priority, ticket.status) == ("p4", "open")
    second = ApprovalRequest.objects.exclude(pk=first.pk).get()
    assert second.arguments == {"ticket": ticket.pk, "status": "closed"}
    assert second.arguments_digest != first.arguments_digest
    assert step_of(run).status == "waiting"
    governance.decide_approval(second, user=world.alice, decision="reject", comment="not now")
    engine.drain()
    ticket.refresh_from_db()
    assert ticket.status == "open"


def test_policy_escalation_lets_a_person_supply_the_result(world, make_agent, run_agent):
    rules = [
        {
            "when": "turn == 1",
            "tool_calls": [{"tool": "incident.lookup_service", "arguments": {"service": "search"}}],
        },
        {"final": {"answer": "{{ results[0] }}"}, "confidence": 1},
    ]
    make_agent("asker", rules, tools=["incident.lookup_service"])
    add_policy_rule("tool.incident.*", "escalate", escalate_to=world.managers, reason="ask maya")
    run = run_agent("asker", {})
    escalation = Escalation.objects.get()
    assert escalation.reason == "policy" and step_of(run).status == "waiting"
    governance.resolve_escalation(
        escalation, user=world.maya, resolution="take_over", result={"team": "payments"}
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    answer = step_of(run).output["result"]["answer"]
    assert answer == {"ok": True, "result": {"team": "payments"}, "supplied_by": "maya"}


# --- the kill switch ------------------------------------------------------------------------------


def test_kill_switch_between_two_calls_stops_the_step(world, make_agent, run_agent):
    """A tool (standing in for an admin elsewhere) suspends the agent; its next call is refused."""
    rules = [
        {"when": "turn == 1", "tool_calls": [{"tool": "test.suspend_agent", "arguments": {}}]},
        {
            "when": "turn == 2",
            "tool_calls": [{"tool": "ticket.create", "arguments": {"title": "t"}}],
        },
        {"final": {}, "confidence": 1},
    ]
    agent = make_agent(
        "runaway",
        rules,
        tools=["test.suspend_agent", "ticket.create"],
        roles=[world.ticket_writers],
    )
    run = run_agent("runaway", {})
    assert run.status == "failed"
    step = step_of(run)
    assert step.error["type"] == "AgentStopped"
    assert "suspended" in step.error["message"]
    assert Ticket.objects.count() == 0
    assert agent.model_calls.count() == 1  # the second model call was never made


def test_kill_switch_while_waiting_for_approval(world, closer, ticket, run_agent):
    enable("ticket.update", approval_rule=world.approval)
    run = run_agent("closer", {"ticket": ticket.pk})
    services.set_status(closer, AgentStatus.QUARANTINED, actor=SYSTEM, reason="odd behaviour")
    governance.decide_approval(ApprovalRequest.objects.get(), user=world.alice, decision="approve")
    engine.drain()
    run.refresh_from_db()
    ticket.refresh_from_db()
    assert run.status == "failed" and ticket.status == "open"
    assert "quarantined: odd behaviour" in step_of(run).error["message"]
    assert AuditEntry.objects.filter(action="agents.agent.status_changed").count() == 1


def test_a_suspended_agent_is_refused_before_its_first_call(world, closer, ticket, run_agent):
    services.set_status(closer, AgentStatus.SUSPENDED, actor=SYSTEM, reason="holiday")
    run = run_agent("closer", {"ticket": ticket.pk})
    assert run.status == "failed"
    assert closer.model_calls.count() == 0
