"""KPI rollups: kept up to date in the engine's transactions, rebuilt in full on demand.

docs/kpis.md says what each figure means. In short:
* `KpiDay` counts runs started (by start day) and ended (by end day, with their total duration);
* `KpiRunEnd` is one narrow row per ended run (end time, outcome, duration, what its steps
  added), and a failed run that is retried and ends again first takes back what its earlier
  end added;
* `KpiDurationDay` counts ended runs per workflow, day and duration bucket (DURATION_BOUNDS):
  the page finds in it the bucket holding a percentile's rank and reads that bucket's
  `KpiRunEnd` durations alone, so percentiles are exact for any period at a cost that does
  not grow with its runs;
* `KpiStepDay` / `KpiStepErrorDay` count the steps of ended runs (finished, failed, by error);
* `KpiEscalationDay` counts escalations opened for runs, by reason (and, on their end's day, the
  runs that ended with an escalation for it; `KpiDay` counts runs escalated and runs a person
  handled, an escalation or an approval);
* `KpiApproval` is one narrow row per approval request of a run once it reached a final state:
  waiting to be seen (until an eligible approver first opened it, or else its first decision)
  and deciding (from then to its final state), by role and by the approver who ended it;
* `KpiAck` is one row per acknowledged run: the first success of the step, or arrival of the
  signal, its version declares as the acknowledgement (`acknowledgement:` in the definition);
* `KpiAgentDay` counts model calls, tokens, cost and tool calls by verdict, per agent and day.

Rollups change inside the transaction that changed the run (the receivers), so they commit or
roll back with it; `rebuild()` recomputes them from the runs, steps, escalations and approvals
and must give the same rows (tests check it after random runs, kills and retries).
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections import Counter, defaultdict
from decimal import Decimal

from django.db import connection, transaction
from django.db.models import CharField, JSONField, Value

from audit import services as audit
from audit.actors import requires_actor
from orchestrator.definitions import compiled_version
from orchestrator.models import (
    NO_ITEM,
    RUN_FINISHED,
    EventKind,
    KpiAck,
    KpiAgentDay,
    KpiApproval,
    KpiDay,
    KpiDurationDay,
    KpiEscalationDay,
    KpiRunEnd,
    KpiStepDay,
    KpiStepErrorDay,
    RunEvent,
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


# The duration histogram's bucket bounds (seconds): 1 ms, then ×2^(1/8) (9 %) each, up to
# about 17 years. Bucket b holds DURATION_BOUNDS[b - 1] <= seconds < DURATION_BOUNDS[b]; bucket
# 0 everything under 1 ms, the last everything from the last bound up. Changing them needs
# `manage.py rebuild_kpis`.
DURATION_BOUNDS = tuple(0.001 * 2 ** (n / 8) for n in range(8 * 39))


def duration_bucket(seconds: float) -> int:
    """Return the histogram bucket of a duration (an index into the gaps of DURATION_BOUNDS)."""
    return bisect.bisect_right(DURATION_BOUNDS, seconds)


def bucket_range(bucket: int) -> tuple[float, float]:
    """Return a bucket's bounds [low, high) (infinite at the open ends)."""
    low = DURATION_BOUNDS[bucket - 1] if bucket > 0 else float("-inf")
    high = DURATION_BOUNDS[bucket] if bucket < len(DURATION_BOUNDS) else float("inf")
    return low, high


def day_of(moment: dt.datetime) -> dt.date:
    """Return the UTC day a moment belongs to (the rollups' days are UTC days)."""
    return moment.astimezone(dt.UTC).date()


def _bump(model, keys: dict, **deltas) -> None:
    """Add to a rollup row's counters, creating the row the first time (one statement)."""
    _execute([_upsert(model, [(keys, deltas)])])


def _upsert(model, rows: list[tuple[dict, dict]]) -> tuple[str, list] | None:
    """Return the upsert adding to the counters of rows of one rollup (None: nothing to add).

    INSERT ... ON CONFLICT (the row's unique keys) DO UPDATE SET counter = counter + the delta:
    one statement however many rows, atomic against a concurrent creator (PostgreSQL and
    SQLite). Rows are taken in key order, so concurrent transactions lock them in the same order.
    """
    rows = [(keys, deltas) for keys, deltas in rows if any(deltas.values())]
    if not rows:
        return None
    key_names = list(rows[0][0])
    changed = sorted({name for _, deltas in rows for name, delta in deltas.items() if delta})
    fields = {f.attname: f for f in model._meta.concrete_fields if not f.primary_key}
    columns = [*key_names, *(name for name in fields if name not in key_names)]
    values, params = [], []
    for keys, deltas in sorted(rows, key=lambda row: [str(row[0][name]) for name in key_names]):
        for name in columns:
            value = keys[name] if name in keys else deltas.get(name) or fields[name].get_default()
            params.append(fields[name].get_db_prep_save(value, connection))
        values.append(f"({', '.join(['%s'] * len(columns))})")
    quote, table = connection.ops.quote_name, connection.ops.quote_name(model._meta.db_table)
    column = {name: quote(fields[name].column) for name in columns}
    sql = (
        f"INSERT INTO {table} ({', '.join(column[name] for name in columns)}) "
        f"VALUES {', '.join(values)} "
        f"ON CONFLICT ({', '.join(column[name] for name in key_names)}) DO UPDATE SET "
        + ", ".join(f"{column[n]} = {table}.{column[n]} + EXCLUDED.{column[n]}" for n in changed)
    )
    return sql, params


def _insert(row) -> tuple[str, list]:
    """Return the plain INSERT of a model instance (all its columns)."""
    meta = row._meta
    fields = meta.concrete_fields
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    return sql, [field.get_db_prep_save(field.pre_save(row, True), connection) for field in fields]


def _execute(statements: list[tuple[str, list] | None]) -> None:
    """Run writes to different tables: on PostgreSQL as one statement (WITH ... AS (...)).

    PostgreSQL runs every data-modifying WITH clause once and to completion; a run's end then
    costs one round trip, whatever rollups it adds to. Elsewhere (SQLite) one by one.
    """
    statements = [statement for statement in statements if statement is not None]
    if len(statements) > 1 and connection.vendor == "postgresql":
        *first, (last_sql, last_params) = statements
        clauses = ", ".join(f"w{index} AS ({sql})" for index, (sql, _) in enumerate(first))
        params = [param for _, statement_params in first for param in statement_params]
        statements = [(f"WITH {clauses} {last_sql}", [*params, *last_params])]
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)


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
        elif event.kind in _ACK_KINDS and acknowledges(event, _acknowledgement(run)):
            _record_ack(run, event.created_at)


_ACK_KINDS = {EventKind.STEP_SUCCEEDED, EventKind.SIGNAL_RECEIVED}


def _acknowledgement(run: WorkflowRun) -> tuple[str, str] | None:
    """Return what acknowledges a run of this version (versions are immutable: cached)."""
    return compiled_version(run.version_id).acknowledgement


def acknowledges(event, declared: tuple[str, str] | None) -> bool:
    """Tell whether a run event is the acknowledgement its workflow declares."""
    if declared is None:
        return False
    kind, name = declared
    if kind == "step":
        return (
            event.kind == EventKind.STEP_SUCCEEDED
            and event.step_id == name
            and event.item_index is None
        )
    data = event.data if isinstance(event.data, dict) else {}
    return event.kind == EventKind.SIGNAL_RECEIVED and data.get("signal") == name


def _record_ack(run: WorkflowRun, moment: dt.datetime) -> None:
    """Keep the first acknowledgement of a run (a later one changes nothing)."""
    KpiAck.objects.get_or_create(
        run_id=run.pk,
        defaults={
            "workflow_id": run.workflow_id,
            "acknowledged_at": moment,
            "seconds": max((moment - run.created_at).total_seconds(), 0.0),
        },
    )


def _end_facts(run_id: int) -> tuple[dict, list[str], int, bool]:
    """Return what a run's end counts, read in one statement.

    Its step summary {step_id: [finished, failed, {error type: count}]} (steps, not items), the
    reasons it was escalated for (each once, sorted), its approval requests, and whether an
    earlier end of it is still counted.
    """
    from governance.models import ApprovalRequest, Escalation

    def tagged(queryset, tag: str, name: str | None = None):
        """Return (tag, name, status, error) rows of a queryset, for the union."""
        text = {"output_field": CharField()}
        return (
            queryset.filter(run_id=run_id)
            .order_by()
            .annotate(
                fact=Value(tag, **text),
                **({} if name else {"fact_name": Value("", **text)}),
                **({} if tag == "step" else {"fact_status": Value("", **text)}),
                **({} if tag == "step" else {"fact_error": Value(None, output_field=JSONField())}),
            )
            .values_list(
                "fact",
                name or "fact_name",
                "status" if tag == "step" else "fact_status",
                "error" if tag == "step" else "fact_error",
            )
        )

    steps = StepRun.objects.filter(
        item_index=NO_ITEM, status__in=[StepStatus.SUCCEEDED, StepStatus.FAILED]
    )
    rows = tagged(steps, "step", "step_id").union(
        tagged(Escalation.objects, "escalation", "reason"),
        tagged(ApprovalRequest.objects, "approval"),
        tagged(KpiRunEnd.objects, "earlier"),
        all=True,
    )
    summary: dict = {}
    reasons, approvals, earlier = set(), 0, False
    for tag, name, status, error in rows:
        if tag == "escalation":
            reasons.add(name[:32])
        elif tag == "approval":
            approvals += 1
        elif tag == "earlier":
            earlier = True
        else:
            entry = summary.setdefault(name, [0, 0, {}])
            entry[0] += 1
            if status == StepStatus.FAILED:
                entry[1] += 1
                kind = error_type(error)
                entry[2][kind] = entry[2].get(kind, 0) + 1
    return summary, sorted(reasons), approvals, earlier


def error_type(error) -> str:
    """Return the type of a step's error, as the failure tables group it."""
    if isinstance(error, dict):
        return str(error.get("type") or "Error")[:100]
    return "Error"


def _end_writes(workflow_id, status, finished_at, duration, steps, people, sign: int) -> list:
    """Return the upserts adding (sign 1) or taking back (sign -1) what one run's end counts."""
    day = day_of(finished_at)
    keys = {"workflow_id": workflow_id, "day": day}
    reasons, approvals = people
    deltas = {_OUTCOME_FIELD[status]: sign, "duration_seconds": sign * duration}
    deltas |= {"escalated": sign * bool(reasons), "by_human": sign * bool(reasons or approvals)}
    return [
        _upsert(KpiDay, [(keys, deltas)]),
        _upsert(KpiDurationDay, [({**keys, "bucket": duration_bucket(duration)}, {"count": sign})]),
        _upsert(
            KpiEscalationDay, [({**keys, "reason": reason}, {"runs": sign}) for reason in reasons]
        ),
        _upsert(
            KpiStepDay,
            [
                (
                    {**keys, "step_id": step_id},
                    {"finished": sign * finished, "failed": sign * failed},
                )
                for step_id, (finished, failed, _) in steps.items()
            ],
        ),
        _upsert(
            KpiStepErrorDay,
            [
                ({**keys, "step_id": step_id, "error_type": kind}, {"count": sign * count})
                for step_id, (_, _, errors) in steps.items()
                for kind, count in errors.items()
            ],
        ),
    ]


def _take_back_end(run_id: int) -> None:
    """Take back what an earlier end of this run counted (it was retried and runs again)."""
    earlier = KpiRunEnd.objects.filter(run_id=run_id).first()
    if earlier is None:
        return
    _execute(
        _end_writes(
            earlier.workflow_id,
            earlier.status,
            earlier.finished_at,
            earlier.duration_seconds,
            earlier.steps,
            (earlier.escalation_reasons, earlier.approvals),
            -1,
        )
    )
    earlier.delete()


def _record_end(run: WorkflowRun, event) -> None:
    """Count a run's end: outcome, duration and its steps, on its end's day.

    Two statements on PostgreSQL: one read (_end_facts), one write (its KpiRunEnd row and its
    additions to the day rollups). An earlier end no resumption took back is taken back first.
    """
    finished_at = run.finished_at or event.created_at
    duration = max((finished_at - run.created_at).total_seconds(), 0.0)
    steps, reasons, approvals, earlier = _end_facts(run.pk)
    if earlier:
        _take_back_end(run.pk)
    end = KpiRunEnd(
        run_id=run.pk,
        workflow_id=run.workflow_id,
        status=run.status,
        finished_at=finished_at,
        day=day_of(finished_at),
        duration_seconds=duration,
        steps=steps,
        escalation_reasons=reasons,
        approvals=approvals,
    )
    people = (reasons, approvals)
    writes = _end_writes(run.workflow_id, run.status, finished_at, duration, steps, people, 1)
    _execute([*writes, _insert(end)])


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


def approval_row(request, workflow_id: int, seen_at, decisions: list) -> KpiApproval:
    """Return the rollup row of an approval request in its final state (not saved).

    `seen_at` is when an eligible approver first opened it (or None); `decisions` are its
    (decided_at, decided_by_name) in order. A request decided unseen (through the API) was seen
    at its first decision; one that expired or was cancelled unseen never was.
    """
    ended_at = request.decided_at or request.created_at  # every final state sets decided_at
    if decisions and (seen_at is None or decisions[0][0] < seen_at):
        seen_at = decisions[0][0]
    if seen_at is not None:
        seen_at = min(max(seen_at, request.created_at), ended_at)
    approver = decisions[-1][1] if decisions and request.status not in _UNDECIDED else ""
    return KpiApproval(
        request_id=request.pk,
        workflow_id=workflow_id,
        status=request.status,
        role_name=request.role.name if request.role_id else "",
        decided_at=ended_at,
        latency_seconds=max((ended_at - request.created_at).total_seconds(), 0.0),
        breached=ended_at > request.created_at + dt.timedelta(seconds=request.sla_seconds),
        approver_name=approver[:150],
        seen_at=seen_at,
        wait_seconds=None if seen_at is None else (seen_at - request.created_at).total_seconds(),
        decide_seconds=None if seen_at is None else (ended_at - seen_at).total_seconds(),
    )


_UNDECIDED = {"expired", "cancelled"}


def on_approval_final(request) -> None:
    """Keep the latency of an approval request of a run once it reached its final state."""
    from governance.models import ApprovalDecision, ApprovalSeen

    if request.run_id is None or request.status not in _FINAL_APPROVALS:
        return
    workflow_id = (
        WorkflowRun.objects.filter(pk=request.run_id).values_list("workflow_id", flat=True).first()
    )
    if workflow_id is None:
        return
    seen_at = (
        ApprovalSeen.objects.filter(request_id=request.pk).values_list("seen_at", flat=True).first()
    )
    decisions = list(
        ApprovalDecision.objects.filter(request_id=request.pk)
        .order_by("decided_at", "id")
        .values_list("decided_at", "decided_by_name")
    )
    row = approval_row(request, workflow_id, seen_at, decisions)
    KpiApproval.objects.filter(pk=row.pk).delete()
    row.save(force_insert=True)


def _workflow_of_run(run_id) -> int | None:
    """Return the workflow of a run (None when there is no such run)."""
    if run_id is None:
        return None
    return WorkflowRun.objects.filter(pk=run_id).values_list("workflow_id", flat=True).first()


def tool_call_counts(verdict: str) -> dict[str, int]:
    """Return what one tool call adds to an agent's day, by its verdict."""
    return {
        "tool_calls": 1,
        "denied": int(verdict == "deny"),
        "approvals": int(verdict == "approval"),
        "escalated": int(verdict == "escalate"),
    }


def on_model_call(call) -> None:
    """Count a model call of an agent in a run: calls, tokens and cost, on its day."""
    workflow_id = _workflow_of_run(call.run_id)
    if workflow_id is None:
        return
    keys = {
        "workflow_id": workflow_id,
        "day": day_of(call.created_at),
        "agent_slug": call.agent_slug,
    }
    _bump(
        KpiAgentDay,
        keys,
        model_calls=1,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cost=Decimal(call.cost),
    )


def on_tool_call(invocation) -> None:
    """Count a proposed tool call in a run by its verdict (denied, approval, escalated)."""
    workflow_id = _workflow_of_run(invocation.run_id)
    if workflow_id is None:
        return
    keys = {
        "workflow_id": workflow_id,
        "day": day_of(invocation.created_at),
        "agent_slug": invocation.agent_slug,
    }
    _bump(KpiAgentDay, keys, **tool_call_counts(invocation.verdict))


# --- full recomputation ---------------------------------------------------------------------------


_ROLLUPS = (
    KpiDay,
    KpiRunEnd,
    KpiDurationDay,
    KpiStepDay,
    KpiStepErrorDay,
    KpiEscalationDay,
    KpiApproval,
    KpiAck,
    KpiAgentDay,
)


@requires_actor
def rebuild(*, actor) -> dict[str, int]:
    """Recompute every KPI rollup from the runs, steps, escalations and approvals; audited."""
    from governance.models import ApprovalRequest, Escalation

    with transaction.atomic():
        for model in _ROLLUPS:
            model.objects.all().delete()
        days: dict = defaultdict(Counter)
        step_days: dict = defaultdict(Counter)
        error_days: Counter = Counter()
        escalations: dict = defaultdict(Counter)
        ends = []
        durations: Counter = Counter()
        reasons_of: dict = defaultdict(set)
        for run_id, reason in Escalation.objects.filter(run_id__isnull=False).values_list(
            "run_id", "reason"
        ):
            reasons_of[run_id].add(reason[:32])
        approvals_of = Counter(
            ApprovalRequest.objects.filter(run_id__isnull=False).values_list("run_id", flat=True)
        )
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
            durations[(*key, duration_bucket(duration))] += 1
            reasons = sorted(reasons_of.get(run_id, ()))
            approvals = approvals_of.get(run_id, 0)
            days[key]["escalated"] += bool(reasons)
            days[key]["by_human"] += bool(reasons or approvals)
            for reason in reasons:
                escalations[(*key, reason)]["runs"] += 1
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
                    day=key[1],
                    duration_seconds=duration,
                    steps=steps,
                    escalation_reasons=reasons,
                    approvals=approvals,
                )
            )
        KpiDay.objects.bulk_create(
            [KpiDay(workflow_id=w, day=d, **values) for (w, d), values in days.items()], 2000
        )
        KpiRunEnd.objects.bulk_create(ends, 2000)
        KpiDurationDay.objects.bulk_create(
            [
                KpiDurationDay(workflow_id=w, day=d, bucket=b, count=n)
                for (w, d, b), n in durations.items()
            ],
            2000,
        )
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
        for run_id, created_at, reason in Escalation.objects.filter(
            run_id__isnull=False
        ).values_list("run_id", "created_at", "reason"):
            if run_id in workflow_of:
                escalations[(workflow_of[run_id], day_of(created_at), reason[:32])]["count"] += 1
        KpiEscalationDay.objects.bulk_create(
            [
                KpiEscalationDay(workflow_id=w, day=d, reason=r, **values)
                for (w, d, r), values in escalations.items()
            ],
            2000,
        )
        KpiApproval.objects.bulk_create(_approval_rows(workflow_of), 2000)
        acks = _acks()
        KpiAck.objects.bulk_create(acks, 2000)
        agent_days = _agent_days(workflow_of)
        KpiAgentDay.objects.bulk_create(agent_days, 2000)
        counts = {
            "days": len(days),
            "ended_runs": len(ends),
            "escalation_days": len(escalations),
            "acknowledged_runs": len(acks),
            "agent_days": len(agent_days),
        }
        audit.record(action="orchestrator.kpis.rebuilt", actor=actor, body=counts)
    return counts


def _approval_rows(workflow_of: dict) -> list[KpiApproval]:
    """Return the rollup rows of every final approval request of a run."""
    from governance.models import ApprovalDecision, ApprovalRequest, ApprovalSeen

    seen = dict(ApprovalSeen.objects.values_list("request_id", "seen_at"))
    decisions: dict = defaultdict(list)
    for request_id, decided_at, name in (
        ApprovalDecision.objects.filter(request__run_id__isnull=False)
        .order_by("decided_at", "id")
        .values_list("request_id", "decided_at", "decided_by_name")
    ):
        decisions[request_id].append((decided_at, name))
    approvals = ApprovalRequest.objects.filter(
        run_id__isnull=False, status__in=_FINAL_APPROVALS
    ).select_related("role")
    return [
        approval_row(
            request,
            workflow_of[request.run_id],
            seen.get(request.pk),
            decisions.get(request.pk, []),
        )
        for request in approvals.iterator(2000)
        if request.run_id in workflow_of
    ]


def _acks() -> list[KpiAck]:
    """Return the first acknowledgement of every run whose version declares one."""
    declared = {}
    versions = WorkflowRun.objects.order_by().values_list("version_id", flat=True).distinct()
    for version_id in versions:
        acknowledgement = compiled_version(version_id).acknowledgement
        if acknowledgement is not None:
            declared[version_id] = acknowledgement
    if not declared:
        return []
    found: dict[int, KpiAck] = {}
    events = (
        RunEvent.objects.filter(
            kind__in=list(_ACK_KINDS), item_index__isnull=True, run__version_id__in=list(declared)
        )
        .order_by("created_at", "id")
        .values_list(
            "run_id",
            "run__workflow_id",
            "run__version_id",
            "run__created_at",
            "kind",
            "step_id",
            "item_index",
            "data",
            "created_at",
        )
    )
    for (
        run_id,
        workflow_id,
        version_id,
        started,
        kind,
        step_id,
        index,
        data,
        moment,
    ) in events.iterator(5000):
        if run_id in found:
            continue
        event = RunEvent(kind=kind, step_id=step_id, item_index=index, data=data)
        if acknowledges(event, declared[version_id]):
            found[run_id] = KpiAck(
                run_id=run_id,
                workflow_id=workflow_id,
                acknowledged_at=moment,
                seconds=max((moment - started).total_seconds(), 0.0),
            )
    return list(found.values())


def _agent_days(workflow_of: dict) -> list[KpiAgentDay]:
    """Return what each agent did in each workflow's runs on each day: calls, tokens, verdicts."""
    from agents.models import ModelCall, ToolInvocation

    totals: dict = defaultdict(Counter)
    for run_id, slug, moment, tokens_in, tokens_out, cost in ModelCall.objects.filter(
        run_id__isnull=False
    ).values_list("run_id", "agent_slug", "created_at", "input_tokens", "output_tokens", "cost"):
        if run_id not in workflow_of:
            continue
        entry = totals[(workflow_of[run_id], day_of(moment), slug)]
        entry["model_calls"] += 1
        entry["input_tokens"] += tokens_in
        entry["output_tokens"] += tokens_out
        entry["cost"] += cost
    for run_id, slug, moment, verdict in ToolInvocation.objects.filter(
        run_id__isnull=False
    ).values_list("run_id", "agent_slug", "created_at", "verdict"):
        if run_id in workflow_of:
            totals[(workflow_of[run_id], day_of(moment), slug)].update(tool_call_counts(verdict))
    return [
        KpiAgentDay(workflow_id=w, day=d, agent_slug=a, **values)
        for (w, d, a), values in totals.items()
    ]


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
