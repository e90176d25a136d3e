"""Memory values reach records only by digest, or in audit bodies that their purge erases."""

import json

import pytest

from agents import services
from agents.models import MemoryValueCopy, ToolInvocation
from audit import clock
from audit.models import AuditBody, AuditEntry
from orchestrator.models import EffectJournal
from tests.agents.conftest import step_of

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
    }


def test_a_purge_leaves_the_value_nowhere_and_erases_the_prompts_that_held_it(
    world, make_agent, run_agent
):
    agent = make_agent("scribe", RULES, tools=["memory.read", "memory.write", "echo"])
    cases = services.create_namespace(slug="cases", name="Cases", retention_seconds=600)
    services.grant_access(cases, agent, read=True, write=True)
    with clock.frozen() as frozen:
        run = run_agent("scribe", PARTS)
        assert run.status == "succeeded", run.error
        assert step_of(run).output["result"] == {"matches": True}  # the model did read it

        holders = _holders()
        # Tool records never held it: only digests and references.
        assert holders["tool invocations"] == [] and holders["tool journals"] == []
        assert holders["held copies"] != []
        # The model calls after the write hold it in full (response, then prompts).
        model_calls = set(
            AuditEntry.objects.filter(action="agents.model.called").values_list("pk", flat=True)
        )
        assert set(holders["audit bodies"]) <= model_calls and len(holders["audit bodies"]) == 4

        frozen.advance(601)
        result = services.purge_expired()

    assert result["purged"] == 1
    assert _holders() == {
        "audit bodies": [],
        "tool invocations": [],
        "held copies": [],
        "tool journals": [],
    }
    erased = AuditBody.objects.filter(entry_id__in=holders["audit bodies"])
    assert all(body.content is None and body.erasure_entry_id for body in erased)
    erasures = AuditEntry.objects.filter(action="audit.body_erased")
    assert erasures.count() == 4
    assert "memory retention: cases/finding" in erasures.first().body_row.content
    purge = json.loads(AuditEntry.objects.get(action="agents.memory.purged").body_row.content)
    assert purge["audit_bodies_erased"] == 4 and purge["held_copies_erased"] == 1


def test_a_legal_hold_keeps_the_copies_too(world, make_agent, run_agent):
    agent = make_agent("scribe", RULES, tools=["memory.read", "memory.write", "echo"])
    cases = services.create_namespace(slug="cases", name="Cases", retention_seconds=600)
    services.grant_access(cases, agent, read=True, write=True)
    with clock.frozen() as frozen:
        run_agent("scribe", PARTS)
        services.set_legal_hold(cases, True, actor=None, reason="litigation")
        frozen.advance(601)
        assert services.purge_expired()["copies_erased"] == 0
    assert len(_holders()["audit bodies"]) == 4
