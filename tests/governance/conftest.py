"""The small company every governance test works in: fixed actors of each principal kind.

Roles and what they carry (model-wide permissions, or guardian permissions on one object):
* Governance admins (gina): view/add/change/delete on every governed model, model-wide, and
  publish / exempt on workflows (they approve workflow versions: the `workflow-versions` rule).
* Approvers (alice, bob): view on the `payments` workflow (they approve what happens to it).
* Managers (maya): view on roles, policies, approval rules, workflows and runs; change on
  `payments`. Maya owns the agent and the integration.
* Integrations (the `erp-sync` integration user): view and change on `payments`, view on runs.
* Payments agents (the `payments-agent` agent user): view on one run.
* Nobody (oscar): a staff user with no role at all.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission

from governance import services
from governance.models import ApprovalRule, Delegation, Policy, Role
from orchestrator import services as workflows
from orchestrator.definitions import compiled_version
from orchestrator.models import Workflow, WorkflowRun

GOVERNED = ["role", "policy", "policyrule", "approvalrule", "delegation", "principal"]
ENGINE = ["workflow", "workflowrun"]
NOOP = {"steps": [{"id": "only", "type": "noop"}]}


@dataclass
class Company:
    """The actors and objects of the company."""

    gina: object
    alice: object
    bob: object
    maya: object
    oscar: object
    integration: object
    agent: object
    admins: Role
    approvers: Role
    managers: Role
    integrations: Role
    agents: Role
    payments: Workflow
    hr: Workflow
    run: WorkflowRun
    policy: Policy
    rule: ApprovalRule
    delegation: Delegation


def _perm(codename: str, app_label: str) -> Permission:
    return Permission.objects.get(codename=codename, content_type__app_label=app_label)


@pytest.fixture(autouse=True)
def _no_publishing(monkeypatch):
    """Engine steps are not sent to a broker in these tests; tests drain them in-process."""
    from orchestrator import engine

    sent: list[int] = []
    monkeypatch.setattr(engine, "publish_on_commit", lambda ids: sent.extend(ids))
    compiled_version.cache_clear()
    return sent


@pytest.fixture
def company(db) -> Company:
    """Build the company through the services, as the system (actor=None)."""
    gina = services.create_person(username="gina", password="pw-gina-123", is_staff=True)
    alice = services.create_person(username="alice", password="pw-alice-123", is_staff=True)
    bob = services.create_person(username="bob", password="pw-bob-123", is_staff=True)
    maya = services.create_person(username="maya", password="pw-maya-123", is_staff=True)
    oscar = services.create_person(username="oscar", password="pw-oscar-123", is_staff=True)
    integration = services.create_integration_principal(username="erp-sync", owner=maya)
    agent = services.create_agent_principal(username="payments-agent", owner=maya)

    admins = services.create_role(name="Governance admins", owner=gina)
    approvers = services.create_role(name="Approvers", owner=gina)
    managers = services.create_role(name="Managers", owner=gina)
    integrations = services.create_role(name="Integrations", owner=maya)
    agents = services.create_role(name="Payments agents", owner=maya)
    services.add_member(admins, gina, actor=None)
    services.add_member(approvers, alice, actor=None)
    services.add_member(approvers, bob, actor=None)
    services.add_member(managers, maya, actor=None)
    services.add_member(integrations, integration, actor=None)
    services.add_member(agents, agent, actor=None)

    for model in GOVERNED:
        for action in ("view", "add", "change", "delete"):
            services.grant(admins, f"governance.{action}_{model}", actor=None)
    for model in ENGINE:
        for action in ("view", "add", "change", "delete"):
            services.grant(admins, f"orchestrator.{action}_{model}", actor=None)
    for perm in ("publish_workflow", "exempt_workflow", "view_workflowversion"):
        services.grant(admins, f"orchestrator.{perm}", actor=None)
    for model in ("role", "policy", "policyrule", "approvalrule"):
        services.grant(managers, f"governance.view_{model}", actor=None)
    for model in ENGINE:
        services.grant(managers, f"orchestrator.view_{model}", actor=None)
    services.grant(integrations, "orchestrator.view_workflowrun", actor=None)

    payments = workflows.create_workflow(slug="payments", name="Payments", definition=NOOP)
    hr = workflows.create_workflow(slug="hr-onboarding", name="HR onboarding", definition=NOOP)
    services.grant(approvers, "orchestrator.view_workflow", payments, actor=None)
    services.grant(managers, "orchestrator.change_workflow", payments, actor=None)
    services.grant(integrations, "orchestrator.view_workflow", payments, actor=None)
    services.grant(integrations, "orchestrator.change_workflow", payments, actor=None)
    run = workflows.start_run(payments, {}, started_by=maya)
    services.grant(agents, "orchestrator.view_workflowrun", run, actor=None)

    policy = services.create_policy(slug="payments", name="Payments policy")
    rule = services.create_approval_rule(
        slug="payments", name="Payment approval", role=approvers, escalation=[managers]
    )
    services.create_approval_rule(
        slug="workflow-versions", name="Workflow version approval", role=admins
    )
    now = dt.datetime.now(dt.UTC)
    delegation = services.create_delegation(
        delegator=alice,
        delegate=bob,
        starts_at=now - dt.timedelta(days=1),
        ends_at=now + dt.timedelta(days=1),
        note="holiday",
    )
    return Company(
        gina=gina,
        alice=alice,
        bob=bob,
        maya=maya,
        oscar=oscar,
        integration=integration,
        agent=agent,
        admins=admins,
        approvers=approvers,
        managers=managers,
        integrations=integrations,
        agents=agents,
        payments=payments,
        hr=hr,
        run=run,
        policy=policy,
        rule=rule,
        delegation=delegation,
    )


def fresh(user):
    """Reload a user so Django's permission cache does not hide a change."""
    return type(user).objects.get(pk=user.pk)
