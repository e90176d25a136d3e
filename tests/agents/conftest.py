"""The agents' test world: people, roles, a scripted provider, synced tools, agent factories.

Fixed actors:
* owen: the accountable owner of every test agent (a person);
* alice, bob: approvers (the `Approvers` role decides tool approvals);
* oscar: an outsider with no role;
* Managers: the default escalation role (maya).
Agents are created through the services, as the system; their roles carry what they may touch.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from agents import services
from agents.models import Agent, ModelProvider, Tool
from agents.tools import ToolContext, tool
from audit.actors import SYSTEM
from governance import services as governance
from governance.models import ApprovalRule, Role
from orchestrator import engine
from orchestrator import services as workflows
from orchestrator.definitions import compiled_version
from orchestrator.models import StepRun, WorkflowRun

TEST_SECRETS_KEY = "J4n2a9tW0m6ZB0e0rY2Xl3QjS8G1t8yW5nq3oXj0f1I="


@pytest.fixture(autouse=True)
def _secrets_key(settings):
    """Encrypt provider keys with a fixed test key (pytest runs with DEBUG off: no dev key)."""
    from agents import secrets

    settings.STEWARD_SECRETS_KEY = TEST_SECRETS_KEY
    secrets._fernet.cache_clear()


@pytest.fixture(autouse=True)
def _own_rate_counters(settings):
    """Give each test its own Redis rate counters (ids repeat across tests on SQLite)."""
    settings.STEWARD_RATE_LIMIT_PREFIX = f"steward-test:{uuid.uuid4().hex}"


@pytest.fixture(autouse=True)
def published(monkeypatch):
    """Collect the step ids the engine publishes; tests run them with engine.drain()."""
    sent: list[int] = []
    monkeypatch.setattr(engine, "publish_on_commit", lambda ids: sent.extend(ids))
    compiled_version.cache_clear()
    return sent


@pytest.fixture(autouse=True)
def queued_deliveries(monkeypatch):
    """Collect the notification ids queued for a worker; tests run `deliver_notification`."""
    from agents.actions import work

    queued: list[int] = []
    monkeypatch.setattr(work, "delivery_dispatcher", queued.append)
    return queued


@dataclass
class World:
    """The people, roles and approval rule the agent tests share."""

    owen: object
    alice: object
    bob: object
    maya: object
    oscar: object
    approvers: Role
    managers: Role
    ticket_writers: Role
    approval: ApprovalRule
    scripted: ModelProvider


@pytest.fixture
def world(db, settings) -> World:
    """Build the people, roles and the scripted provider (as the system)."""
    settings.STEWARD_ESCALATION_ROLE = "Managers"
    owen = governance.create_person(username="owen", is_staff=True, actor=SYSTEM)
    alice = governance.create_person(username="alice", is_staff=True, actor=SYSTEM)
    bob = governance.create_person(username="bob", is_staff=True, actor=SYSTEM)
    maya = governance.create_person(username="maya", is_staff=True, actor=SYSTEM)
    oscar = governance.create_person(username="oscar", is_staff=True, actor=SYSTEM)
    approvers = governance.create_role(
        name="Approvers",
        description="Approve agents' calls",
        owner=owen,
        actor=SYSTEM,
    )
    managers = governance.create_role(
        name="Managers", description="Take escalations", owner=owen, actor=SYSTEM
    )
    writers = governance.create_role(
        name="Ticket writers", description="Open tickets", owner=owen, actor=SYSTEM
    )
    governance.set_members(approvers, [alice, bob], actor=SYSTEM)
    governance.set_members(managers, [maya], actor=SYSTEM)
    governance.grant(writers, "agents.add_ticket", actor=SYSTEM)
    governance.grant(writers, "agents.add_notification", actor=SYSTEM)
    for perm in ("governance.view_approvalrequest", "governance.decide_approvalrequest"):
        governance.grant(approvers, perm, actor=SYSTEM)
    governance.grant(approvers, "agents.view_ticket", actor=SYSTEM)
    governance.grant(managers, "governance.view_escalation", actor=SYSTEM)
    governance.grant(managers, "governance.resolve_escalation", actor=SYSTEM)
    approval = governance.create_approval_rule(
        slug="agent-tools",
        name="Agent tools",
        role=approvers,
        sla_seconds=3600,
        actor=SYSTEM,
    )
    scripted = services.create_provider(
        slug="scripted", name="Scripted", kind="scripted", actor=SYSTEM
    )
    services.sync_tools(actor=SYSTEM)
    return World(owen, alice, bob, maya, oscar, approvers, managers, writers, approval, scripted)


def enable(*names: str, **fields) -> list[Tool]:
    """Enable tools (and set fields such as rate_limit or approval_rule) as the system."""
    rows = []
    for name in names:
        row = Tool.objects.get(name=name)
        rows.append(services.update_tool(row, actor=SYSTEM, reason="test", enabled=True, **fields))
    return rows


@pytest.fixture
def make_agent(world) -> Callable[..., Agent]:
    """Create a scripted agent owned by owen with the given rules, tools and roles."""

    def make(slug: str, rules: list[dict], *, tools=(), roles=(), **fields) -> Agent:
        if tools:
            enable(*[t for t in tools if not Tool.objects.get(name=t).enabled])
        return services.create_agent(
            slug=slug,
            name=fields.pop("name", slug.title()),
            mandate=fields.pop("mandate", f"The {slug} agent of the tests."),
            owner=fields.pop("owner", world.owen),
            provider=fields.pop("provider", world.scripted),
            model=fields.pop("model", "rules"),
            script=fields.pop("script", {"rules": rules}),
            tools=list(tools),
            roles=list(roles),
            actor=fields.pop("actor", SYSTEM),
            **fields,
        )

    return make


@pytest.fixture
def run_agent(world):
    """Start a one-step workflow running an agent on a task; drain the engine; return the run."""
    counter = iter(range(1, 100_000))

    def run(slug: str, task=None, *, drain: bool = True, started_by=SYSTEM, **step) -> WorkflowRun:
        step.setdefault("task", task if task is not None else {})
        workflow = workflows.create_workflow(
            slug=f"agent-wf-{next(counter)}",
            name="Agent test",
            definition={"steps": [{"id": "work", "type": "agent", "agent": slug, **step}]},
            actor=SYSTEM,
        )
        run = workflows.start_run(workflow, {}, started_by=started_by)
        if drain:
            engine.drain()
        run.refresh_from_db()
        return run

    return run


def add_policy_rule(action: str, effect: str, *, condition: str = "", **fields):
    """Add an active policy rule (in a policy of its own) as the system; return the rule."""
    from governance.models import PolicyRule

    slug = re.sub(r"[^a-z0-9-]+", "-", f"p-{action}-{effect}".lower())[:90]
    policy = governance.create_policy(slug=slug, name=action, actor=SYSTEM)
    return governance.save_rule(
        PolicyRule(
            policy=policy,
            name=f"{effect} {action}",
            action=action,
            condition=condition,
            effect=effect,
            **fields,
        ),
        actor=SYSTEM,
        reason="test",
    )


def body_of(entry) -> dict:
    """Return the JSON body of an audit entry."""
    return json.loads(entry.body_row.content)


def step_of(run: WorkflowRun, step_id: str = "work") -> StepRun:
    """Return the top-level step row of a run."""
    return StepRun.objects.get(run=run, step_id=step_id, item_index=-1)


@tool("test.suspend_agent", schema={"type": "object"}, side_effects=True)
def suspend_agent(arguments: dict, context: ToolContext) -> dict:
    """Suspend the calling agent, as an admin clicking the kill switch meanwhile would."""
    agent = Agent.objects.get(pk=context.agent_id)
    services.set_status(agent, "suspended", actor=SYSTEM, reason="kill switch pressed")
    return {"suspended": agent.slug}


@tool("test.bump_shared", schema={"type": "object"}, side_effects=True)
def bump_shared(arguments: dict, context: ToolContext) -> dict:
    """Another writer changes shared/n meanwhile (as a concurrent agent would)."""
    from agents.models import MemoryNamespace

    namespace = MemoryNamespace.objects.get(slug="shared")
    current = services.read_entry(namespace, "n", user=SYSTEM)
    return services.write_entry(
        namespace, "n", current["value"] + 1, expected_version=current["version"], user=SYSTEM
    )


@pytest.fixture
def make_workflow_with(world):
    """Start a workflow of the given steps, drain the engine, return the run."""
    counter = iter(range(1, 100_000))

    def run(steps: list[dict], run_input=None) -> WorkflowRun:
        workflow = workflows.create_workflow(
            slug=f"steps-wf-{next(counter)}",
            name="Steps",
            definition={"steps": steps},
            actor=SYSTEM,
        )
        started = workflows.start_run(workflow, run_input or {}, started_by=SYSTEM)
        engine.drain()
        started.refresh_from_db()
        return started

    return run


# What the fake OpenAI-compatible server answers by default: a final answer that validates.
FAKE_FINAL = json.dumps({"result": {"done": True}, "confidence": 1})


@pytest.fixture
def fake_openai():
    """A fake OpenAI-compatible server on 127.0.0.1 that gives every request a final answer."""
    from tests.agents.fake_servers import FakeModelServer, Reply, openai_reply

    fake = FakeModelServer(lambda request: Reply(openai_reply(FAKE_FINAL))).start()
    yield fake
    fake.stop()


def openai_agent(make_agent, server, slug: str, tools: list[str]):
    """Make an agent on a fake OpenAI-compatible provider with no retries, offered `tools`."""
    provider = services.create_provider(
        slug="fake-openai",
        name="Fake OpenAI",
        kind="openai",
        base_url=server.url + "/v1",
        max_retries=0,
        timeout_seconds=10,
        actor=SYSTEM,
    )
    return make_agent(slug, [], provider=provider, model="gpt-test", script=None, tools=tools)
