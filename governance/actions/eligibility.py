"""The one eligibility rule: may this person decide this approval request, or resolve this
escalation, now? Yes with the role (and the person stood in for), or no with a code and why.

The inbox (`restrict(user, "decide")` / `restrict(user, "resolve")`, hence `pending_for`, the
admin lists and `can()`) and the decision services ask the same functions, so what a person is
shown is exactly what they may decide, and a refusal always says why.

A person may decide when they are an authenticated, active person; the request is pending and
inside its deadline (the escalation open); they have not decided it before; separation of
duties does not exclude them (for a request: its requester, the run's initiator, the accountable
owner of the agent that asks; for an escalation: whoever raised it, the run's initiator, the
accountable owner of the agent that raised it); and they hold an eligible role on the target,
themselves or as the in-force delegate of someone who does (approvals only), that is not a
power they granted themselves.

Self-granted powers: whoever added a person to a role, or granted the role the permission that
makes it eligible (view on the target of a request, resolve on every escalation), or created or
changed a delegation to themselves, may not decide under it. Another person has to make that
change for it to count. The records read are RoleChange (roles.py) and the delegation's history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db.models import BooleanField, Exists, ExpressionWrapper, Min, OuterRef, Q

from audit import clock
from audit.actors import SYSTEM
from governance.actions.principals import accountable_owner, kind_of
from governance.actions.roles import holds_role, role_grants
from governance.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalStatus,
    Delegation,
    Escalation,
    EscalationStatus,
    PrincipalKind,
    Role,
    RoleChange,
    RoleChangeKind,
)
from governance.permissions import can, permission_name

RESOLVE_ALL = "governance.resolve_escalation"  # held model-wide: every escalation's role


@dataclass(frozen=True)
class Eligibility:
    """The answer: allowed (with the role, and whom a delegate stands in for) or why not."""

    allowed: bool
    code: str = ""
    message: str = ""
    role: Role | None = None
    on_behalf_of: object | None = None

    def __bool__(self) -> bool:
        return self.allowed


def _yes(role: Role | None, on_behalf_of=None) -> Eligibility:
    """Return an approval of eligibility under a role."""
    return Eligibility(True, role=role, on_behalf_of=on_behalf_of)


def _no(code: str, message: str) -> Eligibility:
    """Return a refusal with its code and its reason."""
    return Eligibility(False, code=code, message=message)


def _not_a_person(user) -> Eligibility | None:
    """Refuse anyone who is not an authenticated, active person."""
    if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", False):
        return _no("anon", "Only an authenticated person may decide.")
    if kind_of(user) != PrincipalKind.PERSON:
        return _no("not_a_person", f"{user} is an {kind_of(user)}; only people decide.")
    return None


# --- separation of duties -----------------------------------------------------------------------

_REQUEST_CONFLICTS = {
    "requester": ("requested_by_id", "asked for this approval"),
    "run_initiator": ("run_initiator_id", "started the run that asks for it"),
    "accountable_owner": (
        "accountable_owner_id",
        "is the accountable owner of the agent that asks for it",
    ),
}
_ESCALATION_CONFLICTS = {
    "raised_it": ("raised_by_id", "raised this escalation"),
    "run_initiator": ("run_initiator_id", "started the run it is about"),
    "accountable_owner": (
        "accountable_owner_id",
        "is the accountable owner of the agent that raised it",
    ),
}


def duty_conflict(obj, person) -> str | None:
    """Return the code of the separation-of-duties rule that excludes `person`, or None."""
    conflicts = _REQUEST_CONFLICTS if isinstance(obj, ApprovalRequest) else _ESCALATION_CONFLICTS
    for code, (field, _) in conflicts.items():
        if person.pk is not None and getattr(obj, field) == person.pk:
            return code
    return None


def _conflict_refusal(obj, person) -> Eligibility | None:
    """Refuse a person separation of duties excludes, saying which rule."""
    code = duty_conflict(obj, person)
    if code is None:
        return None
    conflicts = _REQUEST_CONFLICTS if isinstance(obj, ApprovalRequest) else _ESCALATION_CONFLICTS
    return _no(code, f"Separation of duties: {person} {conflicts[code][1]}.")


# --- self-granted powers ------------------------------------------------------------------------


def _latest(role: Role, kinds: tuple[str, ...], **match) -> RoleChange | None:
    """Return the latest recorded change of one membership or permission of a role."""
    changes = RoleChange.objects.filter(role=role, kind__in=kinds, **match)
    return changes.order_by("-at", "-pk").first()


def _granted_by(change: RoleChange | None, granted_kind: str, selves: set[int]) -> bool:
    """Tell whether a change in force (the latest one, a grant) was made by one of `selves`."""
    return change is not None and change.kind == granted_kind and change.actor_id in selves


def _permission_grants(role: Role, perm: str, obj) -> list[RoleChange | None]:
    """Return the latest change of each way the role holds `perm` (model-wide, on `obj`)."""
    from django.contrib.contenttypes.models import ContentType

    app_label, codename = perm.split(".", 1)
    kinds = (RoleChangeKind.PERMISSION_GRANTED, RoleChangeKind.PERMISSION_REVOKED)
    paths = []
    if role.group.permissions.filter(content_type__app_label=app_label, codename=codename).exists():
        paths.append(_latest(role, kinds, permission=perm, target_id=""))
    if obj is not None:
        from guardian.shortcuts import get_perms

        if codename in get_perms(role.group, obj):
            content_type = ContentType.objects.get_for_model(type(obj))
            paths.append(
                _latest(role, kinds, permission=perm, target_ct=content_type, target_id=str(obj.pk))
            )
    return paths


def self_granted(decider, holder, role: Role, perm: str | None, obj=None) -> str | None:
    """Return why `role` is a power `decider` (or the `holder` they stand in for) gave
    themselves, or None: the holder's membership, or every way the role holds `perm`.
    """
    selves = {decider.pk, holder.pk}
    membership = _latest(
        role, (RoleChangeKind.MEMBER_ADDED, RoleChangeKind.MEMBER_REMOVED), member=holder
    )
    if _granted_by(membership, RoleChangeKind.MEMBER_ADDED, selves):
        return (
            f"{membership.actor_name} added {holder} to {role} "
            f"({membership.at:%Y-%m-%d %H:%M} UTC): nobody decides under a role they gave "
            "themselves; another person who may change the role has to add them."
        )
    if perm is None:
        return None
    paths = _permission_grants(role, perm, obj)
    if paths and all(_granted_by(p, RoleChangeKind.PERMISSION_GRANTED, selves) for p in paths):
        change = paths[0]
        return (
            f"{change.actor_name} granted {role} {perm}"
            + (f" on {change.target_repr}" if change.target_id else "")
            + f" ({change.at:%Y-%m-%d %H:%M} UTC): nobody decides under a permission they "
            "granted themselves; another person has to grant it."
        )
    return None


def _delegation_self_granted(delegation: Delegation, decider) -> bool:
    """Tell whether the delegate created or changed the delegation to themselves."""
    return delegation.history.filter(history_user_id=decider.pk).exists()


# --- approval requests --------------------------------------------------------------------------


def prior_deciders(request: ApprovalRequest) -> set[int]:
    """Return everyone who decided a request already (directly, or stood in for)."""
    prior: set[int] = set()
    for by, behalf in request.decisions.values_list("decided_by_id", "on_behalf_of_id"):
        prior |= {pk for pk in (by, behalf) if pk is not None}
    return prior


class TargetGone(Exception):
    """The object a request is about no longer exists."""


def request_target(request: ApprovalRequest):
    """Return the target object of a request, None without one; TargetGone when it is gone."""
    if request.target_ct_id is None:
        return None
    model = request.target_ct.model_class()
    obj = model._default_manager.filter(pk=request.target_id).first() if model else None
    if obj is None:
        raise TargetGone(f"The target {request.target_type}:{request.target_id} no longer exists.")
    return obj


def _target_key(target) -> tuple | None:
    """Return what identifies a target in a memo (None for a request without one)."""
    return None if target is None else (target._meta.label_lower, target.pk)


def _usable_role(decider, holder, roles, target, memo=None) -> tuple[Role | None, str | None]:
    """Return the first of `roles` the holder may decide under for the decider, or why not.

    With a `memo` (one inbox read, at one moment), the answer is kept per decider, holder,
    roles and target: it does not depend on the request beyond them.
    """
    if memo is None:
        return _first_usable_role(decider, holder, roles, target)
    key = ("usable", decider.pk, holder.pk, tuple(role.pk for role in roles), _target_key(target))
    if key not in memo:
        memo[key] = _first_usable_role(decider, holder, roles, target)
    return memo[key]


def _first_usable_role(decider, holder, roles, target) -> tuple[Role | None, str | None]:
    """Return the first of `roles` the holder may decide under for the decider, or why not."""
    refusal = None
    for role in roles:
        if not holds_role(holder, role) or not role_grants(role, "view", target):
            continue
        perm = permission_name(type(target), "view") if target is not None else None
        why = self_granted(decider, holder, role, perm, target)
        if why is None:
            return role, None
        refusal = refusal or why
    return None, refusal


def _memo_target(request: ApprovalRequest, memo: dict | None):
    """Return request_target(request), kept in `memo` per target (TargetGone raised again)."""
    if memo is None:
        return request_target(request)
    key = ("target", request.target_ct_id, request.target_id)
    if key not in memo:
        try:
            memo[key] = (request_target(request), None)
        except TargetGone as gone:
            memo[key] = (None, gone)
    target, gone = memo[key]
    if gone is not None:
        raise gone
    return target


def approval_eligibility(
    user,
    request: ApprovalRequest,
    *,
    now: dt.datetime | None = None,
    prior: set[int] | None = None,
    roles: list[Role] | None = None,
    memo: dict | None = None,
) -> Eligibility:
    """Tell whether `user` may decide `request` now: the role and delegator, or why not.

    `prior` (the request's earlier deciders), `roles` (its eligible roles, by id, with their
    groups) and `memo` (answers that depend only on the person, the roles and the target) let
    one read ask the rule of many requests without queries per request (decidable_requests).
    """
    refusal = _not_a_person(user)
    if refusal is not None:
        return refusal
    now = now or clock.now()
    if request.is_final:
        return _no(
            "already_decided",
            f"Request #{request.pk} is already {request.get_status_display().lower()}"
            + (f" (at {request.decided_at:%Y-%m-%d %H:%M:%S} UTC)" if request.decided_at else "")
            + "; a decision is final.",
        )
    if now >= request.expires_at:
        return _no(
            "deadline_passed",
            f"The deadline of request #{request.pk} passed at "
            f"{request.expires_at:%Y-%m-%d %H:%M:%S} UTC; no decision is accepted after it.",
        )
    prior = prior_deciders(request) if prior is None else prior
    if user.pk in prior:
        return _no("already_decided_by_you", f"{user} has already decided request #{request.pk}.")
    refusal = _conflict_refusal(request, user)
    if refusal is not None:
        return refusal
    try:
        target = _memo_target(request, memo)
    except TargetGone as gone:
        return _no("target_gone", str(gone))
    if roles is None:
        roles = list(request.eligible_roles.select_related("group").order_by("pk"))
    role, self_grant = _usable_role(user, user, roles, target, memo)
    if role is not None:
        return _yes(role)
    outside_window = out_of_scope = None
    for delegation in _delegations_to(user, memo):
        delegator = delegation.delegator
        if delegator.pk in prior or duty_conflict(request, delegator) or not delegator.is_active:
            continue
        scope = [r for r in roles if delegation.role_id in (None, r.pk)]
        held, why = _usable_role(user, delegator, scope, target, memo)
        if held is None:
            self_grant = self_grant or why
            if why is None and _usable_role(user, delegator, roles, target, memo)[0]:
                out_of_scope = out_of_scope or delegation
            continue
        if not delegation.active_at(now):
            outside_window = outside_window or delegation
            continue
        if _delegation_self_granted(delegation, user):
            self_grant = self_grant or (
                f"{user} created or changed the delegation from {delegator} to themselves; "
                "only the delegator, or another person, may hand their approvals over."
            )
            continue
        return _yes(held, delegator)
    if self_grant is not None:
        return _no("self_granted", self_grant)
    if outside_window is not None:
        return _no(
            "delegation_not_in_force",
            f"The delegation from {outside_window.delegator} to {user} is in force from "
            f"{outside_window.starts_at:%Y-%m-%d %H:%M} to {outside_window.ends_at:%Y-%m-%d %H:%M}"
            f" UTC, not now ({now:%Y-%m-%d %H:%M} UTC).",
        )
    if out_of_scope is not None:
        return _no(
            "delegation_out_of_scope",
            f"The delegation from {out_of_scope.delegator} to {user} covers {out_of_scope.role} "
            "only, not the roles this request asks.",
        )
    names = ", ".join(role.name for role in roles)
    where = request.target_repr or "the target"
    return _no("not_eligible", f"{user} does not hold an eligible role ({names}) on {where}.")


def _delegations_to(user, memo: dict | None) -> list[Delegation]:
    """Return the unrevoked delegations to `user`, oldest first (kept in `memo` when given)."""
    if memo is not None and ("delegations", user.pk) in memo:
        return memo[("delegations", user.pk)]
    delegations = list(
        Delegation.objects.filter(delegate=user, revoked_at__isnull=True)
        .select_related("delegator", "role")
        .order_by("starts_at")
    )
    if memo is not None:
        memo[("delegations", user.pk)] = delegations
    return delegations


def _in_force_delegators(user, now) -> list[int]:
    """Return the people whose approvals `user` holds through a delegation in force."""
    return list(
        Delegation.objects.active_at(now).filter(delegate=user).values_list("delegator", flat=True)
    )


def decidable_candidates(queryset, user, *, now: dt.datetime | None = None):
    """Narrow `queryset` in SQL to a superset of what `user` may decide now (the rule's own
    request-level refusals applied: pending, in time, a role held, not decided by them, no
    conflict of theirs); decidable_requests asks the rule itself of what is left."""
    now = now or clock.now()
    holders = [user.pk, *_in_force_delegators(user, now)]
    decided = ApprovalDecision.objects.filter(Q(decided_by=user) | Q(on_behalf_of=user))
    return (
        queryset.filter(
            status=ApprovalStatus.PENDING,
            expires_at__gt=now,
            eligible_roles__group__user__in=holders,
        )
        .exclude(requested_by=user)
        .exclude(run_initiator=user)
        .exclude(accountable_owner=user)
        .exclude(pk__in=decided.values("request_id"))
        .distinct()
    )


def _excluded(person_id: int, request_ref: str = "pk") -> Q:
    """Match the requests separation of duties or an earlier decision excludes a person from."""
    decided = ApprovalDecision.objects.filter(
        Q(decided_by=person_id) | Q(on_behalf_of=person_id), request=OuterRef(request_ref)
    )
    prefix = "" if request_ref == "pk" else request_ref.removesuffix("_id") + "__"
    return (
        Q(Exists(decided))
        | Q(**{f"{prefix}requested_by": person_id})
        | Q(**{f"{prefix}run_initiator": person_id})
        | Q(**{f"{prefix}accountable_owner": person_id})
    )


MAX_GROUPS = 200  # beyond this many allowed groups, the set is named by ids, not conditions


def decidable_requests(queryset, user, *, now: dt.datetime | None = None):
    """Narrow `queryset` to the requests `user` may decide now (the inbox's rule).

    Past decidable_candidates, the rule reads of a request only its target, its eligible
    roles, its earlier deciders and its separation of duties, and only to ask whether they
    exclude a delegator; and it allows a request when one of its roles serves (the person, or
    a delegator in force, holds it on the target, not granted to themselves). So candidates
    are grouped in SQL by target, eligible role (held by the person or a delegator in force)
    and, per unrevoked delegator, whether that delegator is excluded; the rule is asked once
    per group, of one of its requests with that one role, and its answer holds for every
    member. A request is decidable when one of its groups is allowed. The set stays a SQL
    condition (10,000 pending requests over four workflows: four rule asks and no id list;
    bench/web.py), so a count or a page of it costs one query.
    """
    now = now or clock.now()
    candidates = decidable_candidates(queryset, user, now=now)
    memo: dict = {}
    delegators = sorted({d.delegator_id for d in _delegations_to(user, memo)})
    holders = [user.pk, *_in_force_delegators(user, now)]
    flags = {
        f"excludes_{pk}": ExpressionWrapper(
            _excluded(pk, "approvalrequest_id"), output_field=BooleanField()
        )
        for pk in delegators
    }
    links = ApprovalRequest.eligible_roles.through.objects.filter(
        approvalrequest__in=candidates.values("pk"), role__group__user__in=holders
    )
    groups = list(
        links.annotate(**flags)
        .values("approvalrequest__target_ct_id", "approvalrequest__target_id", "role_id", *flags)
        .annotate(representative=Min("approvalrequest_id"))
        .order_by()
    )
    allowed = _allowed_groups(user, groups, now, memo)
    if not allowed:
        return queryset.none()
    if len(allowed) > MAX_GROUPS:
        # Many targets: name the members by id (one read of the links) rather than by a
        # condition per group.
        keys = {_group_key(group, delegators) for group in allowed}
        rows = links.annotate(**flags).values(
            "approvalrequest_id",
            "approvalrequest__target_ct_id",
            "approvalrequest__target_id",
            "role_id",
            *flags,
        )
        ids = {row["approvalrequest_id"] for row in rows if _group_key(row, delegators) in keys}
        return queryset.filter(pk__in=ids)
    condition = Q()
    for group in allowed:
        condition |= Q(pk__in=_members(candidates, group, delegators).values("pk"))
    return queryset.filter(pk__in=candidates.filter(condition).values("pk"))


def _group_key(group: dict, delegators: list[int]) -> tuple:
    """Return what tells one group from another: target, role, which delegators excluded."""
    return (
        group["approvalrequest__target_ct_id"],
        group["approvalrequest__target_id"],
        group["role_id"],
        *(group[f"excludes_{pk}"] for pk in delegators),
    )


def _members(candidates, group: dict, delegators: list[int]):
    """Return the candidates of one group: its target, its role, its delegators excluded."""
    through = ApprovalRequest.eligible_roles.through.objects.filter(role_id=group["role_id"])
    members = candidates.filter(
        target_ct_id=group["approvalrequest__target_ct_id"],
        target_id=group["approvalrequest__target_id"],
        pk__in=through.values("approvalrequest_id"),
    )
    for pk in delegators:
        excluded = _excluded(pk)
        members = members.filter(excluded if group[f"excludes_{pk}"] else ~excluded)
    return members


def _allowed_groups(user, groups: list[dict], now, memo: dict) -> list[dict]:
    """Ask the rule of each group's representative, with the group's role; return the allowed."""
    representatives = ApprovalRequest.objects.in_bulk({group["representative"] for group in groups})
    by_id = Role.objects.select_related("group").in_bulk({group["role_id"] for group in groups})
    prior: dict[int, set[int]] = {}
    decisions = ApprovalDecision.objects.filter(request__in=list(representatives))
    for request_id, by, behalf in decisions.values_list(
        "request_id", "decided_by_id", "on_behalf_of_id"
    ):
        prior.setdefault(request_id, set()).update(pk for pk in (by, behalf) if pk is not None)
    return [
        group
        for group in groups
        if approval_eligibility(
            user,
            representatives[group["representative"]],
            now=now,
            prior=prior.get(group["representative"], set()),
            roles=[by_id[group["role_id"]]],
            memo=memo,
        )
    ]


def eligible_deciders(request: ApprovalRequest, *, now: dt.datetime | None = None) -> list:
    """Return the people who may decide a request now (its roles' members and their delegates)."""
    now = now or clock.now()
    members = get_user_model().objects.filter(
        groups__role__in=request.eligible_roles.all(), is_active=True
    )
    delegates = Delegation.objects.active_at(now).filter(delegator__in=members).values("delegate")
    people = (
        get_user_model()
        .objects.filter(Q(pk__in=members.values("pk")) | Q(pk__in=delegates), is_active=True)
        .distinct()
        .order_by("username")
    )
    prior = prior_deciders(request)
    return [u for u in people if approval_eligibility(u, request, now=now, prior=prior)]


# --- escalations --------------------------------------------------------------------------------


def _resolving_everywhere(user) -> list[Role]:
    """Return the roles of `user` that resolve every escalation (RESOLVE_ALL model-wide)."""
    app_label, codename = RESOLVE_ALL.split(".", 1)
    return list(
        Role.objects.filter(
            group__user=user,
            group__permissions__content_type__app_label=app_label,
            group__permissions__codename=codename,
        )
        .select_related("group")
        .order_by("pk")
    )


def _escalation_roles(escalation: Escalation, user) -> list[tuple[Role, str | None]]:
    """Return the roles that may resolve an escalation, each with the permission that makes it
    eligible (None: its own role, which the escalation itself was opened to)."""
    roles: list[tuple[Role, str | None]] = []
    if escalation.role_id is not None:
        roles.append((escalation.role, None))
    roles += [
        (role, RESOLVE_ALL) for role in _resolving_everywhere(user) if role.pk != escalation.role_id
    ]
    return roles


def escalation_eligibility(user, escalation: Escalation) -> Eligibility:
    """Tell whether `user` may resolve `escalation` now: the role, or why not."""
    refusal = _not_a_person(user)
    if refusal is not None:
        return refusal
    if not can(user, "view", escalation):
        return _no("not_visible", f"No escalation with id {escalation.pk} is visible to you.")
    if escalation.status != EscalationStatus.OPEN:
        return _no(
            "already_resolved",
            f"Escalation #{escalation.pk} is already {escalation.status} "
            f"({escalation.get_resolution_display() or 'no resolution'} "
            f"by {escalation.resolved_by_name or 'nobody'}).",
        )
    refusal = _conflict_refusal(escalation, user)
    if refusal is not None:
        return refusal
    self_grant = None
    for role, perm in _escalation_roles(escalation, user):
        if not holds_role(user, role):
            continue
        why = self_granted(user, user, role, perm)
        if why is None:
            return _yes(role)
        self_grant = self_grant or why
    if self_grant is not None:
        return _no("self_granted", self_grant)
    role = escalation.role.name if escalation.role_id else "none"
    return _no(
        "not_eligible", f"{user} does not hold the escalation's role ({role}) nor {RESOLVE_ALL}."
    )


def resolvable_escalations(queryset, user):
    """Narrow `queryset` to the escalations `user` may resolve now (the inbox's rule)."""
    candidates = queryset.filter(status=EscalationStatus.OPEN)
    if not _resolving_everywhere(user):
        candidates = candidates.filter(role__group__user=user)
    allowed = [
        escalation.pk
        for escalation in candidates.select_related("role__group")
        if escalation_eligibility(user, escalation)
    ]
    return queryset.filter(pk__in=allowed)


def opened_by(raised_by, run_initiator) -> dict:
    """Return the separation-of-duties fields an escalation copies when it opens."""
    owner = accountable_owner(raised_by) if raised_by is not SYSTEM else None
    if owner is not None and owner.pk == raised_by.pk:
        owner = None
    return {"run_initiator": run_initiator, "accountable_owner": owner}


def may_decide(user, obj, **kwargs) -> Eligibility:
    """Tell whether `user` may decide an approval request or resolve an escalation."""
    if isinstance(obj, ApprovalRequest):
        return approval_eligibility(user, obj, **kwargs)
    return escalation_eligibility(user, obj)
