"""Logins, failed logins, user / group / permission changes (guardian's included) and admin
changes each leave an audit entry, with the acting user when there is one."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from guardian.shortcuts import assign_perm, remove_perm

from audit.context import acting_as
from audit.models import AuditBody, AuditEntry

pytestmark = pytest.mark.django_db


def last(action: str) -> AuditEntry:
    """Return the newest entry of an action."""
    return AuditEntry.objects.filter(action=action).latest("id")


def test_login_and_failed_login(client, user):
    assert client.login(username="alice", password="pw-alice-123")
    login = last("auth.login")
    assert (login.actor_name, login.actor_kind, login.target_id) == ("alice", "user", str(user.pk))
    assert not client.login(username="alice", password="wrong")
    failed = last("auth.login_failed")
    assert (failed.actor_kind, failed.target_repr) == ("system", "alice")
    body = AuditBody.objects.get(entry=failed).content
    assert '"username":"alice"' in body and "wrong" not in body


def test_admin_login_carries_the_request_id(client, staff):
    response = client.post(
        reverse("admin:login"),
        {"username": "root-admin", "password": "pw-admin-123"},
        HTTP_X_REQUEST_ID="req-login-1",
    )
    assert response.status_code == 302
    assert response["X-Request-ID"] == "req-login-1"
    assert last("auth.login").request_id == "req-login-1"


def test_user_group_and_permission_changes(staff, user):
    with acting_as(staff):
        group = Group.objects.create(name="operators")
        user.groups.add(group)
        permission = Permission.objects.get(codename="view_auditentry")
        group.permissions.add(permission)
        user.is_staff = True
        user.save()
        user.groups.clear()
    created = last("auth.group.created")
    assert (created.actor_name, created.target_repr) == ("root-admin", "operators")
    added, cleared = AuditEntry.objects.filter(action="auth.user.groups_changed").order_by("id")
    assert '"change":"add"' in AuditBody.objects.get(entry=added).content
    assert '"change":"clear"' in AuditBody.objects.get(entry=cleared).content
    granted = last("auth.group.permissions_changed")
    assert "view_auditentry" in AuditBody.objects.get(entry=granted).content.lower() or (
        "view audit entry" in AuditBody.objects.get(entry=granted).content.lower()
    )
    changed = last("auth.user.changed")
    assert '"is_staff":true' in AuditBody.objects.get(entry=changed).content
    assert changed.actor_name == "root-admin"


def test_last_login_touch_is_not_a_user_change(client, user):
    before = AuditEntry.objects.filter(action="auth.user.changed").count()
    client.login(username="alice", password="pw-alice-123")
    assert AuditEntry.objects.filter(action="auth.user.changed").count() == before


def test_guardian_object_permissions(staff, user):
    group = Group.objects.create(name="reviewers")
    with acting_as(staff):
        assign_perm("change_group", user, group)
        remove_perm("change_group", user, group)
    granted = last("guardian.permission_granted")
    revoked = last("guardian.permission_revoked")
    for entry in (granted, revoked):
        assert (entry.target_type, entry.target_id) == ("auth.group", str(group.pk))
        assert entry.actor_name == "root-admin"
        assert '"permission":"change_group"' in AuditBody.objects.get(entry=entry).content
        assert '"holder":"alice"' in AuditBody.objects.get(entry=entry).content


def test_admin_changes_are_recorded(client, staff):
    client.force_login(staff)
    response = client.post(reverse("admin:auth_group_add"), {"name": "via-admin"})
    assert response.status_code == 302
    group = Group.objects.get(name="via-admin")
    added = last("admin.addition")
    assert (added.actor_name, added.target_type, added.target_id) == (
        "root-admin",
        "auth.group",
        str(group.pk),
    )
    assert added.request_id  # the admin request's id


def test_admin_bulk_deletion_is_recorded(client, staff):
    groups = [Group.objects.create(name=f"bulk{i}") for i in range(3)]
    client.force_login(staff)
    response = client.post(
        reverse("admin:auth_group_changelist"),
        {"action": "delete_selected", "_selected_action": [g.pk for g in groups], "post": "yes"},
    )
    assert response.status_code == 302
    deleted = AuditEntry.objects.filter(action="admin.deletion", target_type="auth.group")
    assert sorted(deleted.values_list("target_repr", flat=True)) == ["bulk0", "bulk1", "bulk2"]


def test_user_deletion_keeps_the_copied_name(staff):
    doomed = get_user_model().objects.create_user("bob")
    with acting_as(staff):
        doomed.delete()
    entry = last("auth.user.deleted")
    assert (entry.target_repr, entry.actor_name) == ("bob", "root-admin")
