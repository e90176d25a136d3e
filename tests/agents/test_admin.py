"""The agents admin: writes through the services, the kill switch, keys never shown, the inbox."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client
from django.urls import reverse

from agents import services
from agents.models import Agent, MemoryNamespace, ModelProvider, Notification, Tool
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from tests.agents.conftest import body_of
from tests.governance.admin_forms import change_form_data

pytestmark = pytest.mark.django_db

SCRIPT = {"rules": [{"final": {"ok": True}, "confidence": 0.9}]}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", password="pw-root-123")


def _url(model, view: str, *args) -> str:
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


def test_the_agent_list_says_which_agents_are_scripted(world, make_agent, root):
    make_agent("triage", SCRIPT["rules"])
    real = services.create_provider(
        slug="openai", name="OpenAI", kind="openai", api_key="sk-x", actor=SYSTEM
    )
    make_agent("writer", [], provider=real, model="gpt-4o-mini", script=None)
    client = client_for(root)
    page = client.get(_url(Agent, "changelist"))
    assert page.status_code == 200
    content = page.content.decode()
    assert content.count("Scripted: declared rules, no model") == 1
    assert "OpenAI: gpt-4o-mini" in content
    assert reverse("admin:agents_agent_review") in content
    only_scripted = client.get(_url(Agent, "changelist") + "?scripted=yes")
    assert list(only_scripted.context["cl"].result_list) == [Agent.objects.get(slug="triage")]
    detail = client.get(_url(Agent, "change", Agent.objects.get(slug="triage").pk))
    assert "Scripted: declared rules, no model" in detail.content.decode()


def test_adding_an_agent_goes_through_the_registry_service(world, root):
    tool = Tool.objects.get(name="ticket.create")
    data = {
        "slug": "scribe",
        "name": "Scribe",
        "mandate": "Write tickets",
        "owner": world.owen.pk,
        "provider": world.scripted.pk,
        "model": "rules",
        "instructions": "",
        "script": json.dumps(SCRIPT),
        "roles": [world.ticket_writers.pk],
        "tools": [tool.pk],
        "output_schema": "{}",
        "confidence_threshold": "0.7",
        "max_steps": "10",
        "max_tokens": "50000",
        "max_cost": "1.00",
        "max_wall_seconds": "900",
        "change_reason": "a scribe for the on-call team",
    }
    response = client_for(root).post(_url(Agent, "add"), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    agent = Agent.objects.get(slug="scribe")
    assert agent.user.get_username() == "agent.scribe"  # its service account from governance
    assert agent.user.principal.kind == "agent" and agent.user.principal.owner == world.owen
    assert agent.user.groups.filter(pk=world.ticket_writers.group_id).exists()
    assert list(agent.tools.all()) == [tool]
    record = agent.history.first()
    assert (record.history_change_reason, record.history_user) == (
        "a scribe for the on-call team",
        root,
    )
    assert AuditEntry.objects.filter(action="agents.agent.created", actor_name="root").exists()


def test_a_broken_script_is_refused_by_the_form(world, root):
    response = client_for(root).post(
        _url(Agent, "add"),
        {
            "slug": "broken",
            "name": "Broken",
            "mandate": "x",
            "owner": world.owen.pk,
            "provider": world.scripted.pk,
            "model": "rules",
            "script": json.dumps({"rules": [{"final": 1, "text": "both"}]}),
            "output_schema": "{}",
            "confidence_threshold": "0.7",
            "max_steps": "10",
            "max_tokens": "50000",
            "max_cost": "1.00",
            "max_wall_seconds": "900",
            "change_reason": "try",
        },
    )
    assert response.status_code == 200
    assert "script" in response.context["adminform"].form.errors
    assert not Agent.objects.filter(slug="broken").exists()


def test_changing_roles_in_the_admin_changes_the_principal_and_keeps_a_reason(
    world, make_agent, root
):
    agent = make_agent("helper", SCRIPT["rules"])
    client = client_for(root)
    url = _url(Agent, "change", agent.pk)
    data = change_form_data(client.get(url))
    data["roles"] = [world.ticket_writers.pk]
    data["max_steps"] = "4"
    data["change_reason"] = "let it open tickets"
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    agent.refresh_from_db()
    assert agent.max_steps == 4
    assert agent.user.groups.filter(pk=world.ticket_writers.group_id).exists()
    assert agent.history.first().history_change_reason == "let it open tickets"
    history = client.get(_url(Agent, "history", agent.pk))
    assert history.status_code == 200 and b"let it open tickets" in history.content


@pytest.mark.parametrize(
    ("action", "status"),
    [("make_suspended", "suspended"), ("make_quarantined", "quarantined")],
)
def test_kill_switch_actions_ask_for_a_reason_and_are_audited(
    world, make_agent, root, action, status
):
    agent = make_agent("runner", SCRIPT["rules"])
    client = client_for(root)
    url = _url(Agent, "changelist")
    chosen = {"action": action, ACTION_CHECKBOX_NAME: [agent.pk]}
    page = client.post(url, chosen)
    assert page.status_code == 200 and "reason" in page.context["form"].fields
    agent.refresh_from_db()
    assert agent.status == "active"  # nothing happens before the reason is given
    response = client.post(url, {**chosen, "apply": "1", "reason": "leaked a token"})
    assert response.status_code == 302
    agent.refresh_from_db()
    assert (agent.status, agent.status_reason) == (status, "leaked a token")
    entry = AuditEntry.objects.get(action="agents.agent.status_changed")
    assert entry.actor_name == "root"
    assert body_of(entry) == {"from": "active", "to": status, "reason": "leaked a token"}

    client.post(
        url,
        {
            "action": "make_active",
            ACTION_CHECKBOX_NAME: [agent.pk],
            "apply": "1",
            "reason": "rotated",
        },
    )
    agent.refresh_from_db()
    assert agent.status == "active"


def test_people_without_change_permission_cannot_pull_the_kill_switch(world, make_agent):
    agent = make_agent("runner", SCRIPT["rules"])
    governance.grant(world.approvers, "agents.view_agent", actor=SYSTEM)
    alice = type(world.alice).objects.get(pk=world.alice.pk)
    client = client_for(alice)
    assert client.get(_url(Agent, "changelist")).status_code == 200
    client.post(
        _url(Agent, "changelist"),
        {
            "action": "make_quarantined",
            ACTION_CHECKBOX_NAME: [agent.pk],
            "apply": "1",
            "reason": "x",
        },
    )
    agent.refresh_from_db()
    assert agent.status == "active"
    oscar = client_for(world.oscar)
    assert oscar.get(_url(Agent, "change", agent.pk)).status_code in (403, 404)
    assert AuditEntry.objects.filter(action="governance.access_denied", actor_name="oscar").exists()


def test_a_provider_key_is_stored_encrypted_and_never_shown(world, root):
    client = client_for(root)
    secret = "sk-live-0123456789abcdef"
    response = client.post(
        _url(ModelProvider, "add"),
        {
            "slug": "vllm",
            "name": "Local vLLM",
            "kind": "openai",
            "base_url": "http://127.0.0.1:8001/v1",
            "api_key": secret,
            "timeout_seconds": "30",
            "max_retries": "2",
            "max_output_tokens": "512",
            "input_price_per_mtok": "0",
            "output_price_per_mtok": "0",
            "is_active": "on",
            "change_reason": "the GPU box",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    provider = ModelProvider.objects.get(slug="vllm")
    assert provider.has_api_key and secret not in provider.api_key_encrypted
    assert provider.config("m").api_key == secret
    page = client.get(_url(ModelProvider, "change", provider.pk))
    assert secret not in page.content.decode()
    assert provider.api_key_encrypted not in page.content.decode()

    # Changing other settings keeps the key; entering a new one replaces it, audited.
    data = change_form_data(page)
    data.update(timeout_seconds="45", change_reason="slower model")
    assert client.post(_url(ModelProvider, "change", provider.pk), data).status_code == 302
    provider.refresh_from_db()
    assert provider.timeout_seconds == 45 and provider.config("m").api_key == secret
    data.update(api_key="sk-new-key", change_reason="rotated")
    assert client.post(_url(ModelProvider, "change", provider.pk), data).status_code == 302
    provider.refresh_from_db()
    assert provider.config("m").api_key == "sk-new-key"
    changed = AuditEntry.objects.get(action="agents.modelprovider.key_changed")
    assert "sk-new-key" not in changed.body_row.content and body_of(changed)["key_set"] is True

    # A revert from history (which never holds the key) keeps the stored key.
    first = provider.history.order_by("history_id").first()
    url = _url(ModelProvider, "simple_history", provider.pk, first.history_id)
    revert = change_form_data(client.get(url))
    revert["change_reason"] = "back to 30 s"
    assert client.post(url, revert).status_code == 302
    provider.refresh_from_db()
    assert provider.timeout_seconds == 30 and provider.config("m").api_key == "sk-new-key"


def test_tool_settings_are_changed_through_the_service_and_show_their_target(world, root):
    tool = Tool.objects.get(name="ticket.update")
    client = client_for(root)
    url = _url(Tool, "change", tool.pk)
    page = client.get(url)
    assert "change on agents.ticket" in page.content.decode()
    data = change_form_data(page)
    data.update(
        enabled="on",
        risk="high",
        rate_limit="7",
        approval_rule=str(world.approval.pk),
        change_reason="needs a person",
    )
    assert client.post(url, data).status_code == 302
    tool.refresh_from_db()
    assert (tool.enabled, tool.risk, tool.rate_limit, tool.approval_rule) == (
        True,
        "high",
        7,
        world.approval,
    )
    assert tool.history.first().history_change_reason == "needs a person"
    assert client.get(_url(Tool, "add")).status_code == 403  # rows come from the registry


def test_the_inbox_shows_each_person_their_own_notifications(world):
    services.notify("alice", "For alice", "", sent_by=SYSTEM)
    services.notify("bob", "For bob", "", sent_by=SYSTEM)
    alice = client_for(world.alice)
    page = alice.get(_url(Notification, "changelist"))
    assert page.status_code == 200
    assert [n.subject for n in page.context["cl"].result_list] == ["For alice"]
    mine = Notification.objects.get(subject="For alice")
    theirs = Notification.objects.get(subject="For bob")
    assert alice.get(_url(Notification, "change", theirs.pk)).status_code == 404
    alice.post(
        _url(Notification, "changelist"),
        {"action": "mark_read", ACTION_CHECKBOX_NAME: [mine.pk, theirs.pk]},
    )
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert mine.read_at is not None and theirs.read_at is None


def test_a_legal_hold_is_placed_through_the_service_with_a_reason(world, root):
    namespace = services.create_namespace(slug="incidents", name="Incidents", actor=SYSTEM)
    client = client_for(root)
    chosen = {"action": "place_legal_hold", ACTION_CHECKBOX_NAME: [namespace.pk]}
    url = _url(MemoryNamespace, "changelist")
    assert client.post(url, chosen).status_code == 200
    client.post(url, {**chosen, "apply": "1", "reason": "litigation 2026-17"})
    namespace.refresh_from_db()
    assert namespace.legal_hold and namespace.legal_hold_reason == "litigation 2026-17"
    entry = AuditEntry.objects.get(action="agents.memory.legal_hold")
    assert body_of(entry) == {"hold": True, "reason": "litigation 2026-17"}


def test_journals_and_memory_entries_are_read_only(world, make_agent, root, run_agent):
    make_agent("worker", [{"final": {"done": True}, "confidence": 1}])
    run_agent("worker", {})
    namespace = services.create_namespace(slug="notes", name="Notes", actor=SYSTEM)
    services.write_entry(namespace, "k", {"v": 1}, expected_version=0, user=SYSTEM)
    client = client_for(root)
    for model in ("modelcall", "toolinvocation", "memoryentry"):
        listing = client.get(reverse(f"admin:agents_{model}_changelist"))
        assert listing.status_code == 200
        assert client.get(reverse(f"admin:agents_{model}_add")).status_code == 403
    listing = client.get(reverse("admin:agents_modelcall_changelist"))
    call = listing.context["cl"].result_list[0]
    page = client.get(reverse("admin:agents_modelcall_change", args=[call.pk]))
    assert page.status_code == 200 and b'name="_save"' not in page.content


def test_every_agents_admin_page_renders(world, make_agent, root):
    agent = make_agent("shown", SCRIPT["rules"], tools=["ticket.create"])
    ticket = services.create_ticket(title="Shown", actor=SYSTEM)
    namespace = services.create_namespace(slug="shown", name="Shown", actor=SYSTEM)
    client = client_for(root)
    assert client.get(reverse("admin:app_list", args=["agents"])).status_code == 200
    for model in (Agent, ModelProvider, Tool, Notification, MemoryNamespace):
        assert client.get(_url(model, "changelist")).status_code == 200, model
    for model in (Agent, ModelProvider, MemoryNamespace, type(ticket)):
        assert client.get(_url(model, "add")).status_code == 200, model
    for obj in (agent, world.scripted, Tool.objects.get(name="ticket.create"), ticket, namespace):
        assert client.get(_url(type(obj), "change", obj.pk)).status_code == 200, obj
        assert client.get(_url(type(obj), "history", obj.pk)).status_code == 200, obj
