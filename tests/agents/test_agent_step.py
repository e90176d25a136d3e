"""The agent step end to end in one process: the loop, the journal, limits, escalations."""

import pytest

from agents import services
from agents.models import Agent, ModelCall, Ticket, ToolInvocation
from agents.tools import ToolContext, tool
from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from governance.models import Escalation
from orchestrator import engine
from orchestrator.models import EffectJournal
from tests.agents.conftest import body_of, step_of

pytestmark = pytest.mark.django_db

OPEN_TICKET = [
    {
        "when": "turn == 1",
        "tool_calls": [{"tool": "ticket.create", "arguments": {"title": "{{ input.title }}"}}],
    },
    {
        "when": "results[0].ok",
        "final": {"ticket": "{{ results[0].result.ticket }}", "severity": "high"},
        "confidence": 0.9,
    },
    {"final": {"failed": "{{ results[0] }}"}, "confidence": 0.9},
]
SCHEMA = {
    "type": "object",
    "required": ["ticket", "severity"],
    "properties": {"ticket": {"type": "integer"}, "severity": {"enum": ["low", "high"]}},
}


def test_an_agent_calls_a_tool_and_gives_a_valid_result(world, make_agent, run_agent):
    agent = make_agent("triage", OPEN_TICKET, tools=["ticket.create"], roles=[world.ticket_writers])
    run = run_agent("triage", {"title": "Checkout is down"}, output_schema=SCHEMA)

    assert run.status == "succeeded", run.error
    output = step_of(run).output
    ticket = Ticket.objects.get()
    assert output["result"] == {"ticket": ticket.pk, "severity": "high"}
    assert output["confidence"] == 0.9 and output["scripted"] is True
    assert output["usage"]["model_calls"] == 2 and output["usage"]["input_tokens"] > 0
    assert ticket.title == "Checkout is down" and ticket.created_by == agent.user
    assert ModelCall.objects.filter(agent=agent).count() == 2
    invocation = ToolInvocation.objects.get()
    assert (invocation.verdict, invocation.stage, invocation.tool) == (
        "allow",
        "policy",
        "ticket.create",
    )
    assert invocation.executed_at is not None and invocation.outcome["ok"] is True
    actions = list(
        AuditEntry.objects.filter(run_id=str(run.pk), action__startswith="agents.")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "agents.memory.namespace_created",
        "agents.memory.access_granted",
        "agents.model.called",
        "agents.tool.decided",
        "agents.tool.called",
        "agents.model.called",
    ]
    model_entry = AuditEntry.objects.filter(action="agents.model.called").first()
    assert model_entry.actor_kind == "agent" and model_entry.actor_name == agent.user.username
    keys = sorted(EffectJournal.objects.filter(run=run).values_list("key", flat=True))
    assert [key.rsplit(":", 1)[1] for key in keys] == [f"call-{n}" for n in range(5)]


def test_a_journaled_loop_replays_without_calling_again(world, make_agent, run_agent):
    from orchestrator import engine
    from orchestrator.models import StepRun

    make_agent("triage", OPEN_TICKET, tools=["ticket.create"], roles=[world.ticket_writers])
    run = run_agent("triage", {"title": "x"}, output_schema=SCHEMA)
    step = step_of(run)
    calls, tickets, journal = ModelCall.objects.count(), Ticket.objects.count(), step.output
    # Run the same step again as if the worker had died before recording the outcome.
    StepRun.objects.filter(pk=step.pk).update(status="ready", output=None, attempt=1)
    run.__class__.objects.filter(pk=run.pk).update(status="running")
    engine.drain()
    step.refresh_from_db()
    assert step.output["result"] == journal["result"]
    assert (ModelCall.objects.count(), Ticket.objects.count()) == (calls, tickets)


# --- invalid answers and low confidence ----------------------------------------------------------


def test_an_invalid_answer_is_sent_back_with_the_error(world, make_agent, run_agent):
    rules = [
        {"when": "invalid == 0", "text": "The severity is high, I am sure."},
        {"when": "invalid == 1", "final": {"severity": "catastrophic"}, "confidence": 1},
        {"final": {"ticket": 1, "severity": "high"}, "confidence": 1},
    ]
    make_agent("learner", rules)
    run = run_agent("learner", {}, output_schema=SCHEMA)
    assert run.status == "succeeded"
    assert step_of(run).output["result"] == {"ticket": 1, "severity": "high"}
    prompts = [
        body_of(entry)["prompt"]
        for entry in AuditEntry.objects.filter(action="agents.model.called").order_by("id")
    ]
    assert "not a JSON object" in prompts[1][-1]["content"]
    assert "'catastrophic' is not one of ['low', 'high']" in prompts[2][-1]["content"]


def test_too_many_invalid_answers_go_to_a_person_who_takes_over(world, make_agent, run_agent):
    make_agent("stubborn", [{"final": {"severity": "??"}, "confidence": 1}])
    run = run_agent("stubborn", {}, output_schema=SCHEMA, max_invalid_answers=1)
    step = step_of(run)
    escalation = Escalation.objects.get()
    assert step.status == "waiting" and step.wait_signal == escalation.signal_name
    assert escalation.reason == "invalid_result" and escalation.role == world.managers
    assert escalation.raised_by.agent.slug == "stubborn"
    governance.resolve_escalation(
        escalation,
        user=world.maya,
        resolution="take_over",
        result={"ticket": 9, "severity": "low"},
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    output = step_of(run).output
    assert output["result"] == {"ticket": 9, "severity": "low"} and output["supplied_by"] == "maya"
    assert ModelCall.objects.count() == 2  # the person's answer cost no model call


def test_low_confidence_is_escalated_and_a_retry_starts_the_work_again(
    world, make_agent, run_agent
):
    rules = [
        {"when": "comments", "final": {"ticket": 2, "severity": "high"}, "confidence": 0.8},
        {"final": {"ticket": 1, "severity": "low"}, "confidence": 0.3},
    ]
    make_agent("unsure", rules, confidence_threshold=0.7)
    run = run_agent("unsure", {}, output_schema=SCHEMA)
    escalation = Escalation.objects.get()
    assert escalation.reason == "low_confidence"
    assert escalation.context["result"] == {"ticket": 1, "severity": "low"}
    governance.resolve_escalation(
        escalation, user=world.maya, resolution="retry", comment="look at the error rate"
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert step_of(run).output["result"] == {"ticket": 2, "severity": "high"}
    keys = set(EffectJournal.objects.filter(run=run).values_list("key", flat=True))
    assert any(key.endswith(":call-1.0") for key in keys), sorted(keys)  # fresh calls
    last_prompt = body_of(AuditEntry.objects.filter(action="agents.model.called").last())["prompt"]
    assert "look at the error rate" in last_prompt[-1]["content"]


def test_a_person_can_stop_the_run_from_an_escalation(world, make_agent, run_agent):
    make_agent("unsure", [{"final": {"ticket": 1, "severity": "low"}, "confidence": 0.1}])
    run = run_agent("unsure", {}, output_schema=SCHEMA)
    governance.resolve_escalation(
        Escalation.objects.get(), user=world.maya, resolution="stop", comment="no"
    )
    engine.drain()
    run.refresh_from_db()
    assert run.status == "cancelled"


# --- limits ---------------------------------------------------------------------------------------

LOOPING = [{"tool_calls": [{"tool": "echo", "arguments": {"again": "{{ turn }}"}}]}]


def test_too_many_model_calls_fail_the_step_with_a_clear_reason(world, make_agent, run_agent):
    make_agent("looper", LOOPING, tools=["echo"], max_steps=4)
    run = run_agent("looper", {})
    assert run.status == "failed"
    error = step_of(run).error
    assert error["type"] == "StepLimitExceeded"
    assert "made 4 model calls in run" in error["message"]
    assert "its limit is 4 per run" in error["message"]
    assert ModelCall.objects.count() == 4 and error["attempt"] == 1  # final, not retried


def test_too_many_tokens_fail_the_step(world, make_agent, run_agent):
    make_agent("chatty", LOOPING, tools=["echo"], max_tokens=300)
    run = run_agent("chatty", {})
    error = step_of(run).error
    assert error["type"] == "TokenLimitExceeded" and "over its limit of 300" in error["message"]
    assert error["usage"]["input_tokens"] + error["usage"]["output_tokens"] > 300


def test_wall_time_is_limited(world, make_agent, run_agent):
    rules = [{"tool_calls": [{"tool": "test.spend_time", "arguments": {"seconds": 400}}]}]
    make_agent("slowpoke", rules, tools=["test.spend_time"], max_wall_seconds=600)
    with clock.frozen() as frozen:
        SPENT.append(frozen)
        run = run_agent("slowpoke", {})
    SPENT.clear()
    error = step_of(run).error
    assert error["type"] == "WallTimeExceeded" and "over its limit of 600s" in error["message"]
    assert ModelCall.objects.count() == 2  # the third call would have started after 800 s


SPENT: list = []


@tool("test.spend_time", schema={"type": "object"}, side_effects=False)
def spend_time(arguments: dict, context: ToolContext) -> dict:
    """Move the frozen clock forward, as a slow tool would take time."""
    SPENT[0].advance(arguments["seconds"])
    return {"spent": arguments["seconds"]}


def test_an_unknown_agent_fails_at_once(world, run_agent):
    from orchestrator import services as workflows

    with pytest.raises(workflows.DefinitionError, match="no agent has the slug"):
        run_agent("ghost", {})


def test_limits_count_the_agent_across_every_step_of_the_run(world, make_agent, make_workflow_with):
    twice = [
        {"when": "turn == 1", "tool_calls": [{"tool": "echo", "arguments": {}}]},
        {"final": {"ok": True}, "confidence": 1},
    ]
    make_agent("worker", twice, tools=["echo"], max_steps=3)
    run = make_workflow_with(
        [
            {"id": "first", "type": "agent", "agent": "worker"},
            {"id": "second", "type": "agent", "agent": "worker", "depends_on": ["first"]},
        ]
    )
    assert step_of(run, "first").status == "succeeded"  # 2 calls: within 3 per run
    error = step_of(run, "second").error
    assert error["type"] == "StepLimitExceeded" and "its limit is 3 per run" in error["message"]
    assert error["run_usage"]["model_calls"] == 3
    assert ModelCall.objects.filter(run_id=run.pk).count() == 3  # the 4th was never made


def test_tokens_are_counted_across_the_run(world, make_agent, make_workflow_with):
    once = [{"final": {"ok": True}, "confidence": 1}]
    make_agent("talker", once, max_tokens=10_000)
    first = make_workflow_with([{"id": "a", "type": "agent", "agent": "talker"}])
    per_call = sum(
        ModelCall.objects.filter(run_id=first.pk).values_list("input_tokens", "output_tokens")[0]
    )
    services.update_agent(
        Agent.objects.get(slug="talker"), actor=SYSTEM, reason="test", max_tokens=per_call * 2 - 1
    )
    run = make_workflow_with(
        [
            {"id": "a", "type": "agent", "agent": "talker"},
            {"id": "b", "type": "agent", "agent": "talker", "depends_on": ["a"]},
        ]
    )
    assert step_of(run, "a").status == "succeeded"
    error = step_of(run, "b").error
    assert error["type"] == "TokenLimitExceeded" and "per run" in error["message"]
