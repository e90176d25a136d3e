"""The governance admin: the permission matrix through its pages, reasons, history, decisions."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.models import ApprovalDecision, ApprovalStatus, PolicyRule, Role
from tests.governance.admin_forms import change_form_data
from tests.governance.conftest import fresh

STAFF = ["gina", "alice", "bob", "maya", "oscar"]
PRINCIPALS = [*STAFF, "integration", "agent"]
COLUMNS = ["role", "policy", "approvalrule", "delegation", "payments", "hr", "run"]
NONE = "-44"
# list (+ listed, - not listed or 403), view (+ 200, 4 404), change POST (+ saved, 3, 4).
EXPECTED = {
    "gina": dict.fromkeys(COLUMNS, "+++"),
    "alice": {**dict.fromkeys(COLUMNS, NONE), "delegation": "+++", "payments": "++3"},
    "bob": {**dict.fromkeys(COLUMNS, NONE), "delegation": "++3", "payments": "++3"},
    "maya": {
        "role": "++3",
        "policy": "++3",
        "approvalrule": "++3",
        "delegation": NONE,
        "payments": "+++",
        "hr": "++3",
        "run": "+++",  # she started it, and may still start payments runs: she operates it
    },
    "oscar": dict.fromkeys(COLUMNS, NONE),
    # Service accounts never get past the login page ("L"): the agent's session is refused by the
    # authentication backend, the integration is not staff. Nothing is listed, shown or saved.
    "integration": dict.fromkeys(COLUMNS, "-LL"),
    "agent": dict.fromkeys(COLUMNS, "-LL"),
}
DELETABLE = ["role", "policy", "approvalrule", "delegation"]


def _object(company, column):
    return {
        "role": company.agents,
        "policy": company.policy,
        "approvalrule": company.rule,
        "delegation": company.delegation,
        "payments": company.payments,
        "hr": company.hr,
        "run": company.run,
    }[column]


def _url(obj, view: str, *args) -> str:
    opts = obj._meta
    if view == "changelist":
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=[obj.pk, *args])


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", password="pw-root-123")


def _denials(user) -> int:
    return AuditEntry.objects.filter(action="governance.access_denied", actor_id=user.pk).count()


def _outcome(response) -> str:
    """Name a response: 2xx/3xx success, 403, 404, or a redirect to the login page ("L")."""
    if response.status_code == 302 and "/login/" in response["Location"]:
        return "L"
    return {200: "+", 302: "+", 403: "3", 404: "4"}[response.status_code]


@pytest.mark.parametrize("actor", PRINCIPALS)
@pytest.mark.parametrize("column", COLUMNS)
def test_permission_matrix_through_the_admin(company, root, actor, column):
    user = fresh(getattr(company, actor))
    obj = _object(company, column)
    client = client_for(user)
    got = ""
    listing = client.get(_url(obj, "changelist"))
    listed = listing.status_code == 200 and obj in listing.context["cl"].result_list
    got += "+" if listed else "-"
    before = _denials(user)
    page = client.get(_url(obj, "change"))
    got += _outcome(page)
    data = change_form_data(client_for(root).get(_url(obj, "change")))
    data["change_reason"] = "matrix"
    if column == "run":
        response = client.post(_url(obj, "signal"), {"name": "nudge", "payload": "{}"})
    else:
        response = client.post(_url(obj, "change"), data)
    if response.status_code == 200:
        pytest.fail(f"form refused: {response.context['adminform'].form.errors}")
    got += _outcome(response)
    refusals = got[1:].count("3") + got[1:].count("4")
    assert _denials(user) == before + refusals, f"{actor} on {column}: refusals not audited"
    assert got == EXPECTED[actor][column], f"{actor} on {column}: {got}"


@pytest.mark.parametrize("actor", STAFF)
@pytest.mark.parametrize("column", DELETABLE)
def test_delete_through_the_admin(company, actor, column):
    user = fresh(getattr(company, actor))
    obj = _object(company, column)
    expected = {"gina": 302, "alice": 302 if column == "delegation" else 404}.get(actor, 404)
    if actor == "maya" and column != "delegation":
        expected = 403
    if actor == "bob" and column == "delegation":
        expected = 403
    response = client_for(user).post(_url(obj, "delete"), {"post": "yes"})
    assert response.status_code == expected
    assert type(obj).objects.filter(pk=obj.pk).exists() == (expected != 302)


def _staff_with_password(principal, password):
    """Flag a service account as staff and give it a password (what a careless admin might do)."""
    user = fresh(principal)
    user.is_staff = True
    user.set_password(password)
    user.save()
    return user


def _logs_in(user, password) -> bool:
    """Post the admin's login form; tell whether it let the user in."""
    response = Client().post(
        reverse("admin:login"),
        {"username": user.get_username(), "password": password, "next": "/admin/"},
    )
    return response.status_code == 302 and "/login/" not in response["Location"]


def test_an_agent_never_reaches_the_admin_even_as_staff_with_a_password(company):
    agent = _staff_with_password(company.agent, "pw-agent-123")
    person = _staff_with_password(company.oscar, "pw-oscar-123")
    assert _logs_in(person, "pw-oscar-123")  # the same form lets a person in...
    assert not _logs_in(agent, "pw-agent-123")  # ...but the backend refuses the agent
    stolen = Client()
    stolen.force_login(agent)  # a stolen session: dropped on the next request
    response = stolen.get(reverse("admin:governance_role_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_an_integration_has_no_password_to_log_in_with(company):
    integration = fresh(company.integration)
    integration.is_staff = True
    integration.save()
    assert not integration.has_usable_password()
    client = Client()
    response = client.post(
        reverse("admin:login"),
        {"username": integration.get_username(), "password": "", "next": "/admin/"},
    )
    assert response.status_code == 200 and "_auth_user_id" not in client.session


def test_an_integration_never_reaches_the_admin_even_as_staff_with_a_password(company):
    integration = _staff_with_password(company.integration, "pw-erp-123")
    person = _staff_with_password(company.oscar, "pw-oscar-123")
    assert _logs_in(person, "pw-oscar-123")  # the same form lets a person in...
    assert not _logs_in(integration, "pw-erp-123")  # ...but not an integration
    stolen = Client()
    stolen.force_login(integration)  # a session it somehow holds is dropped on the next request
    response = stolen.get(reverse("admin:governance_role_changelist"))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_the_admin_asks_for_a_change_reason_and_history_shows_the_diff(company):
    gina = fresh(company.gina)
    client = client_for(gina)
    url = _url(company.policy, "change")
    data = change_form_data(client.get(url))
    data["description"] = "Rules for paying suppliers"
    data.pop("change_reason", None)
    response = client.post(url, data)
    assert (
        response.status_code == 200 and "change_reason" in response.context["adminform"].form.errors
    )
    data["change_reason"] = "describe the policy"
    assert client.post(url, data).status_code == 302
    company.policy.refresh_from_db()
    assert company.policy.version == 2
    record = company.policy.history.first()
    assert (record.history_change_reason, record.history_user) == ("describe the policy", gina)
    history = client.get(_url(company.policy, "history"))
    assert history.status_code == 200
    assert b"describe the policy" in history.content
    assert b"Rules for paying suppliers" in history.content  # the diff of the change


def test_revert_restores_an_old_version_with_a_reason(company):
    gina = fresh(company.gina)
    services.update_policy(company.policy, actor=gina, reason="rename", name="Renamed")
    first = company.policy.history.order_by("history_id").first()
    client = client_for(gina)
    url = _url(company.policy, "simple_history", first.history_id)
    data = change_form_data(client.get(url))
    data["change_reason"] = "undo the rename"
    assert client.post(url, data).status_code == 302
    company.policy.refresh_from_db()
    assert company.policy.name == "Payments policy"
    assert company.policy.history.first().history_change_reason == "undo the rename"
    assert (
        AuditEntry.objects.filter(action="governance.policy.changed", actor_name="gina").count()
        == 2
    )


def test_history_of_an_invisible_object_is_a_404(company):
    response = client_for(fresh(company.oscar)).get(_url(company.policy, "history"))
    assert response.status_code == 404


def test_an_invalid_rule_is_refused_by_the_form(company):
    client = client_for(fresh(company.gina))
    response = client.post(
        reverse("admin:governance_policyrule_add"),
        {
            "policy": company.policy.pk,
            "position": 10,
            "name": "bad",
            "status": "active",
            "action": "tool.*",
            "condition": "arguments.amount >",
            "effect": "allow",
            "risk": "low",
            "change_reason": "try",
        },
    )
    assert response.status_code == 200
    assert "does not parse" in str(response.context["adminform"].form.errors["condition"])
    assert not PolicyRule.objects.exists()


def test_dry_run_in_the_admin_saves_nothing(company):
    agent = fresh(company.agent)
    for amount in (10, 5000):
        services.decide(actor=agent, action="tool.refund", arguments={"amount": amount})
    response = client_for(fresh(company.gina)).post(
        reverse("admin:governance_policyrule_add"),
        {
            "policy": company.policy.pk,
            "position": 10,
            "name": "cap",
            "status": "draft",
            "action": "tool.refund",
            "condition": "arguments.amount > 1000",
            "effect": "deny",
            "reason": "over the cap",
            "risk": "high",
            "_dryrun": "1",
        },
    )
    assert response.status_code == 200
    report = response.context["report"]
    assert report.examined == 2 and len(report.changed) == 1
    assert b"<strong>deny</strong>" in response.content
    assert not PolicyRule.objects.exists()


def test_role_admin_sets_members_and_permissions_through_the_services(company):
    gina = fresh(company.gina)
    client = client_for(gina)
    response = client.post(
        reverse("admin:governance_role_add"),
        {
            "name": "Auditors",
            "description": "Read the record",
            "owner": gina.pk,
            "members": [company.oscar.pk],
            "permissions": [],
            "change_reason": "new auditors",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    role = Role.objects.get(name="Auditors")
    assert list(role.group.user_set.all()) == [company.oscar]
    assert role.history.first().history_change_reason == "new auditors"


def _pending(company):
    return services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 900},
        target=company.payments,
        requested_by=company.agent,
    )


def test_an_approver_decides_a_pending_request_in_the_admin(company):
    request = _pending(company)
    alice = client_for(fresh(company.alice))
    listing = alice.get(reverse("admin:governance_approvalrequest_changelist"))
    assert request in listing.context["cl"].result_list
    page = alice.get(_url(request, "change"))
    assert page.status_code == 200 and page.context["decision_form"] is not None
    response = alice.post(
        _url(request, "decide"),
        {"decision": "approve", "comment": "ok", "expected_digest": request.arguments_digest},
    )
    assert response.status_code == 302
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED
    page = alice.get(_url(request, "change"))
    assert "decision_form" not in page.context  # a decided request is read-only


def test_refusals_in_the_admin_are_shown_and_audited(company):
    request = _pending(company)
    maya = fresh(company.maya)  # owns the agent, and is not an approver anyway
    response = client_for(maya).post(
        _url(request, "decide"),
        {"decision": "approve", "expected_digest": request.arguments_digest},
    )
    assert response.status_code == 404  # she cannot even see it
    oscar_client = client_for(fresh(company.oscar))
    assert oscar_client.get(_url(request, "change")).status_code == 404
    assert AuditEntry.objects.filter(action="governance.access_denied", actor_name="oscar").exists()
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING


def test_bulk_approve_applies_every_rule(company):
    first, second = _pending(company), _pending(company)
    services.decide_approval(second, user=fresh(company.bob), decision="reject", comment="no")
    alice = client_for(fresh(company.alice))
    response = alice.post(
        reverse("admin:governance_approvalrequest_changelist") + "?state=all",
        {"action": "approve_selected", "_selected_action": [first.pk, second.pk]},
        follow=True,
    )
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED)
    assert b"already rejected" in response.content


def test_bulk_reject_asks_for_the_reason_and_decides_with_it(company):
    first, second = _pending(company), _pending(company)
    alice = client_for(fresh(company.alice))
    changelist = reverse("admin:governance_approvalrequest_changelist")
    chosen = {"action": "reject_selected", "_selected_action": [first.pk, second.pk]}
    asked = alice.post(changelist, chosen)
    assert asked.status_code == 200 and b'name="reason"' in asked.content
    blank = alice.post(changelist, {**chosen, "apply": "1", "reason": " "})
    assert blank.status_code == 200 and b"This field is required" in blank.content
    assert not ApprovalDecision.objects.filter(request__in=[first, second]).exists()
    done = alice.post(changelist, {**chosen, "apply": "1", "reason": "duplicate refunds"})
    assert done.status_code == 302
    for request in (first, second):
        request.refresh_from_db()
        assert request.status == ApprovalStatus.REJECTED
        assert request.decisions.get().comment == "duplicate refunds"


def test_a_rejection_in_the_admin_form_needs_its_reason(company):
    request = _pending(company)
    alice = client_for(fresh(company.alice))
    response = alice.post(
        _url(request, "decide"),
        {"decision": "reject", "comment": "", "expected_digest": request.arguments_digest},
        follow=True,
    )
    assert b"Say why you reject" in response.content
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING and not request.decisions.exists()


def test_guardian_object_permission_page_is_for_governance_admins(company):
    for model in ("userobjectpermission", "groupobjectpermission"):
        for action in ("view", "change"):
            services.grant(company.admins, f"guardian.{action}_{model}", actor=SYSTEM)
    services.grant(company.approvers, "governance.change_policy", company.policy, actor=SYSTEM)
    url = _url(company.policy, "permissions")
    page = client_for(fresh(company.gina)).get(url)
    assert page.status_code == 200
    # The page shows who holds what on this policy: the approvers' object permission.
    assert {group.name: list(perms) for group, perms in page.context["groups_perms"].items()} == {
        "Approvers": ["change_policy"]
    }
    # Maya views the policy but may not change it, nor does she hold guardian's permissions:
    # an audited 403 (not guardian's silent redirect to the index).
    maya = fresh(company.maya)
    response = client_for(maya).get(url)
    assert response.status_code == 403
    refusal = AuditEntry.objects.get(action="governance.access_denied", actor_id=maya.pk)
    assert (refusal.target_type, refusal.target_id) == ("governance.policy", str(company.policy.pk))
