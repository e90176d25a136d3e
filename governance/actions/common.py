"""What every governance service shares: refusals, history-aware saves, digests, actor facts."""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from django.db import models, transaction

from audit.actors import SYSTEM, requires_actor
from audit.evidence import canonical_json
from governance.permissions import (
    AccessDenied,
    NotVisible,
    record_refusal_once,
    require,
    require_model,
    verify_after_write,
)


class GovernanceError(Exception):
    """A governance operation refused, with a message for the person who asked and a code."""

    code = "refused"

    def __init__(self, message: str, *, code: str | None = None, **details):
        super().__init__(message)
        if code:
            self.code = code
        self.details = details
        self.audit_entry: dict | None = None
        self.recorded = False

    def audit(self) -> None:
        """Write the refusal to the audit log once, after the refused transaction rolled back."""
        if self.audit_entry is None:
            return
        entry = dict(self.audit_entry)
        body = {**entry.pop("body", {}), "code": self.code, "message": str(self)}
        record_refusal_once(self, **entry, body=body)


def audited_refusals(func):
    """Run a service in its own transaction; a refusal rolls it back, and is then audited.

    Inside a caller's transaction that later rolls back too, the entry goes with it; the
    refusal's audit() then writes it again (see permissions.record_refusal_once).
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with transaction.atomic():
                return func(*args, **kwargs)
        except (AccessDenied, NotVisible, GovernanceError) as refusal:
            refusal.audit()
            raise

    return wrapper


def digest(value: Any) -> str:
    """Return the SHA-256 of a JSON value's canonical (RFC 8785) encoding."""
    return hashlib.sha256(canonical_json(value if value is not None else {})).hexdigest()


def name_of(user) -> str:
    """Return a user's name to copy into a record, or '' for none."""
    return user.get_username() if user is not None else ""


@requires_actor
def save_governed(
    obj: models.Model,
    *,
    actor,
    reason: str = "",
    update_fields: list[str] | None = None,
    check: bool = True,
) -> models.Model:
    """Save a governed object as `actor`: check, set who and why before saving, re-check after.

    `actor=SYSTEM` is the system (seeding, migrations, engine callbacks) and is not checked;
    `check=False` is for callers that authorised the write by another rule (ownership).
    """
    creating = obj._state.adding
    model = type(obj)
    check = check and actor is not SYSTEM
    if check:
        if creating:
            require_model(actor, "add", model)
        else:
            stored = model._default_manager.get(pk=obj.pk)
            require(actor, "change", stored)
    obj._change_reason = reason or ("created" if creating else "changed")
    if actor is not SYSTEM:
        obj._history_user = actor
    obj.full_clean()
    obj.save(update_fields=update_fields)
    if check:
        verify_after_write(actor, "add" if creating else "change", obj)
    return obj


@requires_actor
def delete_governed(obj: models.Model, *, actor, reason: str = "", check: bool = True) -> None:
    """Delete a governed object as `actor`, recording who and why in its history.

    `check=False` is for callers that authorised the deletion already (a policy's rules go
    with the policy).
    """
    if actor is not SYSTEM and check:
        require(actor, "delete", obj)
    obj._change_reason = reason or "deleted"
    if actor is not SYSTEM:
        obj._history_user = actor
    obj.delete()
