"""The agent review page: idle agents holding permissions, ownerless agents, tools beyond roles."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from guardian.shortcuts import assign_perm

from agents import review, services
from agents.models import Agent, Tool
from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from tests.agents.conftest import enable

pytestmark = pytest.mark.django_db

RULES = [{"final": {}, "confidence": 1}]


def _age(agent: Agent, *, active_days_ago: float | None, created_days_ago: float = 100):
    """Backdate an agent's creation and last activity (rows a real instance would have)."""
    now = clock.now()
    Agent.objects.filter(pk=agent.pk).update(
        created_at=now - dt.timedelta(days=created_days_ago),
        last_active_at=None
        if active_days_ago is None
        else now - dt.timedelta(days=active_days_ago),
    )


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", password="pw-root-123")


def test_idle_agents_that_still_hold_permissions(world, make_agent):
    stale = make_agent("stale", RULES, roles=[world.ticket_writers])
    never = make_agent("never", RULES, roles=[world.ticket_writers])
    powerless = make_agent("powerless", RULES)
    busy = make_agent("busy", RULES, roles=[world.ticket_writers])
    object_only = make_agent("object-only", RULES)
    assign_perm(
        "agents.view_ticket", object_only.user, services.create_ticket(title="t", actor=SYSTEM)
    )
    _age(stale, active_days_ago=40)
    _age(never, active_days_ago=None)
    _age(powerless, active_days_ago=90)
    _age(busy, active_days_ago=2)
    _age(object_only, active_days_ago=31)

    idle = {row.agent.slug: row for row in review.idle_agents(30)}
    assert set(idle) == {"stale", "never", "object-only"}
    assert idle["stale"].permissions == 2  # add_ticket, add_notification through its role
    assert idle["object-only"].permissions == 1
    assert idle["never"].last_active_at is None
    assert {row.agent.slug for row in review.idle_agents(60)} == {"never"}
    assert {row.agent.slug for row in review.idle_agents(1)} == {
        "stale",
        "never",
        "busy",
        "object-only",
    }


def test_agents_without_an_accountable_owner(world, make_agent):
    leaver = governance.create_person(username="leaver", actor=SYSTEM)
    gone = make_agent("orphan", RULES, owner=leaver)
    quitter = governance.create_person(username="quitter", actor=SYSTEM)
    make_agent("dormant-owner", RULES, owner=quitter)
    make_agent("owned", RULES)
    leaver.delete()  # the owner leaves the company: the agent keeps the copied name
    quitter.is_active = False
    quitter.save()

    problems = dict((agent.slug, why) for agent, why in review.ownerless_agents())
    assert problems == {
        "orphan": "no owner (was leaver)",
        "dormant-owner": "owner quitter is deactivated",
    }
    assert Agent.objects.get(pk=gone.pk).owner is None


def test_tools_beyond_the_agents_roles(world, make_agent):
    enable("http.request")
    writer = make_agent("writer", RULES, tools=["ticket.create"], roles=[world.ticket_writers])
    updater = make_agent("updater", RULES, tools=["ticket.update", "memory.read"])
    coordinator = make_agent("coordinator", RULES, tools=["delegate"])
    make_agent("caller", RULES, tools=["http.request", "echo"])

    found = {(o.agent.slug, o.tool.name): o.reason for o in review.overreaching_agents()}
    assert found == {
        ("updater", "ticket.update"): "needs change on agents.ticket, which its principal "
        "holds nowhere",
        ("updater", "memory.read"): "needs read on agents.memorynamespace, which its "
        "principal holds nowhere",
        ("coordinator", "delegate"): "delegate, but no agent to delegate to",
    }
    assert writer.pk not in {o.agent.pk for o in review.overreaching_agents()}

    # Granting what the tools need (on one object is enough) clears them...
    assign_perm(
        "agents.change_ticket", updater.user, services.create_ticket(title="one", actor=SYSTEM)
    )
    services.grant_access(
        services.create_namespace(slug="notes", name="Notes", actor=SYSTEM), updater, actor=SYSTEM
    )
    services.set_delegates(coordinator, [writer], actor=SYSTEM, reason="test")
    assert review.overreaching_agents() == []

    # ...and raising a side-effecting tool to high risk without an approval rule flags it.
    http = Tool.objects.get(name="http.request")
    services.update_tool(http, actor=SYSTEM, reason="test", risk="high")
    services.update_tool(Tool.objects.get(name="echo"), actor=SYSTEM, reason="test", risk="high")
    found = [(o.agent.slug, o.tool.name, o.reason) for o in review.overreaching_agents()]
    assert found == [("caller", "http.request", "high risk with side effects and no approval rule")]
    services.update_tool(http, actor=SYSTEM, reason="test", approval_rule=world.approval)
    assert review.overreaching_agents() == []


def test_the_review_page_lists_each_kind(world, make_agent, root):
    idle = make_agent("idle-one", RULES, roles=[world.ticket_writers])
    _age(idle, active_days_ago=45)
    leaver = governance.create_person(username="leaver", actor=SYSTEM)
    make_agent("orphan", RULES, owner=leaver)
    leaver.delete()
    make_agent("updater", RULES, tools=["ticket.update"])

    client = _client(root)
    changelist = client.get(reverse("admin:agents_agent_changelist"))
    url = reverse("admin:agents_agent_review")
    assert url in changelist.content.decode()
    page = client.get(url)
    assert page.status_code == 200 and page.context["days"] == 30
    assert [row.agent.slug for row in page.context["idle"]] == ["idle-one"]
    assert [agent.slug for agent, _ in page.context["ownerless"]] == ["orphan"]
    assert [(o.agent.slug, o.tool.name) for o in page.context["overreach"]] == [
        ("updater", "ticket.update")
    ]
    content = page.content.decode()
    assert "idle-one" in content and "no owner (was leaver)" in content
    assert client.get(url + "?days=50").context["idle"] == []


def test_the_review_page_shows_only_visible_agents_and_audits_refusals(world, make_agent):
    mine = make_agent("mine", RULES, tools=["ticket.update"])
    make_agent("theirs", RULES, tools=["ticket.update"])
    assign_perm("agents.view_agent", world.alice, mine)
    page = _client(world.alice).get(reverse("admin:agents_agent_review"))
    assert page.status_code == 200
    assert [o.agent.slug for o in page.context["overreach"]] == ["mine"]

    refused = _client(world.oscar).get(reverse("admin:agents_agent_review"))
    assert refused.status_code == 403
    assert AuditEntry.objects.filter(action="governance.access_denied", actor_name="oscar").exists()
