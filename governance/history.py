"""Every change to a model with history (simple-history) also goes to the audit log.

simple-history writes a historical row in the transaction of the save or delete; this receiver
writes the audit entry next to it, with who, why (the change reason set before the save) and
what changed. It covers every governed model of every app (a Workflow of the engine, an Agent
later) without importing them: it listens to simple-history's own signal.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

from simple_history.signals import post_create_historical_record

from audit import services as audit
from audit.actors import SYSTEM

_VERBS = {"+": "created", "~": "changed", "-": "deleted"}


def _plain(value: Any) -> Any:
    """Return a value as JSON the audit log can hold."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return (
            value if value == value and value not in (float("inf"), float("-inf")) else str(value)
        )
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return str(value)


def changes(record) -> list[dict[str, Any]]:
    """Return the field changes of a historical record against the one before it."""
    previous = record.prev_record
    if previous is None:
        return []
    delta = record.diff_against(previous)
    return [
        {"field": change.field, "old": _plain(change.old), "new": _plain(change.new)}
        for change in delta.changes
    ]


def on_history_record(sender, instance, history_instance, history_user=None, **kwargs):
    """Write an audit entry for a historical record (created, changed or deleted)."""
    verb = _VERBS.get(history_instance.history_type, "changed")
    audit.record(
        action=f"{instance._meta.label_lower}.{verb}",
        actor=history_user if getattr(history_user, "pk", None) else SYSTEM,
        target=instance,
        body={
            "reason": history_instance.history_change_reason or "",
            "history_id": history_instance.history_id,
            "changes": changes(history_instance) if verb == "changed" else [],
        },
    )


def connect() -> None:
    """Connect the receiver (idempotent)."""
    post_create_historical_record.connect(on_history_record, dispatch_uid="governance.history")
