"""Approval rules, approval requests and decisions: separation of duties enforced on the server.

A request states exactly what is approved (action, target, arguments and their SHA-256 digest,
who asked, run and step, risk, the policy rule that required it) and is bound to that digest.
A decision is taken by an authenticated person who holds an eligible role on the target at
decision time (or is the in-force delegate of one), who is neither the requester, the run's
initiator nor the agent's accountable owner, and who has not decided it before. A request is
final once approved by N distinct people, rejected, sent back for changes, expired or
cancelled; concurrent decisions serialise on the request row, so exactly one finishes it.

Deadlines: each level of the escalation chain has the rule's SLA; when it passes the request
escalates to the next role (the approval step's durable timer, and the governance sweeper as a
safety net, both call escalate_overdue), and after the last level it expires.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from guardian.shortcuts import assign_perm

from audit import clock
from audit import services as audit
from audit.actors import SYSTEM, as_user, requires_actor
from governance.actions import eligibility as eligibility_rule
from governance.actions import events, notifications
from governance.actions.common import (
    GovernanceError,
    audited_refusals,
    delete_governed,
    digest,
    name_of,
    save_governed,
)
from governance.actions.escalations import cancel_escalation, open_escalation
from governance.actions.policies import PolicyDecision
from governance.actions.principals import accountable_owner as owner_of
from governance.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalRule,
    ApprovalSeen,
    ApprovalStatus,
    DecisionKind,
    Effect,
    Escalation,
    EscalationLevel,
    EscalationStatus,
    RiskLevel,
    Role,
)
from governance.permissions import NotVisible, require
from governance.signals import approval_decided, approval_escalated, approval_requested

MIN_APPROVALS_BY_RISK = {RiskLevel.CRITICAL: 2}
POLICY_ESCALATION = "policy"  # the reason of escalations a policy's `escalate` effect opens


class ApprovalRefused(GovernanceError):
    """A decision the rules do not allow (who, when, or on what)."""


class AlreadyDecided(ApprovalRefused):
    """The request is already final, or this person already decided it."""

    code = "already_decided"


class ReasonRequired(ApprovalRefused):
    """A rejection or a request for changes that does not say why."""

    code = "reason"


NEEDS_REASON = {DecisionKind.REJECT: "reject", DecisionKind.REQUEST_CHANGES: "ask for changes"}


class ApprovalMismatch(GovernanceError):
    """An approval that does not cover these arguments (their digest differs)."""

    code = "arguments_changed"


# --- approval rules -----------------------------------------------------------------------------


def _set_chain(rule: ApprovalRule, roles: list[Role], reason: str, *, actor) -> None:
    """Replace a rule's escalation chain (each level's history names `actor`, already checked)."""
    for level in list(rule.levels.all()):
        delete_governed(level, actor=actor, reason=reason, check=False)
    for position, role in enumerate(roles, start=1):
        save_governed(
            EscalationLevel(rule=rule, position=position, role=role),
            actor=actor,
            reason=reason,
            check=False,
        )


@requires_actor
@audited_refusals
def create_approval_rule(
    *,
    slug: str,
    name: str,
    role: Role,
    approvals_required: int = 1,
    sla_seconds: int = 3600,
    escalation: list[Role] | tuple = (),
    description: str = "",
    actor,
    reason: str = "",
) -> ApprovalRule:
    """Create an approval rule: approver role, N distinct approvers, SLA and escalation chain."""
    rule = ApprovalRule(
        slug=slug,
        name=name,
        role=role,
        approvals_required=approvals_required,
        sla_seconds=sla_seconds,
        description=description,
    )
    save_governed(rule, actor=actor, reason=reason or "approval rule created")
    _set_chain(rule, list(escalation), reason or "approval rule created", actor=actor)
    return rule


@requires_actor
@audited_refusals
def update_approval_rule(
    rule: ApprovalRule, *, actor, reason: str, escalation: list[Role] | None = None, **fields
) -> ApprovalRule:
    """Change an approval rule (and its chain); pending requests keep what they started with."""
    for name, value in fields.items():
        if name not in {"slug", "name", "role", "approvals_required", "sla_seconds", "description"}:
            raise TypeError(f"update_approval_rule cannot change {name!r}")
        setattr(rule, name, value)
    rule.version = ApprovalRule.objects.select_for_update().get(pk=rule.pk).version + 1
    save_governed(rule, actor=actor, reason=reason)
    if escalation is not None:
        _set_chain(rule, list(escalation), reason, actor=actor)
    return rule


@requires_actor
@audited_refusals
def delete_approval_rule(rule: ApprovalRule, *, actor, reason: str) -> None:
    """Delete an approval rule that no policy rule uses any more."""
    if actor is not SYSTEM:
        require(actor, "delete", rule)
    for level in list(rule.levels.all()):
        delete_governed(level, actor=actor, reason=reason, check=False)
    delete_governed(rule, actor=actor, reason=reason)


# --- requests -----------------------------------------------------------------------------------


def _open_to(request: ApprovalRequest, role: Role) -> None:
    """Let a role's members see and decide a request (guardian object permissions)."""
    request.eligible_roles.add(role)
    assign_perm("governance.view_approvalrequest", role.group, request)
    assign_perm("governance.decide_approvalrequest", role.group, request)


def _target_fields(target) -> dict[str, Any]:
    """Return the copied description of a target (a model instance, a dict, or None)."""
    if target is None:
        return {}
    if isinstance(target, dict):
        return {
            "target_type": str(target.get("type", ""))[:100],
            "target_id": str(target.get("id", ""))[:64],
            "target_repr": str(target.get("repr", ""))[:200],
        }
    return {
        "target_ct": ContentType.objects.get_for_model(type(target)),
        "target_type": target._meta.label_lower,
        "target_id": str(target.pk),
        "target_repr": str(target)[:200],
    }


@requires_actor
@transaction.atomic
def request_approval(
    *,
    action: str,
    approval_rule: ApprovalRule,
    arguments: dict | None = None,
    target=None,
    summary: str = "",
    risk: str | None = None,
    requested_by,
    run_initiator=None,
    accountable_owner=None,
    run_id: int | None = None,
    step_run_id: int | None = None,
    step_id: str = "",
    decision: PolicyDecision | None = None,
    now: dt.datetime | None = None,
) -> ApprovalRequest:
    """Open a request for exactly this action and these arguments, bound to their digest."""
    now = now or clock.now()
    arguments = arguments or {}
    chain = approval_rule.chain()
    risk = risk or (decision.risk if decision is not None else RiskLevel.MEDIUM)
    required = required_approvals(approval_rule, risk)
    if accountable_owner is None and requested_by is not SYSTEM:
        owner = owner_of(requested_by)
        accountable_owner = owner if owner is not None and owner.pk != requested_by.pk else None
    sla = dt.timedelta(seconds=approval_rule.sla_seconds)
    request = ApprovalRequest.objects.create(
        action=action,
        summary=summary,
        arguments=arguments,
        arguments_digest=digest(arguments),
        risk=risk,
        requested_by=as_user(requested_by),
        requested_by_name=name_of(requested_by),
        run_initiator=run_initiator,
        run_initiator_name=name_of(run_initiator),
        accountable_owner=accountable_owner,
        accountable_owner_name=name_of(accountable_owner),
        run_id=run_id,
        step_run_id=step_run_id,
        step_id=step_id,
        policy_id=decision.policy_id if decision is not None else None,
        policy_rule_id=decision.rule_id if decision is not None else None,
        policy_version=decision.policy_version if decision is not None else None,
        approval_rule=approval_rule,
        approval_rule_version=approval_rule.version,
        decision_basis=decision.as_record() if decision is not None else {},
        role=chain[0],
        chain=[role.pk for role in chain],
        level=0,
        sla_seconds=approval_rule.sla_seconds,
        approvals_required=required,
        created_at=now,
        due_at=now + sla,
        expires_at=now + sla * len(chain),
        **_target_fields(target),
    )
    _open_to(request, chain[0])
    audit.record(
        action="governance.approval.requested",
        actor=requested_by,
        target=request,
        run_id=run_id,
        step_id=step_id or None,
        decision=_basis(request),
        body={
            "action": action,
            "target": {"type": request.target_type, "id": request.target_id},
            "arguments_digest": request.arguments_digest,
            "risk": risk,
            "role": chain[0].name,
            "approvals_required": required,
            "due_at": request.due_at.isoformat(),
            "expires_at": request.expires_at.isoformat(),
        },
    )
    approval_requested.send(sender=ApprovalRequest, request=request)
    notifications.notify_on_commit(request)
    events.announce(
        "approval.requested",
        lambda: {
            "approval": request.pk,
            "action": action,
            "risk": risk,
            "role": chain[0].name,
            "run_id": run_id,
            "step_id": step_id,
            "due_at": request.due_at.isoformat(),
        },
        actor=requested_by,
        target=request,
    )
    return request


def _basis(request: ApprovalRequest) -> dict[str, Any]:
    """Return the policy and approval-rule versions a request (and its decisions) stand on."""
    return {
        "policy": request.decision_basis.get("policy_slug", ""),
        "policy_version": request.policy_version,
        "policy_rule": request.policy_rule_id,
        "approval_rule": request.approval_rule.slug if request.approval_rule else "",
        "approval_rule_version": request.approval_rule_version,
    }


def outcome_payload(request: ApprovalRequest) -> dict[str, Any]:
    """Return what a waiting step receives when a request becomes final."""
    return {
        "request": request.pk,
        "status": request.status,
        "action": request.action,
        "arguments_digest": request.arguments_digest,
        "decisions": [
            {
                "by": decision.decided_by_name,
                "on_behalf_of": decision.on_behalf_of_name or None,
                "decision": decision.decision,
                "comment": decision.comment,
                "at": decision.decided_at.isoformat(),
            }
            for decision in request.decisions.order_by("decided_at", "id")
        ],
        **_basis(request),
    }


# --- deciding -----------------------------------------------------------------------------------


# The one eligibility rule, as the decision asks it (a name tests may slow down).
_eligibility = eligibility_rule.approval_eligibility


def _refusal(request: ApprovalRequest, user, decision: str, message: str, code: str, cls=None):
    """Build a refusal that is audited against the request once its transaction rolled back."""
    error = (cls or ApprovalRefused)(message, code=code)
    error.audit_entry = {
        "action": "governance.approval.refused",
        "actor": user if getattr(user, "pk", None) else AnonymousUser(),
        "target": request,
        "run_id": request.run_id,
        "step_id": request.step_id or None,
        "decision": _basis(request),
        "body": {"decision": decision},
    }
    return error


@requires_actor
@audited_refusals
def decide_approval(
    request: ApprovalRequest | int,
    *,
    user,
    decision: str,
    comment: str = "",
    expected_digest: str | None = None,
    now: dt.datetime | None = None,
) -> ApprovalDecision:
    """Record one person's decision under every rule; finish the request when it is final."""
    if decision not in DecisionKind.values:
        raise ValueError(f"decision must be one of {DecisionKind.values}, not {decision!r}")
    if decision in NEEDS_REASON and not (comment or "").strip():
        # The requester reads why, and so does the audit: a bare "no" is not a decision.
        raise ReasonRequired(
            f"Say why you {NEEDS_REASON[decision]}: the requester and the audit read it."
        )
    request_id = request.pk if isinstance(request, ApprovalRequest) else request
    locked = (
        ApprovalRequest.objects.select_for_update(of=("self",))
        .select_related("approval_rule")
        .filter(pk=request_id)
        .first()
    )
    if locked is None:
        raise ApprovalRefused(f"No approval request #{request_id} exists.", code="unknown")
    now = now or clock.now()
    eligibility = _eligibility(user, locked, now=now)
    if not eligibility:
        already = eligibility.code in ("already_decided", "already_decided_by_you")
        actor = user if eligibility.code != "anon" else None
        raise _refusal(
            locked,
            actor,
            decision,
            eligibility.message,
            eligibility.code,
            AlreadyDecided if already else None,
        )
    if expected_digest is not None and expected_digest != locked.arguments_digest:
        raise _refusal(
            locked,
            user,
            decision,
            "The arguments changed since you looked: this decision would not cover them.",
            "arguments_changed",
        )
    role, on_behalf_of = eligibility.role, eligibility.on_behalf_of
    made = ApprovalDecision.objects.create(
        request=locked,
        decision=decision,
        comment=comment,
        decided_by=user,
        decided_by_name=name_of(user),
        on_behalf_of=on_behalf_of,
        on_behalf_of_name=name_of(on_behalf_of),
        role=role,
        role_name=role.name,
        arguments_digest=locked.arguments_digest,
        policy_version=locked.policy_version,
        approval_rule_version=locked.approval_rule_version,
        decided_at=now,
    )
    audit.record(
        action="governance.approval.decided",
        actor=user,
        actor_kind="user",
        target=locked,
        run_id=locked.run_id,
        step_id=locked.step_id or None,
        decision={**_basis(locked), "decision": decision},
        body={
            "decision": decision,
            "comment": comment,
            "role": role.name,
            "on_behalf_of": name_of(on_behalf_of) or None,
            "arguments_digest": locked.arguments_digest,
        },
    )
    status = {
        DecisionKind.REJECT: ApprovalStatus.REJECTED,
        DecisionKind.REQUEST_CHANGES: ApprovalStatus.CHANGES_REQUESTED,
    }.get(decision)
    if decision == DecisionKind.APPROVE:
        approvals = locked.decisions.filter(decision=DecisionKind.APPROVE).count()
        status = ApprovalStatus.APPROVED if approvals >= locked.approvals_required else None
    if status is not None:
        _finish(locked, status, now, actor=user)
    return made


@requires_actor
def record_approval_seen(
    request: ApprovalRequest, *, user, now: dt.datetime | None = None
) -> ApprovalSeen | None:
    """Record, once and audited, when an eligible approver first opens a pending request."""
    if request.is_final or ApprovalSeen.objects.filter(request_id=request.pk).exists():
        return None
    now = now or clock.now()
    if not _eligibility(user, request, now=now):
        return None  # seen by someone who may not decide: it still waits for an approver
    with transaction.atomic():
        seen, created = ApprovalSeen.objects.get_or_create(
            request_id=request.pk,
            defaults={"seen_by": user, "seen_by_name": name_of(user), "seen_at": now},
        )
        if not created:
            return None  # another approver opened it at the same moment and was first
        audit.record(
            action="governance.approval.seen",
            actor=user,
            actor_kind="user",
            target=request,
            run_id=request.run_id,
            step_id=request.step_id or None,
            body={
                "seen_at": now.isoformat(),
                "waited_seconds": (now - request.created_at).total_seconds(),
            },
        )
    return seen


def _finish(
    request, status: str, now, *, actor, announce_to_run: bool = True, reason: str = ""
) -> None:
    """Make a request final, audit it and announce it (in this transaction)."""
    request.status = status
    request.decided_at = now
    request.save(update_fields=["status", "decided_at"])
    audit.record(
        action=f"governance.approval.{status}",
        actor=actor,
        target=request,
        run_id=request.run_id,
        step_id=request.step_id or None,
        decision=_basis(request),
        body={
            "status": status,
            "approvals_required": request.approvals_required,
            "reason": reason,
        },
    )
    approval_decided.send(
        sender=ApprovalRequest,
        request=request,
        payload=outcome_payload(request),
        actor=actor,
        announce_to_run=announce_to_run,
    )
    events.announce(
        "approval.decided",
        lambda: {
            "approval": request.pk,
            "action": request.action,
            "status": status,
            "run_id": request.run_id,
            "step_id": request.step_id,
            "decided_at": now.isoformat(),
        },
        actor=actor,
        target=request,
    )


# --- deadlines ----------------------------------------------------------------------------------


@requires_actor
def escalate_overdue(
    request_id: int, *, actor, now: dt.datetime | None = None, announce_to_run: bool = True
) -> ApprovalRequest | None:
    """Escalate a request whose SLA passed (every hop audited), or expire it after the last.

    Safe to call twice and from several places (the approval step's timer, the sweeper): it does
    nothing before the deadline. Returns None when another transaction holds the request.
    """
    with transaction.atomic():
        request = (
            ApprovalRequest.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("role", "approval_rule")
            .filter(pk=request_id)
            .first()
        )
        if request is None:
            return None
        now = now or clock.now()
        if request.is_final or request.due_at > now:
            return request
        sla = dt.timedelta(seconds=request.sla_seconds)
        while request.due_at <= now and request.level + 1 < len(request.chain):
            from_role = request.role
            request.level += 1
            request.role = Role.objects.filter(pk=request.chain[request.level]).first()
            request.due_at += sla
            request.save(update_fields=["level", "role", "due_at"])
            if request.role is not None:
                _open_to(request, request.role)
            audit.record(
                action="governance.approval.escalated",
                actor=actor,
                target=request,
                run_id=request.run_id,
                step_id=request.step_id or None,
                decision=_basis(request),
                body={
                    "from_role": from_role.name if from_role else None,
                    "to_role": request.role.name if request.role else None,
                    "level": request.level,
                    "due_at": request.due_at.isoformat(),
                    "at": now.isoformat(),
                },
            )
            approval_escalated.send(
                sender=ApprovalRequest, request=request, from_role=from_role, to_role=request.role
            )
            notifications.notify_on_commit(request)  # the next role's people
        if request.due_at <= now:
            _finish(
                request, ApprovalStatus.EXPIRED, now, actor=actor, announce_to_run=announce_to_run
            )
        return request


@requires_actor
def sweep_overdue(*, actor, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Escalate or expire every pending request past its SLA; return how many were looked at."""
    now = now or clock.now()
    ids = list(
        ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING, due_at__lte=now)
        .order_by("due_at")
        .values_list("pk", flat=True)[:limit]
    )
    for request_id in ids:
        escalate_overdue(request_id, actor=actor, now=now)
    return len(ids)


@requires_actor
@transaction.atomic
def cancel_for_run(run_id: int, *, actor, reason: str, now: dt.datetime | None = None) -> int:
    """Cancel the pending requests of a run that finished without them; return how many."""
    requests = list(
        ApprovalRequest.objects.filter(run_id=run_id, status=ApprovalStatus.PENDING).order_by("pk")
    )
    for request in requests:
        cancel_request(request, actor=actor, reason=reason, now=now)
    return len(requests)


# --- using an approval --------------------------------------------------------------------------


def approval_applies(request: ApprovalRequest, arguments: dict | None) -> bool:
    """Tell whether an approved request covers exactly these arguments."""
    return (
        request.status == ApprovalStatus.APPROVED
        and digest(arguments or {}) == request.arguments_digest
    )


def require_approval_for(request_id: int, arguments: dict | None) -> ApprovalRequest:
    """Return the approved request covering these arguments; refuse anything else."""
    request = ApprovalRequest.objects.filter(pk=request_id).first()
    if request is None:
        raise ApprovalMismatch(f"No approval request #{request_id} exists.", code="unknown")
    if request.status != ApprovalStatus.APPROVED:
        raise ApprovalMismatch(
            f"Request #{request.pk} is {request.get_status_display().lower()}, not approved.",
            code="not_approved",
        )
    if digest(arguments or {}) != request.arguments_digest:
        raise ApprovalMismatch(
            f"Request #{request.pk} approved other arguments (digest "
            f"{request.arguments_digest[:12]}…); these need their own approval."
        )
    return request


def required_approvals(rule: ApprovalRule, risk: str) -> int:
    """Return how many distinct people a request under this rule at this risk needs."""
    return max(rule.approvals_required, MIN_APPROVALS_BY_RISK.get(risk, 1))


def standing_approval(
    *, run_id: int, action: str, arguments: dict | None, rule: ApprovalRule, risk: str, initiator
) -> ApprovalRequest | None:
    """Return an approved request of this run that already covers this action, or None.

    It covers the action when it was asked for the run's initiator (a workflow's `approval`
    step asks so), names the same action, is bound to the same arguments' digest, was decided
    under the same approval rule, and needed at least as many people as a new request would:
    then asking again would only ask the same people the same question.
    """
    if run_id is None or initiator is None:
        return None
    return (
        ApprovalRequest.objects.filter(
            run_id=run_id,
            action=action,
            arguments_digest=digest(arguments or {}),
            approval_rule=rule,
            status=ApprovalStatus.APPROVED,
            requested_by=initiator,
            run_initiator=initiator,
            approvals_required__gte=required_approvals(rule, risk),
        )
        .order_by("pk")
        .first()
    )


def pending_for(user):
    """Return the pending requests `user` may decide now (the eligibility rule's inbox)."""
    return ApprovalRequest.objects.restrict(user, "decide").pending()


def eligible_deciders(request: ApprovalRequest) -> list:
    """Return the people who may decide a request now (for display; decide re-checks)."""
    return eligibility_rule.eligible_deciders(request)


# --- the approval step of a workflow ------------------------------------------------------------


def open_step_approval(
    *,
    run,
    step,
    rule_slug: str,
    arguments: dict,
    action: str = "",
    summary: str = "",
    risk: str | None = None,
    classification: str | None = None,
    now: dt.datetime | None = None,
) -> tuple[ApprovalRequest | None, PolicyDecision]:
    """Open (or reuse) the request of a workflow's approval step, after the policy decision.

    `run` and `step` are the engine's rows, used duck-typed. The decision is taken for the run's
    initiator on the run's workflow; a deny returns no request. An `escalate` decision returns no
    request either: it opens a human escalation to the rule's role instead (found again with
    `policy_escalation_for_step`), which the step waits for. A policy rule that requires
    approval brings its own approval rule; otherwise the step's rule applies.
    """
    from governance.actions.policies import decide

    action = action or f"workflow.{run.workflow.slug}.{step.step_id}"
    decision = decide(
        actor=run.started_by or SYSTEM,
        action=action,
        target=run.workflow,
        arguments=arguments,
        classification=classification,
        risk=risk,
        run_id=run.pk,
        step_id=step.step_id,
        workflow=run.workflow.slug,
    )
    if decision.effect == Effect.DENY:
        return None, decision
    if decision.effect == Effect.ESCALATE:
        open_step_escalation(
            run=run,
            step=step,
            decision=decision,
            action=action,
            arguments=arguments,
            summary=summary,
            now=now,
        )
        return None, decision
    existing = ApprovalRequest.objects.filter(
        step_run_id=step.pk, status=ApprovalStatus.PENDING
    ).first()
    if existing is not None and existing.arguments_digest == digest(arguments):
        return existing, decision
    if existing is not None:
        cancel_request(
            existing,
            actor=run.started_by or SYSTEM,
            reason="the step asked again with other arguments",
            now=now,
        )
    rule = None
    if decision.approval_rule_id is not None:
        rule = ApprovalRule.objects.get(pk=decision.approval_rule_id)
    else:
        rule = ApprovalRule.objects.get(slug=rule_slug)
    request = request_approval(
        action=action,
        approval_rule=rule,
        arguments=arguments,
        target=run.workflow,
        summary=summary,
        risk=risk or (decision.risk if decision.rule_id else None),
        requested_by=run.started_by or SYSTEM,
        run_initiator=run.started_by,
        run_id=run.pk,
        step_run_id=step.pk,
        step_id=step.step_id,
        decision=decision,
        now=now,
    )
    return request, decision


def open_step_escalation(
    *,
    run,
    step,
    decision: PolicyDecision,
    action: str,
    arguments: dict,
    summary: str = "",
    now: dt.datetime | None = None,
) -> Escalation:
    """Open (or reuse) the human escalation a policy's `escalate` asks of an approval step.

    The task goes to the role the rule names (`escalate_to`; governance's default escalation
    role if that role is gone). It states what was asked and the decision that escalated it; the
    step waits for its resolution (take over with a result, send back, or stop the run).
    """
    existing = (
        Escalation.objects.select_for_update()
        .filter(step_run_id=step.pk, reason=POLICY_ESCALATION, status=EscalationStatus.OPEN)
        .order_by("pk")
        .first()
    )
    if existing is not None and existing.context.get("arguments_digest") == digest(arguments):
        return existing
    if existing is not None:
        cancel_escalation(
            existing,
            actor=run.started_by or SYSTEM,
            reason="the step asked again with other arguments",
            now=now,
        )
    role = Role.objects.filter(pk=decision.escalate_to_id).first()
    return open_escalation(
        reason=POLICY_ESCALATION,
        summary=summary or f"{action}: {decision.reason}",
        context={
            "action": action,
            "arguments": arguments,
            "arguments_digest": digest(arguments),
            "decision": decision.as_record(),
        },
        role=role,
        run_id=run.pk,
        step_run_id=step.pk,
        step_id=step.step_id,
        raised_by=run.started_by or SYSTEM,
        run_initiator=run.started_by,
        now=now,
    )


def policy_escalation_for_step(step_run_id: int) -> Escalation | None:
    """Return the latest escalation a policy opened for an approval step, or None."""
    return (
        Escalation.objects.filter(step_run_id=step_run_id, reason=POLICY_ESCALATION)
        .order_by("-pk")
        .first()
    )


@requires_actor
def cancel_request(
    request: ApprovalRequest, *, actor, reason: str, now: dt.datetime | None = None
) -> None:
    """Cancel one pending request (audited); its step is not signalled."""
    locked = ApprovalRequest.objects.select_for_update().get(pk=request.pk)
    if locked.is_final:
        return
    _finish(
        locked,
        ApprovalStatus.CANCELLED,
        now or clock.now(),
        actor=actor,
        announce_to_run=False,
        reason=reason,
    )


# --- bulk approval ------------------------------------------------------------------------------

# Only low-risk requests are approved in bulk: a person decides higher risks one by one.
BULK_RISKS = (RiskLevel.LOW,)
BULK_LIMIT = 100


def bulk_class(request: ApprovalRequest) -> tuple | None:
    """Return the class a request is approved in bulk with, or None when it may not be.

    Requests share a class when the same verdict on the same action asked for them: the same
    action, the same policy at the same version and the same rule of it with the same effect,
    and the same approval rule at the same version; and only when their risk is low. Their
    arguments, targets and runs may differ: each decision still covers its own digest.
    """
    if request.risk not in BULK_RISKS:
        return None
    basis = request.decision_basis if isinstance(request.decision_basis, dict) else {}
    return (
        request.action,
        request.policy_id,
        request.policy_version,
        request.policy_rule_id,
        basis.get("effect", ""),
        request.approval_rule_id,
        request.approval_rule_version,
    )


class MixedBatch(GovernanceError):
    """A bulk approval of requests that are not all of one low-risk class."""

    code = "mixed_batch"


@dataclass(frozen=True)
class BulkOutcome:
    """What a bulk approval did with one request: recorded or refused, and why."""

    request_id: int
    recorded: bool
    code: str = ""
    message: str = ""
    status: str = ""  # the request's status after the decision ("" when not visible)


@requires_actor
def bulk_approve(
    items: list[tuple[int, str]],
    *,
    user,
    comment: str = "",
    now: dt.datetime | None = None,
) -> list[BulkOutcome]:
    """Approve requests of one low-risk class, each on its own digest, audited on its own.

    The batch is refused whole (audited once, nothing decided) unless every visible request in
    it is of one bulk class. Each request is then decided by decide_approval in its own
    transaction, so one refusal (a changed digest, a vote already cast, a request already
    final) leaves the others standing; a request the person may not see is refused as such.
    """
    if len(items) > BULK_LIMIT:
        raise MixedBatch(f"Approve at most {BULK_LIMIT} requests at once.", code="too_many")
    ids = [pk for pk, _ in items]
    visible = {
        request.pk: request
        for request in ApprovalRequest.objects.restrict(user, "view").filter(pk__in=ids)
    }
    classes = {bulk_class(request) for request in visible.values()}
    if None in classes or len(classes) > 1:
        refusal = MixedBatch(
            "Bulk approval takes requests of one low-risk class only: the same action under "
            "the same policy verdict (policy, rule and version) and approval rule version. "
            "Decide the others one by one."
        )
        refusal.audit_entry = {
            "action": "governance.approval.bulk_refused",
            "actor": user,
            "target_type": ApprovalRequest._meta.label_lower,
            "body": {
                "requests": sorted(visible),
                "risks": sorted({r.risk for r in visible.values()}),
            },
        }
        refusal.audit()
        raise refusal
    outcomes = []
    for pk, expected in items:
        if pk not in visible:
            hidden = NotVisible(user, "decide", ApprovalRequest, pk)
            hidden.audit()
            outcomes.append(BulkOutcome(pk, False, "not_visible", str(hidden)))
            continue
        try:
            decide_approval(
                pk,
                user=user,
                decision=DecisionKind.APPROVE,
                comment=comment,
                expected_digest=expected,
                now=now,
            )
        except GovernanceError as refused:
            status = ApprovalRequest.objects.filter(pk=pk).values_list("status", flat=True).first()
            outcomes.append(BulkOutcome(pk, False, refused.code, str(refused), status or ""))
            continue
        status = ApprovalRequest.objects.filter(pk=pk).values_list("status", flat=True).first()
        outcomes.append(BulkOutcome(pk, True, status=status or ""))
    return outcomes
