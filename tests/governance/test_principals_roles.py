"""Principals, roles and grants; history of governed models and its audit entries."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import authenticate

from audit import services as audit
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.models import Principal, Role
from tests.governance.conftest import fresh


def _body(entry: AuditEntry) -> dict:
    return json.loads(entry.body_row.content)


def test_agent_is_flagged_and_cannot_log_in_even_with_a_password(company, client):
    agent = fresh(company.agent)
    assert agent.is_agent and not company.maya.is_agent
    assert services.accountable_owner(agent) == company.maya
    assert authenticate(username="payments-agent", password="anything") is None
    agent.set_password("a-known-password-1")
    agent.save()
    assert authenticate(username="payments-agent", password="a-known-password-1") is None
    assert not client.login(username="payments-agent", password="a-known-password-1")
    assert client.login(username="maya", password="pw-maya-123")


def test_audit_names_an_agent_as_an_agent(company):
    entry = audit.record(action="test.agent_acted", actor=fresh(company.agent))
    assert entry.actor_kind == "agent" and entry.actor_name == "payments-agent"


def test_an_agent_needs_a_person_as_accountable_owner(company):
    with pytest.raises(services.GovernanceError) as refused:
        services.create_agent_principal(username="orphan", owner=company.agent, actor=SYSTEM)
    assert refused.value.code == "owner_not_a_person"
    assert not Principal.objects.filter(user__username="orphan").exists()


def test_nobody_grants_what_they_do_not_hold(company):
    gina = fresh(company.gina)
    # Gina administers roles but holds nothing on the engine's workflows object by object...
    services.grant(company.approvers, "orchestrator.view_workflow", company.hr, actor=gina)
    assert services.role_grants(company.approvers, "view", company.hr)
    # ...while maya cannot change roles at all.
    with pytest.raises(services.AccessDenied):
        services.grant(
            company.approvers, "orchestrator.view_workflow", company.hr, actor=company.maya
        )
    # A role admin without a permission cannot hand it out.
    services.revoke(company.admins, "orchestrator.delete_workflow", actor=SYSTEM)
    with pytest.raises(services.GovernanceError) as refused:
        services.grant(
            company.approvers, "orchestrator.delete_workflow", company.hr, actor=fresh(gina)
        )
    assert refused.value.code == "grant_beyond_own"


def test_role_change_keeps_history_with_reason_and_user_and_audits_the_diff(company):
    gina = fresh(company.gina)
    role = company.approvers
    services.update_role(
        role, actor=gina, reason="clarify the mandate", description="Approves payments"
    )
    record = role.history.first()
    assert record.history_change_reason == "clarify the mandate"
    assert record.history_user == gina
    entry = AuditEntry.objects.filter(
        action="governance.role.changed", target_id=str(role.pk)
    ).last()
    assert entry.actor_name == "gina"
    body = _body(entry)
    assert body["reason"] == "clarify the mandate"
    assert {"field": "description", "old": "", "new": "Approves payments"} in body["changes"]


def test_renaming_a_role_renames_its_group(company):
    services.update_role(company.managers, actor=SYSTEM, reason="rename", name="Line managers")
    company.managers.group.refresh_from_db()
    assert company.managers.group.name == "Line managers"


def test_deleting_a_role_deletes_its_group_and_is_recorded(company):
    gina = fresh(company.gina)
    group_id = company.agents.group_id
    services.delete_role(company.agents, actor=gina, reason="agent retired")
    assert not Role.objects.filter(name="Payments agents").exists()
    assert not type(company.agents.group).objects.filter(pk=group_id).exists()
    entry = AuditEntry.objects.filter(action="governance.role.deleted").last()
    assert _body(entry)["reason"] == "agent retired" and entry.actor_name == "gina"


def test_workflow_changes_are_audited_through_their_history(company):
    # Governance follows every model with history, the engine's Workflow included.
    company.payments.description = "Pay suppliers"
    company.payments._change_reason = "describe it"
    company.payments.save()
    entry = AuditEntry.objects.filter(
        action="orchestrator.workflow.changed", target_id=str(company.payments.pk)
    ).last()
    assert _body(entry)["reason"] == "describe it"
