"""KPI rollups: kept up to date in the engine's transactions, rebuilt in full on demand.

docs/kpis.md says what each figure means. In short:
* `KpiDay` counts runs started (by start day) and ended (by end day, with their total duration);
* `KpiRunEnd` is one narrow row per ended run (end time, outcome, duration, what its steps
  added): percentiles of durations are computed from it exactly for any period, and a failed
  run that is retried and ends again first takes back what its earlier end added;
* `KpiStepDay` / `KpiStepErrorDay` count the steps of ended runs (finished, failed, by error);
* `KpiEscalationDay` counts escalations opened for runs, by reason;
* `KpiApproval` is one narrow row per approval request of a run once it reached a final state.

Rollups change inside the transaction that changed the run (the receivers), so they commit or
roll back with it; `rebuild()` recomputes them from the runs, steps, escalations and approvals
and must give the same rows (tests check it after random runs, kills and retries).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

from django.db import transaction
from django.db.models import F

from audit import services as audit
from audit.actors import requires_actor
from orchestrator.models import (
    NO_ITEM,
    RUN_FINISHED,
    EventKind,
    KpiApproval,
    KpiDay,
    KpiEscalationDay,
    KpiRunEnd,
    KpiStepDay,
    KpiStepErrorDay,
    RunStatus,
    StepRun,
    StepStatus,
    WorkflowRun,
)

_ENDS = {EventKind.RUN_SUCCEEDED, EventKind.RUN_FAILED, EventKind.RUN_CANCELLED}
_OUTCOME_FIELD = {
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.FAILED: "failed",
    RunStatus.CANCELLED: "cancelled",
}
_FINAL_APPROVALS = {"approved", "rejected", "changes_requested", "expired", "cancelled"}


def day_of(moment: dt.datetime) -> dt.date:
    """Return the UTC day a moment belongs to (the rollups' days are UTC days)."""
    return moment.astimezone(dt.UTC).date()


def _bump(model, keys: dict, **deltas) -> None:
    """Add to a rollup row's counters, creating the row the first time."""
    changes = {name: F(name) + delta for name, delta in deltas.items() if delta}
    if not changes:
        return
    if model.objects.filter(**keys).update(**changes):
        return
    with transaction.atomic():  # a savepoint: a concurrent creator wins, then we add to its row
        model.objects.get_or_create(**keys)
    model.objects.filter(**keys).update(**changes)


# --- kept up to date by the engine's events -------------------------------------------------------


def on_run_events(events, run: WorkflowRun) -> None:
    """Follow a batch of a run's events: a start, an end, a failed run coming back to life."""
    for event in events:
        if event.kind == EventKind.RUN_STARTED:
            _bump(
                KpiDay, {"workflow_id": run.workflow_id, "day": day_of(run.created_at)}, started=1
            )
        elif event.kind in _ENDS:
            _record_end(run, event)
        elif event.kind == EventKind.RUN_RESUMED:
            _take_back_end(run.pk)


def _step_summary(run_id: int) -> dict:
    """Return {step_id: [finished, failed, {error type: count}]} of a run's steps (not items)."""
    summary: dict = {}
    rows = StepRun.objects.filter(
        run_id=run_id,
        item_index=NO_ITEM,
        status__in=[StepStatus.SUCCEEDED, StepStatus.FAILED],
    ).values_list("step_id", "status", "error")
    for step_id, status, error in rows:
        finished, failed, errors = summary.setdefault(step_id, [0, 0, {}])
        summary[step_id][0] = finished + 1
        if status == StepStatus.FAILED:
            summary[step_id][1] = failed + 1
            kind = error_type(error)
            errors[kind] = errors.get(kind, 0) + 1
    return summary


def error_type(error) -> str:
    """Return the type of a step's error, as the failure tables group it."""
    if isinstance(error, dict):
        return str(error.get("type") or "Error")[:100]
    return "Error"


def _apply_end(workflow_id, status, finished_at, duration, steps, sign: int) -> None:
    """Add (sign 1) or take back (sign -1) what one run's end counts."""
    day = day_of(finished_at)
    keys = {"workflow_id": workflow_id, "day": day}
    _bump(KpiDay, keys, **{_OUTCOME_FIELD[status]: sign, "duration_seconds": sign * duration})
    for step_id, (finished, failed, errors) in sorted(steps.items()):
        _bump(
            KpiStepDay, {**keys, "step_id": step_id}, finished=sign * finished, failed=sign * failed
        )
        for kind, count in sorted(errors.items()):
            _bump(
                KpiStepErrorDay,
                {**keys, "step_id": step_id, "error_type": kind},
                count=sign * count,
            )


def _take_back_end(run_id: int) -> None:
    """Take back what an earlier end of this run counted (it was retried and runs again)."""
    earlier = KpiRunEnd.objects.filter(run_id=run_id).first()
    if earlier is None:
        return
    _apply_end(
        earlier.workflow_id,
        earlier.status,
        earlier.finished_at,
        earlier.duration_seconds,
        earlier.steps,
        -1,
    )
    earlier.delete()


def _record_end(run: WorkflowRun, event) -> None:
    """Count a run's end: outcome, duration and its steps, on its end's day."""
    _take_back_end(run.pk)
    finished_at = run.finished_at or event.created_at
    duration = max((finished_at - run.created_at).total_seconds(), 0.0)
    steps = _step_summary(run.pk)
    _apply_end(run.workflow_id, run.status, finished_at, duration, steps, 1)
    KpiRunEnd.objects.create(
        run_id=run.pk,
        workflow_id=run.workflow_id,
        status=run.status,
        finished_at=finished_at,
        duration_seconds=duration,
        steps=steps,
    )


def on_escalation_opened(escalation) -> None:
    """Count an escalation opened for a run, on its day, by reason."""
    if escalation.run_id is None:
        return
    workflow_id = (
        WorkflowRun.objects.filter(pk=escalation.run_id)
        .values_list("workflow_id", flat=True)
        .first()
    )
    if workflow_id is None:
        return
    keys = {
        "workflow_id": workflow_id,
        "day": day_of(escalation.created_at),
        "reason": escalation.reason[:32],
    }
    _bump(KpiEscalationDay, keys, count=1)


def approval_row(request, workflow_id: int) -> KpiApproval:
    """Return the rollup row of an approval request in its final state (not saved)."""
    ended_at = request.decided_at or request.created_at  # every final state sets decided_at
    return KpiApproval(
        request_id=request.pk,
        workflow_id=workflow_id,
        status=request.status,
        role_name=request.role.name if request.role_id else "",
        decided_at=ended_at,
        latency_seconds=max((ended_at - request.created_at).total_seconds(), 0.0),
        breached=ended_at > request.created_at + dt.timedelta(seconds=request.sla_seconds),
    )


def on_approval_final(request) -> None:
    """Keep the latency of an approval request of a run once it reached its final state."""
    if request.run_id is None or request.status not in _FINAL_APPROVALS:
        return
    workflow_id = (
        WorkflowRun.objects.filter(pk=request.run_id).values_list("workflow_id", flat=True).first()
    )
    if workflow_id is None:
        return
    row = approval_row(request, workflow_id)
    KpiApproval.objects.filter(pk=row.pk).delete()
    row.save(force_insert=True)


# --- full recomputation ---------------------------------------------------------------------------


@requires_actor
def rebuild(*, actor) -> dict[str, int]:
    """Recompute every KPI rollup from the runs, steps, escalations and approvals; audited."""
    from governance.models import ApprovalRequest, Escalation

    with transaction.atomic():
        for model in (
            KpiDay,
            KpiRunEnd,
            KpiStepDay,
            KpiStepErrorDay,
            KpiEscalationDay,
            KpiApproval,
        ):
            model.objects.all().delete()
        days: dict = defaultdict(Counter)
        step_days: dict = defaultdict(Counter)
        error_days: Counter = Counter()
        ends = []
        runs = WorkflowRun.objects.order_by("pk").values_list(
            "pk", "workflow_id", "status", "created_at", "finished_at"
        )
        summaries = _step_summaries()
        for run_id, workflow_id, status, created_at, finished_at in runs.iterator(2000):
            days[(workflow_id, day_of(created_at))]["started"] += 1
            if status not in RUN_FINISHED or finished_at is None:
                continue
            duration = max((finished_at - created_at).total_seconds(), 0.0)
            key = (workflow_id, day_of(finished_at))
            days[key][_OUTCOME_FIELD[status]] += 1
            days[key]["duration_seconds"] += duration
            steps = summaries.get(run_id, {})
            for step_id, (finished, failed, errors) in steps.items():
                step_days[(*key, step_id)]["finished"] += finished
                step_days[(*key, step_id)]["failed"] += failed
                for kind, count in errors.items():
                    error_days[(*key, step_id, kind)] += count
            ends.append(
                KpiRunEnd(
                    run_id=run_id,
                    workflow_id=workflow_id,
                    status=status,
                    finished_at=finished_at,
                    duration_seconds=duration,
                    steps=steps,
                )
            )
        KpiDay.objects.bulk_create(
            [KpiDay(workflow_id=w, day=d, **values) for (w, d), values in days.items()], 2000
        )
        KpiRunEnd.objects.bulk_create(ends, 2000)
        KpiStepDay.objects.bulk_create(
            [
                KpiStepDay(workflow_id=w, day=d, step_id=s, **v)
                for (w, d, s), v in step_days.items()
            ],
            2000,
        )
        KpiStepErrorDay.objects.bulk_create(
            [
                KpiStepErrorDay(workflow_id=w, day=d, step_id=s, error_type=k, count=n)
                for (w, d, s, k), n in error_days.items()
            ],
            2000,
        )
        workflow_of = dict(WorkflowRun.objects.values_list("pk", "workflow_id"))
        escalations: Counter = Counter()
        for run_id, created_at, reason in Escalation.objects.filter(
            run_id__isnull=False
        ).values_list("run_id", "created_at", "reason"):
            if run_id in workflow_of:
                escalations[(workflow_of[run_id], day_of(created_at), reason[:32])] += 1
        KpiEscalationDay.objects.bulk_create(
            [
                KpiEscalationDay(workflow_id=w, day=d, reason=r, count=n)
                for (w, d, r), n in escalations.items()
            ],
            2000,
        )
        approvals = ApprovalRequest.objects.filter(
            run_id__isnull=False, status__in=_FINAL_APPROVALS
        ).select_related("role")
        KpiApproval.objects.bulk_create(
            [
                approval_row(request, workflow_of[request.run_id])
                for request in approvals.iterator(2000)
                if request.run_id in workflow_of
            ],
            2000,
        )
        counts = {"days": len(days), "ended_runs": len(ends), "escalation_days": len(escalations)}
        audit.record(action="orchestrator.kpis.rebuilt", actor=actor, body=counts)
    return counts


def _step_summaries() -> dict[int, dict]:
    """Return {run id: step summary} for every ended run, in one pass over the steps."""
    summaries: dict[int, dict] = defaultdict(dict)
    rows = (
        StepRun.objects.filter(
            item_index=NO_ITEM,
            status__in=[StepStatus.SUCCEEDED, StepStatus.FAILED],
            run__status__in=list(RUN_FINISHED),
        )
        .order_by()
        .values_list("run_id", "step_id", "status", "error")
    )
    for run_id, step_id, status, error in rows.iterator(5000):
        entry = summaries[run_id].setdefault(step_id, [0, 0, {}])
        entry[0] += 1
        if status == StepStatus.FAILED:
            entry[1] += 1
            kind = error_type(error)
            entry[2][kind] = entry[2].get(kind, 0) + 1
    return summaries
