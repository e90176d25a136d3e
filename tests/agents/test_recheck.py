"""An agent's decided call is checked again at the moment it executes.

While its approval waits (or between two attempts of an allowed call) the tool can be switched
off, leave the agent's mandate, the agent's permission on the target can go, and the policy
can change. The call runs only if it would be allowed now; the model is told what changed.
"""

import json

import pytest
from guardian.shortcuts import assign_perm, remove_perm

from agents import services
from agents.models import Tool, ToolInvocation
from audit.models import AuditEntry
from governance import services as governance
from governance.models import ApprovalRequest
from orchestrator import engine
from tests.agents.conftest import add_policy_rule, enable, step_of
from tests.orchestrator import testtools

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
    {
        "final": {
            "closed": False,
            "stage": "{{ results[0].stage }}",
            "why": "{{ results[0].reason }}",
        },
        "confidence": 1,
    },
]


@pytest.fixture
def ticket(world):
    return services.create_ticket(title="Disk full on db-1", actor=None)


@pytest.fixture
def closer(world, make_agent, ticket):
    agent = make_agent("closer", CLOSE_TICKET, tools=["ticket.update"])
    assign_perm("agents.change_ticket", agent.user, ticket)
    assign_perm("agents.view_ticket", agent.user, ticket)
    return agent


@pytest.fixture
def waiting(world, closer, ticket, run_agent):
    """The closer's call waits for an approval (the tool's own rule)."""
    enable("ticket.update", approval_rule=world.approval)
    run = run_agent("closer", {"ticket": ticket.pk})
    assert step_of(run).status == "waiting"
    return run


def approve(world, run):
    """Alice approves the waiting call; the engine resumes; return the agent's result."""
    governance.decide_approval(ApprovalRequest.objects.get(), user=world.alice, decision="approve")
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    return step_of(run).output["result"]


def assert_not_run(ticket, result, *, stage: str, says: str) -> None:
    """The call did not run; the model was told what changed; the refusal is audited."""
    ticket.refresh_from_db()
    assert ticket.status == "open"
    assert result["closed"] is False and result["stage"] == stage
    assert says in result["why"], result["why"]
    invocation = ToolInvocation.objects.get(tool="ticket.update")
    assert invocation.executed_at is None and invocation.outcome["reason"] == result["why"]
    refused = AuditEntry.objects.get(action="agents.tool.refused")
    assert json.loads(refused.decision)["stage"] == stage
    assert not AuditEntry.objects.filter(action="agents.tool.called").exists()


def test_a_tool_disabled_while_the_approval_waits_does_not_run(world, ticket, waiting):
    tool = Tool.objects.get(name="ticket.update")
    services.update_tool(tool, actor=None, reason="incident", enabled=False)
    result = approve(world, waiting)
    assert_not_run(ticket, result, stage="disabled", says="tool 'ticket.update' was disabled since")


def test_a_tool_removed_from_the_mandate_while_the_approval_waits_does_not_run(
    world, closer, ticket, waiting
):
    services.set_tools(closer, [], actor=None, reason="no more ticket changes")
    result = approve(world, waiting)
    assert_not_run(
        ticket, result, stage="mandate", says="'ticket.update' was removed from closer's tools"
    )


def test_a_permission_withdrawn_while_the_approval_waits_refuses_the_call(
    world, closer, ticket, waiting
):
    remove_perm("agents.change_ticket", closer.user, ticket)
    result = approve(world, waiting)
    assert_not_run(
        ticket,
        result,
        stage="permission",
        says=f"closer may not change ticket {ticket.pk} any more",
    )


def test_a_policy_that_now_denies_refuses_the_approved_call(world, ticket, waiting):
    denial = add_policy_rule("tool.ticket.update", "deny", reason="change freeze")
    result = approve(world, waiting)
    assert_not_run(
        ticket,
        result,
        stage="policy",
        says=f"the policy now denies it: policy '{denial.policy.slug}' v{denial.version}, "
        f"rule {denial.pk}",
    )


def test_an_approval_still_matching_under_the_same_verdict_runs(world, ticket, waiting):
    add_policy_rule("tool.ticket.comment", "deny", reason="another tool")  # the policy changed
    assert approve(world, waiting) == {"closed": True}
    ticket.refresh_from_db()
    assert ticket.status == "closed"


def test_an_allowed_call_is_checked_again_on_the_steps_next_attempt(world, make_agent, run_agent):
    rules = [
        {
            "when": "turn == 1",
            "tool_calls": [{"tool": "test.flaky", "arguments": {"fail_times": 1}}],
        },
        {"final": {"outcome": "{{ results[0] }}"}, "confidence": 1},
    ]
    make_agent("retrier", rules, tools=["test.flaky"])
    testtools.FLAKY_FAILURES.clear()
    testtools.CALLS.clear()
    run = run_agent("retrier", {}, retry={"max_attempts": 3, "initial_interval": 0}, drain=False)
    engine.run_step(step_of(run).pk)  # attempt 1: allowed, the tool fails, a retry is due
    assert step_of(run).status == "ready" and len(testtools.CALLS) == 1
    services.update_tool(
        Tool.objects.get(name="test.flaky"), actor=None, reason="incident", enabled=False
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    outcome = step_of(run).output["result"]["outcome"]
    assert outcome["refused"] is True and outcome["stage"] == "disabled"
    assert "tool 'test.flaky' was disabled since the call was decided" in outcome["reason"]
    assert len(testtools.CALLS) == 1
