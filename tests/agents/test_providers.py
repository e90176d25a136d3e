"""The real provider clients against a fake server on 127.0.0.1 that speaks their protocol."""

import json
import logging
import time
from decimal import Decimal

import pytest

from agents.conversation import feedback_message, system_message, task_message, tool_message
from agents.providers import (
    MalformedResponse,
    ProviderConfig,
    ProviderRefused,
    ProviderUnavailable,
    ToolDefinition,
    client_for,
)
from tests.agents.fake_servers import FakeModelServer, Reply, anthropic_reply, openai_reply

KEY = "sk-test-very-secret-key-123"
TOOLS = [
    ToolDefinition(
        name="ticket.create",
        description="Open a ticket.",
        parameters={"type": "object", "properties": {"title": {"type": "string"}}},
    )
]
CONVERSATION = [
    system_message(name="Triage", mandate="classify", instructions="Be brief.", output_schema={}),
    task_message({"incident": "INC-1"}),
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "name": "ticket.create", "arguments": {"title": "x"}}],
    },
    tool_message({"id": "c1", "name": "ticket.create"}, {"ok": True, "result": {"id": 4}}),
]


@pytest.fixture
def server():
    fake = FakeModelServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def sleeps():
    return []


def make_client(kind, server, sleeps, **overrides):
    config = ProviderConfig(
        kind=kind,
        name=f"fake-{kind}",
        model="m-1",
        base_url=server.url + ("/v1" if kind == "openai" else ""),
        api_key=KEY,
        timeout=overrides.pop("timeout", 2.0),
        max_retries=overrides.pop("max_retries", 2),
        input_price_per_mtok=Decimal("3"),
        output_price_per_mtok=Decimal("15"),
        **overrides,
    )
    return client_for(config, sleep=sleeps.append)


def ok_reply(kind):
    return openai_reply("done") if kind == "openai" else anthropic_reply("done")


# --- OpenAI-compatible ---------------------------------------------------------------------------


def test_openai_request_follows_the_chat_completions_protocol(server, sleeps):
    server.push(Reply(openai_reply("fine", prompt_tokens=1000, completion_tokens=200)))
    client = make_client("openai", server, sleeps)

    response = client.complete(CONVERSATION, TOOLS, idempotency_key="run:1:step:a:call-0")

    request = server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Idempotency-Key"] == "run:1:step:a:call-0"
    body = request.body
    assert body["model"] == "m-1"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    call = body["messages"][2]["tool_calls"][0]
    assert call["function"] == {"name": "ticket__create", "arguments": '{"title": "x"}'}
    assert body["messages"][3]["tool_call_id"] == "c1"
    assert body["tools"][0]["function"]["name"] == "ticket__create"
    assert body["tools"][0]["function"]["parameters"] == TOOLS[0].parameters
    assert response.content == "fine"
    assert (response.input_tokens, response.output_tokens) == (1000, 200)
    assert response.cost == pytest.approx(1000 * 3 / 1e6 + 200 * 15 / 1e6)
    assert response.attempts == 1 and response.latency_ms > 0
    assert response.provider == "fake-openai" and response.model == "fake-gpt"


def test_openai_tool_calls_map_back_and_bad_arguments_stay_errors(server, sleeps):
    server.push(
        Reply(
            openai_reply(
                tool_calls=[
                    ("a", "ticket__create", '{"title": "disk full"}'),
                    ("b", "ticket__create", '{"title": '),
                    ("c", "ticket__create", "[1, 2]"),
                    ("d", "shell__exec", '{"cmd": "rm -rf /"}'),
                ]
            )
        )
    )
    response = make_client("openai", server, sleeps).complete(CONVERSATION, TOOLS)

    first, broken, not_object, unknown = response.tool_calls
    assert (first.name, first.arguments, first.error) == (
        "ticket.create",
        {"title": "disk full"},
        "",
    )
    assert broken.arguments is None and "not valid JSON" in broken.error
    assert not_object.arguments is None and "not an object" in not_object.error
    assert unknown.name == "shell__exec"  # not offered: kept as sent, the control layer refuses


def test_openai_local_server_without_a_key_sends_no_authorization(server, sleeps):
    server.push(Reply(openai_reply("hi")))
    config = ProviderConfig(kind="openai", model="llama3", base_url=server.url + "/v1")
    client_for(config, sleep=sleeps.append).complete([task_message({})], [])
    assert "Authorization" not in server.requests[0].headers
    assert "tools" not in server.requests[0].body


# --- Anthropic -----------------------------------------------------------------------------------


def test_anthropic_request_follows_the_messages_protocol(server, sleeps):
    second_result = tool_message({"id": "c2", "name": "ticket.create"}, {"ok": False})
    conversation = [
        *CONVERSATION[:2],
        {
            "role": "assistant",
            "content": "Opening two tickets.",
            "tool_calls": [
                {"id": "c1", "name": "ticket.create", "arguments": {"title": "x"}},
                {"id": "c2", "name": "ticket.create", "arguments": {"title": "y"}},
            ],
        },
        CONVERSATION[3],
        second_result,
        feedback_message("result: 'severity' is a required property"),
    ]
    server.push(
        Reply(anthropic_reply("Sure.", [("toolu_1", "ticket__create", {"title": "z"})], 40, 8))
    )
    client = make_client("anthropic", server, sleeps)

    response = client.complete(conversation, TOOLS)

    request = server.requests[0]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in request.headers
    body = request.body
    assert body["system"].startswith("You are Triage")
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "user"]
    assert [b["type"] for b in body["messages"][1]["content"]] == ["text", "tool_use", "tool_use"]
    results = body["messages"][2]["content"]
    assert [b["tool_use_id"] for b in results] == ["c1", "c2"]  # merged into one user message
    assert body["tools"][0] == {
        "name": "ticket__create",
        "description": "Open a ticket.",
        "input_schema": TOOLS[0].parameters,
    }
    assert body["max_tokens"] == 1024
    assert response.content == "Sure."
    assert response.tool_calls[0].name == "ticket.create"
    assert response.tool_calls[0].arguments == {"title": "z"}
    assert (response.input_tokens, response.output_tokens) == (40, 8)
    assert response.stop_reason == "tool_use"


def test_anthropic_error_object_in_a_200_reply_is_malformed(server, sleeps):
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    server.push(*[Reply(error)] * 3)
    with pytest.raises(MalformedResponse):
        make_client("anthropic", server, sleeps).complete(CONVERSATION, TOOLS)
    assert len(server.requests) == 3


# --- failures, shared by both clients ------------------------------------------------------------

KINDS = ["openai", "anthropic"]


@pytest.mark.parametrize("kind", KINDS)
def test_calls_to_one_provider_reuse_one_connection(kind, server, sleeps):
    # A new HTTP client per call paid a fresh TCP (and, with a real provider, TLS) handshake.
    server.push(*[Reply(ok_reply(kind))] * 3)
    for _ in range(3):
        assert make_client(kind, server, sleeps).complete(CONVERSATION, TOOLS).content == "done"
    assert len(server.requests) == 3
    assert len({request.peer for request in server.requests}) == 1


def test_a_broken_connection_is_not_reused(server, sleeps):
    server.push(Reply(ok_reply("openai"), truncate=True), Reply(ok_reply("openai")))
    response = make_client("openai", server, sleeps).complete(CONVERSATION, TOOLS)
    assert response.attempts == 2
    first, second = server.requests
    assert first.peer != second.peer  # the cut connection was dropped from the pool


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_json_is_retried_then_succeeds(kind, server, sleeps):
    server.push(Reply(raw=b"{not json at all"), Reply(ok_reply(kind)))
    response = make_client(kind, server, sleeps).complete(CONVERSATION, TOOLS)
    assert response.content == "done"
    assert response.attempts == 2 and len(sleeps) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_reply_missing_its_fields_fails_as_malformed_after_the_retries(kind, server, sleeps):
    server.push(*[Reply({"unexpected": True})] * 3)
    with pytest.raises(MalformedResponse) as caught:
        make_client(kind, server, sleeps).complete(CONVERSATION, TOOLS)
    assert caught.value.retryable and caught.value.attempts == 3
    assert len(server.requests) == 3 and len(sleeps) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_truncated_reply_is_retried(kind, server, sleeps):
    server.push(Reply(ok_reply(kind), truncate=True), Reply(ok_reply(kind)))
    response = make_client(kind, server, sleeps).complete(CONVERSATION, TOOLS)
    assert response.content == "done" and response.attempts == 2


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_reply_times_out_and_is_retried(kind, server, sleeps):
    server.push(Reply(ok_reply(kind), delay=1.0), Reply(ok_reply(kind)))
    response = make_client(kind, server, sleeps, timeout=0.2).complete(CONVERSATION, TOOLS)
    assert response.content == "done" and response.attempts == 2


@pytest.mark.parametrize("kind", KINDS)
def test_always_slow_fails_as_unavailable(kind, server, sleeps):
    server.push(*[Reply(ok_reply(kind), delay=0.6)] * 2)
    client = make_client(kind, server, sleeps, timeout=0.15, max_retries=1)
    with pytest.raises(ProviderUnavailable, match="no reply within"):
        client.complete(CONVERSATION, TOOLS)


@pytest.mark.parametrize("kind", KINDS)
def test_a_trickled_reply_is_cut_at_the_total_deadline(kind, server, sleeps):
    # Each byte comes well within the per-read timeout; the whole reply would take seconds.
    slow = Reply(ok_reply(kind), trickle=0.02)
    server.push(slow, slow)
    client = make_client(kind, server, sleeps, timeout=0.3, max_retries=1)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="no complete reply within 0.3s"):
        client.complete(CONVERSATION, TOOLS)
    assert time.monotonic() - started < 1.5  # two attempts of 0.3 s, not two trickles
    assert len(server.requests) == 2


@pytest.mark.parametrize("kind", KINDS)
def test_429_honours_retry_after_and_5xx_backs_off(kind, server, sleeps):
    server.push(
        Reply({"error": "slow down"}, status=429, headers={"Retry-After": "7"}),
        Reply({"error": "oops"}, status=503),
        Reply(ok_reply(kind)),
    )
    response = make_client(kind, server, sleeps, backoff_seconds=1.0).complete(CONVERSATION, TOOLS)
    assert response.attempts == 3
    assert sleeps[0] == 7.0  # what Retry-After asked for
    assert 0 <= sleeps[1] <= 2.0  # full jitter under 1 s * 2^(2-1)


@pytest.mark.parametrize("kind", KINDS)
def test_5xx_every_time_gives_up_after_max_retries(kind, server, sleeps):
    server.push(*[Reply({"error": "down"}, status=500)] * 4)
    with pytest.raises(ProviderUnavailable) as caught:
        make_client(kind, server, sleeps, max_retries=3).complete(CONVERSATION, TOOLS)
    assert caught.value.status == 500 and caught.value.attempts == 4
    assert len(server.requests) == 4


@pytest.mark.parametrize("kind", KINDS)
def test_a_refusal_is_final_and_never_shows_the_key(kind, server, sleeps, caplog):
    echoed = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    server.push(Reply(echoed, status=401))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderRefused) as caught:
        make_client(kind, server, sleeps).complete(CONVERSATION, TOOLS)
    assert not caught.value.retryable and len(server.requests) == 1 and sleeps == []
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    assert KEY not in caplog.text
    assert KEY not in repr(make_client(kind, server, sleeps).config)


def test_connection_refused_is_unavailable(sleeps):
    config = ProviderConfig(
        kind="openai", model="m", base_url="http://127.0.0.1:9/v1", max_retries=1, timeout=0.5
    )
    with pytest.raises(ProviderUnavailable, match="connection failed"):
        client_for(config, sleep=sleeps.append).complete([task_message({})], [])
    assert len(sleeps) == 1


def test_unknown_kind_is_refused():
    with pytest.raises(ProviderRefused):
        client_for(ProviderConfig(kind="carrier-pigeon", model="m"))


# --- scripted -------------------------------------------------------------------------------------

SCRIPT = {
    "rules": [
        {
            "when": "turn == 1",
            "tool_calls": [{"tool": "ticket.create", "arguments": {"title": "{{ input.title }}"}}],
        },
        {"when": "invalid == 0 and results[0].ok", "text": "I think it is fine"},
        {
            "when": "'severity' in feedback",
            "final": {"severity": "{{ input.severity }}", "ticket": "{{ history[0].result.id }}"},
            "confidence": 0.75,
        },
    ]
}


def scripted(script=SCRIPT):
    return client_for(ProviderConfig(kind="scripted", model="rules", script=script))


def test_scripted_provider_reads_the_conversation_like_a_model():
    client = scripted()
    messages = [
        system_message(name="A", mandate="m", instructions="", output_schema={}),
        task_message({"title": "disk full", "severity": "high"}),
    ]
    first = client.complete(messages, TOOLS)
    assert first.tool_calls[0].name == "ticket.create"
    assert first.tool_calls[0].arguments == {"title": "disk full"}
    assert first.input_tokens > 0 and first.cost == 0

    messages += [
        {"role": "assistant", "content": None, "tool_calls": [first.tool_calls[0].as_json()]},
        tool_message(first.tool_calls[0].as_json(), {"ok": True, "result": {"id": 42}}),
    ]
    second = client.complete(messages, TOOLS)
    assert second.content == "I think it is fine" and not second.tool_calls

    messages += [
        {"role": "assistant", "content": second.content, "tool_calls": []},
        feedback_message("(result): 'severity' is a required property"),
    ]
    third = client.complete(messages, TOOLS)
    assert json.loads(third.content) == {
        "result": {"severity": "high", "ticket": 42},
        "confidence": 0.75,
    }


def test_scripted_provider_without_a_matching_rule_says_so():
    response = scripted({"rules": [{"when": "turn == 5", "text": "late"}]}).complete(
        [task_message({})], []
    )
    assert response.content == "no scripted rule matched this conversation"


def test_scripted_rule_that_cannot_be_evaluated_does_not_match():
    script = {"rules": [{"when": "input.missing.deeper > 1", "text": "no"}, {"text": "yes"}]}
    assert scripted(script).complete([task_message({})], []).content == "yes"
