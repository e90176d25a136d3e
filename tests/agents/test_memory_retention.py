"""Memory values reach records only by digest, or in audit bodies that their purge erases."""

import json

import pytest

from agents import services
from agents.models import MemoryValueCopy, ToolInvocation
from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditBody, AuditEntry
from governance import services as governance
from governance.actions.common import digest
from governance.models import ApprovalRequest
from orchestrator import engine
from orchestrator.models import EffectJournal
from tests.agents.conftest import enable, step_of

pytestmark = pytest.mark.django_db

# Made by the model from two parts, so only its memory write and what follows hold it whole.
PARTS = {"a": "patient-7731", "b": "diagnosis"}
SECRET = "patient-7731-diagnosis"

RULES = [
    {
        "when": "turn == 1",
        "tool_calls": [
            {
                "tool": "memory.write",
                "arguments": {
                    "namespace": "cases",
                    "key": "finding",
                    "value": {"note": "{{ input.a + '-' + input.b }}"},
                    "expected_version": 0,
                },
            }
        ],
    },
    {
        "when": "turn == 2",
        "tool_calls": [
            {"tool": "memory.read", "arguments": {"namespace": "cases", "key": "finding"}}
        ],
    },
    {"when": "turn == 3", "tool_calls": [{"tool": "echo", "arguments": {}}]},
    {
        "final": {"matches": "{{ history[1].result.value.note == input.a + '-' + input.b }}"},
        "confidence": 1,
    },
]
# The same conversation, ending in an answer that does not need the value: a step that resumes
# after the purge gets the erasure notice instead of it.
RULES_ENDING_WITHOUT_THE_VALUE = [*RULES[:3], {"final": {"done": True}, "confidence": 1}]


def _holders() -> dict[str, list]:
    """Return every record of the kinds the purge answers for that still holds the value."""
    return {
        "audit bodies": [
            body.entry_id for body in AuditBody.objects.filter(content__contains=SECRET)
        ],
        "tool invocations": [
            row.pk
            for row in ToolInvocation.objects.all()
            if SECRET in json.dumps([row.arguments, row.outcome])
        ],
        "held copies": [
            copy.pk for copy in MemoryValueCopy.objects.all() if SECRET in json.dumps(copy.value)
        ],
        "tool journals": [
            row.key
            for row in EffectJournal.objects.exclude(name__startswith="model:")
            if SECRET in json.dumps([row.request, row.result])
        ],
        "model journals": _model_journals_holding(),
    }


def _model_journals_holding() -> list[str]:
    """Return the keys of the engine's model-call journal rows that hold the value."""
    return [
        row.key
        for row in EffectJournal.objects.filter(name__startswith="model:")
        if SECRET in json.dumps([row.request, row.result])
    ]


def test_a_purge_leaves_the_value_nowhere_and_erases_the_prompts_that_held_it(
    world, make_agent, run_agent
):
    agent = make_agent("scribe", RULES, tools=["memory.read", "memory.write", "echo"])
    cases = services.create_namespace(
        slug="cases", name="Cases", retention_seconds=600, actor=SYSTEM
    )
    services.grant_access(cases, agent, read=True, write=True, actor=SYSTEM)
    with clock.frozen() as frozen:
        run = run_agent("scribe", PARTS)
        assert run.status == "succeeded", run.error
        assert step_of(run).output["result"] == {"matches": True}  # the model did read it

        holders = _holders()
        # Tool records never held it: only digests and references.
        assert holders["tool invocations"] == [] and holders["tool journals"] == []
        assert holders["held copies"] != []
        # The engine's journal of the call that proposed the write holds the model's response.
        assert holders["model journals"] != []
        journal_before = {
            row.key: digest([row.request, row.result])
            for row in EffectJournal.objects.filter(key__in=holders["model journals"])
        }
        # The model calls after the write hold it in full (response, then prompts).
        model_calls = set(
            AuditEntry.objects.filter(action="agents.model.called").values_list("pk", flat=True)
        )
        assert set(holders["audit bodies"]) <= model_calls and len(holders["audit bodies"]) == 4

        frozen.advance(601)
        result = services.purge_expired(actor=SYSTEM)

    assert result["purged"] == 1
    assert _holders() == {
        "audit bodies": [],
        "tool invocations": [],
        "held copies": [],
        "tool journals": [],
        "model journals": [],
    }
    # Every model journal of the finished run whose call held the value is now a marker that
    # still proves what was there; the others are untouched.
    for row in EffectJournal.objects.filter(name__startswith="model:"):
        if row.result.get("redacted"):
            assert row.request["redacted"] == "memory retention"
            assert row.result == {"redacted": "memory retention", "sha256": row.result["sha256"]}
        else:
            assert "audit_entry" in row.result
    redacted = EffectJournal.objects.filter(result__redacted="memory retention")
    assert redacted.count() == 4  # the four model calls whose audit bodies were erased
    assert set(journal_before) <= set(redacted.values_list("key", flat=True))
    erased = AuditBody.objects.filter(entry_id__in=holders["audit bodies"])
    assert all(body.content is None and body.erasure_entry_id for body in erased)
    erasures = AuditEntry.objects.filter(action="audit.body_erased")
    assert erasures.count() == 4
    assert "memory retention: cases/finding" in erasures.first().body_row.content
    purge = json.loads(AuditEntry.objects.get(action="agents.memory.purged").body_row.content)
    assert purge["audit_bodies_erased"] == 4 and purge["held_copies_erased"] == 1
    assert purge["journal_rows_redacted"] == 4
    assert MemoryValueCopy.objects.filter(erased_at__isnull=True).count() == 0


def test_a_legal_hold_keeps_the_copies_too(world, make_agent, run_agent):
    agent = make_agent("scribe", RULES, tools=["memory.read", "memory.write", "echo"])
    cases = services.create_namespace(
        slug="cases", name="Cases", retention_seconds=600, actor=SYSTEM
    )
    services.grant_access(cases, agent, read=True, write=True, actor=SYSTEM)
    with clock.frozen() as frozen:
        run_agent("scribe", PARTS)
        services.set_legal_hold(cases, True, actor=SYSTEM, reason="litigation")
        frozen.advance(601)
        assert services.purge_expired(actor=SYSTEM)["copies_erased"] == 0
    assert len(_holders()["audit bodies"]) == 4


def test_an_unfinished_steps_journal_is_kept_and_redacted_by_a_later_purge(
    world, make_agent, run_agent
):
    agent = make_agent(
        "scribe", RULES_ENDING_WITHOUT_THE_VALUE, tools=["memory.read", "memory.write", "echo"]
    )
    enable("echo", approval_rule=world.approval)  # the step waits after it read the value
    cases = services.create_namespace(
        slug="cases", name="Cases", retention_seconds=600, actor=SYSTEM
    )
    services.grant_access(cases, agent, read=True, write=True, actor=SYSTEM)
    with clock.frozen() as frozen:
        run = run_agent("scribe", PARTS)
        assert step_of(run).status == "waiting"
        held_by_journal = _model_journals_holding()
        assert held_by_journal != []

        frozen.advance(601)
        first = services.purge_expired(actor=SYSTEM)
        # The audit bodies go at once; the waiting step still resumes from its journal.
        assert first["purged"] == 1
        assert _holders()["audit bodies"] == []
        assert _model_journals_holding() == held_by_journal
        purge = json.loads(AuditEntry.objects.get(action="agents.memory.purged").body_row.content)
        assert purge["journal_rows_redacted"] == 0
        assert purge["journal_rows_kept_for_unfinished_steps"] == 3

        # Purging again while the step still waits changes nothing and audits nothing new.
        assert services.purge_expired(actor=SYSTEM) == {"purged": 0, "held": 0, "copies_erased": 0}
        assert AuditEntry.objects.filter(action="agents.memory.purged").count() == 1
        assert _model_journals_holding() == held_by_journal

        governance.decide_approval(
            ApprovalRequest.objects.get(), user=world.alice, decision="approve"
        )
        engine.drain()  # replays the kept journal, so the step finishes as it would have
        run.refresh_from_db()
        assert run.status == "succeeded", run.error

        later = services.purge_expired(actor=SYSTEM)

    assert later["purged"] == 0
    assert _holders() == {
        "audit bodies": [],
        "tool invocations": [],
        "held copies": [],
        "tool journals": [],
        "model journals": [],
    }
    assert MemoryValueCopy.objects.filter(erased_at__isnull=True).count() == 0
    assert not any(
        "memory retention" in json.dumps(row.result)
        for row in EffectJournal.objects.exclude(name__startswith="model:")
    )
    latest = AuditEntry.objects.filter(action="agents.memory.purged").order_by("-pk").first()
    # The three kept calls, and the one after the wait (noted: its prompt followed the read).
    assert json.loads(latest.body_row.content)["journal_rows_redacted"] == 4
    assert json.loads(latest.body_row.content)["journal_rows_kept_for_unfinished_steps"] == 0
