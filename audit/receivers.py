"""Record logins, failed logins, user / group / permission changes and admin changes.

Connected once from AuditConfig.ready(). A receiver runs inside the transaction of the change it
reports (Django sends these signals from within it), so the change and its entry commit
together. The acting user comes from the audit context (the request's user, set by
AuditContextMiddleware, or acting_as() in a task or command); outside both, SYSTEM.
Not seen by any signal, hence not recorded here: queryset.update() / bulk_create() on users and
groups, and guardian's bulk assign_perm over a queryset; Steward's own code does not use them.
"""

from __future__ import annotations

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry, LogEntryManager
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_delete, post_save

from audit import context, services
from audit.actors import SYSTEM

_ADMIN_ACTIONS = {ADDITION: "admin.addition", CHANGE: "admin.change", DELETION: "admin.deletion"}
_USER_FLAGS = ("is_active", "is_staff", "is_superuser")


def _client(request) -> dict:
    """Return what identifies the client of a request (address and user agent)."""
    if request is None:
        return {}
    return {
        "ip": request.META.get("REMOTE_ADDR", ""),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:200],
    }


def _request_id(request) -> str:
    """Return the request id set by the middleware, if any."""
    return getattr(request, "request_id", "") if request is not None else ""


def on_login(sender, request, user, **kwargs):
    """Record a successful login."""
    services.record(
        action="auth.login",
        actor=user,
        target=user,
        request_id=_request_id(request),
        body=_client(request),
    )


def on_logout(sender, request, user, **kwargs):
    """Record a logout."""
    if user is None:
        return
    services.record(action="auth.logout", actor=user, target=user, request_id=_request_id(request))


def on_login_failed(sender, credentials, request=None, **kwargs):
    """Record a failed login with the username tried (never the password)."""
    username = str(credentials.get("username", ""))[:150]
    services.record(
        action="auth.login_failed",
        actor=SYSTEM,  # what Steward saw: nobody signed in; the name tried is in the body
        target_type="auth.user",
        target_repr=username,
        request_id=_request_id(request),
        body={"username": username, **_client(request)},
    )


def on_user_saved(sender, instance, created, update_fields=None, raw=False, **kwargs):
    """Record a user created or changed (not the last_login touch of every login)."""
    if raw or (update_fields is not None and set(update_fields) <= {"last_login"}):
        return
    services.record(
        action="auth.user.created" if created else "auth.user.changed",
        actor=context.current_actor(),
        target=instance,
        body={
            "fields": sorted(update_fields) if update_fields else None,
            **{flag: getattr(instance, flag, None) for flag in _USER_FLAGS},
        },
    )


def on_group_saved(sender, instance, created, raw=False, **kwargs):
    """Record a group created or renamed."""
    if raw:
        return
    services.record(
        action="auth.group.created" if created else "auth.group.changed",
        actor=context.current_actor(),
        target=instance,
    )


def on_deleted(sender, instance, **kwargs):
    """Record a user or group deleted."""
    services.record(
        action=f"{instance._meta.label_lower}.deleted",
        actor=context.current_actor(),
        target=instance,
    )


def on_membership_changed(sender, instance, action, reverse, model, pk_set, **kwargs):
    """Record group memberships and permission grants added, removed or cleared."""
    if action not in {"post_add", "post_remove", "pre_clear"}:
        return
    change = {"post_add": "add", "post_remove": "remove", "pre_clear": "clear"}[action]
    if pk_set:
        related = [str(obj) for obj in model._default_manager.filter(pk__in=pk_set)]
    elif action == "pre_clear":
        field = _m2m_field(sender, instance, reverse)
        related = [str(obj) for obj in getattr(instance, field).all()] if field else []
    else:
        return
    if not related:
        return
    services.record(
        action=f"{instance._meta.label_lower}.{model._meta.model_name}s_changed",
        actor=context.current_actor(),
        target=instance,
        body={"change": change, "model": model._meta.label_lower, "objects": sorted(related)},
    )


def _m2m_field(through, instance, reverse) -> str | None:
    """Return the accessor on `instance` for the many-to-many table `through`."""
    for field in instance._meta.get_fields():
        if getattr(getattr(field, "remote_field", None), "through", None) is through:
            return field.get_accessor_name() if field.auto_created else field.name
    return None


def on_object_permission_saved(sender, instance, created, raw=False, **kwargs):
    """Record a guardian object permission granted to a user or group."""
    if raw or not created:
        return
    _object_permission("guardian.permission_granted", instance)


def on_object_permission_deleted(sender, instance, **kwargs):
    """Record a guardian object permission revoked."""
    _object_permission("guardian.permission_revoked", instance)


def _object_permission(action: str, instance) -> None:
    """Record a guardian object permission change against the object it concerns."""
    content_type = instance.content_type
    holder = getattr(instance, "user", None) or getattr(instance, "group", None)
    services.record(
        action=action,
        actor=context.current_actor(),
        target_type=f"{content_type.app_label}.{content_type.model}",
        target_id=str(instance.object_pk),
        body={
            "permission": instance.permission.codename,
            "holder_type": holder._meta.label_lower,
            "holder": str(holder),
        },
    )


def _admin_entry(log: LogEntry) -> dict:
    """Return record() arguments for an admin log entry."""
    content_type = log.content_type
    return {
        "action": _ADMIN_ACTIONS.get(log.action_flag, "admin.action"),
        "actor": log.user,
        "target_type": f"{content_type.app_label}.{content_type.model}" if content_type else "",
        "target_id": log.object_id or "",
        "target_repr": log.object_repr,
        "body": {"change_message": log.get_change_message()},
    }


def on_admin_logged(sender, instance, created, raw=False, **kwargs):
    """Record a change made in the Django admin (Django logs each one as a LogEntry)."""
    if raw or not created:
        return
    services.record(**_admin_entry(instance))


def _audit_bulk_admin_log(original):
    """Wrap LogEntryManager.log_actions so bulk-created log entries (no post_save) are recorded."""

    def log_actions(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        logs = [result] if isinstance(result, LogEntry) else list(result)
        if len(logs) > 1:
            services.record_many([_admin_entry(log) for log in logs])
        return result

    log_actions.audit_wrapped = True
    return log_actions


def connect() -> None:
    """Connect every audit receiver (idempotent)."""
    from guardian.models import GroupObjectPermission, UserObjectPermission

    user_model = get_user_model()
    user_logged_in.connect(on_login, dispatch_uid="audit.login")
    user_logged_out.connect(on_logout, dispatch_uid="audit.logout")
    user_login_failed.connect(on_login_failed, dispatch_uid="audit.login_failed")
    post_save.connect(on_user_saved, sender=user_model, dispatch_uid="audit.user_saved")
    post_save.connect(on_group_saved, sender=Group, dispatch_uid="audit.group_saved")
    post_delete.connect(on_deleted, sender=user_model, dispatch_uid="audit.user_deleted")
    post_delete.connect(on_deleted, sender=Group, dispatch_uid="audit.group_deleted")
    for through in (
        user_model.groups.through,
        user_model.user_permissions.through,
        Group.permissions.through,
    ):
        m2m_changed.connect(
            on_membership_changed, sender=through, dispatch_uid=f"audit.m2m.{through.__name__}"
        )
    for model in (UserObjectPermission, GroupObjectPermission):
        post_save.connect(
            on_object_permission_saved, sender=model, dispatch_uid=f"audit.grant.{model.__name__}"
        )
        post_delete.connect(
            on_object_permission_deleted,
            sender=model,
            dispatch_uid=f"audit.revoke.{model.__name__}",
        )
    post_save.connect(on_admin_logged, sender=LogEntry, dispatch_uid="audit.admin_log")
    if not getattr(LogEntryManager.log_actions, "audit_wrapped", False):
        LogEntryManager.log_actions = _audit_bulk_admin_log(LogEntryManager.log_actions)
