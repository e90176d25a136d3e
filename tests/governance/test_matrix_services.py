"""The permission matrix through the services, extended to the remaining governed models.

Same table style as test_permissions: list (+/-), then view / change / delete ("+" allowed,
"3" refused with 403, "4" refused with 404), each refusal audited exactly once.

Grants added here (`wider`), on top of the company fixture:
* Governance admins: view on approval requests and escalations (they oversee them), and
  view/add/change/delete on agents, tools and memory namespaces, model-wide.
* Managers (maya): view on agents and tools, model-wide (she owns the agent).
* Integrations: view on one tool (the one it calls).
* Payments agents: view on their memory namespace.
Approvers hold view/decide on the approval request (request_approval grants its role), and
managers view/resolve on the escalation (open_escalation grants its role); the agent raised
both, so it sees them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.db import transaction

from agents import services as agent_services
from agents.models import Agent, MemoryNamespace, Tool
from audit.models import AuditEntry
from governance import services
from governance.actions.common import audited_refusals, delete_governed
from governance.models import ApprovalRequest, Escalation, PolicyRule, Principal
from governance.permissions import can
from tests.governance.conftest import NOOP, fresh
from tests.governance.test_permissions import NONE, _denials, _outcome

OBJECTS = [
    "policyrule",
    "principal",
    "approvalrequest",
    "escalation",
    "agent",
    "tool",
    "namespace",
]
# actor: {object: list view change delete}
EXPECTED = {
    "gina": {
        **dict.fromkeys(OBJECTS, "++++"),
        "approvalrequest": "++33",
        "escalation": "++33",
    },
    "alice": {**dict.fromkeys(OBJECTS, NONE), "approvalrequest": "++33"},
    "bob": {**dict.fromkeys(OBJECTS, NONE), "approvalrequest": "++33"},
    "maya": {
        **dict.fromkeys(OBJECTS, NONE),
        "policyrule": "++33",
        "escalation": "++33",
        "agent": "++33",
        "tool": "++33",
    },
    "integration": {**dict.fromkeys(OBJECTS, NONE), "tool": "++33"},
    "agent": {
        **dict.fromkeys(OBJECTS, NONE),
        "approvalrequest": "++33",
        "escalation": "++33",
        "namespace": "++33",
    },
    "oscar": dict.fromkeys(OBJECTS, NONE),
}

# The agents app has no deletion services: its admin deletes through delete_governed, audited.
delete_audited = audited_refusals(delete_governed)


@dataclass
class Wider:
    """The governed objects beyond the company's roles, policies, rules and workflows."""

    policyrule: PolicyRule
    principal: Principal
    approvalrequest: ApprovalRequest
    escalation: Escalation
    agent: Agent
    tool: Tool
    namespace: MemoryNamespace


@pytest.fixture
def wider(company) -> Wider:
    """Create one of each remaining governed model through the services, as the system."""
    for model in ("approvalrequest", "escalation"):
        services.grant(company.admins, f"governance.view_{model}", actor=None)
    for model in ("agent", "tool", "memorynamespace"):
        for action in ("view", "add", "change", "delete"):
            services.grant(company.admins, f"agents.{action}_{model}", actor=None)
    for model in ("agent", "tool"):
        services.grant(company.managers, f"agents.view_{model}", actor=None)

    rule = services.save_rule(
        PolicyRule(
            policy=company.policy,
            position=10,
            name="cap",
            action="tool.refund",
            condition="arguments.amount > 1000",
            effect="deny",
            reason="over the cap",
        ),
        actor=None,
        reason="seed",
    )
    request = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 900},
        target=company.payments,
        requested_by=company.agent,
    )
    escalation = services.open_escalation(
        reason="low_confidence", summary="check", role=company.managers, raised_by=company.agent
    )
    provider = agent_services.create_provider(slug="scripted", name="Scripted", kind="scripted")
    agent = agent_services.create_agent(
        slug="refunds",
        name="Refunds",
        mandate="Refund small payments",
        owner=company.maya,
        provider=provider,
        model="rules",
        script={"rules": []},
    )
    agent_services.sync_tools()
    tool = Tool.objects.order_by("name").first()
    services.grant(company.integrations, "agents.view_tool", tool, actor=None)
    namespace = agent_services.create_namespace(slug="payments-notes", name="Payments notes")
    services.grant(company.agents, "agents.view_memorynamespace", namespace, actor=None)
    return Wider(
        policyrule=rule,
        principal=company.agent.principal,
        approvalrequest=request,
        escalation=escalation,
        agent=agent,
        tool=tool,
        namespace=namespace,
    )


def _change(user, obj):
    """Change an object through its service (records: the checked read a change starts with)."""
    if isinstance(obj, PolicyRule):
        obj.name = "cap, renamed"
        services.save_rule(obj, actor=user, reason="matrix")
    elif isinstance(obj, Principal):
        services.set_owner(obj, fresh_person(obj), actor=user, reason="matrix")
    elif isinstance(obj, Agent):
        agent_services.update_agent(obj, actor=user, reason="matrix", mandate="changed")
    elif isinstance(obj, Tool):
        agent_services.update_tool(obj, actor=user, reason="matrix", description="changed")
    elif isinstance(obj, MemoryNamespace):
        agent_services.set_legal_hold(obj, True, actor=user, reason="matrix")
    else:
        services.get_for(user, type(obj), obj.pk, "change")


def fresh_person(principal):
    """Return the principal's current owner (a person), reloaded: an unchanged owner is a change."""
    return fresh(principal.owner)


def _delete(user, obj):
    """Delete an object through its service (records: the checked read a deletion starts with)."""
    if isinstance(obj, PolicyRule):
        services.delete_rule(obj, actor=user, reason="matrix")
    elif isinstance(obj, Principal | Agent | Tool | MemoryNamespace):
        delete_audited(obj, actor=user, reason="matrix")
    else:
        services.get_for(user, type(obj), obj.pk, "delete")


def _service_outcome(user, obj) -> str:
    """List, view, change and delete `obj` as `user`; check each refusal is audited once."""
    listed = type(obj).objects.restrict(user, "view").filter(pk=obj.pk).exists()
    got = "+" if listed else "-"
    for operation in (
        lambda: services.get_for(user, type(obj), obj.pk, "view"),
        lambda: _change(user, type(obj).objects.get(pk=obj.pk)),
        lambda: _delete(user, type(obj).objects.get(pk=obj.pk)),
    ):
        before = _denials(user)
        result = _outcome(operation)
        audited = _denials(user) - before
        assert audited == (0 if result == "+" else 1), f"{user} on {obj}: {audited} entries"
        got += result
    return got


@pytest.mark.parametrize("actor", list(EXPECTED))
def test_permission_matrix_of_the_other_models_through_services(company, wider, actor):
    user = fresh(getattr(company, actor))
    got = {column: _service_outcome(user, getattr(wider, column)) for column in OBJECTS}
    assert got == EXPECTED[actor]


def test_can_agrees_with_restrict_on_the_other_models(company, wider):
    for actor in EXPECTED:
        user = fresh(getattr(company, actor))
        for column in OBJECTS:
            obj = getattr(wider, column)
            for action in ("view", "change", "delete"):
                listed = type(obj).objects.restrict(user, action).filter(pk=obj.pk).exists()
                assert can(user, action, obj) == listed, (actor, column, action)


# --- the doors to a workflow's behaviour: publishing, exempting, approving versions -------------

VERSION_DOORS = ["publish", "exempt", "approve"]
# actor: publish exempt approve. "+" done, "3"/"4" refused (403/404, audited as access denied),
# "R" a decision refused (audited as governance.approval.refused). Starting runs (maya, the
# integration) opens none of these doors; only a governance admin other than the author approves.
VERSION_EXPECTED = {
    "gina": "+++",
    "alice": "33R",
    "bob": "33R",
    "maya": "33R",
    "integration": "33R",
    "agent": "44R",
    "oscar": "44R",
}


@pytest.fixture
def proposal(company):
    """A version of `payments` proposed by a second governance admin (not an actor here)."""
    from orchestrator import services as workflows

    hank = services.create_person(username="hank", password="pw-hank-123", is_staff=True)
    services.add_member(company.admins, hank, actor=None)
    return workflows.publish_version(
        company.payments, {"steps": [{"id": "new", "type": "noop"}]}, actor=fresh(hank)
    )


def _version_door(user, door: str, proposal) -> str:
    """Go through one door as `user`; undo what an allowed call wrote; return its outcome."""
    from orchestrator import services as workflows
    from orchestrator.models import Workflow

    payments = Workflow.objects.get(pk=proposal.workflow_id)
    if door == "publish":
        return _outcome(lambda: workflows.publish_version(payments, NOOP, actor=user))
    if door == "exempt":
        return _outcome(
            lambda: workflows.set_version_approval(payments, False, actor=user, reason="matrix")
        )
    try:
        with transaction.atomic():
            services.decide_approval(proposal.approval_request_id, user=user, decision="approve")
            assert Workflow.objects.get(pk=payments.pk).live_version_id == proposal.pk
            transaction.set_rollback(True)
    except services.ApprovalRefused as refusal:
        refusal.audit()  # its entry went with the undo block: written again, once (as callers do)
        return "R"
    return "+"


@pytest.mark.parametrize("actor", list(VERSION_EXPECTED))
def test_permission_matrix_of_workflow_versions(company, proposal, actor):
    user = fresh(getattr(company, actor))
    got = ""
    for door in VERSION_DOORS:
        before = _denials(user)
        refusals = AuditEntry.objects.filter(action="governance.approval.refused").count()
        outcome = _version_door(user, door, proposal)
        if outcome in "34":
            assert _denials(user) == before + 1, f"{actor} {door}: not audited once"
        if outcome == "R":
            count = AuditEntry.objects.filter(action="governance.approval.refused").count()
            assert count == refusals + 1, f"{actor} {door}: not audited once"
        got += outcome
    assert got == VERSION_EXPECTED[actor]
    proposal.refresh_from_db()
    assert proposal.status == "proposed"  # every allowed approval above was undone
