"""simple-history's version/revert page and guardian's object-permission pages go through the
governed admin: a hidden object is an audited 404, a forbidden act an audited 403."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

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
    services.update_role(role, actor=None, reason="describe it", description="Agents of payments")
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
        services.grant(company.admins, f"guardian.{perm}", actor=None)
    gina = client_for(company.gina)
    role = company.agents
    assert gina.get(permissions_url(role)).status_code == 200
    assert gina.get(permissions_url(role, "user", company.alice.pk)).status_code == 200
    assert gina.get(permissions_url(role, "group", company.approvers.group_id)).status_code == 200
    assert gina.get(permissions_url(role, "user", 987654)).status_code == 404  # no such user
    assert refusals("gina")[-1]["outcome"] == "not_found"
