"""The agent loop under kill -9: real workers, a real HTTP model server, a real side effect.

Each run's agent records an effect through a tool, looks a service up, then answers. The model
server is a fake OpenAI-compatible server on 127.0.0.1 that answers slowly, so kills land inside
model calls and tool calls alike. Afterwards: every run succeeded, each effect happened once,
and no model call whose answer was journaled was ever asked again (a resumed loop goes on from
the next unfinished call, never from the start).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict

import pytest
from django.db import connection

from agents import services as agents
from agents.models import Agent, ModelCall, Tool
from audit.actors import SYSTEM
from governance import services as governance
from orchestrator import services
from orchestrator.models import RunStatus, WorkflowRun
from tests.agents.fake_servers import FakeModelServer, Received, Reply, openai_reply
from tests.integration.conftest import kill_workers_until_done, unfinished_runs
from tests.processes import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUNS = 30
MODEL_DELAY = 0.1  # seconds per model reply
REQUESTS: list[tuple[str, int]] = []  # (incident, turn) in the order the server received them


def incident_of(request: Received) -> str:
    """Return the incident id in the task the agent was given."""
    task = request.body["messages"][1]["content"].split("\n", 1)[1]
    return json.loads(task)["incident"]


def model(request: Received) -> Reply:
    """Turn 0: record an effect; turn 1: look the service up; turn 2: answer."""
    messages = request.body["messages"]
    turn = sum(1 for m in messages if m["role"] == "tool")
    incident = incident_of(request)
    REQUESTS.append((incident, turn))
    if turn == 0:
        call = ("c1", "test__record_effect", json.dumps({"value": incident, "pause": 0.05}))
        return Reply(openai_reply(tool_calls=[call]), delay=MODEL_DELAY)
    if turn == 1:
        call = ("c2", "incident__lookup_service", '{"service": "checkout"}')
        return Reply(openai_reply(tool_calls=[call]), delay=MODEL_DELAY)
    final = {"result": {"incident": incident, "turns": turn}, "confidence": 0.9}
    return Reply(openai_reply(json.dumps(final)), delay=MODEL_DELAY)


@pytest.fixture
def model_server():
    REQUESTS.clear()
    server = FakeModelServer(model)
    # A killed worker resets its connection mid-request; that is the point, not an error.
    server.httpd.handle_error = lambda request, client_address: None
    server.start()
    yield server
    server.stop()


def analyst(server: FakeModelServer) -> Agent:
    """An agent on the fake server with the two tools it uses, owned by a person."""
    owner = governance.create_person(username="owen", actor=SYSTEM)
    provider = agents.create_provider(
        slug="fake-openai",
        name="Fake OpenAI",
        kind="openai",
        base_url=server.url + "/v1",
        max_retries=0,
        timeout_seconds=10,
        actor=SYSTEM,
    )
    agents.sync_tools(actor=SYSTEM)
    for name in ("test.record_effect", "incident.lookup_service"):
        agents.update_tool(Tool.objects.get(name=name), actor=SYSTEM, reason="test", enabled=True)
    return agents.create_agent(
        slug="analyst",
        name="Analyst",
        mandate="Records the incident, looks up its service, reports.",
        owner=owner,
        provider=provider,
        model="gpt-test",
        tools=["test.record_effect", "incident.lookup_service"],
        actor=SYSTEM,
    )


def test_agent_loops_killed_at_random_resume_without_repeating_calls(
    steward_processes, model_server, effects_table
):
    rng = random.Random(5)
    analyst(model_server)
    workflow = services.create_workflow(
        slug="agent-crash",
        name="Agent crash",
        definition={
            "steps": [
                {
                    "id": "work",
                    "type": "agent",
                    "agent": "analyst",
                    "task": {"incident": "{{ input.incident }}"},
                    "retry": {"max_attempts": 30, "initial_interval": 0.05, "max_interval": 0.3},
                }
            ]
        },
        actor=SYSTEM,
    )
    steward_processes.start_sweeper()
    runs = [
        services.start_run(workflow, {"incident": f"INC-{n}"}, started_by=SYSTEM)
        for n in range(RUNS)
    ]
    kills = kill_workers_until_done(steward_processes, rng, longest=1.2, give_up_after=180)
    steward_processes.start_worker()
    wait_until(
        lambda: unfinished_runs() == 0,
        60,
        message=lambda: "runs did not finish:\n" + steward_processes.logs(),
    )

    statuses = set(
        WorkflowRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True)
    )
    assert statuses == {RunStatus.SUCCEEDED}, steward_processes.logs()
    assert kills >= 3, "the workers should have been killed mid-run several times"
    # Each run's effect happened once, under one stable key.
    with connection.cursor() as cursor:
        cursor.execute("SELECT value, count(*) FROM test_effects GROUP BY 1")
        effects = dict(cursor.fetchall())
    assert effects == {f"INC-{n}": 1 for n in range(RUNS)}
    # A resumed loop asks only for the turn it had not got an answer to: per incident, the
    # turns the server saw never go back (a restart from scratch would ask turn 0 again).
    by_incident: dict[str, list[int]] = defaultdict(list)
    for incident, turn in REQUESTS:
        by_incident[incident].append(turn)
    went_back = {i: turns for i, turns in by_incident.items() if turns != sorted(turns)}
    assert went_back == {}, went_back
    assert all(set(turns) == {0, 1, 2} for turns in by_incident.values())
    repeated = len(REQUESTS) - 3 * RUNS
    assert repeated <= 2 * kills  # only calls in flight when a worker died are asked again
    assert ModelCall.objects.count() == 3 * RUNS  # every answer journaled exactly once
    print(f"{kills} kills, {repeated} model calls asked again (each was in flight at a kill)")
