"""Human escalations: a task for a person when an agent is unsure or a step failed for good.

The person takes over and supplies the result, sends the step back for a retry, or stops the
run. Governance records the resolution and announces it with `escalation_resolved`; the engine
(which governance never imports) acts on it. Two ways a step waits for one:
* parked: the engine's `on_failure: escalate` handler (`escalate_failed_step`) opens the
  escalation and returns a marker; the engine parks the failed step until it is resolved;
* signalled: a step type (an agent step) opens one itself and waits for the signal
  `escalation:<id>`, whose payload is the resolution.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import transaction
from guardian.shortcuts import assign_perm

from audit import clock
from audit import services as audit
from audit.actors import SYSTEM, as_user, requires_actor
from governance.actions import events
from governance.actions.common import GovernanceError, audited_refusals, name_of
from governance.actions.eligibility import escalation_eligibility, opened_by
from governance.models import Escalation, EscalationStatus, Resolution, Role
from governance.permissions import NotVisible
from governance.signals import escalation_resolved

# Who started a run, by its id: the engine registers it (governance never imports the engine).
_run_initiator_lookup: Callable[[int], Any] | None = None


def register_run_initiator_lookup(lookup: Callable[[int], Any]) -> None:
    """Let the engine tell governance who started a run (for separation of duties)."""
    global _run_initiator_lookup
    _run_initiator_lookup = lookup


def run_initiator_of(run_id: int | None):
    """Return the user who started run `run_id`, or None (no run, or nobody registered)."""
    if run_id is None or _run_initiator_lookup is None:
        return None
    return _run_initiator_lookup(run_id)


def default_role() -> Role | None:
    """Return the role that takes escalations nobody assigned (STEWARD_ESCALATION_ROLE)."""
    name = getattr(settings, "STEWARD_ESCALATION_ROLE", "Managers")
    return Role.objects.filter(name=name).first() if name else None


@requires_actor
@transaction.atomic
def open_escalation(
    *,
    reason: str,
    summary: str = "",
    context: dict[str, Any] | None = None,
    role: Role | None = None,
    run_id: int | None = None,
    step_run_id: int | None = None,
    step_id: str = "",
    parked: bool = False,
    raised_by,
    run_initiator=None,
    now: dt.datetime | None = None,
) -> Escalation:
    """Open a task for the members of a role (the default escalation role when none is given).

    It copies who may not resolve it: whoever raised it, the run's initiator (looked up from
    the run when not given) and the accountable owner of the agent that raised it.
    """
    role = role or default_role()
    duties = opened_by(raised_by, run_initiator or run_initiator_of(run_id))
    escalation = Escalation.objects.create(
        reason=reason,
        summary=summary,
        context=context or {},
        role=role,
        run_id=run_id,
        step_run_id=step_run_id,
        step_id=step_id,
        parked=parked,
        raised_by=as_user(raised_by),
        raised_by_name=name_of(raised_by),
        run_initiator=duties["run_initiator"],
        run_initiator_name=name_of(duties["run_initiator"]),
        accountable_owner=duties["accountable_owner"],
        accountable_owner_name=name_of(duties["accountable_owner"]),
        created_at=now or clock.now(),
    )
    if role is not None:
        assign_perm("governance.view_escalation", role.group, escalation)
        assign_perm("governance.resolve_escalation", role.group, escalation)
    audit.record(
        action="governance.escalation.opened",
        actor=raised_by,
        target=escalation,
        run_id=run_id,
        step_id=step_id or None,
        body={"reason": reason, "role": role.name if role else None, "parked": parked},
    )
    events.announce(
        "escalation.opened",
        lambda: {
            "escalation": escalation.pk,
            "reason": reason,
            "role": role.name if role else None,
            "run_id": run_id,
            "step_id": step_id,
        },
        actor=raised_by,
        target=escalation,
    )
    return escalation


def escalate_failed_step(run, step, error, events, now) -> dict[str, Any]:
    """The engine's `on_failure: escalate` handler: open a task, ask the engine to park the step.

    Duck-typed on the engine's run and step rows (governance never imports the engine).
    """
    escalation = open_escalation(
        reason="step_failed",
        summary=f"Step {step.step_id} of run {run.pk} failed after {step.attempt} attempt(s): "
        f"{error.get('message', error.get('type', 'error'))}",
        context={"error": error, "attempt": step.attempt, "workflow_id": run.workflow_id},
        run_id=run.pk,
        step_run_id=step.pk,
        step_id=step.step_id,
        parked=True,
        raised_by=SYSTEM,
        run_initiator=getattr(run, "started_by", None),
        now=now,
    )
    return {"escalation": escalation.pk, "signal": escalation.signal_name}


@requires_actor
@audited_refusals
def resolve_escalation(
    escalation: Escalation | int,
    *,
    user,
    resolution: str,
    result: Any = None,
    comment: str = "",
    now: dt.datetime | None = None,
) -> Escalation:
    """Record a person's resolution (take over with a result, retry, stop) and announce it.

    Who may resolve is the eligibility rule's answer (the one the inbox lists by); those who
    may not even see the escalation are refused as for anything they cannot see.
    """
    if resolution not in Resolution.values:
        raise ValueError(f"resolution must be one of {Resolution.values}, not {resolution!r}")
    pk = escalation.pk if isinstance(escalation, Escalation) else escalation
    locked = Escalation.objects.select_for_update().filter(pk=pk).first()
    if locked is None:
        raise GovernanceError(f"No escalation #{pk} exists.", code="unknown")
    eligibility = escalation_eligibility(user, locked)
    if eligibility.code == "not_visible":
        raise NotVisible(user, "resolve", Escalation, locked.pk)
    refusal = None
    if not eligibility:
        refusal = GovernanceError(eligibility.message, code=eligibility.code)
    elif resolution == Resolution.TAKE_OVER and result is None:
        refusal = GovernanceError("Taking over needs the result you supply.", code="no_result")
    if refusal is not None:
        refusal.audit_entry = {
            "action": "governance.escalation.refused",
            "actor": user,
            "target": locked,
            "run_id": locked.run_id,
            "body": {"resolution": resolution},
        }
        raise refusal
    locked.status = EscalationStatus.RESOLVED
    locked.resolution = resolution
    locked.result = result if resolution == Resolution.TAKE_OVER else None
    locked.comment = comment
    locked.resolved_by = user
    locked.resolved_by_name = name_of(user)
    locked.resolved_at = now or clock.now()
    locked.save()
    audit.record(
        action="governance.escalation.resolved",
        actor=user,
        target=locked,
        run_id=locked.run_id,
        step_id=locked.step_id or None,
        body={"resolution": resolution, "comment": comment, "result": locked.result},
    )
    escalation_resolved.send(sender=Escalation, escalation=locked, actor=user)
    events.announce(
        "escalation.resolved",
        lambda: {
            "escalation": locked.pk,
            "resolution": resolution,
            "run_id": locked.run_id,
            "step_id": locked.step_id,
            "resolved_by": locked.resolved_by_name,
        },
        actor=user,
        target=locked,
    )
    return locked


def resolution_payload(escalation: Escalation) -> dict[str, Any]:
    """Return what a step waiting for an escalation's signal receives."""
    return {
        "escalation": escalation.pk,
        "resolution": escalation.resolution,
        "result": escalation.result,
        "comment": escalation.comment,
        "by": escalation.resolved_by_name,
    }


@requires_actor
def cancel_escalation(
    escalation: Escalation, *, actor, reason: str, now: dt.datetime | None = None
):
    """Close one open escalation nobody needs any more (audited); its step is not told."""
    escalation.status = EscalationStatus.CANCELLED
    escalation.resolved_at = now or clock.now()
    escalation.comment = reason
    escalation.save(update_fields=["status", "resolved_at", "comment"])
    audit.record(
        action="governance.escalation.cancelled",
        actor=actor,
        target=escalation,
        run_id=escalation.run_id,
        body={"reason": reason},
    )


@requires_actor
@transaction.atomic
def cancel_for_run(run_id: int, *, actor, reason: str, now: dt.datetime | None = None) -> int:
    """Close the open escalations of a run that finished; return how many."""
    now = now or clock.now()
    closed = 0
    for escalation in Escalation.objects.select_for_update().filter(
        run_id=run_id, status=EscalationStatus.OPEN
    ):
        cancel_escalation(escalation, actor=actor, reason=reason, now=now)
        closed += 1
    return closed
