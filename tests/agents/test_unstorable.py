"""What a model or a tool says that cannot be stored is refused where it enters, with the reason.

A fake OpenAI-compatible server (a real HTTP server on 127.0.0.1) answers with what PostgreSQL's
JSON columns or the audit log's canonical JSON cannot hold: a NUL character, NaN, an integer
beyond exact JSON, an unpaired surrogate, 5,000 levels of nesting, names and counts out of
range, 40,000 tool calls. Each reply ends in a recorded reason (a refusal the model is told
about, or a failed attempt), never in a database exception or an expired lease.
"""

from __future__ import annotations

import json

import pytest

from agents.models import ModelCall, ToolInvocation
from agents.tools import ToolContext, tool
from audit.models import AuditEntry
from orchestrator.models import EffectJournal
from tests.agents.conftest import FAKE_FINAL, body_of, openai_agent, step_of
from tests.agents.fake_servers import Reply, openai_reply

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

FINAL = FAKE_FINAL
RAN: list[str] = []
RESULTS: dict[str, object] = {}


@tool("test.hostile_result", schema={"type": "object"}, side_effects=True)
def hostile_result(arguments: dict, context: ToolContext) -> object:
    """A tool with an effect (counted) whose result the test chooses."""
    RAN.append(context.idempotency_key)
    return RESULTS["value"]


@pytest.fixture(autouse=True)
def _clean():
    RAN.clear()
    RESULTS.clear()


@pytest.fixture
def server(fake_openai):
    return fake_openai


@pytest.fixture
def analyst(world, make_agent, server):
    return openai_agent(
        make_agent, server, "analyst", ["incident.lookup_service", "test.hostile_result"]
    )


def told(server, index: int = 1) -> str:
    """Return everything the model was sent in request `index` after the first (as text)."""
    return json.dumps(server.requests[index].body["messages"][2:], ensure_ascii=False)


def call(name: str, arguments: str, cid: str = "c1") -> tuple[str, str, str]:
    return (cid, name, arguments)


# --- replies the engine could not record ---------------------------------------------------


@pytest.mark.parametrize(
    "reply, error, message",
    [
        (
            Reply(raw=b'{"error": "bad \x00 request"}', status=400),
            "ProviderRefused",
            'provider refused the request (400): {"error": "bad \ufffd request"}',
        ),
        (
            Reply(raw=b"<html>\x00 oops</html>", status=200),
            "MalformedResponse",
            "reply is not JSON: <html>\ufffd oops</html>",
        ),
    ],
    ids=["error-body", "non-json-200"],
)
def test_a_nul_in_a_broken_reply_fails_the_attempt_with_the_provider_error(
    analyst, server, run_agent, reply, error, message
):
    server.push(reply)
    run = run_agent("analyst", {}, retry={"max_attempts": 1})
    step = step_of(run)
    assert step.status == "failed" and run.status == "failed"
    assert step.error["type"] == error and step.error["message"] == message


def test_a_nul_in_the_final_answer_is_refused_and_the_model_told(analyst, server, run_agent):
    server.push(Reply(openai_reply('{"result": "a\x00b", "confidence": 1}')))
    run = run_agent("analyst", {})
    assert run.status == "succeeded", run.error
    assert "NUL character" in told(server)
    assert step_of(run).output["result"] == {"done": True}


def test_a_nul_inside_the_answer_json_is_refused_and_the_model_told(analyst, server, run_agent):
    server.push(Reply(openai_reply('{"result": {"x": "a\\u0000b"}, "confidence": 1}')))
    run = run_agent("analyst", {})
    assert run.status == "succeeded", run.error
    assert "result.x holds a NUL character" in told(server)


@pytest.mark.parametrize(
    "arguments, named",
    [
        ('{"service": NaN}', "NaN"),
        ('{"service": "x", "n": -Infinity}', "-Infinity"),
        ('{"service": 123456789012345678901234567890}', "beyond"),
        ('{"service": "\\ud800"}', "unpaired surrogate"),
        ('{"service": "a\\u0000"}', "NUL character"),
        ('{"service": ' + "[" * 5000 + "]" * 5000 + "}", "nested deeper than"),
        ('{"service": ' + "[" * 70 + "]" * 70 + "}", "nested deeper than 64"),
    ],
    ids=["nan", "infinity", "huge-int", "surrogate", "nul", "depth-5000", "depth-70"],
)
def test_unstorable_arguments_are_refused_by_the_enforcement_point(
    analyst, server, run_agent, arguments, named
):
    server.push(Reply(openai_reply(tool_calls=[call("incident__lookup_service", arguments)])))
    run = run_agent("analyst", {})
    assert run.status == "succeeded", run.error
    invocation = ToolInvocation.objects.get()
    assert invocation.verdict == "deny" and invocation.stage == "arguments"
    assert named in invocation.reason
    assert named in told(server)
    decided = AuditEntry.objects.get(action="agents.tool.decided")
    assert named in body_of(decided)["reason"]


def test_a_tool_name_over_the_limit_refuses_the_reply(analyst, server, run_agent):
    name = "incident__lookup_service" + "x" * 300
    server.push(Reply(openai_reply(tool_calls=[call(name, "{}")])))
    run = run_agent("analyst", {})
    assert run.status == "succeeded", run.error
    assert "the name of tool call 1 is 324 characters long, over the limit of 128" in told(server)
    assert not ToolInvocation.objects.exists()


def test_a_reply_with_more_tool_calls_than_the_cap_runs_none(analyst, server, run_agent):
    most = 64  # the default limit
    calls = [call("test__hostile_result", "{}", f"c{n}") for n in range(40_000)]
    server.push(Reply(openai_reply(tool_calls=calls)))
    RESULTS["value"] = {"ok": 1}
    run = run_agent("analyst", {})
    assert run.status == "succeeded", run.error
    assert f"it proposes 40,000 tool calls; at most {most} are accepted" in told(server)
    assert RAN == [] and not ToolInvocation.objects.exists()
    assert list(ModelCall.objects.values_list("tool_calls", flat=True)) == [0, 0]


def test_the_cap_is_a_setting(analyst, server, run_agent, settings):
    settings.STEWARD_LIMITS = {"max_tool_calls_per_reply": 2}
    calls = [call("test__hostile_result", "{}", f"c{n}") for n in range(3)]
    server.push(Reply(openai_reply(tool_calls=calls)))
    run = run_agent("analyst", {})
    assert run.status == "succeeded", run.error
    assert "it proposes 3 tool calls; at most 2 are accepted" in told(server)


@pytest.mark.parametrize(
    "change, named",
    [
        ({"model": "m" * 201}, "model is 201 characters long"),
        ({"usage": {"prompt_tokens": -5, "completion_tokens": 1}}, "prompt_tokens is -5"),
        ({"usage": {"prompt_tokens": 1, "completion_tokens": 2**40}}, "completion_tokens is 1099"),
    ],
    ids=["model-name", "negative-tokens", "huge-tokens"],
)
def test_wrong_accounting_fails_the_attempt_with_the_reason(
    analyst, server, run_agent, change, named
):
    server.push(Reply({**openai_reply(FINAL), **change}))
    run = run_agent("analyst", {}, retry={"max_attempts": 1})
    step = step_of(run)
    assert step.status == "failed"
    assert step.error["type"] == "MalformedResponse" and named in step.error["message"]
    assert not ModelCall.objects.exists()


# --- tool results ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, named",
    [
        ({"text": "page\x00body"}, "NUL character"),
        ({"score": float("nan")}, "NaN"),
        ({"id": 2**64}, "beyond"),
        ({"text": "\udfff"}, "unpaired surrogate"),
        ({"raw": b"bytes"}, "bytes, not a JSON value"),
    ],
    ids=["nul", "nan", "huge-int", "surrogate", "bytes"],
)
def test_an_unstorable_tool_result_is_journaled_once_and_the_model_told(
    analyst, server, run_agent, value, named
):
    RESULTS["value"] = value
    server.push(Reply(openai_reply(tool_calls=[call("test__hostile_result", "{}")])))
    run = run_agent("analyst", {}, retry={"max_attempts": 3, "initial_interval": 0})
    assert run.status == "succeeded", run.error
    assert len(RAN) == 1  # the effect happened once, and was journaled
    invocation = ToolInvocation.objects.get()
    assert invocation.outcome["error"] == "ResultNotStorable"
    assert invocation.outcome["executed"] is True and named in invocation.outcome["message"]
    assert len(invocation.outcome["sha256"]) == 64
    journaled = EffectJournal.objects.get(name="test.hostile_result")
    assert journaled.result == invocation.outcome
    assert named in told(server)
