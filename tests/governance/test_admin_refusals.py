"""simple-history's version/revert page and guardian's object-permission pages go through the
governed admin: a hidden object is an audited 404, a forbidden act an audited 403."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction
from django.test import Client
from django.urls import reverse
from guardian.shortcuts import get_group_perms

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.models import Role
from tests.governance.admin_forms import change_form_data
from tests.governance.conftest import fresh


def client_for(user) -> Client:
    client = Client()
    client.force_login(fresh(user))
    return client


def refusals(username: str) -> list[dict]:
    """Return the bodies of the audited refusals of a user."""
    return [
        json.loads(entry.body_row.content)
        for entry in AuditEntry.objects.filter(
            action="governance.access_denied", actor_name=username
        ).order_by("id")
    ]


@pytest.fixture
def role_versions(company):
    """The payments agents' role with two versions: as created, then with a description."""
    role = company.agents
    first = role.history.order_by("history_id").first()
    services.update_role(role, actor=SYSTEM, reason="describe it", description="Agents of payments")
    return role, first


def version_url(role, version) -> str:
    return reverse("admin:governance_role_simple_history", args=[role.pk, version.history_id])


def test_a_version_of_a_hidden_object_is_an_audited_404(company, role_versions):
    role, first = role_versions
    assert client_for(company.alice).get(version_url(role, first)).status_code == 404
    assert refusals("alice")[-1]["outcome"] == "not_found"
    assert client_for(company.alice).post(version_url(role, first), {}).status_code == 404
    assert len(refusals("alice")) == 2


def test_reverting_needs_the_change_permission_and_a_refusal_is_audited(company, role_versions):
    role, first = role_versions
    maya = client_for(company.maya)  # managers may view roles, not change them
    page = maya.get(version_url(role, first))
    assert page.status_code == 200
    data = {**change_form_data(page), "change_reason": "undo"}
    assert maya.post(version_url(role, first), data).status_code == 403
    refused = refusals("maya")[-1]
    assert (refused["outcome"], refused["action"]) == ("forbidden", "change")
    role.refresh_from_db()
    assert role.description == "Agents of payments"


def test_a_governance_admin_reverts_with_a_reason_in_the_history(company, role_versions):
    role, first = role_versions
    gina = client_for(company.gina)
    data = {**change_form_data(gina.get(version_url(role, first))), "change_reason": "undo"}
    assert gina.post(version_url(role, first), data).status_code == 302
    role = Role.objects.get(pk=role.pk)
    assert role.description == ""
    latest = role.history.order_by("-history_id").first()
    assert latest.history_user == company.gina and latest.history_change_reason == "undo"


def permissions_url(role, *rest) -> str:
    name = "admin:governance_role_permissions"
    if rest:
        name += "_manage_user" if rest[0] == "user" else "_manage_group"
        return reverse(name, args=[role.pk, rest[1]])
    return reverse(name, args=[role.pk])


def test_object_permission_pages_refuse_with_an_audited_404_or_403(company):
    role = company.agents
    assert client_for(company.alice).get(permissions_url(role)).status_code == 404
    assert refusals("alice")[-1]["outcome"] == "not_found"
    alice_page = permissions_url(role, "user", company.alice.pk)
    assert client_for(company.alice).get(alice_page).status_code == 404
    assert client_for(company.maya).get(permissions_url(role)).status_code == 403
    assert refusals("maya")[-1]["outcome"] == "forbidden"
    # gina may change the role, but not guardian's permission rows: a 403 that says so.
    assert client_for(company.gina).get(permissions_url(role)).status_code == 403
    assert "guardian.view_userobjectpermission" in refusals("gina")[-1]["detail"]
    group_page = permissions_url(role, "group", company.approvers.group_id)
    assert client_for(company.gina).get(group_page).status_code == 403


def test_with_guardian_permissions_the_pages_work_for_what_the_user_may_change(company):
    for perm in (
        "view_userobjectpermission",
        "view_groupobjectpermission",
        "change_userobjectpermission",
        "change_groupobjectpermission",
    ):
        services.grant(company.admins, f"guardian.{perm}", actor=SYSTEM)
    gina = client_for(company.gina)
    role = company.agents
    assert gina.get(permissions_url(role)).status_code == 200
    assert gina.get(permissions_url(role, "group", company.approvers.group_id)).status_code == 200
    hidden_group = permissions_url(role, "group", 987654)  # no such role
    assert gina.get(hidden_group).status_code == 404
    assert refusals("gina")[-1]["outcome"] == "not_found"
    # Object permissions go to roles, never to one person: the user page is an audited 403.
    assert gina.get(permissions_url(role, "user", company.alice.pk)).status_code == 403
    assert refusals("gina")[-1]["outcome"] == "forbidden"
    assert "granted to roles" in refusals("gina")[-1]["detail"]


# --- a refusal inside the caller's transaction is audited once, after that transaction ---------


def denials(username: str) -> int:
    return AuditEntry.objects.filter(action="governance.access_denied", actor_name=username).count()


def test_a_refusal_audited_inside_a_rolled_back_transaction_is_written_again_once(company):
    maya = fresh(company.maya)  # managers view roles; they do not change them
    # In the caller's transaction (as the admin's change view holds one), which rolls back.
    with pytest.raises(services.AccessDenied) as refused, transaction.atomic():
        services.add_member(company.agents, company.oscar, actor=maya)
    # The service audited it inside the caller's transaction, which then rolled back with it:
    # whoever handles the refusal next writes it again, once.
    assert denials("maya") == 0
    refused.value.audit()
    refused.value.audit()
    assert denials("maya") == 1


def test_a_refusal_audited_in_a_transaction_that_commits_is_not_written_twice(company):
    maya = fresh(company.maya)
    with transaction.atomic():
        with pytest.raises(services.AccessDenied) as refused:
            services.add_member(company.agents, company.oscar, actor=maya)
        refused.value.audit()  # the caller goes on, and audits what it caught once more
    assert denials("maya") == 1


def test_a_grant_refused_inside_the_admins_change_view_leaves_one_audit_entry(company):
    gina = fresh(company.gina)  # she changes roles, but holds no guardian permission herself
    client = client_for(gina)
    url = reverse("admin:governance_role_change", args=[company.agents.pk])
    data = change_form_data(client.get(url))
    wanted = Permission.objects.get(
        content_type__app_label="guardian", codename="view_groupobjectpermission"
    )
    data["permissions"] = [str(wanted.pk)]
    data["description"] = "changed together with the refused grant"
    data["change_reason"] = "hand out guardian's pages"
    response = client.post(url, data, follow=True)
    assert response.status_code == 200
    assert any("do not hold it yourself" in str(m) for m in response.context["messages"])
    # The whole change was rolled back, and the refusal is in the audit log exactly once.
    role = Role.objects.get(pk=company.agents.pk)
    assert role.description == "" and not role.group.permissions.filter(pk=wanted.pk).exists()
    assert denials("gina") == 1
    refusal = refusals("gina")[-1]
    assert refusal["code"] == "grant_beyond_own"
    assert refusal["permission"] == "guardian.view_groupobjectpermission"


# --- granting on governance's own models goes through grant() / revoke() -----------------------


@pytest.fixture
def guardian_pages(company):
    """Governance admins and managers may use guardian's object-permission pages."""
    for role in (company.admins, company.managers):
        for model in ("userobjectpermission", "groupobjectpermission"):
            for action in ("view", "change"):
                services.grant(role, f"guardian.{action}_{model}", actor=SYSTEM)


def policy_group_url(policy, role) -> str:
    return reverse(
        "admin:governance_policy_permissions_manage_group", args=[policy.pk, role.group_id]
    )


def test_granting_on_a_policy_goes_through_grant_and_a_refusal_is_audited_once(
    company, guardian_pages
):
    # Maya may change this one policy (object by object) and view every policy; she may change
    # the Integrations role, so granting to it is hers to try; she may not delete policies.
    services.grant(company.managers, "governance.change_policy", company.policy, actor=SYSTEM)
    services.grant(company.managers, "governance.change_role", company.integrations, actor=SYSTEM)
    maya = fresh(company.maya)
    url = policy_group_url(company.policy, company.integrations)
    assert client_for(maya).get(url).status_code == 200
    response = client_for(maya).post(
        url, {"permissions": ["view_policy", "change_policy", "delete_policy"]}, follow=True
    )
    assert response.status_code == 200
    held = set(get_group_perms(company.integrations.group, company.policy))
    assert held == {"view_policy", "change_policy"}
    texts = [str(m) for m in response.context["messages"]]
    assert any("do not hold it yourself" in text for text in texts), texts
    refused = refusals("maya")
    assert len(refused) == 1  # written by grant() itself, not a second time by the page
    assert (refused[0]["code"], refused[0]["permission"]) == (
        "grant_beyond_own",
        "governance.delete_policy",
    )
    entry = AuditEntry.objects.get(action="governance.access_denied", actor_name="maya")
    assert (entry.target_type, entry.target_id) == ("governance.policy", str(company.policy.pk))
    # Revoking goes through revoke(): the role loses what is left unticked.
    client_for(maya).post(url, {"permissions": ["view_policy"]})
    assert set(get_group_perms(company.integrations.group, company.policy)) == {"view_policy"}


def test_granting_to_a_role_you_may_not_change_is_refused_by_the_service_and_audited(
    company, guardian_pages
):
    services.grant(company.managers, "governance.change_policy", company.policy, actor=SYSTEM)
    maya = fresh(company.maya)  # she views the Approvers role but may not change it
    url = policy_group_url(company.policy, company.approvers)
    client_for(maya).post(url, {"permissions": ["view_policy"]})
    assert not get_group_perms(company.approvers.group, company.policy).exists()
    refused = refusals("maya")
    assert len(refused) == 1 and refused[0]["outcome"] == "forbidden"
    assert refused[0]["permission"] == "governance.change_role"


def test_every_governed_model_of_governance_has_the_governed_permission_pages(company):
    from django.contrib import admin as django_admin

    from governance.admin import GovernedModelAdmin
    from governance.admin_mixins import ObjectPermissionsThroughRolesMixin

    governed = [
        model_admin
        for model_admin in django_admin.site._registry.values()
        if isinstance(model_admin, GovernedModelAdmin)
    ]
    assert {type(model_admin).__name__ for model_admin in governed} >= {
        "RoleAdmin",
        "PolicyAdmin",
        "ApprovalRuleAdmin",
        "DelegationAdmin",
        "PrincipalAdmin",
    }
    for model_admin in governed:
        assert isinstance(model_admin, ObjectPermissionsThroughRolesMixin)
        view = type(model_admin).obj_perms_manage_group_view
        assert view.__qualname__.startswith("ObjectPermissionsThroughRolesMixin."), model_admin
