"""The agents API: agents and their kill switch, tools, tool invocations and model calls.

It works in the governance company with test_matrix_services' wider grants: governance
admins (gina) hold everything on agents and tools, managers (maya) view them, the integration
views one tool. A cell is the list (`+`/`-`), GET (`+`, `4`) and, for agents, POST suspend
(`+`, `3`, `4`); every refusal is audited once, under the request's id.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.models import Agent, AgentStatus, ModelCall, ToolInvocation
from audit import clock
from audit import services as audit
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from tests.governance.conftest import company, fresh  # noqa: F401
from tests.governance.test_admin import PRINCIPALS
from tests.governance.test_api_approvals import _audited, _ids, api
from tests.governance.test_api_tokens import _problem, bearer, issuer  # noqa: F401
from tests.governance.test_matrix_services import wider  # noqa: F401

pytestmark = pytest.mark.django_db

HIDDEN = {"agent": "-44", "tool": "-4", "invocation": "-4", "model_call": "-4"}
MATRIX = {
    "gina": {"agent": "+++", "tool": "++", "invocation": "++", "model_call": "++"},
    "maya": {"agent": "++3", "tool": "++", "invocation": "++", "model_call": "++"},
    "integration": {**HIDDEN, "tool": "++"},
    "alice": HIDDEN,
    "bob": HIDDEN,
    "oscar": HIDDEN,
    "agent": HIDDEN,
}
PATHS = {
    "agent": "/api/v1/agents",
    "tool": "/api/v1/tools",
    "invocation": "/api/v1/tool-invocations",
    "model_call": "/api/v1/model-calls",
}


def _invocation(agent: Agent, number: int = 0) -> ToolInvocation:
    """Record a proposed call of the agent as the control layer does (append-only rows)."""
    return ToolInvocation.objects.create(
        agent=agent,
        agent_slug=agent.slug,
        caller_name=agent.slug,
        tool="tickets.create",
        arguments={"title": f"refund {number}"},
        arguments_digest=services.digest({"title": f"refund {number}"}),
        verdict="approval" if number % 2 else "allow",
        stage="policy",
        reason="refunds need a person" if number % 2 else "",
        policy="payments",
        policy_version=3,
        policy_rule=7,
        approval_request=None,
        key=f"run:1:work:{number}:decision",
        run_id=1000 + number,
        step_id="work",
        executed_at=None if number % 2 else clock.now(),
        outcome=None if number % 2 else {"result": {"ticket": number}},
        created_at=clock.now() + dt.timedelta(seconds=number),
    )


def _model_call(agent: Agent, number: int = 0) -> ModelCall:
    """Record a model call and its audit entry (prompt and response), as an agent step does."""
    key = f"run:1:work:model:{number}"
    call = ModelCall.objects.create(
        agent=agent,
        agent_slug=agent.slug,
        provider="scripted",
        model="rules",
        key=key,
        run_id=1000,
        step_id="work",
        input_tokens=10,
        output_tokens=5,
        created_at=clock.now() + dt.timedelta(seconds=number),
    )
    audit.record(
        action="agents.model.called",
        actor=agent.user,
        actor_kind="agent",
        target=agent,
        run_id=1000,
        step_id="work",
        body={
            "prompt": [{"role": "user", "content": f"refund order {number}"}],
            "tools": ["tickets.create"],
            "response": {"text": "done"},
            "key": key,
        },
    )
    return call


@pytest.fixture
def records(wider):  # noqa: F811
    """One tool invocation and one model call of the refunds agent."""
    return {"invocation": _invocation(wider.agent), "model_call": _model_call(wider.agent)}


def _object(wider, records, column):  # noqa: F811
    if column in records:
        return records[column]
    return getattr(wider, column)


@pytest.mark.parametrize("actor", PRINCIPALS)
def test_every_endpoint_through_the_matrix(company, wider, records, actor):  # noqa: F811
    user = fresh(getattr(company, actor))
    client = api(user)
    for column, expected in MATRIX[actor].items():
        obj = _object(wider, records, column)
        got = "+" if obj.pk in _ids(client.get(PATHS[column])) else "-"
        read = client.get(f"{PATHS[column]}/{obj.pk}")
        got += {200: "+", 404: "4"}[read.status_code]
        if read.status_code == 404:
            _problem(read, 404)
            assert _audited(user, read) == ["governance.access_denied"]
        if column == "agent":
            posted = client.post(
                f"{PATHS[column]}/{obj.pk}/suspend", {"reason": "matrix"}, format="json"
            )
            got += {200: "+", 403: "3", 404: "4"}[posted.status_code]
            if posted.status_code != 200:
                _problem(posted, posted.status_code)
                assert _audited(user, posted) == ["governance.access_denied"]
            else:
                assert Agent.objects.get(pk=obj.pk).status == AgentStatus.SUSPENDED
        assert got == expected, (column, got)


def test_the_kill_switch_goes_through_the_registry_service(company, wider):  # noqa: F811
    gina, agent = fresh(company.gina), wider.agent
    client = api(gina)
    for verb, status in (
        ("quarantine", AgentStatus.QUARANTINED),
        ("reactivate", AgentStatus.ACTIVE),
        ("suspend", AgentStatus.SUSPENDED),
    ):
        response = client.post(
            f"/api/v1/agents/{agent.pk}/{verb}", {"reason": f"{verb} drill"}, format="json"
        )
        assert response.status_code == 200, response.content
        assert response.json()["status"] == status
        assert response.json()["status_reason"] == f"{verb} drill"
        entry = AuditEntry.objects.filter(action="agents.agent.status_changed").latest("pk")
        assert entry.request_id == response["X-Request-ID"] and entry.actor_id == gina.pk
    assert agent.history.first().history_user_id == gina.pk
    missing = client.post(f"/api/v1/agents/{agent.pk}/reactivate", {}, format="json")
    assert "reason" in _problem(missing, 422)["errors"]
    assert Agent.objects.get(pk=agent.pk).status == AgentStatus.SUSPENDED


def test_a_read_only_token_never_flips_the_kill_switch(company, wider, issuer):  # noqa: F811
    services.grant(company.integrations, "agents.change_agent", wider.agent, actor=SYSTEM)
    services.grant(company.integrations, "agents.view_agent", wider.agent, actor=SYSTEM)
    row, token = services.issue_token(
        company.integration, actor=issuer, name="monitoring", read_only=True
    )
    client = bearer(token)
    assert client.get(f"/api/v1/agents/{wider.agent.pk}").status_code == 200
    response = client.post(
        f"/api/v1/agents/{wider.agent.pk}/quarantine", {"reason": "alert"}, format="json"
    )
    assert "read-only" in _problem(response, 403)["detail"]
    denied = AuditEntry.objects.get(request_id=response["X-Request-ID"])
    assert denied.action == "governance.access_denied" and denied.target_id == str(row.pk)
    assert Agent.objects.get(pk=wider.agent.pk).status == AgentStatus.ACTIVE
    _, writer = services.issue_token(company.integration, actor=issuer, name="pager")
    flipped = bearer(writer).post(
        f"/api/v1/agents/{wider.agent.pk}/quarantine", {"reason": "alert"}, format="json"
    )
    assert flipped.status_code == 200 and flipped.json()["status"] == AgentStatus.QUARANTINED


def test_an_invocation_carries_its_policy_decision(company, wider, records):  # noqa: F811
    invocation = records["invocation"]
    body = api(fresh(company.maya)).get(f"/api/v1/tool-invocations/{invocation.pk}").json()
    assert body["decision"] == {
        "decision": "allow",
        "stage": "policy",
        "reason": "",
        "policy": "payments",
        "policy_version": 3,
        "policy_rule": 7,
        "digest": invocation.arguments_digest,
        "approval_request": None,
        "escalation": None,
    }
    assert body["arguments"] == {"title": "refund 0"} and body["outcome"]["result"]["ticket"] == 0
    assert body["key"].endswith(":decision")


def test_invocation_filters(company, wider):  # noqa: F811
    for number in range(4):
        _invocation(wider.agent, number)
    client = api(fresh(company.maya))
    assert len(_ids(client.get("/api/v1/tool-invocations?decision=approval"))) == 2
    assert len(_ids(client.get("/api/v1/tool-invocations?status=executed"))) == 2
    assert len(_ids(client.get("/api/v1/tool-invocations?status=not_executed&run=1001"))) == 1
    assert len(_ids(client.get("/api/v1/tool-invocations?agent=refunds&tool=tickets.create"))) == 4
    assert _ids(client.get("/api/v1/tool-invocations?agent=someone-else")) == []
    call = _model_call(wider.agent)
    assert _ids(client.get("/api/v1/model-calls?agent=refunds&provider=scripted")) == [call.pk]
    assert _ids(client.get("/api/v1/model-calls?provider=openai")) == []
    assert _ids(client.get("/api/v1/model-calls?run=1")) == []


def test_the_prompt_is_shown_only_to_who_may_read_the_audit_trail(company, wider, records):  # noqa: F811
    call = records["model_call"]
    path = f"/api/v1/model-calls/{call.pk}"
    listed = api(fresh(company.maya)).get("/api/v1/model-calls").json()["results"][0]
    assert "exchange" not in listed and "prompt" not in str(listed)
    hidden = api(fresh(company.maya)).get(path).json()["exchange"]
    assert hidden == {
        "visible": False,
        "audit_entry": None,
        "erased": False,
        "prompt": None,
        "tools": None,
        "response": None,
    }
    services.grant(company.admins, "audit.view_auditentry", actor=SYSTEM)
    shown = api(fresh(company.gina)).get(path).json()["exchange"]
    assert shown["visible"] and shown["prompt"] == [{"role": "user", "content": "refund order 0"}]
    assert shown["response"] == {"text": "done"} and shown["tools"] == ["tickets.create"]
    entry = AuditEntry.objects.get(pk=shown["audit_entry"])
    assert entry.action == "agents.model.called"


def _queries(client, path: str) -> int:
    """Count the queries of one page (after a first call that fills the permission caches)."""
    assert client.get(path).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


def _more_agents(wider, count: int, start: int) -> None:  # noqa: F811
    from agents import services as agent_services

    for number in range(start, start + count):
        agent = agent_services.create_agent(
            slug=f"refunds-{number}",
            name=f"Refunds {number}",
            mandate="Refund small payments",
            owner=wider.agent.owner,
            provider=wider.agent.provider,
            model="rules",
            script={"rules": []},
            tools=[wider.tool],
            actor=SYSTEM,
        )
        _invocation(agent, number)
        _model_call(agent, number)


@pytest.mark.parametrize("path", list(PATHS.values()))
def test_list_queries_do_not_grow_with_the_rows(company, wider, path):  # noqa: F811
    client = api(fresh(company.gina))
    _more_agents(wider, 2, 0)
    few = _queries(client, path)
    _more_agents(wider, 5, 10)
    assert _queries(client, path) == few
