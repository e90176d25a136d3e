"""Agent steps with a real HTTP provider client against a fake OpenAI-compatible server."""

import json
from decimal import Decimal

import pytest

from agents import services
from agents.models import ModelCall, ModelProvider
from audit.actors import SYSTEM
from audit.models import AuditBody, AuditEntry
from tests.agents.conftest import step_of
from tests.agents.fake_servers import FakeModelServer, Reply, openai_reply

pytestmark = pytest.mark.django_db

KEY = "sk-agent-secret-0042"


def answer(request):
    """A model that looks up a service once, then answers with what it learnt."""
    messages = request.body["messages"]
    results = [json.loads(m["content"]) for m in messages if m["role"] == "tool"]
    if not results:
        call = ("c1", "incident__lookup_service", '{"service": "checkout"}')
        return Reply(openai_reply(tool_calls=[call], prompt_tokens=1000, completion_tokens=50))
    final = {"result": {"team": results[0]["result"]["team"]}, "confidence": 0.9}
    return Reply(openai_reply(json.dumps(final), prompt_tokens=1500, completion_tokens=30))


@pytest.fixture
def server():
    fake = FakeModelServer(answer).start()
    yield fake
    fake.stop()


@pytest.fixture
def gpt(world, server):
    return services.create_provider(
        slug="fake-openai",
        name="Fake OpenAI",
        kind="openai",
        base_url=server.url + "/v1",
        api_key=KEY,
        max_retries=0,
        timeout_seconds=5,
        input_price_per_mtok=Decimal("2.50"),
        output_price_per_mtok=Decimal("10"),
        actor=SYSTEM,
    )


def make_gpt_agent(make_agent, gpt, **fields):
    return make_agent(
        "analyst",
        [],
        provider=gpt,
        model="gpt-test",
        script=None,
        tools=["incident.lookup_service"],
        **fields,
    )


def test_an_agent_on_an_openai_compatible_server(world, make_agent, gpt, server, run_agent):
    make_gpt_agent(make_agent, gpt)
    run = run_agent("analyst", {"incident": "INC-1"})
    assert run.status == "succeeded", run.error
    output = step_of(run).output
    assert output["result"] == {"team": "payments"} and output["scripted"] is False
    assert output["usage"]["input_tokens"] == 2500 and output["usage"]["output_tokens"] == 80
    assert output["usage"]["cost"] == pytest.approx((2500 * 2.5 + 80 * 10) / 1e6)
    assert [r.headers["Authorization"] for r in server.requests] == [f"Bearer {KEY}"] * 2
    first = server.requests[0].body
    assert first["model"] == "gpt-test"
    assert first["tools"][0]["function"]["name"] == "incident__lookup_service"
    assert json.loads(first["messages"][1]["content"].split("\n", 1)[1]) == {"incident": "INC-1"}
    calls = list(ModelCall.objects.order_by("id").values_list("cost", "input_tokens"))
    assert calls == [(Decimal("0.00300000"), 1000), (Decimal("0.00405000"), 1500)]
    # The key is stored encrypted and appears in no audit body.
    stored = ModelProvider.objects.get(pk=gpt.pk).api_key_encrypted
    assert KEY not in stored and stored
    assert not AuditBody.objects.filter(content__contains=KEY).exists()
    assert not AuditEntry.objects.filter(target_repr__contains=KEY).exists()


def test_an_unavailable_provider_fails_the_attempt_and_the_retry_calls_again(
    world, make_agent, gpt, server, run_agent
):
    server.push(Reply({"error": "overloaded"}, status=503))
    make_gpt_agent(make_agent, gpt)
    run = run_agent("analyst", {}, retry={"max_attempts": 3, "initial_interval": 0})
    assert run.status == "succeeded", run.error
    step = step_of(run)
    assert step.attempt == 2
    assert len(server.requests) == 3  # the failed call, then the two calls of attempt 2


def test_a_refusing_provider_fails_the_step_for_good(world, make_agent, gpt, server, run_agent):
    server.push(Reply({"error": {"message": f"bad key {KEY}"}}, status=401))
    make_gpt_agent(make_agent, gpt)
    run = run_agent("analyst", {}, retry={"max_attempts": 3, "initial_interval": 0})
    assert run.status == "failed"
    error = step_of(run).error
    assert error["type"] == "ProviderRefused" and error["attempt"] == 1
    assert KEY not in error["message"]


def test_cost_over_the_limit_fails_the_step(world, make_agent, gpt, server, run_agent):
    make_gpt_agent(make_agent, gpt, max_cost="0.005")
    run = run_agent("analyst", {})
    error = step_of(run).error
    assert error["type"] == "CostLimitExceeded"
    assert "over its limit of 0.0050" in error["message"]
    assert ModelCall.objects.count() == 2


def test_the_key_can_be_replaced_and_is_audited_without_its_value(world, gpt):
    services.set_provider_key(gpt, "sk-new-key-999", actor=SYSTEM, reason="rotation")
    gpt.refresh_from_db()
    assert gpt.config("m").api_key == "sk-new-key-999"
    entry = AuditEntry.objects.get(action="agents.modelprovider.key_changed")
    assert "sk-new-key-999" not in entry.body_row.content
    assert "api_key_encrypted" not in [f.name for f in gpt.history.model._meta.fields]
