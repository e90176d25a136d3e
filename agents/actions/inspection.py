"""Reading what an agent said and was told: opening a model call's prompt and response.

A model call's prompt and response live in the body of its `agents.model.called` audit entry
(the ModelCall row holds only tokens, cost and latency). Whoever may see the call (its agent)
may open that body in the inspector, and every opening is itself recorded
(`agents.model.body_opened`: who opened which call's body), so an auditor can answer "who saw
this".
"""

from __future__ import annotations

from typing import Any

from agents.models import ModelCall
from audit import services as audit
from audit.actors import requires_actor
from audit.models import AuditEntry
from audit.reading import body_content
from governance.actions.common import audited_refusals
from governance.permissions import get_for

CALLED = "agents.model.called"
OPENED = "agents.model.body_opened"
MAX_CALLS_A_STEP = 1000


def _call_entry(call: ModelCall) -> AuditEntry | None:
    """Return the audit entry a model call wrote: the one of its step whose body names its key.

    Each call writes its row and its entry in one transaction, so the n-th call of a step (by
    id) wrote the n-th `agents.model.called` entry of that step unless parallel children
    interleaved; the body's key settles it, and decides for an erased body by position alone.
    """
    if call.run_id is None:
        return None
    entries = list(
        AuditEntry.objects.filter(action=CALLED, run_id=str(call.run_id), step_id=call.step_id[:64])
        .select_related("body_row")
        .order_by("id")[:MAX_CALLS_A_STEP]
    )
    for entry in entries:
        body, _ = body_content(entry)
        if isinstance(body, dict) and body.get("key") == call.key:
            return entry
    position = ModelCall.objects.filter(
        run_id=call.run_id, step_id=call.step_id, pk__lt=call.pk
    ).count()
    return entries[position] if position < len(entries) else None


@requires_actor
@audited_refusals
def open_model_call(model_call_id: int, *, actor) -> dict[str, Any]:
    """Return a model call's prompt and response (or their erasure) and record who opened it."""
    call = get_for(actor, ModelCall, model_call_id)
    entry = _call_entry(call)
    body, erased = body_content(entry) if entry is not None else (None, None)
    audit.record(
        action=OPENED,
        actor=actor,
        target=call,
        run_id=call.run_id,
        step_id=call.step_id or None,
        body={
            "model_call": call.pk,
            "audit_entry": entry.pk if entry is not None else None,
            "erased": erased is not None,
        },
    )
    return {"call": call, "entry": entry, "body": body, "erased": erased}
