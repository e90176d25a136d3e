"""Hostile values, generated: what cannot be stored never reaches the database as an exception.

Beside test_injection.py (what a model may *do*), this family covers what a model, a tool, a
request body or a webhook may *say*: values JSON columns and canonical JSON cannot hold (a NUL
character, an unpaired surrogate, NaN, the infinities, integers beyond ±(2^53-1), nesting 65 to
5,000 levels deep, a NUL in an object key, a Python object), names and counts out of range,
and too many tool calls, each hidden somewhere in an otherwise ordinary value. They go into a
fake OpenAI-compatible server's replies (the final answer, the raw content, tool arguments,
tool names, the model field, the usage counts, the number of calls), into a tool's result, a
run's input and a signal's payload, on PostgreSQL. Each case must end with a recorded reason
that names the problem (a refusal the model is told about, a failed attempt, a refused
request), lose nothing the engine was given, and never run a tool twice.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.models import ModelCall, ToolInvocation
from agents.tools import ToolContext, tool
from audit.actors import SYSTEM
from orchestrator import engine
from orchestrator import services as workflows
from orchestrator.engine import EngineError, InvalidInput
from orchestrator.models import EffectJournal, RunSignal, StepRun, WorkflowRun
from tests.agents.conftest import FAKE_FINAL, openai_agent, step_of
from tests.agents.fake_servers import Reply, openai_reply

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

FINAL = FAKE_FINAL
EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
RAN: list[str] = []
RETURNS: dict[str, Any] = {}


@tool("test.hostile_echo", schema={"type": "object"}, side_effects=True)
def hostile_echo(arguments: dict, context: ToolContext) -> Any:
    """An effect (counted) whose result is the hostile value of the example."""
    RAN.append(context.idempotency_key)
    return {"data": RETURNS["value"]}


# --- the values --------------------------------------------------------------------------

safe_text = st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12
)
safe_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | safe_text
)


def nested(depth: int) -> list:
    """Return a list nested `depth` levels deep, built without recursion."""
    top: list = []
    cursor = top
    for _ in range(depth - 1):
        cursor.append([])
        cursor = cursor[0]
    return top


@st.composite
def poison(draw, python: bool = False) -> tuple[Any, str]:
    """Return one value storage cannot hold, and the words its refusal must contain."""
    kinds = ["nul", "surrogate", "nan", "infinity", "int", "deep", "key"]
    kind = draw(st.sampled_from([*kinds, "object"] if python else kinds))
    text = draw(safe_text)
    at = draw(st.integers(0, len(text)))
    if kind == "nul":
        return text[:at] + "\x00" + text[at:], "NUL character"
    if kind == "surrogate":
        return text[:at] + chr(draw(st.integers(0xD800, 0xDFFF))) + text[at:], "unpaired surrogate"
    if kind == "nan":
        return float("nan"), "NaN"
    if kind == "infinity":
        return draw(st.sampled_from([float("inf"), float("-inf")])), "Infinity"
    if kind == "int":
        size = draw(st.integers(2**53, 2**90))
        return draw(st.sampled_from([size, -size])), "beyond"
    if kind == "deep":
        return nested(draw(st.sampled_from([65, 300, 5000]))), "nested deeper than"
    if kind == "key":
        return {text[:at] + "\x00" + text[at:]: draw(safe_leaf)}, "NUL character"
    return draw(st.sampled_from([b"bytes", object(), {1, 2}])), "not a JSON value"


@st.composite
def hostile(draw, python: bool = False) -> tuple[Any, str]:
    """Return an ordinary-looking value with one poison somewhere inside, and its words."""
    value, words = draw(poison(python))
    for _ in range(draw(st.integers(0, 3))):
        siblings = draw(st.lists(safe_leaf, max_size=3))
        if draw(st.booleans()):
            keys = draw(st.lists(safe_text, min_size=len(siblings) + 1, unique=True))
            members = dict(zip(keys[1:], siblings, strict=False))
            value = {**members, keys[0]: value}
        else:
            position = draw(st.integers(0, len(siblings)))
            value = [*siblings[:position], value, *siblings[position:]]
    return value, words


class _Raw(str):
    """JSON text already written."""


def to_json(value: Any) -> str:
    """Write a value as a hostile server would: NaN, Infinity, \\u0000, any depth."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            out.append(item)
        elif isinstance(item, dict | list):
            pairs = item.items() if isinstance(item, dict) else ((None, v) for v in item)
            parts: list[Any] = [_Raw("{" if isinstance(item, dict) else "[")]
            for position, (key, member) in enumerate(pairs):
                if position:
                    parts.append(_Raw(","))
                if key is not None:
                    parts.append(_Raw(json.dumps(key) + ":"))
                parts.append(member)
            parts.append(_Raw("}" if isinstance(item, dict) else "]"))
            stack.extend(reversed(parts))
        else:
            out.append(json.dumps(item))
    return "".join(out)


# --- the model ---------------------------------------------------------------------------


@pytest.fixture
def server(fake_openai):
    return fake_openai


@pytest.fixture
def analyst(world, make_agent, server):
    return openai_agent(
        make_agent, server, "analyst", ["incident.lookup_service", "test.hostile_echo"]
    )


def reply_with(place: str, value: Any) -> dict:
    """Return a chat-completions reply carrying the value at one place."""
    if place == "final":
        return openai_reply(to_json({"result": value, "confidence": 1}))
    if place == "content":
        return openai_reply(f"My answer: {value}")
    if place == "arguments":
        arguments = to_json({"service": value})
        return openai_reply(tool_calls=[("c1", "incident__lookup_service", arguments)])
    if place == "name":
        return openai_reply(tool_calls=[("c1", value, "{}")])
    if place == "calls":
        return openai_reply(
            tool_calls=[(f"c{n}", "test__hostile_echo", "{}") for n in range(value)]
        )
    if place == "model":
        return {**openai_reply(FINAL), "model": value}
    return {**openai_reply(FINAL), "usage": {"prompt_tokens": value, "completion_tokens": 1}}


@st.composite
def bad_text(draw) -> tuple[str, str]:
    """Return a string with a NUL or an unpaired surrogate somewhere, and its words."""
    text = draw(safe_text)
    at = draw(st.integers(0, len(text)))
    if draw(st.booleans()):
        return text[:at] + "\x00" + text[at:], "NUL character"
    return text[:at] + chr(draw(st.integers(0xD800, 0xDFFF))) + text[at:], "unpaired surrogate"


text_poison = bad_text()
long_name = st.integers(129, 400).map(lambda n: ("n" * n, "characters long"))
replies = st.one_of(
    st.tuples(st.just("final"), hostile()),
    st.tuples(st.just("content"), text_poison),
    st.tuples(st.just("arguments"), hostile()),
    st.tuples(st.just("name"), text_poison | long_name),
    st.tuples(
        st.just("calls"),
        st.integers(65, 1000).map(lambda n: (n, f"it proposes {n:,} tool calls; at most 64")),
    ),
    st.tuples(
        st.just("model"),
        text_poison | st.integers(201, 600).map(lambda n: ("m" * n, "characters long")),
    ),
    st.tuples(
        st.just("usage"),
        st.one_of(
            st.integers(max_value=-1),
            st.integers(min_value=100_000_001, max_value=2**70),
            st.just(float("nan")),
            st.just(2.5),
            st.just("12"),
        ).map(lambda n: (n, "a token count is a whole number")),
    ),
)
REFUSED_TO_THE_MODEL = {"final", "content", "arguments", "name", "calls"}


@EXAMPLES
@given(case=replies)
def test_hostile_model_replies_end_with_a_recorded_reason(analyst, server, run_agent, case):
    place, (value, words) = case
    server.requests.clear()
    RAN.clear()
    calls_before = ModelCall.objects.count()
    server.push(Reply(reply_with(place, value)))
    run = run_agent("analyst", {}, retry={"max_attempts": 1})  # no database exception
    step = step_of(run)
    assert step.status in ("succeeded", "failed") and step.lease_token == ""
    if place in REFUSED_TO_THE_MODEL:
        # The model was told why, and its next (good) answer completed the step.
        assert run.status == "succeeded", step.error
        told = json.dumps(server.requests[1].body["messages"][2:], ensure_ascii=False)
        assert words in told
        assert ModelCall.objects.count() == calls_before + 2  # both calls were recorded
    else:
        assert run.status == "failed"
        assert step.error["type"] == "MalformedResponse" and words in step.error["message"]
    if place == "arguments":
        verdict = ToolInvocation.objects.filter(run_id=run.pk).get()
        assert (verdict.verdict, verdict.stage) == ("deny", "arguments")
        assert words in verdict.reason
    assert RAN == []  # nothing the control layer refused ran


@EXAMPLES
@given(case=hostile(python=True))
def test_hostile_tool_results_are_journaled_once_and_reported(analyst, server, run_agent, case):
    value, words = case
    RAN.clear()
    RETURNS["value"] = value
    server.requests.clear()
    server.push(Reply(openai_reply(tool_calls=[("c1", "test__hostile_echo", "{}")])))
    run = run_agent("analyst", {}, retry={"max_attempts": 3, "initial_interval": 0})
    assert run.status == "succeeded", step_of(run).error
    assert len(RAN) == 1  # it ran once; its effect is journaled
    invocation = ToolInvocation.objects.filter(run_id=run.pk).get()
    assert invocation.outcome["error"] == "ResultNotStorable"
    assert words in invocation.outcome["message"]
    journaled = EffectJournal.objects.get(run_id=run.pk, name="test.hostile_echo")
    assert journaled.result == invocation.outcome
    told = json.dumps(server.requests[1].body["messages"][2:], ensure_ascii=False)
    assert "ResultNotStorable" in told and words in told


# --- the engine's doors ------------------------------------------------------------------


@pytest.fixture
def workflow_of(world):
    from tests.conftest import enable_registered_tools

    enable_registered_tools()  # tool steps pass the enforcement point: their rows are enabled
    counter = iter(range(1, 100_000))

    def make(steps: list[dict]):
        return workflows.create_workflow(
            slug=f"hostile-{next(counter)}",
            name="Hostile",
            definition={"steps": steps},
            actor=SYSTEM,
        )

    return make


@EXAMPLES
@given(case=hostile(python=True))
def test_hostile_run_input_is_refused_naming_the_problem(workflow_of, case):
    value, words = case
    workflow = workflow_of([{"id": "a", "type": "noop"}])
    runs = WorkflowRun.objects.count()
    with pytest.raises(InvalidInput) as refused:
        workflows.start_run(workflow, {"data": value}, started_by=SYSTEM)
    assert words in str(refused.value) and "input.data" in str(refused.value)
    assert WorkflowRun.objects.count() == runs


@EXAMPLES
@given(case=hostile(python=True))
def test_hostile_signal_payloads_are_refused_and_the_step_keeps_waiting(workflow_of, case):
    value, words = case
    workflow = workflow_of([{"id": "w", "type": "wait", "signal": "go"}])
    run = workflows.start_run(workflow, started_by=SYSTEM)
    engine.drain()
    with pytest.raises(EngineError) as refused:
        workflows.send_signal(run, "go", value, sent_by=SYSTEM)
    assert words in str(refused.value)
    assert not RunSignal.objects.filter(run=run).exists()
    assert StepRun.objects.get(run=run).status == "waiting"


@EXAMPLES
@given(case=hostile(python=True))
def test_hostile_tool_step_results_fail_the_step_and_never_run_it_again(workflow_of, case):
    value, words = case
    RAN.clear()
    RETURNS["value"] = value
    retry = {"max_attempts": 3, "initial_interval": 0}
    workflow = workflow_of(
        [{"id": "t", "type": "tool", "tool": "test.hostile_echo", "retry": retry}]
    )
    run = workflows.start_run(workflow, started_by=SYSTEM)
    engine.drain()
    step = StepRun.objects.get(run=run)
    assert step.status == "failed" and step.error["type"] == "ResultNotStorable"
    assert words in step.error["message"]
    workflows.retry_step(step, actor=SYSTEM)
    engine.drain()
    step.refresh_from_db()
    assert step.status == "failed" and step.error["type"] == "ResultNotStorable"
    assert len(RAN) == 1
