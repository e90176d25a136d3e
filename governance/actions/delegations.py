"""Out-of-office delegations: a person's approvals go to a delegate for a period.

A person may delegate their own approvals; delegating for someone else needs the model
permission `governance.add_delegation`. The delegate must be a person. Decisions taken under a
delegation name both the delegate and the person they stand in for.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from audit import clock
from audit import services as audit
from audit.actors import SYSTEM, requires_actor
from governance.actions.common import (
    GovernanceError,
    audited_refusals,
    delete_governed,
    save_governed,
)
from governance.actions.principals import is_person
from governance.models import Delegation, Role
from governance.permissions import AccessDenied, has_model_permission, require


def _check(delegation: Delegation) -> None:
    """Refuse a delegation that makes no sense."""
    if delegation.delegate_id == delegation.delegator_id:
        raise GovernanceError("Nobody delegates to themselves.", code="self_delegation")
    if not is_person(delegation.delegate) or not delegation.delegate.is_active:
        raise GovernanceError("The delegate must be an active person.", code="not_a_person")
    if delegation.ends_at <= delegation.starts_at:
        raise GovernanceError("A delegation ends after it starts.", code="empty_window")


@requires_actor
@audited_refusals
def create_delegation(
    *,
    delegator,
    delegate,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    role: Role | None = None,
    note: str = "",
    actor,
) -> Delegation:
    """Hand `delegator`'s approvals (of one role, or all) to `delegate` for a period."""
    delegation = Delegation(
        delegator=delegator,
        delegate=delegate,
        starts_at=starts_at,
        ends_at=ends_at,
        role=role,
        note=note,
    )
    _check(delegation)
    own = actor is not SYSTEM and actor.pk == delegator.pk
    if actor is not SYSTEM and not own and not has_model_permission(actor, "add", Delegation):
        raise AccessDenied(actor, "add", model=Delegation)
    save_governed(delegation, actor=actor, reason="delegation created", check=not own)
    audit.record(
        action="governance.delegation.created",
        actor=actor,
        target=delegation,
        body={
            "delegator": delegator.get_username(),
            "delegate": delegate.get_username(),
            "role": role.name if role else None,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
        },
    )
    return delegation


@requires_actor
@audited_refusals
def update_delegation(delegation: Delegation, *, actor, reason: str, **fields) -> Delegation:
    """Change a delegation's window, role, delegate or reason."""
    for name, value in fields.items():
        if name not in {"delegator", "delegate", "starts_at", "ends_at", "role", "note"}:
            raise TypeError(f"update_delegation cannot change {name!r}")
        setattr(delegation, name, value)
    _check(delegation)
    return save_governed(delegation, actor=actor, reason=reason)


@requires_actor
@audited_refusals
def revoke_delegation(delegation: Delegation, *, actor, reason: str = "") -> Delegation:
    """End a delegation now (kept in the record)."""
    if actor is not SYSTEM:
        require(actor, "change", delegation)
    with transaction.atomic():
        delegation.revoked_at = clock.now()
        save_governed(delegation, actor=actor, reason=reason or "revoked")
        audit.record(action="governance.delegation.revoked", actor=actor, target=delegation)
    return delegation


@requires_actor
@audited_refusals
def delete_delegation(delegation: Delegation, *, actor, reason: str) -> None:
    """Delete a delegation (its history stays)."""
    delete_governed(delegation, actor=actor, reason=reason)
