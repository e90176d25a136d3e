"""The one authorisation path: `queryset.restrict(user, action)` and `can(user, action, obj)`.

Built on Django's model permissions (a role's group may hold `app.change_model` for every row)
and guardian's object permissions (or only for some rows). Superusers see everything; anyone
else sees nothing until a permission says otherwise. Some models add an ownership rule (the
delegator of a delegation may change it; a delegate sees the requests handed to them); it lives
in the model's queryset class (`owner_q`), so restrict() and can() apply it alike. Parts of a
whole (a run's steps, an agent's calls) name their whole (`permission_parent`) and follow it.
Other people are shown through visible_people(), any model through restricted().

Every list, detail, admin page, API view, consumer and service of every app goes through
restrict() / can(). Writes re-check after saving, inside their transaction (`verify_after_write`),
and a refusal rolls the write back; refusals are audited once the transaction is undone
(governance.actions.common.audited_refusals, and the governed admin).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Q
from django.http import Http404

ACTIONS = ("view", "add", "change", "delete")


def permission_name(model, action: str) -> str:
    """Return the full permission name for an action on a model, e.g. 'governance.view_role'."""
    opts = model._meta
    return f"{opts.app_label}.{action}_{opts.model_name}"


def _usable(user) -> bool:
    """Tell whether a user may hold permissions at all (authenticated and active)."""
    return (
        user is not None
        and getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
    )


def has_model_permission(user, action: str, model) -> bool:
    """Tell whether a user holds an action on every row of a model (a model-level permission)."""
    if not _usable(user):
        return False
    if user.is_superuser:
        return True
    return user.has_perm(permission_name(model, action))


def _parent_action(action: str) -> str:
    """Map an action on a part (a rule) to the action on its whole: adding one changes it."""
    return "view" if action == "view" else "change"


class RestrictedQuerySet(models.QuerySet):
    """A queryset that can narrow itself to what a user may see or touch."""

    # Set on parts of a governed whole (a policy's rules): the parent's permissions govern them.
    permission_parent: str | None = None
    # Actions a rule decides rather than permissions (deciding a request, resolving an
    # escalation): restrict() and can() both answer them with rule_rows().
    rule_actions: frozenset[str] = frozenset()

    def rule_rows(self, user, action: str) -> RestrictedQuerySet:
        """Return the rows the rule lets a usable `user` perform a rule action on."""
        raise NotImplementedError

    def owner_q(self, user, action: str) -> Q | None:
        """Return the rows a user may act on by ownership rather than permission (None: none)."""
        return None

    def restrict(self, user, action: str = "view") -> RestrictedQuerySet:
        """Return the rows `user` may perform `action` on; none for anonymous or inactive users."""
        if not _usable(user):
            return self.none()
        if action in self.rule_actions:
            return self.rule_rows(user, action)
        if self.permission_parent:
            field = self.model._meta.get_field(self.permission_parent)
            whole, whole_action = field.related_model, _parent_action(action)
            allowed = whole._default_manager.all().restrict(user, whole_action)
            condition = Q(**{f"{self.permission_parent}__in": allowed.values("pk")})
            if field.null and has_model_permission(user, whole_action, whole):
                # A part whose whole is gone (SET_NULL) is left to those who see every whole.
                condition |= Q(**{f"{self.permission_parent}__isnull": True})
            return self.filter(condition)
        if user.is_superuser or user.has_perm(permission_name(self.model, action)):
            return self
        from guardian.shortcuts import get_objects_for_user

        permitted = get_objects_for_user(
            user,
            permission_name(self.model, action),
            klass=self.model,
            accept_global_perms=False,
            with_superuser=False,
        ).values("pk")
        condition = Q(pk__in=permitted)
        owned = self.owner_q(user, action)
        if owned is not None:
            condition |= owned
        return self.filter(condition)


def can(user, action: str, obj: models.Model) -> bool:
    """Tell whether `user` may perform `action` on `obj` (same rules as restrict())."""
    if not _usable(user):
        return False
    model = type(obj)
    queryset = model._default_manager.all()
    if action in getattr(queryset, "rule_actions", ()):
        if obj.pk is None:
            return False
        # A rule asked of one row need not build the rule's whole set (every run a caller may
        # change, say) to find that row in it: a queryset may answer for one object directly.
        allows = getattr(queryset, "rule_allows", None)
        if allows is not None:
            return allows(user, action, obj)
        return model._default_manager.filter(pk=obj.pk).restrict(user, action).exists()
    parent = getattr(model._default_manager.all(), "permission_parent", None)
    if parent:
        whole = getattr(obj, parent)
        if whole is None:
            whole_model = model._meta.get_field(parent).related_model
            return has_model_permission(user, _parent_action(action), whole_model)
        return can(user, _parent_action(action), whole)
    if user.is_superuser or user.has_perm(permission_name(model, action)):
        return True
    if obj.pk is None:
        return False
    if user.has_perm(permission_name(model, action), obj):
        return True
    queryset = model._default_manager.all()
    owner_q = getattr(queryset, "owner_q", None)
    if owner_q is not None:
        owned = owner_q(user, action)
        if owned is not None:
            return queryset.filter(owned).filter(pk=obj.pk).exists()
    return False


# --- refusals -------------------------------------------------------------------------------


def record_refusal_once(refusal, **entry) -> None:
    """Write a refusal's audit entry, unless an earlier write of it still stands.

    A refusal is audited where it is raised, once the service's own transaction has rolled
    back. When the service ran inside a caller's transaction (the admin's change view is
    atomic), the caller may roll back as well and take that entry with it; whoever handles the
    refusal afterwards (the governed admin) calls audit() again, and the entry is written anew
    only if the first one is gone. So a refusal is in the log exactly once either way.
    """
    from django.db import transaction

    from audit import services as audit
    from audit.models import AuditEntry

    written = getattr(refusal, "_written_entry", None)
    if refusal.recorded:
        if written is None:  # written outside any transaction (or marked so): it stands
            return
        if AuditEntry.objects.filter(pk=written[0], action=written[1]).exists():
            return
    saved = audit.record(**entry)
    in_transaction = transaction.get_connection(saved._state.db).in_atomic_block
    refusal._written_entry = (saved.pk, saved.action) if in_transaction else None
    refusal.recorded = True


class _Refusal:
    """What a refusal carries so it can be audited after its transaction rolled back."""

    def _init(self, user, action: str, target=None, model=None, detail: str = ""):
        self.user = user
        self.action = action
        self.target = target
        self.model = model if model is not None else (type(target) if target is not None else None)
        self.detail = detail
        self.recorded = False

    def audit(self) -> None:
        """Write the refusal to the audit log once (call it outside the rolled-back block)."""
        target_type = self.model._meta.label_lower if self.model is not None else ""
        target = self.target if getattr(self.target, "pk", None) is not None else None
        record_refusal_once(
            self,
            action="governance.access_denied",
            actor=self.user if self.user is not None else AnonymousUser(),
            target=target,
            target_type=target_type,
            target_id="" if target is not None else str(getattr(self, "object_id", "") or ""),
            body={
                "action": self.action,
                "permission": permission_name(self.model, self.action) if self.model else "",
                "outcome": self.outcome,
                "detail": self.detail,
            },
        )


class AccessDenied(_Refusal, PermissionDenied):
    """The user may see the object but not do this to it: 403."""

    outcome = "forbidden"

    def __init__(self, user, action: str, target=None, *, model=None, detail: str = ""):
        self._init(user, action, target, model, detail)
        what = str(target) if target is not None else (model._meta.verbose_name if model else "")
        super().__init__(detail or f"You may not {action} {what}.".replace("  ", " "))


class NotVisible(_Refusal, Http404):
    """The object does not exist for this user (missing or not visible): 404."""

    outcome = "not_found"

    def __init__(self, user, action: str, model, object_id: Any, *, detail: str = ""):
        self._init(user, action, None, model, detail)
        self.object_id = object_id
        super().__init__(f"No {model._meta.verbose_name} with id {object_id} is visible to you.")


def require(user, action: str, obj: models.Model) -> None:
    """Raise AccessDenied (visible object) or NotVisible (hidden one) unless `user` may act."""
    if can(user, action, obj):
        return
    if action != "view" and can(user, "view", obj):
        raise AccessDenied(user, action, obj)
    raise NotVisible(user, action, type(obj), obj.pk)


def require_model(user, action: str, model) -> None:
    """Raise AccessDenied unless `user` holds `action` on the whole model (e.g. 'add')."""
    if not has_model_permission(user, action, model):
        raise AccessDenied(user, action, model=model)


def get_for(user, queryset, pk: Any, action: str = "view") -> models.Model:
    """Return the object `pk` if `user` may see it and perform `action`; else 404 / 403."""
    if isinstance(queryset, type) and issubclass(queryset, models.Model):
        queryset = queryset._default_manager.all()
    model = queryset.model
    try:
        obj = queryset.restrict(user, "view").get(pk=pk)
    except (model.DoesNotExist, ValueError, TypeError):
        raise NotVisible(user, action, model, pk) from None
    if action != "view" and not can(user, action, obj):
        raise AccessDenied(user, action, obj)
    return obj


def visible_people(user) -> models.QuerySet:
    """Return the users `user` may see: themselves, whoever shares a role with them, and the
    principals restrict() lets them view (every user for governance admins and auditors).

    The one rule for people in every choice list, filter, autocomplete and page; an outsider
    (no role, no permission) sees only themselves.
    """
    from django.contrib.auth import get_user_model

    from governance.models import Principal, Role

    User = get_user_model()
    if not _usable(user):
        return User.objects.none()
    if user.is_superuser or user.has_perm(permission_name(User, "view")):
        return User.objects.all()
    their_roles = Role.objects.filter(group__user=user).values("group_id")
    colleagues = User.objects.filter(groups__in=their_roles).values("pk")
    principals = Principal.objects.all().restrict(user, "view").values("user_id")
    return User.objects.filter(Q(pk=user.pk) | Q(pk__in=colleagues) | Q(pk__in=principals))


def restricted(user, model, action: str = "view") -> models.QuerySet:
    """Return the rows of any model that `user` may `action`: the one entry point for choices.

    A governed model answers with its restrict(); people with visible_people(); groups with
    the roles restrict() returns (every group with `auth.<action>_group`); any other model
    (Django's own, a third party's) is all or nothing by its model-wide permission.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from governance.models import Role

    User = get_user_model()
    queryset = model._default_manager.all()
    if issubclass(model, User):
        if action == "view":
            return visible_people(user)
    elif issubclass(model, Group) and not has_model_permission(user, action, model):
        roles = Role.objects.all().restrict(user, action).values("group_id")
        return queryset.filter(pk__in=roles)
    elif callable(getattr(queryset, "restrict", None)):
        return queryset.restrict(user, action)
    return queryset if has_model_permission(user, action, model) else queryset.none()


def verify_after_write(user, action: str, obj: models.Model) -> None:
    """Re-check, inside the write's transaction, that the result is still the user's to touch."""
    if _usable(user) and user.is_superuser:
        return
    manager = type(obj)._default_manager
    if not manager.filter(pk=obj.pk).restrict(user, action).exists():
        raise AccessDenied(
            user, action, obj, detail=f"The result of this change is outside what you may {action}."
        )


# --- querysets with ownership rules ------------------------------------------------------------


class DelegationQuerySet(RestrictedQuerySet):
    """Delegations: the delegator may view, change and revoke theirs; the delegate may view."""

    def owner_q(self, user, action):
        """A person's own delegations, given or received."""
        if action == "view":
            return Q(delegator=user) | Q(delegate=user)
        if action in ("change", "delete"):
            return Q(delegator=user)
        return None

    def active_at(self, moment) -> DelegationQuerySet:
        """Return the delegations in force at a moment."""
        return self.filter(revoked_at__isnull=True, starts_at__lte=moment, ends_at__gt=moment)


class ApprovalRequestQuerySet(RestrictedQuerySet):
    """Approval requests: a delegate sees what their active delegators may; who may decide is
    the eligibility rule's answer (governance/actions/eligibility.py), for lists and decisions."""

    rule_actions = frozenset({"decide"})

    def rule_rows(self, user, action):
        """The pending requests `user` may decide now."""
        from governance.actions.eligibility import decidable_requests

        return decidable_requests(self, user)

    def owner_q(self, user, action):
        """Their own requests, and those handed to `user` by delegations in force."""
        if action != "view":
            return None
        from guardian.shortcuts import get_objects_for_user

        from audit import clock
        from governance.models import Delegation

        condition = Q(requested_by=user)
        delegations = Delegation.objects.active_at(clock.now()).filter(delegate=user)
        for delegation in delegations.select_related("delegator", "role"):
            delegator = delegation.delegator
            if not _usable(delegator):
                continue
            scope = self.model._default_manager.all()
            if delegation.role_id is not None:
                scope = scope.filter(eligible_roles=delegation.role_id)
            if delegator.is_superuser or delegator.has_perm(permission_name(self.model, action)):
                condition |= Q(pk__in=scope.values("pk"))
                continue
            permitted = get_objects_for_user(
                delegator,
                permission_name(self.model, action),
                klass=scope,
                accept_global_perms=False,
                with_superuser=False,
            ).values("pk")
            condition |= Q(pk__in=permitted)
        return condition

    def pending(self) -> ApprovalRequestQuerySet:
        """Return the requests still waiting for a decision."""
        return self.filter(status="pending")


class ApprovalDecisionQuerySet(RestrictedQuerySet):
    """The decisions on a request: visible to whoever may view the request."""

    permission_parent = "request"


class PolicyRuleQuerySet(RestrictedQuerySet):
    """A policy's rules: whoever may change the policy may change its rules."""

    permission_parent = "policy"


class EscalationLevelQuerySet(RestrictedQuerySet):
    """An approval rule's escalation chain: governed by the approval rule."""

    permission_parent = "rule"


class EscalationQuerySet(RestrictedQuerySet):
    """Escalations: whoever raised one may view it; who may resolve is the eligibility rule's
    answer; the rest goes through permissions."""

    rule_actions = frozenset({"resolve"})

    def rule_rows(self, user, action):
        """The open escalations `user` may resolve now."""
        from governance.actions.eligibility import resolvable_escalations

        return resolvable_escalations(self, user)

    def owner_q(self, user, action):
        """The escalations `user` raised."""
        return Q(raised_by=user) if action == "view" else None
