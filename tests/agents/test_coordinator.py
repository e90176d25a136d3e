"""A coordinator delegating to specialised agents: children in parallel, retried, aggregated."""

import pytest

from agents import services
from agents.models import ToolInvocation
from audit.actors import SYSTEM
from orchestrator.models import EventKind, RunEvent, StepRun
from tests.agents.conftest import step_of

pytestmark = pytest.mark.django_db

COORDINATOR = [
    {
        "when": "turn == 1",
        "tool_calls": [
            {
                "tool": "delegate",
                "arguments": {"agent": "triage", "task": {"incident": "{{ input.incident }}"}},
            },
            {
                "tool": "delegate",
                "arguments": {"agent": "remediate", "task": {"service": "checkout"}},
            },
            {
                "tool": "delegate",
                "arguments": {"agent": "comms", "task": {"incident": "{{ input.incident }}"}},
            },
        ],
    },
    {
        "final": {
            "severity": "{{ results[0].result.severity }}",
            "restarted": "{{ results[1].result.restarted }}",
            "update": "{{ results[2].result.message }}",
            "ok": "{{ results | map(attribute='ok') | list }}",
        },
        "confidence": 0.95,
    },
]
TRIAGE = [{"final": {"severity": "sev1"}, "confidence": 0.9}]
REMEDIATE = [
    {
        "when": "turn == 1",
        "tool_calls": [
            {
                "tool": "incident.restart_service",
                "arguments": {"service": "{{ input.service }}", "hosts": ["checkout-2"]},
            }
        ],
    },
    {"final": {"restarted": "{{ results[0].result.restarted }}"}, "confidence": 0.9},
]
COMMS = [{"final": {"message": "We are on it: {{ input.incident }}"}, "confidence": 0.9}]
RETRY = {"max_attempts": 3, "initial_interval": 0}


@pytest.fixture
def team(world, make_agent):
    triage = make_agent("triage", TRIAGE)
    remediate = make_agent("remediate", REMEDIATE, tools=["incident.restart_service"])
    comms = make_agent("comms", COMMS)
    coordinator = make_agent(
        "coordinator", COORDINATOR, tools=["delegate"], delegates=[triage, remediate, comms]
    )
    return coordinator


def test_three_delegates_run_in_parallel_one_fails_and_is_retried(team, run_agent, published):
    run = run_agent("coordinator", {"incident": "INC-7"}, retry=RETRY, drain=False)
    from orchestrator import engine

    engine.drain(max_steps=1)  # the coordinator's first execution only
    parent = step_of(run)
    children = list(StepRun.objects.filter(run=run, parent=parent).order_by("item_index"))
    assert parent.status == "waiting" and len(children) == 3
    assert [child.item["agent"] for child in children] == ["triage", "remediate", "comms"]
    assert {child.pk for child in children} <= set(published)  # all three dispatched at once
    assert all(child.status == "ready" for child in children)

    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    children = list(StepRun.objects.filter(run=run, parent=parent).order_by("item_index"))
    assert [child.attempt for child in children] == [1, 2, 1]  # remediate failed once
    assert (
        RunEvent.objects.filter(step_run=children[1], kind=EventKind.RETRY_SCHEDULED).count() == 1
    )
    result = step_of(run).output["result"]
    assert result == {
        "severity": "sev1",
        "restarted": ["checkout-2"],
        "update": "We are on it: INC-7",
        "ok": [True, True, True],
    }
    # The restart was decided once (journaled) although the child ran twice.
    assert ToolInvocation.objects.filter(tool="incident.restart_service").count() == 1


def test_a_delegate_failing_for_good_is_reported_to_the_coordinator(world, make_agent, run_agent):
    broken = make_agent("broken", [{"text": "not JSON at all"}], max_steps=1)
    helper = make_agent("helper", [{"final": {"fine": True}, "confidence": 1}])
    rules = [
        {
            "when": "turn == 1",
            "tool_calls": [
                {"tool": "delegate", "arguments": {"agent": "broken", "task": {}}},
                {"tool": "delegate", "arguments": {"agent": "helper", "task": {}}},
            ],
        },
        {"final": {"outcomes": "{{ results }}"}, "confidence": 1},
    ]
    make_agent("boss", rules, tools=["delegate"], delegates=[broken, helper])
    run = run_agent("boss", {}, retry=RETRY)
    assert run.status == "succeeded", run.error
    broken_outcome, helper_outcome = step_of(run).output["result"]["outcomes"]
    assert broken_outcome["ok"] is False and broken_outcome["error"] == "StepLimitExceeded"
    assert broken_outcome["attempts"] == 1  # a limit is final: not retried
    assert helper_outcome == {
        "ok": True,
        "agent": "helper",
        "result": {"fine": True},
        "confidence": 1,
    }


def test_a_coordinator_cannot_delegate_outside_its_list(world, make_agent, run_agent):
    insider = make_agent("insider", [{"final": {}, "confidence": 1}])
    make_agent("outsider-agent", [{"final": {"secret": 1}, "confidence": 1}])
    rules = [
        {
            "when": "turn == 1",
            "tool_calls": [
                {"tool": "delegate", "arguments": {"agent": "outsider-agent", "task": {}}},
                {"tool": "delegate", "arguments": {"agent": "nobody", "task": {}}},
            ],
        },
        {"final": {"outcomes": "{{ results }}"}, "confidence": 1},
    ]
    make_agent("limited", rules, tools=["delegate"], delegates=[insider])
    run = run_agent("limited", {})
    outcomes = step_of(run).output["result"]["outcomes"]
    assert [o["stage"] for o in outcomes] == ["permission", "permission"]
    assert "may not delegate to outsider-agent" in outcomes[0]["reason"]
    assert not StepRun.objects.filter(run=run).exclude(item_index=-1).exists()


def test_delegates_are_set_through_the_service_and_never_to_itself(world, make_agent):
    agent = make_agent("solo", [{"final": {}, "confidence": 1}])
    with pytest.raises(services.AgentError):
        services.set_delegates(agent, [agent], actor=SYSTEM, reason="loop")
