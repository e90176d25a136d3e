"""Corrections: delegates audited at creation, a tool's approval rule on top of a policy's,
scripted confidence declared, racing first memory writes, and expired entries re-written."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection
from guardian.shortcuts import assign_perm

from agents import services
from agents.actions import memory
from agents.models import MemoryEntry, Tool
from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from governance.models import ApprovalRequest
from orchestrator import engine
from tests.agents.conftest import add_policy_rule, body_of, enable, step_of

RULES = [{"final": {}, "confidence": 1}]


# --- delegates ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_delegates_given_at_creation_are_audited_and_never_the_agent_itself(world, make_agent):
    first = make_agent("first", RULES)
    second = make_agent("second", RULES)
    lead = make_agent("lead", RULES, tools=["delegate"], delegates=[first, second])
    assert set(lead.delegates.all()) == {first, second}
    entry = AuditEntry.objects.get(action="agents.agent.delegates_changed")
    assert body_of(entry)["delegates"] == ["first", "second"]
    assert entry.target_id == str(lead.pk)
    with pytest.raises(services.AgentError, match="itself"):
        services.set_delegates(lead, [first, lead], actor=SYSTEM, reason="loop")
    assert set(lead.delegates.all()) == {first, second}


# --- a tool's approval rule on top of a policy's -------------------------------------------------

CLOSE = [
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
def two_rules(world, make_agent):
    """A policy asks Managers to approve ticket updates; the tool's own rule asks Approvers."""
    for perm in (
        "governance.view_approvalrequest",
        "governance.decide_approvalrequest",
        "agents.view_ticket",
    ):
        governance.grant(world.managers, perm, actor=SYSTEM)
    managers_rule = governance.create_approval_rule(
        slug="managers",
        name="Managers approve",
        role=world.managers,
        actor=SYSTEM,
    )
    add_policy_rule(
        "tool.ticket.update", "require_approval", approval_rule=managers_rule, reason="managers"
    )
    ticket = services.create_ticket(title="Disk full", actor=SYSTEM)
    agent = make_agent("closer", CLOSE, tools=["ticket.update"])
    assign_perm("agents.change_ticket", agent.user, ticket)
    enable("ticket.update", approval_rule=world.approval)
    return ticket, managers_rule


@pytest.mark.django_db
def test_the_tools_approval_rule_applies_on_top_of_a_policy_rule(world, two_rules, run_agent):
    ticket, managers_rule = two_rules
    run = run_agent("closer", {"ticket": ticket.pk})
    requests = list(ApprovalRequest.objects.order_by("id"))
    assert [r.approval_rule for r in requests] == [managers_rule, world.approval]
    assert len({r.arguments_digest for r in requests}) == 1
    governance.decide_approval(requests[0], user=world.maya, decision="approve")
    engine.drain()
    run.refresh_from_db()
    ticket.refresh_from_db()
    assert step_of(run).status == "waiting" and ticket.status == "open"  # one of two
    governance.decide_approval(requests[1], user=world.alice, decision="approve")
    engine.drain()
    run.refresh_from_db()
    ticket.refresh_from_db()
    assert run.status == "succeeded", run.error
    assert ticket.status == "closed" and step_of(run).output["result"] == {"closed": True}
    decided = AuditEntry.objects.get(action="agents.tool.decided")
    assert body_of(decided)["approval_requests"] == [r.pk for r in requests]


@pytest.mark.django_db
def test_either_rejection_refuses_the_call(world, two_rules, run_agent):
    ticket, _ = two_rules
    run = run_agent("closer", {"ticket": ticket.pk})
    policy_request, tool_request = ApprovalRequest.objects.order_by("id")
    governance.decide_approval(
        tool_request, user=world.bob, decision="reject", comment="wrong amount"
    )
    engine.drain()
    run.refresh_from_db()
    ticket.refresh_from_db()
    assert run.status == "succeeded" and ticket.status == "open"
    assert f"#{tool_request.pk} was rejected" in step_of(run).output["result"]["why"]
    policy_request.refresh_from_db()
    assert policy_request.status == "cancelled"  # no longer needed: the call was refused


@pytest.mark.django_db
def test_the_same_rule_from_policy_and_tool_asks_once(world, make_agent, run_agent):
    add_policy_rule(
        "tool.ticket.update", "require_approval", approval_rule=world.approval, reason="same"
    )
    ticket = services.create_ticket(title="Once", actor=SYSTEM)
    agent = make_agent("closer", CLOSE, tools=["ticket.update"])
    assign_perm("agents.change_ticket", agent.user, ticket)
    enable("ticket.update", approval_rule=world.approval)
    run_agent("closer", {"ticket": ticket.pk})
    assert ApprovalRequest.objects.count() == 1
    assert Tool.objects.get(name="ticket.update").approval_rule == world.approval


# --- scripted confidence -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_scripted_final_answer_must_declare_its_confidence(world, make_agent):
    problems = services.script_problems({"rules": [{"final": {"ok": True}}]})
    assert problems == [
        "rules/0: a final answer must state its confidence (0 to 1); it is compared with the "
        "agent's threshold"
    ]
    assert services.script_problems(
        {"rules": [{"tool_calls": [{"tool": "echo"}], "confidence": 0.5}]}
    ) == ["rules/0: only a final answer has a confidence"]
    with pytest.raises(services.AgentError, match="confidence"):
        make_agent("vague", [{"final": {"ok": True}}])
    assert services.script_problems({"rules": [{"final": {"ok": True}, "confidence": 0.4}]}) == []


# --- memory ------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_first_writes_at_once_are_one_write_and_one_conflict(world, monkeypatch):
    namespace = services.create_namespace(slug="race-first", name="Race", actor=SYSTEM)
    original = memory._insert_first
    rival_outcome = []

    def rival_writes_first(*args, **kwargs):
        """The rival's whole write commits after we found no entry and before we insert."""
        monkeypatch.setattr(memory, "_insert_first", original)

        def rival():
            try:
                services.write_entry(namespace, "k", "rival", expected_version=0, user=SYSTEM)
                rival_outcome.append("won")
            finally:
                connection.close()

        thread = threading.Thread(target=rival)
        thread.start()
        thread.join()
        return original(*args, **kwargs)

    monkeypatch.setattr(memory, "_insert_first", rival_writes_first)
    with pytest.raises(services.MemoryConflict) as caught:
        services.write_entry(namespace, "k", "mine", expected_version=0, user=SYSTEM)
    assert rival_outcome == ["won"]
    assert caught.value.details["current_version"] == 1
    entry = MemoryEntry.objects.get(namespace=namespace, key="k")
    assert (entry.value, entry.version) == ("rival", 1)
    conflict = AuditEntry.objects.get(action="agents.memory.conflict")
    assert body_of(conflict)["expected_version"] == 0


@pytest.mark.django_db
def test_an_expired_entry_not_yet_purged_is_written_as_a_new_key(world):
    namespace = services.create_namespace(
        slug="short", name="Short", retention_seconds=60, actor=SYSTEM
    )
    start = clock.now()
    services.write_entry(namespace, "k", "old", expected_version=0, user=SYSTEM, now=start)
    services.write_entry(namespace, "k", "older", expected_version=1, user=SYSTEM, now=start)
    later = start + dt.timedelta(seconds=120)
    read = services.read_entry(namespace, "k", user=SYSTEM, now=later)
    assert (read["found"], read["version"]) == (False, 0)
    written = services.write_entry(
        namespace, "k", "new", expected_version=0, user=SYSTEM, now=later
    )
    assert written["version"] == 1
    entry = MemoryEntry.objects.get(namespace=namespace, key="k")
    assert (entry.value, entry.version) == ("new", 1)
    assert entry.expires_at == later + dt.timedelta(seconds=60)


@pytest.mark.django_db
def test_under_a_legal_hold_an_expired_entry_keeps_its_version(world):
    namespace = services.create_namespace(
        slug="held", name="Held", retention_seconds=60, actor=SYSTEM
    )
    start = clock.now()
    services.write_entry(namespace, "k", "kept", expected_version=0, user=SYSTEM, now=start)
    services.set_legal_hold(namespace, True, actor=SYSTEM, reason="litigation")
    later = start + dt.timedelta(seconds=120)
    read = services.read_entry(namespace, "k", user=SYSTEM, now=later)
    assert (read["found"], read["version"], read["value"]) == (True, 1, "kept")
    with pytest.raises(services.MemoryConflict):
        services.write_entry(namespace, "k", "x", expected_version=0, user=SYSTEM, now=later)
    assert (
        services.write_entry(namespace, "k", "y", expected_version=1, user=SYSTEM, now=later)[
            "version"
        ]
        == 2
    )
