"""Receivers that connect the engine to the apps below it, which never import the engine."""

import logging

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from agents.models import ModelCall, ToolInvocation
from agents.signals import model_call_values_expired
from audit import services as audit
from audit.actors import SYSTEM
from governance import live
from governance import services as governance
from governance.models import Escalation
from governance.signals import approval_decided, escalation_resolved
from orchestrator import engine, kpis, metrics, services
from orchestrator.models import EventKind
from orchestrator.signals import run_events_recorded

log = logging.getLogger(__name__)
_RUN_ENDED = {EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED, EventKind.RUN_CANCELLED}


@receiver(run_events_recorded, dispatch_uid="orchestrator.audit_run_events")
def audit_run_events(sender, events, run, **kwargs):
    """Write every engine event to the audit log in the transaction that made the change."""
    audit.record_many(
        [
            {
                "action": f"engine.{event.kind}",
                "actor": event.actor if event.actor_id else SYSTEM,
                "target_type": "orchestrator.steprun"
                if event.step_run_id
                else "orchestrator.workflowrun",
                "target_id": str(event.step_run_id or event.run_id),
                "target_repr": _describe(event, run),
                "run_id": event.run_id,
                "step_id": event.step_id or None,
                "body": {
                    "event_id": event.pk,
                    "item_index": event.item_index,
                    "attempt": event.attempt,
                    "data": event.data,
                },
            }
            for event in events
        ]
    )


_ANNOUNCED_RUN_EVENTS = {
    EventKind.RUN_STARTED: "run.started",
    EventKind.RUN_SUCCEEDED: "run.succeeded",
    EventKind.RUN_FAILED: "run.failed",
    EventKind.WAITING: "run.waiting",
}


# What live pages follow besides the webhooks' run events (ids only, governance/live.py): the
# run's own status changed (cancelled, paused, resumed), or only its steps moved.
RUN_CHANGED, RUN_PROGRESSED = "run.changed", "run.progressed"
live.register_event_type(RUN_CHANGED, "Run changed (cancelled, paused or resumed)")
live.register_event_type(RUN_PROGRESSED, "Run progressed (a step changed state)")
_RUN_STATUS_EVENTS = {EventKind.RUN_CANCELLED, EventKind.RUN_PAUSED, EventKind.RUN_RESUMED}


@receiver(run_events_recorded, dispatch_uid="orchestrator.announce_run_events")
def announce_run_events(sender, events, run, **kwargs):
    """Announce the run events live pages and integrations follow, in this transaction.

    A batch the webhooks' events leave out still tells live pages, with one row for the whole
    batch: they re-read the run, whatever in it moved.
    """
    announced = False
    for event in events:
        event_type = _ANNOUNCED_RUN_EVENTS.get(event.kind)
        if event_type is None:
            continue
        governance.announce(
            event_type,
            lambda event=event: _run_facts(run, event),
            actor=event.actor if event.actor_id else SYSTEM,
            target=run,
        )
        announced = True
    if not announced and events:
        changed = any(event.kind in _RUN_STATUS_EVENTS for event in events)
        governance.announce_live(
            RUN_CHANGED if changed else RUN_PROGRESSED, target=run, actor=SYSTEM
        )


def _run_facts(run, event) -> dict:
    """Return the small facts a run webhook carries: ids, status, the step that waits."""
    facts = {
        "run": run.pk,
        "workflow": run.workflow.slug,
        "business_key": run.business_key,
        "status": run.status,
        "event_id": event.pk,
    }
    if event.step_id:
        facts["step_id"] = event.step_id
        data = event.data if isinstance(event.data, dict) else {}
        facts["waiting_for"] = data.get("signal") or data.get("awaiting") or data.get("wake_at")
    if event.kind == EventKind.RUN_FAILED and isinstance(run.error, dict):
        facts["error"] = str(run.error.get("message", ""))[:300]
    return facts


def _describe(event, run) -> str:
    """Name the run (and step) an event is about, for readers of the audit log."""
    label = f"run {event.run_id} of {run.workflow_id}"
    if event.step_id:
        item = "" if event.item_index is None else f"[{event.item_index}]"
        return f"step {event.step_id}{item} of {label}"
    return label


@receiver(run_events_recorded, dispatch_uid="orchestrator.count_run_events")
def count_run_events(sender, events, run, **kwargs):
    """Count run starts and ends for /metrics once their transaction commits."""
    metrics.count_run_events(events)


def _kpi_rollups_on() -> bool:
    """Tell whether the KPI rollups are kept (STEWARD_KPI_ROLLUPS, read at each call)."""
    return settings.STEWARD_KPI_ROLLUPS


@receiver(run_events_recorded, dispatch_uid="orchestrator.keep_kpis")
def keep_kpis(sender, events, run, **kwargs):
    """Keep the KPI rollups in the transaction that moved the run."""
    if _kpi_rollups_on():
        kpis.on_run_events(events, run)


@receiver(post_save, sender=Escalation, dispatch_uid="orchestrator.count_escalation")
def count_escalation(sender, instance, created, **kwargs):
    """Count an escalation opened for a run in the KPI rollups, in its transaction."""
    if created and _kpi_rollups_on():
        kpis.on_escalation_opened(instance)


@receiver(post_save, sender=ModelCall, dispatch_uid="orchestrator.count_model_call")
def count_model_call(sender, instance, created, **kwargs):
    """Count an agent's model call (tokens, cost) in the KPI rollups, in its transaction."""
    if created and _kpi_rollups_on():
        kpis.on_model_call(instance)


@receiver(post_save, sender=ToolInvocation, dispatch_uid="orchestrator.count_tool_call")
def count_tool_call(sender, instance, created, **kwargs):
    """Count a proposed tool call by its verdict in the KPI rollups, in its transaction."""
    if created and _kpi_rollups_on():
        kpis.on_tool_call(instance)


@receiver(approval_decided, dispatch_uid="orchestrator.keep_approval_kpis")
def keep_approval_kpis(sender, request, **kwargs):
    """Keep an approval request's latency in the KPI rollups once it is final."""
    if _kpi_rollups_on():
        kpis.on_approval_final(request)


@receiver(approval_decided, dispatch_uid="orchestrator.resume_on_approval")
def resume_on_approval(sender, request, payload, actor, announce_to_run=True, **kwargs):
    """Wake the step waiting for an approval, in the transaction that made the decision."""
    if not announce_to_run or request.run_id is None:
        return
    try:
        engine.send_signal(
            request.run_id, request.signal_name, payload, sent_by=actor, owner_app=True
        )
    except engine.EngineError as exc:  # the run finished meanwhile: the decision stands alone
        log.info("approval %s decided for a finished run: %s", request.pk, exc)


@receiver(approval_decided, dispatch_uid="orchestrator.settle_version_on_decision")
def settle_version_on_decision(sender, request, actor, **kwargs):
    """Make an approved workflow version live, or a refused one final, as its request ends."""
    if request.action != services.PUBLISH_ACTION:
        return
    services.settle_version(request.pk, actor=actor)


@receiver(escalation_resolved, dispatch_uid="orchestrator.resume_on_escalation")
def resume_on_escalation(sender, escalation, actor, **kwargs):
    """Carry out a person's resolution of an escalation: supply the result, retry, or stop."""
    if escalation.run_id is None:
        return
    reason = f"escalation {escalation.pk}: {escalation.comment}".strip(": ")
    if escalation.resolution == "stop":
        engine.cancel_run(escalation.run_id, actor=actor, reason=reason)
    elif escalation.parked:
        engine.resolve_parked_step(
            escalation.step_run_id,
            output=escalation.result,
            retry=escalation.resolution == "retry",
            actor=actor,
            note=reason,
        )
    else:
        engine.send_signal(
            escalation.run_id,
            escalation.signal_name,
            governance.resolution_payload(escalation),
            sent_by=actor,
            owner_app=True,
        )


@receiver(run_events_recorded, dispatch_uid="orchestrator.close_governance_of_ended_runs")
def close_governance_of_ended_runs(sender, events, run, **kwargs):
    """Once a run has ended, cancel its pending approvals and open escalations."""
    if not any(event.kind in _RUN_ENDED for event in events):
        return
    run_id = run.pk
    # After commit: the run's lock is released by then (lock order: approval request, then run,
    # as decisions take them), and what a step opened in a transaction of its own up to then is
    # seen, as before.
    transaction.on_commit(lambda: _close_governance(run_id))


def _close_governance(run_id: int) -> None:
    """Have governance cancel what it still holds open for an ended run."""
    governance.close_for_ended_run(run_id, actor=SYSTEM, reason=f"run {run_id} ended")


@receiver(model_call_values_expired, dispatch_uid="orchestrator.redact_model_call_journals")
def redact_model_call_journals(sender, model_calls, **kwargs):
    """Redact the journals of model calls that held an expired memory value (finished steps)."""
    return services.redact_model_call_journals(model_calls)
