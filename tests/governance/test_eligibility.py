"""No self-granted powers, and one eligibility rule for approvals and escalations.

On the demo: grace (a governance admin) adds herself to the incident commanders and still cannot
approve the restart waiting for them, through the admin, the service or the command; the change
names her in history and audit. alice cannot resolve the escalation of her own run. In the
company: a permission one grants one's own role, and a delegation one makes to oneself, do not
count either.
"""

from __future__ import annotations

import datetime as dt
import json
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.urls import reverse

from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.actions.eligibility import may_decide
from governance.models import (
    ApprovalRequest,
    ApprovalStatus,
    Escalation,
    EscalationStatus,
    PolicyRule,
    Role,
    RoleChange,
)
from orchestrator import demo, engine
from orchestrator import services as workflows
from tests.governance.admin_forms import change_form_data
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for

User = get_user_model()


@pytest.fixture
def seeded(settings, db):
    """The demo, seeded and run until its two requests wait for an incident commander."""
    settings.DEBUG = True
    demo.seed()
    engine.drain()
    return {user.username: user for user in User.objects.all()}


def person(name: str):
    """Return a demo login, reloaded (Django caches permissions on the user)."""
    return User.objects.get(username=name)


def restart_request() -> ApprovalRequest:
    """The INC-2002 restart of checkout, asked by the remediation agent (the issue's #2)."""
    from orchestrator.models import WorkflowRun

    run = WorkflowRun.objects.get(business_key="INC-2002")
    return ApprovalRequest.objects.get(
        action="tool.incident.restart_service", status="pending", run_id=run.pk
    )


def command(*args) -> str:
    """Run a management command; return its output."""
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def admin_add_member(client, role: Role, user, reason: str = "I lead incidents now"):
    """Post the role's admin page with `user` added to its members."""
    url = reverse("admin:governance_role_change", args=[role.pk])
    data = change_form_data(client.get(url))
    data["members"] = [*data.get("members", []), str(user.pk)]
    data["change_reason"] = reason
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    return response


def admin_decide(client, request: ApprovalRequest, decision: str = "approve") -> list[str]:
    """Post a decision on the request's admin page; return the messages shown."""
    response = client.post(
        reverse("admin:governance_approvalrequest_decide", args=[request.pk]),
        {"decision": decision, "expected_digest": request.arguments_digest, "comment": ""},
    )
    assert response.status_code == 302
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- 3. a governance admin makes herself an approver --------------------------------------------


def test_grace_adds_herself_to_incident_commanders_and_cannot_approve_the_restart(seeded):
    commanders = Role.objects.get(name=demo.INCIDENT_COMMANDERS)
    request = restart_request()
    grace_client = client_for(person("grace"))
    admin_add_member(grace_client, commanders, person("grace"))
    grace = person("grace")
    assert services.holds_role(grace, commanders)

    # Not in her inbox, not decidable, and each door says why.
    assert not services.pending_for(grace).filter(pk=request.pk).exists()
    assert not services.can(grace, "decide", request)
    assert grace.username not in [u.username for u in services.eligible_deciders(request)]
    messages = admin_decide(grace_client, request)
    assert any("added grace to Incident commanders" in message for message in messages), messages
    with pytest.raises(services.ApprovalRefused) as refused:
        services.decide_approval(request, user=grace, decision="approve")
    assert refused.value.code == "self_granted"
    with pytest.raises(CommandError, match=r"Refused \(self_granted\): grace added grace"):
        command("approvals", "approve", str(request.pk), "--as", "grace")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING and not request.decisions.exists()
    assert (
        AuditEntry.objects.filter(
            action="governance.approval.refused", actor_name="grace", target_id=str(request.pk)
        ).count()
        == 3
    )  # admin, service, command

    # History and audit name her as the one who made the change, and why.
    change = RoleChange.objects.get(role=commanders, member=grace)
    assert (change.kind, change.actor_name, change.reason) == (
        "member_added",
        "grace",
        "I lead incidents now",
    )
    added = AuditEntry.objects.filter(
        action="governance.role.member_added", target_id=str(commanders.pk)
    ).latest("pk")
    assert added.actor_name == "grace"
    assert json.loads(added.body_row.content)["member"] == "grace"
    users_changed = AuditEntry.objects.filter(action="auth.group.users_changed").latest("pk")
    assert users_changed.actor_name == "grace"


def test_added_by_another_person_grace_may_approve(seeded):
    commanders = Role.objects.get(name=demo.INCIDENT_COMMANDERS)
    services.add_member(commanders, person("grace"), actor=person("admin"), reason="on rota")
    request = restart_request()
    grace = person("grace")
    assert services.pending_for(grace).filter(pk=request.pk).exists()
    decision = services.decide_approval(request, user=grace, decision="approve")
    assert decision.role_name == demo.INCIDENT_COMMANDERS


def test_a_permission_change_names_its_actor_outside_a_request_too(seeded):
    commanders = Role.objects.get(name=demo.INCIDENT_COMMANDERS)
    services.grant(commanders, "governance.view_policy", actor=person("grace"), reason="read")
    services.revoke(commanders, "governance.view_policy", actor=person("grace"), reason="undo")
    changed = AuditEntry.objects.filter(action="auth.group.permissions_changed").order_by("pk")
    assert [entry.actor_name for entry in changed.reverse()[:2]] == ["grace", "grace"]
    assert list(
        AuditEntry.objects.filter(action__startswith="governance.role.permission_")
        .order_by("pk")
        .values_list("action", "actor_name")
    )[-2:] == [
        ("governance.role.permission_granted", "grace"),
        ("governance.role.permission_revoked", "grace"),
    ]
    assert list(
        RoleChange.objects.filter(role=commanders, permission="governance.view_policy")
        .order_by("pk")
        .values_list("kind", "actor_name", "reason")
    ) == [("permission_granted", "grace", "read"), ("permission_revoked", "grace", "undo")]


def test_the_role_admin_page_permission_change_names_grace(seeded):
    commanders = Role.objects.get(name=demo.INCIDENT_COMMANDERS)
    client = client_for(person("grace"))
    url = reverse("admin:governance_role_change", args=[commanders.pk])
    data = change_form_data(client.get(url))
    view_policy = Permission.objects.get(codename="view_policy")
    data["permissions"] = [*data.get("permissions", []), str(view_policy.pk)]
    data["change_reason"] = "commanders read policies"
    grants = AuditEntry.objects.filter(
        action="governance.role.permission_granted",
        target_id=str(commanders.pk),
        body_row__content__contains="view_policy",
    )
    before = set(grants.values_list("pk", flat=True))  # the demo's own grants to the role
    assert client.post(url, data).status_code == 302
    [granted] = grants.exclude(pk__in=before)
    assert granted.actor_name == "grace"
    assert json.loads(granted.body_row.content)["reason"] == "commanders read policies"
    page = client.get(url).content.decode()
    assert "commanders read policies" in page  # the role's page lists who changed what


def test_a_view_permission_one_grants_ones_own_role_does_not_count(company):
    """gina, an approver too, grants the approvers view on hr: alice may decide, gina not."""
    services.add_member(company.approvers, company.gina, actor=SYSTEM)
    request = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 10},
        target=company.hr,
        requested_by=company.agent,
    )
    services.grant(company.approvers, "orchestrator.view_workflow", company.hr, actor=company.gina)
    refusal = may_decide(fresh(company.gina), request)
    assert refusal.code == "self_granted" and "granted Approvers orchestrator.view_workflow" in (
        refusal.message
    )
    assert not services.pending_for(fresh(company.gina)).filter(pk=request.pk).exists()
    assert services.pending_for(fresh(company.alice)).filter(pk=request.pk).exists()
    services.decide_approval(request, user=fresh(company.alice), decision="approve")


def test_a_delegation_one_makes_to_oneself_does_not_count(company):
    """gina may set delegations for others, but not hand alice's approvals to herself."""
    services.revoke_delegation(company.delegation, actor=SYSTEM)
    now = clock.now()
    services.create_delegation(
        delegator=company.alice,
        delegate=company.gina,
        starts_at=now - dt.timedelta(hours=1),
        ends_at=now + dt.timedelta(hours=1),
        actor=company.gina,
    )
    request = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 10},
        target=company.payments,
        requested_by=company.agent,
    )
    refusal = may_decide(fresh(company.gina), request)
    assert refusal.code == "self_granted" and "delegation from alice" in refusal.message
    assert not services.pending_for(fresh(company.gina)).exists()


# --- 4. the initiator resolves the escalation of her own run -------------------------------------


@pytest.fixture
def escalated_change(seeded):
    """Production restarts escalate to on-call; alice's triage restarts checkout: it waits."""
    rule = PolicyRule.objects.get(action="tool.incident.restart_service")
    rule.effect = "escalate"
    rule.approval_rule = None
    rule.escalate_to = Role.objects.get(name=demo.ON_CALL)
    services.save_rule(rule, actor=person("admin"), reason="on-call decides changes")
    # The triage's restart step acts for alice, and checkout-2 is down in the demo.
    run = workflows.start_run(
        "incident-triage",
        {"incident": "INC-1003", "service": "checkout"},
        started_by=person("alice"),
    )
    engine.drain()
    escalation = Escalation.objects.get(run_id=run.pk, status=EscalationStatus.OPEN)
    assert escalation.role.name == demo.ON_CALL
    return run, escalation


def test_alice_cannot_resolve_the_escalation_of_her_own_run(escalated_change):
    run, escalation = escalated_change
    alice = person("alice")
    assert (escalation.run_initiator, escalation.raised_by) == (alice, alice)
    assert not Escalation.objects.restrict(alice, "resolve").exists()
    assert not services.can(alice, "resolve", escalation)
    with pytest.raises(services.GovernanceError) as refused:
        services.resolve_escalation(
            escalation, user=alice, resolution="take_over", result={"approved": True}
        )
    assert refused.value.code == "raised_it" and "Separation of duties" in str(refused.value)
    with pytest.raises(CommandError, match=r"Refused \(raised_it\)"):
        command("escalations", "take-over", str(escalation.pk), "--as", "alice", "--result", "{}")
    assert "No escalation for alice." in command("escalations", "list", "--as", "alice")
    client = client_for(alice)
    response = client.post(
        reverse("admin:governance_escalation_resolve", args=[escalation.pk]),
        {"resolution": "take_over", "result": '{"approved": true}', "comment": ""},
    )
    assert response.status_code == 302  # she sees it (she raised it), and is told why not
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.OPEN
    assert (
        AuditEntry.objects.filter(
            action="governance.escalation.refused", actor_name="alice"
        ).count()
        == 3
    )  # service, command, admin
    # dave, a manager, resolves escalations everywhere: it is his to decide.
    assert Escalation.objects.restrict(person("dave"), "resolve").filter(pk=escalation.pk).exists()
    services.resolve_escalation(escalation, user=person("dave"), resolution="stop")


def test_the_run_initiator_is_excluded_even_when_an_agent_raised_it(company):
    """An escalation an agent raised on maya's run: maya, a manager, may not resolve it."""
    escalation = services.open_escalation(
        reason="low_confidence",
        summary="unsure",
        role=company.managers,
        run_id=company.run.pk,
        raised_by=company.agent,
    )
    assert escalation.run_initiator == company.maya  # looked up from the run
    refusal = may_decide(fresh(company.maya), escalation)
    assert refusal.code == "run_initiator"
    services.add_member(company.managers, company.bob, actor=SYSTEM)
    assert may_decide(fresh(company.bob), escalation).allowed
