"""What the engine cannot store is refused where it enters, or fails the attempt with the reason.

Run inputs and signal payloads are refused with what is wrong and where; a tool's result that
cannot be stored is journaled as its SHA-256 and the reason, so no retry runs the tool again;
an output or an error the engine cannot record ends the attempt with that reason instead of
an exception from the database and a lease left to expire.
"""

from __future__ import annotations

import pytest

from agents.tools import ToolContext, tool
from audit import clock, limits
from audit.actors import SYSTEM
from orchestrator import engine, services
from orchestrator.engine import EngineError, InvalidInput
from orchestrator.models import EffectJournal, EventKind, RunEvent, RunSignal, StepRun, WorkflowRun
from orchestrator.steptypes import StepType, register_step_type

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

RAN: list[str] = []
RETURNS: dict[str, object] = {}

deep: list = []
_cursor = deep
for _ in range(5000):
    _cursor.append([])
    _cursor = _cursor[0]

HOSTILE = [
    ({"text": "a\x00b"}, "input.text holds a NUL character (U+0000) at position 1"),
    ({"score": float("nan")}, "input.score is NaN"),
    ({"limit": float("inf")}, "input.limit is Infinity"),
    ({"id": 2**53}, "input.id is an integer of 16 digits, beyond ±(2^53-1)"),
    ({"name": "\ud83d"}, "input.name holds an unpaired surrogate (U+D83D)"),
    ({"k\x00": 1}, "(the key) holds a NUL character"),
    ({"tree": deep}, "is nested deeper than 64 levels"),
]
IDS = ["nul", "nan", "infinity", "int", "surrogate", "key", "depth"]


@tool("test.unstorable_result", schema={"type": "object"}, side_effects=True)
def unstorable_result(arguments: dict, context: ToolContext) -> object:
    """An effect (counted) whose result the test chooses."""
    RAN.append(context.idempotency_key)
    return RETURNS["value"]


class Emit(StepType):
    """A test step type: writes a signal row (to show it is undone), then returns the value."""

    name = "test_emit"
    fields = {"kind": {"type": "string"}}

    def execute(self, ctx):
        RunSignal.objects.create(run=ctx.run, name="emitted", payload={}, received_at=clock.now())
        if ctx.spec.get("kind") == "fail":
            return ctx.fail("Broken", RETURNS["value"], retryable=False)
        return ctx.complete(RETURNS["value"])


register_step_type(Emit())


@pytest.fixture(autouse=True)
def _clean():
    RAN.clear()
    RETURNS.clear()


@pytest.mark.parametrize("value, named", HOSTILE, ids=IDS)
def test_a_run_input_that_cannot_be_stored_is_refused_naming_it(make_workflow, value, named):
    wf = make_workflow({"steps": [{"id": "a", "type": "noop"}]})
    with pytest.raises(InvalidInput) as refused:
        services.start_run(wf, value, started_by=SYSTEM)
    assert named in str(refused.value)
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("business_key", "b" * 201, "business key is 201 characters long, over the limit of 200"),
        ("business_key", "a\x00", "business key holds a NUL character"),
        ("idempotency_key", "\x00", "idempotency key holds a NUL character"),
        ("request_id", "r" * 65, "request id is 65 characters long"),
    ],
)
def test_the_keys_of_a_run_are_refused_naming_what_is_wrong(make_workflow, field, value, named):
    wf = make_workflow({"steps": [{"id": "a", "type": "noop"}]})
    with pytest.raises(EngineError, match=named):
        services.start_run(wf, {}, started_by=SYSTEM, **{field: value})
    assert not WorkflowRun.objects.exists()


@pytest.mark.parametrize("value, named", HOSTILE, ids=IDS)
def test_a_signal_payload_that_cannot_be_stored_is_refused(make_workflow, value, named):
    wf = make_workflow({"steps": [{"id": "w", "type": "wait", "signal": "go"}]})
    run = services.start_run(wf, started_by=SYSTEM)
    engine.drain()
    with pytest.raises(EngineError) as refused:
        services.send_signal(run, "go", value, sent_by=SYSTEM)
    assert named.replace("input", "payload") in str(refused.value)
    assert not RunSignal.objects.exists()
    assert StepRun.objects.get(run=run).status == "waiting"
    # The run still takes a good one.
    services.send_signal(run, "go", {"fine": True}, sent_by=SYSTEM)
    assert StepRun.objects.get(run=run).status == "succeeded"


@pytest.mark.parametrize("name", ["n" * 201, "go\x00"])
def test_a_signal_name_that_cannot_be_stored_is_refused(make_workflow, name):
    wf = make_workflow({"steps": [{"id": "w", "type": "wait", "signal": "go"}]})
    run = services.start_run(wf, started_by=SYSTEM)
    with pytest.raises(EngineError, match="the signal's name"):
        services.send_signal(run, name, {}, sent_by=SYSTEM)
    assert not RunSignal.objects.exists()


@pytest.mark.parametrize(
    "value, named",
    [
        ({"page": "x\x00y"}, "result.page holds a NUL character"),
        ({"score": float("-inf")}, "result.score is -Infinity"),
        ([2**63], "result[0] is an integer of 19 digits"),
        ({"text": "\udc00"}, "result.text holds an unpaired surrogate"),
        ({"when": object()}, "result.when is of type object, not a JSON value"),
        ({limits.UNSTORABLE_MARKER: {"reason": "forged", "sha256": "0" * 64}}, "mimics"),
    ],
    ids=["nul", "infinity", "int", "surrogate", "object", "forged-marker"],
)
def test_a_tool_step_result_that_cannot_be_stored_is_journaled_and_never_repeated(
    make_workflow, value, named
):
    RETURNS["value"] = value
    wf = make_workflow(
        {
            "steps": [
                {
                    "id": "call",
                    "type": "tool",
                    "tool": "test.unstorable_result",
                    "retry": {"max_attempts": 3, "initial_interval": 0},
                }
            ]
        }
    )
    run = services.start_run(wf, started_by=SYSTEM)
    engine.drain()
    step = StepRun.objects.get(run=run)
    assert step.status == "failed" and step.attempt == 1  # not retried: it would fail the same
    assert step.error["type"] == "ResultNotStorable" and named in step.error["message"]
    assert "it is not run again" in step.error["message"]
    journaled = EffectJournal.objects.get(step_run=step, name="test.unstorable_result")
    marker = limits.marked_unstorable(journaled.result)
    assert marker is not None and len(marker["sha256"]) == 64
    # Retried: the journal answers, the tool does not run.
    services.retry_step(step, actor=SYSTEM)
    engine.drain()
    step.refresh_from_db()
    assert step.status == "failed" and step.error["type"] == "ResultNotStorable"
    assert RunEvent.objects.filter(step_run=step, kind=EventKind.STEP_FAILED).count() == 2
    assert len(RAN) == 1


@pytest.mark.parametrize(
    "value, named",
    [
        ({"x": "a\x00"}, "output.x holds a NUL character"),
        ({"x": float("nan")}, "output.x is NaN"),
        ({"x": [2**60]}, "output.x[0] is an integer"),
    ],
)
def test_an_output_the_engine_cannot_store_fails_the_attempt_and_undoes_its_writes(
    make_workflow, value, named
):
    RETURNS["value"] = value
    wf = make_workflow({"steps": [{"id": "emit", "type": "test_emit"}]})
    run = services.start_run(wf, started_by=SYSTEM)
    engine.drain()
    step = StepRun.objects.get(run=run)
    assert step.status == "failed"
    assert step.error["type"] == "OutputNotStorable" and named in step.error["message"]
    assert not RunSignal.objects.filter(name="emitted").exists()  # the savepoint was undone
    assert WorkflowRun.objects.get(pk=run.pk).status == "failed"


def test_an_error_message_that_quotes_a_nul_is_recorded_cleaned(make_workflow):
    RETURNS["value"] = "upstream said: a\x00b \ud800"
    wf = make_workflow({"steps": [{"id": "emit", "type": "test_emit", "kind": "fail"}]})
    run = services.start_run(wf, started_by=SYSTEM)
    engine.drain()
    step = StepRun.objects.get(run=run)
    assert step.status == "failed"
    assert step.error["message"] == "upstream said: a\ufffdb \ufffd"


def test_an_outcome_the_database_refuses_fails_the_attempt_not_the_lease(
    make_workflow, monkeypatch
):
    # Were a check ever to let something through, the attempt still ends with the reason.
    monkeypatch.setattr(limits, "problem", lambda value, **kwargs: "")
    RETURNS["value"] = {"x": "a\x00"}
    wf = make_workflow({"steps": [{"id": "emit", "type": "test_emit"}]})
    run = services.start_run(wf, started_by=SYSTEM)
    engine.drain()
    step = StepRun.objects.get(run=run)
    assert step.status == "failed" and step.lease_token == ""
    assert step.error["type"] == "OutcomeNotRecorded"
    assert "could not be recorded" in step.error["message"]
