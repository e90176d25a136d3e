"""Roles: named mandates built on Django groups, with members and the permissions they carry.

A role's permissions are its group's: model-level permissions (every row of a model) and
guardian object permissions (one row). Granting needs the right to change the role, and
nobody grants what they do not hold themselves.

Groups keep no history, so every change of a role's members or permissions is recorded as a
RoleChange (who, when, why) and audited as `governance.role.<kind>` naming the actor; the
group's own audit entries (auth.group.*, guardian.*) name the actor too, because the write runs
as them. The eligibility rule reads these records: a person never decides under a membership or
permission they granted themselves (governance/actions/eligibility.py).
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from guardian.shortcuts import assign_perm, get_perms, remove_perm

from audit import clock
from audit import context as audit_context
from audit import services as audit
from audit.actors import SYSTEM, as_user, requires_actor
from governance.actions.common import (
    GovernanceError,
    audited_refusals,
    delete_governed,
    name_of,
    save_governed,
)
from governance.actions.principals import is_person
from governance.models import Role, RoleChange, RoleChangeKind
from governance.permissions import can, has_model_permission, permission_name, require


def roles_of(user) -> list[Role]:
    """Return the roles a user holds."""
    if user is None or not getattr(user, "pk", None):
        return []
    return list(Role.objects.filter(group__user=user).order_by("name"))


def holds_role(user, role: Role) -> bool:
    """Tell whether a user is a member of a role."""
    return bool(user is not None and user.pk) and role.group.user_set.filter(pk=user.pk).exists()


def role_grants(role: Role, action: str, obj) -> bool:
    """Tell whether a role carries `action` on `obj` (on every row of its model, or on it)."""
    if obj is None:
        return True
    perm = permission_name(type(obj), action)
    app_label, codename = perm.split(".", 1)
    if role.group.permissions.filter(content_type__app_label=app_label, codename=codename).exists():
        return True
    from guardian.core import ObjectPermissionChecker

    return ObjectPermissionChecker(role.group).has_perm(codename, obj)


def _require_owner(owner) -> None:
    """Refuse a role without an accountable owner who is an active person."""
    if owner is None:
        raise GovernanceError("A role needs an accountable owner.", code="owner_required")
    if not owner.is_active or not is_person(owner):
        raise GovernanceError(
            "A role's accountable owner must be an active person.", code="owner_not_a_person"
        )


@requires_actor
@audited_refusals
def create_role(*, name: str, description: str = "", owner=None, actor, reason: str = "") -> Role:
    """Create a role, with the person accountable for it, and the group carrying its permissions."""
    _require_owner(owner)
    if Group.objects.filter(name=name).exists():
        raise GovernanceError(f"A group named {name!r} already exists.", code="duplicate")
    group = Group.objects.create(name=name)
    role = Role(group=group, name=name, description=description, owner=owner)
    role.owner_name = name_of(owner)
    return save_governed(role, actor=actor, reason=reason or "role created")


@requires_actor
@audited_refusals
def update_role(role: Role, *, actor, reason: str, **fields) -> Role:
    """Change a role's name, description or owner; the group follows its name."""
    for name, value in fields.items():
        if name not in {"name", "description", "owner"}:
            raise TypeError(f"update_role cannot change {name!r}")
        setattr(role, name, value)
    _require_owner(role.owner)
    role.owner_name = name_of(role.owner)
    save_governed(role, actor=actor, reason=reason)
    if role.group.name != role.name:
        role.group.name = role.name
        role.group.save(update_fields=["name"])
    return role


@requires_actor
@audited_refusals
def delete_role(role: Role, *, actor, reason: str) -> None:
    """Delete a role and its group (members lose what it carried)."""
    group = role.group
    delete_governed(role, actor=actor, reason=reason)
    group.delete()


def _as(actor):
    """Run a group write as `actor`, so the receivers' entries (auth.group.*) name them.

    A service called outside a request (a command, a task, the shell) has no acting user in
    the audit context; without this, those entries named nobody.
    """
    request_id = audit_context.current().request_id or None
    return audit_context.acting_as(actor, request_id=request_id)


def _record_change(
    role: Role, kind: str, *, actor, reason: str = "", member=None, permission="", target=None
) -> RoleChange:
    """Record one change of a role's members or permissions, and audit it naming the actor."""
    change = RoleChange.objects.create(
        role=role,
        role_name=role.name,
        kind=kind,
        member=member,
        member_name=name_of(member),
        permission=permission,
        target_ct=ContentType.objects.get_for_model(type(target)) if target is not None else None,
        target_id=str(target.pk) if target is not None else "",
        target_repr=str(target)[:200] if target is not None else "",
        actor=as_user(actor),
        actor_name=name_of(actor),
        reason=reason[:200],
        at=clock.now(),
    )
    audit.record(
        action=f"governance.role.{kind}",
        actor=actor,
        target=role,
        body={
            "role": role.name,
            "member": name_of(member) or None,
            "permission": permission or None,
            "on": (
                {"type": target._meta.label_lower, "id": str(target.pk)}
                if target is not None
                else None
            ),
            "reason": reason,
            "role_change": change.pk,
        },
    )
    return change


def _add_members(role: Role, users, *, actor, reason: str) -> None:
    """Add users to a role's group, each addition recorded and audited."""
    current = set(role.group.user_set.values_list("pk", flat=True))
    added = [user for user in users if user.pk not in current]
    if not added:
        return
    with _as(actor):
        role.group.user_set.add(*added)
    for user in added:
        _record_change(role, RoleChangeKind.MEMBER_ADDED, actor=actor, reason=reason, member=user)


def _remove_members(role: Role, users, *, actor, reason: str) -> None:
    """Remove users from a role's group, each removal recorded and audited."""
    current = set(role.group.user_set.values_list("pk", flat=True))
    removed = [user for user in users if user.pk in current]
    if not removed:
        return
    with _as(actor):
        role.group.user_set.remove(*removed)
    for user in removed:
        _record_change(role, RoleChangeKind.MEMBER_REMOVED, actor=actor, reason=reason, member=user)


@requires_actor
@audited_refusals
def set_members(role: Role, users, *, actor, reason: str = "") -> Role:
    """Make exactly these users the role's members (each change recorded and audited)."""
    if actor is not SYSTEM:
        require(actor, "change", role)
    users = list(users)
    wanted = {user.pk for user in users}
    leaving = list(role.group.user_set.exclude(pk__in=wanted))
    _add_members(role, users, actor=actor, reason=reason or "members set")
    _remove_members(role, leaving, actor=actor, reason=reason or "members set")
    return role


@requires_actor
@audited_refusals
def add_member(role: Role, user, *, actor, reason: str = "") -> Role:
    """Give a user a role (recorded and audited)."""
    if actor is not SYSTEM:
        require(actor, "change", role)
    _add_members(role, [user], actor=actor, reason=reason or "member added")
    return role


@requires_actor
@audited_refusals
def remove_member(role: Role, user, *, actor, reason: str = "") -> Role:
    """Take a role from a user (recorded and audited)."""
    if actor is not SYSTEM:
        require(actor, "change", role)
    _remove_members(role, [user], actor=actor, reason=reason or "member removed")
    return role


def _permission(perm: str) -> Permission:
    """Return a Permission row from 'app_label.codename'."""
    app_label, codename = perm.split(".", 1)
    try:
        return Permission.objects.get(content_type__app_label=app_label, codename=codename)
    except Permission.DoesNotExist:
        raise GovernanceError(
            f"No permission {perm!r} exists.", code="unknown_permission"
        ) from None


def _may_grant(actor, perm: str, obj) -> bool:
    """Tell whether `actor` holds what they want to grant (nobody grants beyond themselves)."""
    permission = _permission(perm)
    if obj is None:
        return actor.is_superuser or actor.has_perm(perm)
    action = permission.codename.rsplit("_", 1)[0]
    if permission.codename == f"{action}_{obj._meta.model_name}":
        return can(actor, action, obj)
    return actor.is_superuser or actor.has_perm(perm) or actor.has_perm(perm, obj)


@requires_actor
@audited_refusals
def grant(role: Role, perm: str, obj=None, *, actor, reason: str = "") -> Role:
    """Let a role do `perm` ('app.codename') on one object, or on every row without `obj`."""
    if actor is not SYSTEM:
        require(actor, "change", role)
        if not _may_grant(actor, perm, obj):
            refusal = GovernanceError(
                f"You cannot grant {perm} {'on ' + str(obj) if obj else 'globally'}: "
                "you do not hold it yourself.",
                code="grant_beyond_own",
            )
            # Audited like any other refusal (audited_refusals writes it after the rollback).
            refusal.audit_entry = {
                "action": "governance.access_denied",
                "actor": actor,
                "target": obj if obj is not None else role,
                "body": {
                    "action": "grant",
                    "permission": perm,
                    "role": role.name,
                    "outcome": "forbidden",
                },
            }
            raise refusal
    permission = _permission(perm)
    if obj is not None:
        _check_object_permission(perm, obj)
    if _holds(role, permission, obj):
        return role
    with _as(actor):
        if obj is None:
            role.group.permissions.add(permission)
        else:
            assign_perm(perm, role.group, obj)
    _record_change(
        role,
        RoleChangeKind.PERMISSION_GRANTED,
        actor=actor,
        reason=reason or "permission granted",
        permission=perm,
        target=obj,
    )
    return role


@requires_actor
@audited_refusals
def revoke(role: Role, perm: str, obj=None, *, actor, reason: str = "") -> Role:
    """Take a permission (on one object, or model-wide) away from a role."""
    if actor is not SYSTEM:
        require(actor, "change", role)
    permission = _permission(perm)
    if not _holds(role, permission, obj):
        return role
    with _as(actor):
        if obj is None:
            role.group.permissions.remove(permission)
        else:
            remove_perm(perm, role.group, obj)
    _record_change(
        role,
        RoleChangeKind.PERMISSION_REVOKED,
        actor=actor,
        reason=reason or "permission revoked",
        permission=perm,
        target=obj,
    )
    return role


def _holds(role: Role, permission: Permission, obj) -> bool:
    """Tell whether a role holds a permission model-wide (obj None) or on one object."""
    if obj is None:
        return role.group.permissions.filter(pk=permission.pk).exists()
    return permission.codename in get_perms(role.group, obj)


def _check_object_permission(perm: str, obj) -> None:
    """Refuse a permission that does not belong to the object's model."""
    permission = _permission(perm)
    if permission.content_type_id != ContentType.objects.get_for_model(type(obj)).pk:
        raise GovernanceError(
            f"{perm} is not a permission of {obj._meta.label}.", code="wrong_permission"
        )


def can_manage_roles(user) -> bool:
    """Tell whether a user may change roles at all (for the admin's menus)."""
    return has_model_permission(user, "change", Role)
