"""The durable run engine. PostgreSQL holds every state; a Celery message only says "step N is
ready". Workers claim steps with conditional updates and hold leases; every state change commits
with its RunEvent; messages go out in `transaction.on_commit`; the sweeper repairs lost messages,
dead workers, due timers and retries. Lock order everywhere: the run row, then its step rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q

from audit import clock, limits, logs
from audit.actors import requires_actor
from audit.db import execute_pipeline, execute_prepared
from governance import expressions
from orchestrator import metrics
from orchestrator.definitions import StepDef, WorkflowDef, compiled_version
from orchestrator.models import (
    NO_ITEM,
    RUN_FINISHED,
    STEP_FINISHED,
    EffectJournal,
    EventKind,
    RunEvent,
    RunSignal,
    RunStatus,
    StepRun,
    StepStatus,
    VersionStatus,
    Workflow,
    WorkflowRun,
    WorkflowVersion,
)
from orchestrator.signals import run_events_recorded
from orchestrator.steptypes import failure_handlers, reserved_signal_prefix, step_types

log = logging.getLogger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


class EngineError(Exception):
    """An operation the engine refuses, with a message meant for the person who asked."""


class InvalidInput(EngineError):
    """A run input that does not match the workflow's input schema."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("run input is invalid: " + "; ".join(errors))


class LeaseLost(Exception):
    """This worker no longer owns the step it executed; its work is discarded."""


# --- outcomes a step type returns through its context -------------------------------------------


@dataclass(frozen=True)
class Complete:
    output: Any


@dataclass(frozen=True)
class Wait:
    signal: str | None
    wake_at: dt.datetime | None


@dataclass(frozen=True)
class Fail:
    error: dict[str, Any]
    retryable: bool


@dataclass(frozen=True)
class Resume:
    """From on_wake: make the step ready again so a worker executes it anew, same attempt."""


# --- child steps ---------------------------------------------------------------------------------
# A running step may add child steps to its run (an agent delegating to other agents). A child's
# step_id is "<parent step id>/<parent row id>.<group>" and its item_index its position in the
# group: the "/" cannot appear in a definition's ids, so children never collide with steps or
# foreach items, and every query of top-level steps (item_index = -1) leaves them out. A child
# runs under its root step's definition: same step type, retry policy and timeout.

CHILD_SEPARATOR = "/"
_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,60}$")


def definition_of(wf: WorkflowDef, step_id: str) -> StepDef:
    """Return the definition a step row runs under (a child runs under its root step's)."""
    return wf.steps[step_id.split(CHILD_SEPARATOR, 1)[0]]


def is_child(step: StepRun) -> bool:
    """Tell whether a step row is a child added by a running step (not a foreach item)."""
    return CHILD_SEPARATOR in step.step_id


def _child_step_id(parent: StepRun, group: str) -> str:
    """Return the step_id shared by the children of one group of a parent."""
    return f"{parent.step_id}{CHILD_SEPARATOR}{parent.pk}.{group}"


def _children_signal(child_step_id: str) -> str:
    """Return the signal that tells a parent every child of a group has finished."""
    parent_pk, group = child_step_id.rsplit(CHILD_SEPARATOR, 1)[1].split(".", 1)
    return f"children:{parent_pk}:{group}"


# --- dispatch ------------------------------------------------------------------------------------


def _send_to_broker(step_ids: list[int]) -> None:
    """Publish ready steps to Celery; a failure only delays them until the sweeper's next pass."""
    from orchestrator.tasks import execute_step

    for step_id in step_ids:
        try:
            execute_step.apply_async(args=[step_id])
        except Exception:  # broker down: PostgreSQL still says the step is ready
            log.warning("could not publish step %s; the sweeper will", step_id, exc_info=True)


dispatcher = _send_to_broker


def publish_on_commit(step_ids: Iterable[int]) -> None:
    """Send ready steps to the workers once the transaction that readied them commits."""
    ids = list(step_ids)
    if ids:
        transaction.on_commit(lambda: dispatcher(ids))


# --- events --------------------------------------------------------------------------------------


class EventLog:
    """Collects the events of one unit of work and writes them in one insert."""

    def __init__(self, run: WorkflowRun, now: dt.datetime, actor=None):
        self.run = run
        self.now = now
        self.actor = actor
        self.events: list = []
        self.saved: list = []  # written already, by a statement of the caller's own

    def add(self, kind: str, step: StepRun | None = None, **data) -> None:
        """Queue an event for the run (and step)."""
        actor = self.actor
        self.events.append(
            RunEvent(
                run_id=self.run.pk,
                step_run_id=step.pk if step else None,
                step_id=step.step_id if step else "",
                item_index=None if step is None or step.item_index == NO_ITEM else step.item_index,
                attempt=step.attempt if step else None,
                kind=kind,
                data=data,
                actor=actor if actor is not None and actor.pk else None,
                actor_name=getattr(actor, "username", "") if actor is not None else "",
                created_at=self.now,
            )
        )

    def flush(self) -> None:
        """Write the queued events and announce them inside the same transaction."""
        saved = self.saved + (_insert_events(self.events) if self.events else [])
        self.events = []
        self.saved = []
        if saved:
            run_events_recorded.send(sender=RunEvent, events=saved, run=self.run)

    def mark_saved(self, ids_by_kind: dict[str, int]) -> None:
        """Take the queued events as written, with the ids a caller's own insert gave them."""
        for event in self.events:
            event.pk = ids_by_kind[event.kind]
        self.saved += self.events
        self.events = []


def _insert_events(events: list[RunEvent]) -> list[RunEvent]:
    """Write events with one insert and give them their ids (a prepared statement on PostgreSQL).

    The rows travel as one JSON array, in order; the ids come from the identity sequence as the
    rows are inserted in that order, so sorted they are the events' ids in the order given.
    """
    if connection.vendor != "postgresql":
        return RunEvent.objects.bulk_create(events)
    rows = [
        [event.run_id, event.step_run_id, event.step_id, event.item_index, event.attempt]
        + [event.kind, event.data, event.actor_id, event.actor_name, event.created_at.isoformat()]
        for event in events
    ]
    found = execute_prepared(connection, _INSERT_EVENTS_SQL, [json.dumps(rows)])
    for event, (pk,) in zip(events, sorted(found), strict=True):
        event.pk = pk
        event._state.adding = False
        event._state.db = connection.alias
    return events


# --- the context a step type works through -------------------------------------------------------


class StepContext:
    """What a step type sees while it runs: its spec, rendered data, and how to answer."""

    def __init__(self, run: WorkflowRun, step: StepRun, definition: StepDef, now: dt.datetime):
        self.run = run
        self.step = step
        self.definition = definition
        self.spec = definition.spec
        self.now = now
        self.lost = False
        self._template_context: dict[str, Any] | None = None

    @property
    def idempotency_key(self) -> str:
        """Return the key identifying this step's effect across redeliveries and attempts."""
        return self.step.idempotency_key

    @property
    def attempt(self) -> int:
        """Return the attempt number, starting at 1."""
        return self.step.attempt

    def template_context(self) -> dict[str, Any]:
        """Return the variables templates see: input, earlier outputs, run, and foreach item."""
        if self._template_context is None:
            self._template_context = _template_context(self.run, self.definition, self.step)
        return self._template_context

    def render(self, value: Any) -> Any:
        """Render the templates inside a value."""
        return expressions.render(value, self.template_context())

    def record_input(self, value: Any) -> None:
        """Keep the rendered input of this attempt with the step."""
        self.step.input = value

    def effect(self, name: str, request: Any, perform, key_suffix: str = "") -> Any:
        """Perform a side effect at most once per key; a repeat returns the journaled result."""
        key = self.idempotency_key + (f":{key_suffix}" if key_suffix else "")
        from agents.tools import ToolContext

        with transaction.atomic():
            journaled = list(EffectJournal.objects.filter(key=key).values_list("name", "result"))
            if journaled:
                journaled_name, result = journaled[0]
                if journaled_name != name:
                    raise StepFailure(
                        "JournalMismatch",
                        f"the journal holds {journaled_name!r} at {key}, not {name!r}: the "
                        "step's definition changed under a running attempt",
                    )
                _refuse_unstorable(name, result)
                return result
            if why := limits.problem(request, what="request"):
                raise StepFailure("RequestNotStorable", f"{name} was not called: {why}")
            context = ToolContext(
                idempotency_key=key,
                run_id=self.run.pk,
                step_id=self.step.step_id,
                item_index=None if self.step.item_index == NO_ITEM else self.step.item_index,
                attempt=self.step.attempt,
                actor_id=self.run.started_by_id,
                workflow_id=self.run.workflow_id,
            )
            result = perform(context)
            # The effect happened: journal it whatever it returned, so no retry repeats it.
            why = limits.problem(result, what="result")
            if why or limits.marked_unstorable(result):
                result = limits.unstorable_marker(result, why or "the result mimics the marker")
            EffectJournal.objects.create(
                key=key,
                run_id=self.run.pk,
                step_run_id=self.step.pk,
                name=name,
                request=request,
                result=result,
                created_at=clock.now(),
            )
        _refuse_unstorable(name, result)
        return result

    def complete(self, output: Any = None) -> Complete:
        """Finish the step with an output."""
        return Complete(output)

    def wait(self, *, signal: str | None = None, seconds: float | None = None) -> Wait:
        """Wait durably for a signal, a duration, or a signal with a timeout."""
        wake_at = self.now + dt.timedelta(seconds=seconds) if seconds is not None else None
        if signal is None and wake_at is None:
            raise ValueError("a wait needs a signal, a duration, or both")
        return Wait(signal, wake_at)

    def fail(self, error_type: str, message: str, retryable: bool = True, **details) -> Fail:
        """Fail this attempt; the retry policy decides what follows."""
        return Fail(
            {"type": error_type, "types": [error_type], "message": message, **details}, retryable
        )

    def resume(self) -> Resume:
        """From on_wake: run this step's execute again (same attempt), outside the wake's work."""
        return Resume()

    @property
    def is_child(self) -> bool:
        """Tell whether this step is a child another step added (see spawn_children)."""
        return is_child(self.step)

    def spawn_children(self, group: str, items: list[Any]) -> str:
        """Add one child step per item to this running step's run, once per group.

        Each child runs this step's type with `ctx.step.item` set to its item, under the retry
        policy and timeout of this step's definition, dispatched like any ready step (in
        parallel). Calling again for the same group adds nothing. Returns the name of the
        signal the run receives when every child of the group has finished: wait for it, then
        read `child_results(group)`.
        """
        if not _GROUP.match(group):
            raise ValueError(f"a child group is 1-60 letters, digits, '.', '_' or '-': {group!r}")
        child_id = _child_step_id(self.step, group)
        signal = _children_signal(child_id)
        now = clock.now()
        with transaction.atomic():
            run = _lock_run(self.run.pk)
            if StepRun.objects.filter(run=run, step_id=child_id).exists():
                return signal
            owned = StepRun.objects.filter(
                pk=self.step.pk, status=StepStatus.RUNNING, lease_token=self.step.lease_token
            )
            if not owned.exists():
                raise LeaseLost(self.step.pk)
            rows = StepRun.objects.bulk_create(
                [
                    StepRun(
                        run=run,
                        step_id=child_id,
                        item_index=index,
                        parent=self.step,
                        step_type=self.step.step_type,
                        status=StepStatus.READY,
                        item=item,
                        ready_at=now,
                        dispatched_at=now,
                        created_at=now,
                    )
                    for index, item in enumerate(items)
                ]
            )
            events = EventLog(run, now)
            events.add(EventKind.FANNED_OUT, self.step, children=len(rows), group=child_id)
            if not rows:
                _deliver_signal(run, signal, {"children": 0}, None, events, now)
            events.flush()
            if run.status == RunStatus.RUNNING:
                publish_on_commit([row.pk for row in rows])
        return signal

    def child_results(self, group: str) -> list[dict[str, Any]] | None:
        """Return each child's status, output and error in order; None while any is open."""
        rows = list(
            StepRun.objects.filter(parent_id=self.step.pk, step_id=_child_step_id(self.step, group))
            .order_by("item_index")
            .values("status", "output", "error", "attempt")
        )
        if any(row["status"] not in STEP_FINISHED for row in rows):
            return None
        return rows


def _refuse_unstorable(name: str, result: Any) -> None:
    """Fail the attempt (for good) when the journal holds a result that could not be stored."""
    if marker := limits.marked_unstorable(result):
        raise StepFailure(
            "ResultNotStorable",
            f"{name} ran, but its result cannot be stored: {marker['reason']} "
            f"(its SHA-256 is {marker['sha256']}; it is not run again)",
        )


class StepFailure(Exception):
    """A failure raised from inside a step with its own type name."""

    def __init__(self, error_type: str, message: str, retryable: bool = False):
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


def _failure_from_exception(exc: BaseException) -> Fail:
    """Describe an exception as a failed attempt: its type names decide whether it retries."""
    if isinstance(exc, StepFailure):
        names = [exc.error_type]
    else:
        names = [cls.__name__ for cls in type(exc).__mro__ if cls not in (object, BaseException)]
    retryable = bool(getattr(exc, "retryable", not isinstance(exc, expressions.ExpressionError)))
    return Fail({"type": names[0], "types": names, "message": str(exc)}, retryable)


def _template_context(run: WorkflowRun, definition: StepDef, step: StepRun) -> dict[str, Any]:
    """Build the template variables, reading earlier outputs only when the step uses them."""
    outputs: dict[str, Any] = {}
    if definition.reads_steps:
        rows = StepRun.objects.filter(run_id=run.pk, item_index=NO_ITEM).values_list(
            "step_id", "status", "output"
        )
        outputs = {
            sid: (out if status == StepStatus.SUCCEEDED else None) for sid, status, out in rows
        }
    context = {
        "input": run.input,
        "steps": outputs,
        "run": {"id": run.pk, "business_key": run.business_key, "workflow": run.workflow_id},
    }
    if step.item_index != NO_ITEM:
        context["index"] = step.item_index
        context["item"] = step.item
    return context


# --- starting runs -------------------------------------------------------------------------------


def check_run_keys(business_key: str, idempotency_key: str | None, request_id: str) -> None:
    """Refuse a run's keys that could not be stored or looked up (NUL, too long), naming them."""
    for what, value, name in (
        ("business key", business_key, "max_business_key_chars"),
        ("idempotency key", idempotency_key or "", "max_idempotency_key_chars"),
        ("request id", request_id, "max_request_id_chars"),
    ):
        if why := limits.text_problem(value, limits.limit(name)):
            raise EngineError(f"the run's {what} {why}")


@requires_actor
def start_run(
    workflow: Workflow,
    input: dict[str, Any] | None = None,
    *,
    started_by,
    trigger: str = "",
    business_key: str = "",
    idempotency_key: str | None = None,
    version: WorkflowVersion | None = None,
    request_id: str = "",
) -> WorkflowRun:
    """Start a run of the live (or a given approved) version; a reused key returns that run."""
    check_run_keys(business_key, idempotency_key, request_id)
    if idempotency_key:
        existing = WorkflowRun.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return _same_workflow(existing, workflow, idempotency_key)
    if not workflow.is_active:
        raise EngineError(f"workflow {workflow.slug!r} is inactive and cannot start runs")
    if version is not None and version.workflow_id != workflow.pk:
        raise EngineError(f"version {version} does not belong to workflow {workflow.slug!r}")
    if version is not None and version.status != VersionStatus.APPROVED:
        raise EngineError(
            f"version {version} is {version.get_status_display().lower()}: only an approved "
            "version runs"
        )
    version_id, version_number = (
        (version.pk, version.number) if version is not None else _live_version(workflow.pk)
    )
    if version_id is None:
        raise EngineError(_no_live_version(workflow))
    wf = compiled_version(version_id)
    input = {} if input is None else input
    if not isinstance(input, dict):
        raise InvalidInput(["(input): a run input is a JSON object"])
    if why := limits.problem(input, what="input"):
        raise InvalidInput([why])  # before the schema, which could not even read it
    if errors := wf.input_errors(input):
        raise InvalidInput(errors)

    now = clock.now()
    run = WorkflowRun(
        workflow=workflow,
        version_id=version_id,
        input=input,
        started_by=started_by if started_by is not None and started_by.pk else None,
        started_by_name=getattr(started_by, "username", "") if started_by else "",
        trigger=trigger,
        business_key=business_key,
        idempotency_key=idempotency_key or None,
        request_id=request_id,
        created_at=now,
        updated_at=now,
    )
    # Only a reused idempotency key can make the insert fail: only then is a savepoint needed.
    guard = transaction.atomic if idempotency_key else contextlib.nullcontext
    with transaction.atomic():
        try:
            with guard():
                _insert_row(run)
        except IntegrityError:
            if not idempotency_key:
                raise
            existing = WorkflowRun.objects.get(idempotency_key=idempotency_key)
            return _same_workflow(existing, workflow, idempotency_key)
        # Roots with neither `when` nor `foreach` are ready from the start: written so, they need
        # no update of their own (the history still schedules them, as activation would).
        plain = all(
            wf.steps[sid].when is None and wf.steps[sid].foreach is None for sid in wf.roots
        )
        ready_now = set(wf.roots) if plain else set()
        events = EventLog(run, now, actor=started_by)
        events.add(EventKind.RUN_STARTED, version=version_number, trigger=trigger)
        steps = [
            StepRun(
                run=run,
                step_id=sid,
                step_type=step.type,
                status=StepStatus.READY if sid in ready_now else StepStatus.PENDING,
                ready_at=now if sid in ready_now else None,
                dispatched_at=now if sid in ready_now else None,
                created_at=now,
            )
            for sid, step in wf.steps.items()
        ]
        rows = {step.step_id: step for step in steps}
        if plain and _batches_statements():
            _insert_plain_start(run, wf, steps, events)
            ready = [rows[sid].pk for sid in wf.roots]
        else:
            StepRun.objects.bulk_create(steps)
            if ready_now:
                ready = [rows[sid].pk for sid in wf.roots]
                for sid in wf.roots:
                    events.add(EventKind.STEP_SCHEDULED, rows[sid])
            else:
                ready = _activate(run, wf, rows, list(wf.roots), events, now)
        _settle_run(run, wf, rows, events, now)
        events.flush()
        publish_on_commit(ready)
    live = workflow.live_version if Workflow.live_version.is_cached(workflow) else None
    if version is None and live is not None and live.pk == version_id:
        run.version = live  # the caller's response names it: no read of a row already here
    return run


def _live_version(workflow_id: int) -> tuple[int | None, int | None]:
    """Return the id and number of a workflow's live (approved) version, without its definition."""
    if connection.vendor == "postgresql":
        found = execute_prepared(connection, _LIVE_VERSION_SQL, [workflow_id])
    else:
        found = list(
            Workflow.objects.filter(pk=workflow_id, live_version__isnull=False).values_list(
                "live_version_id", "live_version__number"
            )
        )
    return found[0] if found else (None, None)


_LIVE_VERSION_SQL = (
    f"SELECT v.id, v.number FROM {WorkflowVersion._meta.db_table} v "
    f"JOIN {Workflow._meta.db_table} w ON w.live_version_id = v.id WHERE w.id = %s"
)


def _no_live_version(workflow: Workflow) -> str:
    """Say why a workflow cannot start a run: no version approved yet, and what waits."""
    waiting = workflow.versions.filter(status=VersionStatus.PROPOSED).order_by("-number").first()
    if waiting is None:
        return f"workflow {workflow.slug!r} has no live version: publish one and have it approved"
    request = (
        f" (approval request #{waiting.approval_request_id})" if waiting.approval_request_id else ""
    )
    return (
        f"workflow {workflow.slug!r} has no live version yet: v{waiting.number} waits for "
        f"approval{request}"
    )


def _insert_row(instance) -> None:
    """Insert a new model instance and give it its id (a prepared statement on PostgreSQL).

    As with bulk_create, no save signals are sent: the engine announces its writes as run events.
    """
    model = type(instance)
    if connection.vendor != "postgresql":
        model.objects.bulk_create([instance])
        return
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    sql = _INSERT_SQL.get(model)
    if sql is None:
        columns = ", ".join(f'"{field.column}"' for field in fields)
        values = ", ".join(["%s"] * len(fields))
        sql = f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES ({values}) RETURNING id'
        _INSERT_SQL[model] = sql
    params = [
        field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields
    ]
    instance.pk = execute_prepared(connection, sql, params)[0][0]
    instance._state.adding = False
    instance._state.db = connection.alias


_INSERT_SQL: dict[type, str] = {}


def _insert_plain_start(run: WorkflowRun, wf: WorkflowDef, steps: list[StepRun], events) -> None:
    """Write a run's new step rows (its roots ready) and its first events in one round trip.

    The same rows and events as the ORM path: the steps from arrays, then the "started" event
    and one "scheduled" event per root (read back from the rows just inserted), in that order.
    The rows get their ids; the events are marked written.
    """
    roots = list(wf.roots)
    started = events.events[0]  # the run's "started" event, queued by the caller
    now = started.created_at
    step_rows, event_rows = execute_pipeline(
        connection,
        [
            (
                _START_STEPS_SQL,
                [run.pk, now, [step.step_id for step in steps], [step.step_type for step in steps]]
                + [[step.status for step in steps], [step.ready_at for step in steps]],
            ),
            (
                _START_EVENTS_SQL,
                [run.pk, started.kind, _json(started.data), started.actor_id, started.actor_name]
                + [now, EventKind.STEP_SCHEDULED, _json({}), started.actor_id, started.actor_name]
                + [now, run.pk, roots, roots],
            ),
        ],
    )
    ids = dict(step_rows)
    for step in steps:
        step.pk = ids[step.step_id]
        step._state.adding = False
        step._state.db = connection.alias
    rows = {step.step_id: step for step in steps}
    for sid in roots:
        events.add(EventKind.STEP_SCHEDULED, rows[sid])
    event_ids = {(kind, step_run_id): pk for pk, kind, step_run_id in event_rows}
    for event in events.events:
        event.pk = event_ids[(event.kind, event.step_run_id)]
    events.saved += events.events
    events.events = []


def _same_workflow(run: WorkflowRun, workflow: Workflow, key: str) -> WorkflowRun:
    """Return the run that already used an idempotency key, if it is of the same workflow."""
    if run.workflow_id != workflow.pk:
        raise EngineError(
            f"idempotency key {key!r} was already used by run {run.pk} of another workflow"
        )
    return run


# --- activation: pending steps whose parents are done ---------------------------------------------


def _activate(
    run: WorkflowRun,
    wf: WorkflowDef,
    rows: dict[str, StepRun],
    candidates: list[str],
    events: EventLog,
    now: dt.datetime,
    claim_one: bool = False,
) -> list[int]:
    """Ready the candidate steps whose parents are all done; return the ids to dispatch.

    `when` false skips a step (its children may then activate); `foreach` creates one item row
    per element. With `claim_one`, the first ready step is returned claimed by this worker
    as the list's first element negated, so the caller can run it inline.
    """
    to_dispatch: list[int] = []
    queue = list(candidates)
    claimed: int | None = None
    while queue:
        sid = queue.pop(0)
        row = rows[sid]
        step = wf.steps[sid]
        if row.status != StepStatus.PENDING:
            continue
        if any(rows[parent].status not in STEP_FINISHED for parent in step.depends_on):
            continue
        if any(_blocks_children(rows[parent], wf.steps[parent]) for parent in step.depends_on):
            continue
        try:
            if step.when is not None and not expressions.evaluate(
                step.when, _template_context(run, step, row)
            ):
                _set_status(row, StepStatus.SKIPPED, now, finished_at=now)
                events.add(EventKind.STEP_SKIPPED, row, when=step.when)
                queue.extend(step.children)
                continue
            if step.foreach is not None:
                items = expressions.evaluate(step.foreach, _template_context(run, step, row))
                if isinstance(items, range | Iterator):  # range(3), or a filter's `map(...)`
                    items = list(items)
                if not isinstance(items, list | tuple):
                    raise expressions.ExpressionError(
                        f"foreach must give a list, not {type(items).__name__}"
                    )
                if not items:
                    _set_status(row, StepStatus.SUCCEEDED, now, output=[], finished_at=now)
                    events.add(EventKind.STEP_SUCCEEDED, row, items=0)
                    queue.extend(step.children)
                    continue
                _set_status(row, StepStatus.RUNNING, now, started_at=now)
                item_rows = StepRun.objects.bulk_create(
                    [
                        StepRun(
                            run=run,
                            step_id=sid,
                            item_index=index,
                            parent=row,
                            step_type=step.type,
                            status=StepStatus.READY,
                            item=item,
                            ready_at=now,
                            dispatched_at=now,
                            created_at=now,
                        )
                        for index, item in enumerate(items)
                    ]
                )
                events.add(EventKind.FANNED_OUT, row, items=len(items))
                to_dispatch.extend(item.pk for item in item_rows)
                continue
        except expressions.ExpressionError as exc:
            error = {
                "type": "ExpressionError",
                "types": ["ExpressionError"],
                "message": str(exc),
                "stage": "activation",
            }
            _set_status(row, StepStatus.FAILED, now, finished_at=now, error=error)
            events.add(EventKind.STEP_FAILED, row, error=error)
            if step.on_failure == "continue":
                queue.extend(step.children)
            elif not _hand_to_failure_handler(run, row, step, error, events, now):
                # The same end as a step that fails for good when it runs: the run fails and
                # what is left of it, including what this activation readied, is cancelled.
                _fail_run(run, rows, events, now, {"step": sid, **error})
                return []
            continue
        if claim_one and claimed is None and run.status == RunStatus.RUNNING:
            _claim_inline(row, step, now)
            events.add(EventKind.STEP_STARTED, row, worker=WORKER_ID, inline=True)
            claimed = row.pk
            continue
        _set_status(row, StepStatus.READY, now, ready_at=now, dispatched_at=now)
        events.add(EventKind.STEP_SCHEDULED, row)
        to_dispatch.append(row.pk)
    if run.status != RunStatus.RUNNING:
        to_dispatch = []  # a paused run keeps ready steps ready; resume dispatches them
    if claimed is not None:
        return [-claimed, *to_dispatch]
    return to_dispatch


def _blocks_children(row: StepRun, step: StepDef) -> bool:
    """Tell whether a finished parent stops its children (failed, and failure not tolerated)."""
    return (
        row.status == StepStatus.FAILED
        and step.on_failure != "continue"
        or (row.status == StepStatus.CANCELLED)
    )


def _set_status(row: StepRun, status: str, now: dt.datetime, **fields) -> None:
    """Write a step's status and fields, and keep the in-memory row in step."""
    row.status = status
    for name, value in fields.items():
        setattr(row, name, value)
    _update_row(StepRun, row.pk, {"status": status, **fields})


def _update_row(model, pk: int, fields: dict[str, Any]) -> None:
    """Write plain values to one row by primary key, as `filter(pk=pk).update(**fields)` does.

    On PostgreSQL the statement is prepared (one per model and set of fields): the ORM would
    compile the same UPDATE again on every call of the engine's busiest paths.
    """
    if connection.vendor != "postgresql" or any(
        hasattr(value, "resolve_expression") or hasattr(value, "_meta") for value in fields.values()
    ):  # expressions and model instances are the ORM's to resolve
        model.objects.filter(pk=pk).update(**fields)
        return
    names = tuple(sorted(fields))
    model_fields = [model._meta.get_field(name) for name in names]
    sql = _UPDATE_SQL.get((model, names))
    if sql is None:
        columns = ", ".join(f'"{field.column}" = %s' for field in model_fields)
        sql = f'UPDATE "{model._meta.db_table}" SET {columns} WHERE id = %s'
        _UPDATE_SQL[(model, names)] = sql
    params = [
        field.get_db_prep_save(fields[name], connection)
        for name, field in zip(names, model_fields, strict=True)
    ]
    execute_prepared(connection, sql, [*params, pk])


_UPDATE_SQL: dict[tuple, str] = {}


def _claim_inline(row: StepRun, step: StepDef, now: dt.datetime) -> None:
    """Claim a step that just became ready for this worker, skipping the broker."""
    row.lease_token = uuid.uuid4().hex
    fields = dict(
        attempt=row.attempt + 1,
        lease_token=row.lease_token,
        lease_expires_at=now + dt.timedelta(seconds=settings.STEWARD_LEASE_SECONDS),
        deadline_at=now + dt.timedelta(seconds=step.timeout) if step.timeout else None,
        worker=WORKER_ID,
        started_at=now,
        ready_at=now,
        dispatched_at=now,
    )
    _set_status(row, StepStatus.RUNNING, now, **fields)


# --- claiming and executing ----------------------------------------------------------------------


def claim(step_run_id: int, now: dt.datetime | None = None) -> StepRun | None:
    """Take a ready step for this worker with a conditional update; None if someone else has it."""
    now = now or clock.now()
    token = uuid.uuid4().hex
    lease = dt.timedelta(seconds=settings.STEWARD_LEASE_SECONDS)
    if _batches_statements():
        return _claim_on_postgres(step_run_id, token, now, now + lease)
    with transaction.atomic():
        updated = StepRun.objects.filter(
            pk=step_run_id,
            status=StepStatus.READY,
            ready_at__lte=now,
            run__status=RunStatus.RUNNING,
        ).update(
            status=StepStatus.RUNNING,
            attempt=F("attempt") + 1,
            lease_token=token,
            lease_expires_at=now + lease,
            worker=WORKER_ID,
            started_at=now,
            deadline_at=None,
        )
        if not updated:
            return None
        step = StepRun.objects.select_related("run").get(pk=step_run_id)
        definition = definition_of(compiled_version(step.run.version_id), step.step_id)
        if definition.timeout:
            step.deadline_at = now + dt.timedelta(seconds=definition.timeout)
            StepRun.objects.filter(pk=step.pk).update(deadline_at=step.deadline_at)
        events = EventLog(step.run, now)
        events.add(EventKind.STEP_STARTED, step, worker=WORKER_ID)
        events.flush()
    return step


def _batches_statements() -> bool:
    """Tell whether the hot paths' batches of prepared statements run here (PostgreSQL).

    Elsewhere the ORM path does the same work, a statement at a time.
    """
    return connection.vendor == "postgresql"


def _claim_on_postgres(step_run_id: int, token: str, now, lease_expires_at) -> StepRun | None:
    """Claim a ready step in one round trip: the conditional update, the run, the event.

    The same condition as the ORM's: the step is ready and due, and its run is running. The
    update returns the step's and its run's columns, and the "started" event is inserted from
    the row the update just took (found by its new lease token).
    """
    data = {"worker": WORKER_ID}
    with transaction.atomic():
        claimed, recorded = execute_pipeline(
            connection,
            [
                (
                    _CLAIM_SQL,
                    [StepStatus.RUNNING, token, lease_expires_at, WORKER_ID, now, step_run_id]
                    + [StepStatus.READY, now, RunStatus.RUNNING],
                ),
                (_RECORD_CLAIM_SQL, [EventKind.STEP_STARTED, _json(data), now, step_run_id, token]),
            ],
        )
        row = claimed[0] if claimed else None
        event_ids = {kind: pk for pk, kind in recorded}
        if row is None:
            return None
        step = _from_row(StepRun, _STEP_FIELDS, row[: len(_STEP_FIELDS)])
        step.run = _from_row(WorkflowRun, _RUN_FIELDS, row[len(_STEP_FIELDS) :])
        definition = definition_of(compiled_version(step.run.version_id), step.step_id)
        if definition.timeout:
            step.deadline_at = _deadline(definition, now)
            StepRun.objects.filter(pk=step.pk).update(deadline_at=step.deadline_at)
        events = EventLog(step.run, now)
        events.add(EventKind.STEP_STARTED, step, **data)
        events.mark_saved(event_ids)
        events.flush()
    return step


def run_step(step_run_id: int) -> int:
    """Claim and execute a step, then keep running the steps it readies in this process.

    Returns how many steps this call executed. Safe to call twice for the same id.
    """
    step = claim(step_run_id)
    executed = 0
    while step is not None:
        executed += 1
        step = execute_claimed(step, inline=executed < settings.STEWARD_INLINE_STEPS)
    return executed


def execute_claimed(step: StepRun, inline: bool = True) -> StepRun | None:
    """Execute a step this worker claimed, record the outcome; return a step claimed inline."""
    fields = {"run_id": step.run_id, "step_id": step.step_id, "attempt": step.attempt}
    if step.item_index != NO_ITEM:
        fields["item_index"] = step.item_index
    with logs.bound(**fields):  # every log line of the attempt names its run and step
        return _execute_claimed(step, inline)


def _execute_claimed(step: StepRun, inline: bool) -> StepRun | None:
    """Execute a claimed step and record its outcome (execute_claimed's body)."""
    from orchestrator import leases

    run = step.run
    wf = compiled_version(run.version_id)
    definition = definition_of(wf, step.step_id)
    step_type = step_types()[definition.type]
    ctx = StepContext(run, step, definition, clock.now())
    leases.keeper.hold(step.pk, step.lease_token, ctx)
    began, outcome = time.perf_counter(), None
    try:
        if step_type.transactional:
            with transaction.atomic():
                outcome = _perform(step_type, ctx)
                return _finish(step.pk, step.lease_token, outcome, ctx, claim_next=inline)
        outcome = _perform(step_type, ctx)
        with transaction.atomic():
            return _finish(step.pk, step.lease_token, outcome, ctx, claim_next=inline)
    except DataError as exc:
        # Nothing the checks let through should get here; if it does, the attempt still ends
        # with the database's reason instead of waiting for its lease to expire.
        log.warning("step %s: its outcome could not be recorded: %s", step, exc)
        ctx.step.input = limits.clean(ctx.step.input)
        failure = Fail(
            {
                "type": "OutcomeNotRecorded",
                "types": ["OutcomeNotRecorded"],
                "message": f"the attempt's outcome could not be recorded: {exc}",
            },
            False,
        )
        try:
            with transaction.atomic():
                return _finish(step.pk, step.lease_token, failure, ctx, claim_next=False)
        except LeaseLost:
            return None
    except LeaseLost:
        log.info("step %s was taken back or cancelled while it ran; its work is discarded", step)
        outcome = None
        return None
    finally:
        leases.keeper.release(step.pk)
        metrics.observe_step(
            definition.type,
            type(outcome).__name__.lower() if outcome is not None else "lost",
            time.perf_counter() - began,
        )


def _perform(step_type, ctx: StepContext):
    """Run a step type's execute in a savepoint, so a failure undoes its partial writes.

    A non-transactional step type (an agent loop) commits each journaled effect in its own
    transaction as it goes: it is not wrapped, so a failure or a crash keeps what it journaled
    and its long work holds no locks.
    """
    try:
        if not step_type.transactional or not getattr(step_type, "writes_database", True):
            return _storable(step_type.execute(ctx), ctx)  # nothing to undo, or the step's job
        with transaction.atomic():
            return _storable(step_type.execute(ctx), ctx)
    except Exception as exc:
        log.info("step %s attempt %s failed: %s", ctx.step, ctx.attempt, exc)
        return _failure_from_exception(exc)


def _storable(outcome, ctx: StepContext):
    """Return an outcome the engine can record; raise StepFailure naming what it cannot hold.

    Raised inside the step's savepoint, so a transactional step's writes are undone with it.
    An input that cannot be stored is kept as its SHA-256 and the reason.
    """
    if why := limits.problem(ctx.step.input, what="input"):
        ctx.step.input = limits.unstorable_marker(ctx.step.input, why)
        raise StepFailure("InputNotStorable", f"the step's input cannot be stored: {why}")
    if isinstance(outcome, Complete) and (why := limits.problem(outcome.output, what="output")):
        raise StepFailure("OutputNotStorable", f"the step's output cannot be stored: {why}")
    return outcome


def _lock_run(run_id: int) -> WorkflowRun:
    """Lock a run row for this transaction (NO KEY UPDATE: foreign-key inserts may proceed)."""
    return WorkflowRun.objects.select_for_update(no_key=True).get(pk=run_id)


def _relock_run(run: WorkflowRun) -> WorkflowRun:
    """Lock a run already read by this worker, reading again only what can have changed.

    While a run is running or paused, only its status changes (its output, error and end are
    set when it finishes), so one narrow locking query suffices; a finished run is read again.
    """
    if connection.vendor != "postgresql":
        return _lock_run(run.pk)
    found = execute_prepared(connection, _LOCK_RUN_SQL, [run.pk])
    return _with_status(run, found[0] if found else None)


def _with_status(run: WorkflowRun, found: tuple | None) -> WorkflowRun:
    """Return the run with the status just read under its lock (read in full once finished)."""
    if found is None:
        raise WorkflowRun.DoesNotExist(f"run {run.pk} no longer exists")
    if found[0] in (RunStatus.RUNNING, RunStatus.PAUSED):
        run.status = found[0]
        return run
    return WorkflowRun.objects.get(pk=run.pk)  # already locked by this transaction


_LOCK_RUN_SQL = f"SELECT status FROM {WorkflowRun._meta.db_table} WHERE id = %s FOR NO KEY UPDATE"


def _finish(step_id: int, token: str, outcome, ctx: StepContext, claim_next: bool):
    """Record an attempt's outcome if this worker still holds the step; advance the run.

    Returns the next step when one was claimed inline for this worker.
    """
    now = clock.now()
    if isinstance(outcome, Complete) and _batches_statements():
        return _finish_success(step_id, token, outcome, ctx, claim_next, now)
    run = _relock_run(ctx.run)
    step = ctx.step
    ctx.run = run
    events = EventLog(run, now)
    owned = StepRun.objects.filter(pk=step_id, status=StepStatus.RUNNING, lease_token=token)
    if isinstance(outcome, Complete):
        # The common case in one statement: the ownership check and the result together.
        fields = _success_fields(step, outcome, now)
        if not owned.update(lease_token="", lease_expires_at=None, **fields):
            raise LeaseLost(step_id)
        step.lease_token = ""
        for name, value in fields.items():
            setattr(step, name, value)
        events.add(EventKind.STEP_SUCCEEDED, step)
        claimed = _after_step_finished(run, step, events, now, claim_next)
    else:
        if not owned.update(lease_token="", lease_expires_at=None):
            raise LeaseLost(step_id)
        step.lease_token = ""
        claimed = _apply_outcome(run, step, ctx.definition, outcome, events, now, claim_next)
    events.flush()
    return claimed


def _finish_success(step_id: int, token: str, outcome: Complete, ctx, claim_next: bool, now):
    """Record a success on PostgreSQL in one round trip of prepared statements, in lock order.

    Lock the run; record the result if this worker still holds the step (the ownership check
    and the result in one conditional update); claim for this worker the step's sole successor
    when nothing but this step's success decides it (see `_plain_successor`) and the run is
    running, or read every step row when this step may be the run's last; and insert the
    events. Anything else (several children, conditions, a paused run) goes through
    `_after_step_finished`. A lost lease raises LeaseLost, which rolls the whole trip back.
    """
    step = ctx.step
    fields = _success_fields(step, outcome, now)
    successor = None
    if claim_next:
        successor = _plain_successor(compiled_version(ctx.run.version_id), ctx.definition, step)
    started = {"worker": WORKER_ID, "inline": True}
    statements = [
        (_LOCK_RUN_SQL, [ctx.run.pk]),
        (
            _SUCCEED_SQL,
            [StepStatus.SUCCEEDED, _json(outcome.output), _json(step.input), now]
            + [step_id, StepStatus.RUNNING, token],
        ),
    ]
    # A top-level step that nothing depends on may be the run's last: settling the run then
    # needs every step row, read in the same trip (after the update, so this one as updated).
    last_candidate = not ctx.definition.children and step.item_index == NO_ITEM
    last_candidate = last_candidate and not is_child(step)
    if last_candidate:  # never with a successor, which needs a child: both are statement 3
        statements.append((_READ_STEPS_SQL, [ctx.run.pk, NO_ITEM]))
    # The events are written in the same trip: "succeeded" for this step, and "started" for
    # the successor if the claim took it (found by its new lease token).
    record_events = _RECORD_SUCCESS_SQL
    event_params = [ctx.run.pk, step_id, step.step_id, step.attempt, EventKind.STEP_SUCCEEDED]
    event_params += [_json({}), now]
    if successor is not None:
        lease_token = uuid.uuid4().hex
        params = [StepStatus.RUNNING, lease_token, now + _lease(), _deadline(successor, now)]
        params += [WORKER_ID, now, now, now]
        params += [ctx.run.pk, successor.id, NO_ITEM, StepStatus.PENDING]
        params += [ctx.run.pk, RunStatus.RUNNING]
        statements.append((_CLAIM_SUCCESSOR_SQL, params))
        record_events += _RECORD_STARTED_SQL
        event_params += [EventKind.STEP_STARTED, _json(started), now]
        event_params += [ctx.run.pk, successor.id, NO_ITEM, lease_token]
    statements.append((record_events + " RETURNING id, kind", event_params))
    results = execute_pipeline(connection, statements)
    found = results[0][0] if results[0] else None
    owned = results[1][0] if results[1] else None
    claimed_row = None
    if successor is not None and results[2]:
        claimed_row = results[2][0]
    event_ids = {kind: pk for pk, kind in results[-1]}
    run = _with_status(ctx.run, found)
    ctx.run = run
    if owned is None:
        raise LeaseLost(step_id)  # rolls back the whole trip, its events included
    step.lease_token = ""
    step.lease_expires_at = None
    for name, value in fields.items():
        setattr(step, name, value)
    events = EventLog(run, now)
    events.add(EventKind.STEP_SUCCEEDED, step)
    claimed = None
    if claimed_row is not None:
        claimed = _step_from_row(claimed_row)
        claimed.run = run
        events.add(EventKind.STEP_STARTED, claimed, **started)
    events.mark_saved(event_ids)
    if claimed is None:
        all_rows = results[2] if last_candidate else None
        claimed = _after_step_finished(run, step, events, now, claim_next, all_rows)
    events.flush()  # one announcement for the whole batch, for the audit
    return claimed


def _plain_successor(wf: WorkflowDef, definition: StepDef, step: StepRun) -> StepDef | None:
    """Return the step's only child when the step's success alone makes it ready to run.

    That is a top-level step whose one child depends on it alone, with no `when` and no
    `foreach`: the child's activation needs no row read, only that it is still pending.
    """
    if step.item_index != NO_ITEM or is_child(step) or len(definition.children) != 1:
        return None
    child = wf.steps[definition.children[0]]
    if child.depends_on != (step.step_id,) or child.when is not None or child.foreach is not None:
        return None
    return child


def _lease() -> dt.timedelta:
    """Return how long a claim holds a step before the sweeper may take it back."""
    return dt.timedelta(seconds=settings.STEWARD_LEASE_SECONDS)


def _deadline(step: StepDef, now: dt.datetime) -> dt.datetime | None:
    """Return when an attempt started now runs past the step's timeout, if it has one."""
    return now + dt.timedelta(seconds=step.timeout) if step.timeout else None


_STEP_TABLE = StepRun._meta.db_table
_STEP_FIELDS = StepRun._meta.concrete_fields
_STEP_COLUMNS = ", ".join(f'"{field.column}"' for field in _STEP_FIELDS)
_READ_STEPS_SQL = (
    f"SELECT {_STEP_COLUMNS} FROM {_STEP_TABLE} WHERE run_id = %s AND item_index = %s ORDER BY id"
)
_READ_SOME_STEPS_SQL = _READ_STEPS_SQL.replace(
    " ORDER BY id", " AND step_id = ANY(%s::varchar[]) ORDER BY id"
)
_SUCCEED_SQL = (
    f"UPDATE {_STEP_TABLE} SET status = %s, output = %s, input = %s, error = NULL, "
    "finished_at = %s, wake_at = NULL, wait_signal = '', lease_token = '', "
    "lease_expires_at = NULL WHERE id = %s AND status = %s AND lease_token = %s RETURNING id"
)
_CLAIM_SUCCESSOR_SQL = (
    f"UPDATE {_STEP_TABLE} SET status = %s, attempt = attempt + 1, lease_token = %s, "
    "lease_expires_at = %s, deadline_at = %s, worker = %s, started_at = %s, ready_at = %s, "
    "dispatched_at = %s WHERE run_id = %s AND step_id = %s AND item_index = %s AND status = %s "
    f"AND EXISTS (SELECT 1 FROM {WorkflowRun._meta.db_table} WHERE id = %s AND status = %s) "
    f"RETURNING {_STEP_COLUMNS}"
)

_EVENT_TABLE = RunEvent._meta.db_table
_RECORD_SUCCESS_SQL = (
    f"INSERT INTO {_EVENT_TABLE} (run_id, step_run_id, step_id, item_index, attempt, kind, data, "
    "actor_id, actor_name, created_at) SELECT %s::bigint, %s::bigint, %s::varchar, NULL::integer, "
    "%s::integer, %s::varchar, %s::jsonb, NULL::bigint, '', %s::timestamptz"
)
_RECORD_STARTED_SQL = (
    " UNION ALL SELECT run_id, id, step_id, NULL, attempt, %s, %s, NULL, '', %s "
    f"FROM {_STEP_TABLE} WHERE run_id = %s AND step_id = %s AND item_index = %s "
    "AND lease_token = %s"
)

_INSERT_EVENTS_SQL = (
    f"INSERT INTO {_EVENT_TABLE} (run_id, step_run_id, step_id, item_index, attempt, kind, data, "
    "actor_id, actor_name, created_at) SELECT (r->>0)::bigint, (r->>1)::bigint, r->>2, "
    "(r->>3)::integer, (r->>4)::integer, r->>5, r->6, (r->>7)::bigint, r->>8, "
    "(r->>9)::timestamptz FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(r, position) "
    "ORDER BY position RETURNING id"
)

_RUN_TABLE = WorkflowRun._meta.db_table
_RUN_FIELDS = WorkflowRun._meta.concrete_fields
_CLAIM_SQL = (
    f"UPDATE {_STEP_TABLE} AS step SET status = %s, attempt = step.attempt + 1, "
    "lease_token = %s, lease_expires_at = %s, worker = %s, started_at = %s, deadline_at = NULL "
    f"FROM {_RUN_TABLE} AS run WHERE step.id = %s AND step.status = %s AND step.ready_at <= %s "
    "AND run.id = step.run_id AND run.status = %s RETURNING "
    + ", ".join(
        [f'step."{field.column}"' for field in _STEP_FIELDS]
        + [f'run."{field.column}"' for field in _RUN_FIELDS]
    )
)
_RECORD_CLAIM_SQL = (
    f"INSERT INTO {_EVENT_TABLE} (run_id, step_run_id, step_id, item_index, attempt, kind, data, "
    f"actor_id, actor_name, created_at) SELECT run_id, id, step_id, NULLIF(item_index, {NO_ITEM}), "
    f"attempt, %s, %s, NULL, '', %s FROM {_STEP_TABLE} WHERE id = %s AND lease_token = %s "
    "RETURNING id, kind"
)


_START_STEPS_SQL = (
    f"INSERT INTO {_STEP_TABLE} (run_id, step_id, item_index, parent_id, step_type, status, "
    "attempt, item, input, output, error, ready_at, dispatched_at, lease_token, "
    "lease_expires_at, deadline_at, worker, wake_at, wait_signal, created_at, started_at, "
    f"finished_at) SELECT %s::bigint, u.step_id, {NO_ITEM}, NULL, u.step_type, u.status, 0, "
    "NULL, NULL, NULL, NULL, u.ready_at, u.ready_at, '', NULL, NULL, '', NULL, '', "
    "%s::timestamptz, NULL, NULL FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], "
    "%s::timestamptz[]) WITH ORDINALITY AS u(step_id, step_type, status, ready_at, position) "
    "ORDER BY u.position RETURNING step_id, id"
)
_START_EVENTS_SQL = (
    f"INSERT INTO {_EVENT_TABLE} (run_id, step_run_id, step_id, item_index, attempt, kind, data, "
    "actor_id, actor_name, created_at) SELECT %s::bigint, NULL::bigint, '', NULL::integer, "
    "NULL::integer, %s::varchar, %s::jsonb, %s::bigint, %s::varchar, %s::timestamptz "
    "UNION ALL (SELECT run_id, id, step_id, NULL, attempt, %s, %s::jsonb, %s, %s, %s "
    f"FROM {_STEP_TABLE} WHERE run_id = %s AND item_index = {NO_ITEM} "
    "AND step_id = ANY(%s::varchar[]) ORDER BY array_position(%s::varchar[], step_id)) "
    "RETURNING id, kind, step_run_id"
)


def _json(value: Any):
    """Adapt a value for a JSON column as the ORM does."""
    return StepRun._meta.get_field("output").get_db_prep_save(value, connection)


def _step_from_row(row: tuple) -> StepRun:
    """Build a step row from the columns a RETURNING clause gave."""
    return _from_row(StepRun, _STEP_FIELDS, row)


def _from_row(model, fields, row: tuple):
    """Build a model instance from raw columns, converted as the ORM does (JSON is text)."""
    values = [
        field.from_db_value(value, None, connection) if hasattr(field, "from_db_value") else value
        for field, value in zip(fields, row, strict=True)
    ]
    return model.from_db(connection.alias, [field.attname for field in fields], values)


def _success_fields(step: StepRun, outcome: Complete, now: dt.datetime) -> dict[str, Any]:
    """Return the fields a step gets when it succeeds."""
    return dict(
        status=StepStatus.SUCCEEDED,
        output=outcome.output,
        input=step.input,
        error=None,
        finished_at=now,
        wake_at=None,
        wait_signal="",
    )


def _apply_outcome(run, step, definition, outcome, events, now, claim_next=False) -> StepRun | None:
    """Move a step to its next status after an outcome and advance the run."""
    if isinstance(outcome, Complete):
        fields = _success_fields(step, outcome, now)
        _set_status(step, fields.pop("status"), now, **fields)
        events.add(EventKind.STEP_SUCCEEDED, step)
        return _after_step_finished(run, step, events, now, claim_next)
    if isinstance(outcome, Wait):
        return _begin_wait(run, step, definition, outcome, events, now, claim_next)
    if isinstance(outcome, Resume):
        events.add(EventKind.STEP_SCHEDULED, step, resumed=True)
        _set_status(
            step,
            StepStatus.READY,
            now,
            input=step.input,
            attempt=max(step.attempt - 1, 0),  # the claim counts it again: same attempt
            ready_at=now,
            dispatched_at=now,
            wake_at=None,
            wait_signal="",
            lease_token="",
            lease_expires_at=None,
            deadline_at=None,
        )
        if run.status == RunStatus.RUNNING:
            publish_on_commit([step.pk])
        return None
    return _record_failure(run, step, definition, outcome, events, now, claim_next)


def _begin_wait(run, step, definition, outcome: Wait, events, now, claim_next) -> StepRun | None:
    """Park a step until its timer or signal; a signal that already arrived wakes it at once."""
    if outcome.signal:
        pending = (
            RunSignal.objects.filter(run=run, name=outcome.signal, consumed_at__isnull=True)
            .order_by("id")
            .first()
        )
        if pending is not None:
            _consume(pending, step, now)
            events.add(EventKind.SIGNAL_RECEIVED, step, signal=outcome.signal, early=True)
            return _wake(run, step, definition, "signal", pending.payload, events, now, claim_next)
    _set_status(
        step,
        StepStatus.WAITING,
        now,
        input=step.input,
        wake_at=outcome.wake_at,
        wait_signal=outcome.signal or "",
    )
    events.add(
        EventKind.WAITING,
        step,
        signal=outcome.signal,
        wake_at=outcome.wake_at.isoformat() if outcome.wake_at else None,
    )
    return None


def _wake(
    run, step, definition, reason: str, payload, events, now, claim_next=False
) -> StepRun | None:
    """Continue a waiting step after its timer, signal or timeout."""
    step_type = step_types()[definition.type]
    ctx = StepContext(run, step, definition, now)
    try:
        with transaction.atomic():
            outcome = _storable(step_type.on_wake(ctx, reason, payload), ctx)
    except Exception as exc:
        outcome = _failure_from_exception(exc)
    if isinstance(outcome, Wait) and outcome.signal is None and outcome.wake_at is None:
        outcome = Fail({"type": "InvalidWait", "message": "wait without signal or timer"}, False)
    return _apply_outcome(run, step, definition, outcome, events, now, claim_next)


def _consume(signal: RunSignal, step: StepRun, now: dt.datetime) -> None:
    """Mark a signal as taken by a step."""
    signal.consumed_by = step
    signal.consumed_at = now
    signal.save(update_fields=["consumed_by", "consumed_at"])


def _record_failure(
    run, step, definition, outcome: Fail, events, now, claim_next=False
) -> StepRun | None:
    """Schedule a retry when the policy allows; otherwise fail the step and apply on_failure."""
    # The reason must be recorded whatever it quotes (a provider's reply, a tool's message).
    error = limits.clean({**outcome.error, "attempt": step.attempt})
    policy = definition.retry
    types = error.get("types") or [error.get("type", "Error")]
    if outcome.retryable and step.attempt < policy.max_attempts and policy.allows(types):
        delay = policy.delay(step.attempt, clock.rng())
        ready_at = now + dt.timedelta(seconds=delay)
        _set_status(
            step,
            StepStatus.READY,
            now,
            error=error,
            input=step.input,
            ready_at=ready_at,
            dispatched_at=None,
            lease_token="",
            lease_expires_at=None,
            deadline_at=None,
        )
        events.add(EventKind.RETRY_SCHEDULED, step, delay_seconds=round(delay, 3), error=error)
        return None
    _set_status(
        step,
        StepStatus.FAILED,
        now,
        error=error,
        input=step.input,
        finished_at=now,
        lease_token="",
        lease_expires_at=None,
        wake_at=None,
    )
    events.add(EventKind.STEP_FAILED, step, error=error)
    if not is_child(step) and _hand_to_failure_handler(run, step, definition, error, events, now):
        return None
    return _after_step_finished(run, step, events, now, claim_next)


def _hand_to_failure_handler(run, step, definition, error, events, now) -> bool:
    """Give a failed step to its `on_failure` handler (e.g. `escalate`); True if one took it.

    A handler that returns a marker (a dict naming what it waits for, e.g. an escalation) asks
    the engine to park the step: it waits, with no signal and no timer, until a person resolves
    it through `resolve_parked_step` (or the run is cancelled), so the run neither goes on nor
    fails meanwhile.
    """
    handler = failure_handlers().get(definition.on_failure)
    if handler is None:
        return False
    awaiting = handler(run, step, error, events, now)
    if awaiting:
        _set_status(
            step,
            StepStatus.WAITING,
            now,
            error={**error, "awaiting": awaiting},
            finished_at=None,
            wake_at=None,
            wait_signal="",
        )
        events.add(EventKind.WAITING, step, awaiting=awaiting, on_failure=definition.on_failure)
    return True


class StepRows(dict):
    """The top-level step rows of a locked run by step id, each read when first needed.

    A finished step only concerns its children and their other parents, so propagating it
    reads those rows, not the whole run: the cost of a step does not grow with the run's length.
    Rows are read under the run's lock, which every change of a pending step also takes.
    """

    def __init__(self, run: WorkflowRun, wf: WorkflowDef):
        super().__init__()
        self.run = run
        self.wf = wf
        self.complete = False

    def prefetch(self, step_ids: Iterable[str]) -> None:
        """Read, in one query, the rows of these steps and of their parents not yet read."""
        wanted = set()
        for sid in step_ids:
            wanted.add(sid)
            wanted.update(self.wf.steps[sid].depends_on)
        self._read(wanted - self.keys())

    def load_all(self) -> None:
        """Read every row of the run not yet read."""
        if not self.complete:
            self._read(None)
            self.complete = True

    def _read(self, step_ids: set[str] | None) -> None:
        """Read the given rows (None: all of them), keeping rows already held in memory."""
        if step_ids is not None and not step_ids:
            return
        if connection.vendor == "postgresql":
            if step_ids is None:
                found = execute_prepared(connection, _READ_STEPS_SQL, [self.run.pk, NO_ITEM])
            else:
                params = [self.run.pk, NO_ITEM, sorted(step_ids)]
                found = execute_prepared(connection, _READ_SOME_STEPS_SQL, params)
            self.add_rows(found)
            return
        query = StepRun.objects.filter(run_id=self.run.pk, item_index=NO_ITEM)
        if step_ids is not None:
            query = query.filter(step_id__in=step_ids)
        for row in query:
            self.setdefault(row.step_id, row)

    def add_rows(self, found: list[tuple], complete: bool = False) -> None:
        """Take rows read as raw columns (_STEP_COLUMNS), keeping rows already held in memory."""
        for columns in found:
            row = _step_from_row(columns)
            self.setdefault(row.step_id, row)
        self.complete = self.complete or complete

    def __missing__(self, step_id: str) -> StepRun:
        self.prefetch([step_id])
        if step_id not in self.keys():
            raise KeyError(step_id)
        return dict.__getitem__(self, step_id)


def _after_step_finished(
    run, step, events, now, claim_next=False, all_rows: list[tuple] | None = None
) -> StepRun | None:
    """Propagate a finished step: close its foreach parent, fail the run, or ready its children.

    `all_rows` are the run's top-level step rows as raw columns, when the caller read them all.
    """
    wf = compiled_version(run.version_id)
    if is_child(step):
        return _after_child_finished(run, step, events, now, claim_next)
    if step.item_index != NO_ITEM:
        return _after_item_finished(run, wf, step, events, now, claim_next)
    definition = wf.steps[step.step_id]
    rows = StepRows(run, wf)
    rows[step.step_id] = step
    if all_rows is not None:
        rows.add_rows(all_rows, complete=True)
    if step.status == StepStatus.FAILED and definition.on_failure == "fail":
        _fail_run(run, rows, events, now, {"step": step.step_id, **(step.error or {})})
        return None
    rows.prefetch(definition.children)
    activated = _activate(
        run, wf, rows, list(definition.children), events, now, claim_one=claim_next
    )
    claimed_id = -activated.pop(0) if activated and activated[0] < 0 else None
    publish_on_commit(activated)
    _settle_run(run, wf, rows, events, now)
    if claimed_id is None:
        return None
    claimed = next(row for row in rows.values() if row.pk == claimed_id)
    claimed.run = run
    return claimed


def _after_child_finished(run, child, events, now, claim_next) -> StepRun | None:
    """Tell the parent, by signal, once every child of the group has finished."""
    open_children = StepRun.objects.filter(
        parent_id=child.parent_id, step_id=child.step_id
    ).exclude(status__in=STEP_FINISHED)
    if open_children.exists():
        return None
    signal = _children_signal(child.step_id)
    return _deliver_signal(
        run, signal, {"group": signal.split(":", 2)[2]}, None, events, now, claim_next
    )


def _after_item_finished(run, wf, item, events, now, claim_next) -> StepRun | None:
    """Close a foreach step once all its items are finished, gathering outputs in order."""
    open_items = StepRun.objects.filter(parent_id=item.parent_id).exclude(status__in=STEP_FINISHED)
    if open_items.exists():
        return None
    parent = StepRun.objects.get(pk=item.parent_id)
    if parent.status != StepStatus.RUNNING:
        return None
    definition = wf.steps[parent.step_id]
    items = list(
        StepRun.objects.filter(parent=parent)
        .order_by("item_index")
        .values("status", "output", "error", "item_index")
    )
    failed = [row for row in items if row["status"] != StepStatus.SUCCEEDED]
    if failed and definition.on_failure != "continue":
        first = failed[0]
        error = {
            "type": "ItemsFailed",
            "types": ["ItemsFailed"],
            "message": f"{len(failed)} of {len(items)} items failed (first: {first['item_index']})",
            "items": [row["item_index"] for row in failed],
        }
        _set_status(parent, StepStatus.FAILED, now, error=error, finished_at=now)
        events.add(EventKind.STEP_FAILED, parent, error=error)
        if _hand_to_failure_handler(run, parent, definition, error, events, now):
            return None
    else:
        outputs = [
            row["output"] if row["status"] == StepStatus.SUCCEEDED else None for row in items
        ]
        _set_status(parent, StepStatus.SUCCEEDED, now, output=outputs, finished_at=now)
        events.add(EventKind.STEP_SUCCEEDED, parent, items=len(items), failed=len(failed))
    return _after_step_finished(run, parent, events, now, claim_next)


def _settle_run(run, wf, rows: dict[str, StepRun], events, now) -> None:
    """Finish the run when no step is left to run: build the output, or fail on a bad template."""
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
        return
    if any(row.status not in STEP_FINISHED for row in rows.values()):
        return
    if isinstance(rows, StepRows):
        rows.load_all()  # every row read so far is finished: only all of them can tell
        if any(row.status not in STEP_FINISHED for row in rows.values()):
            return
    blocked = [sid for sid, row in rows.items() if _blocks_children(row, wf.steps[sid])]
    if blocked:
        _fail_run(run, rows, events, now, {"step": blocked[0], **(rows[blocked[0]].error or {})})
        return
    try:
        output = _run_output(run, wf, rows)
    except expressions.ExpressionError as exc:
        _fail_run(run, rows, events, now, {"type": "OutputError", "message": str(exc)})
        return
    _set_run_status(run, RunStatus.SUCCEEDED, now, output=output, finished_at=now)
    events.add(EventKind.RUN_SUCCEEDED)


def _run_output(run, wf: WorkflowDef, rows: dict[str, StepRun]) -> Any:
    """Render the definition's output, or gather the outputs of the steps nothing depends on.

    `rows` holds every top-level step of the run, as written in this transaction.
    """
    outputs = {sid: row.output for sid, row in rows.items() if row.status == StepStatus.SUCCEEDED}
    if wf.output is not None:
        return expressions.render(
            wf.output,
            {
                "input": run.input,
                "steps": {sid: outputs.get(sid) for sid in rows},
                "run": {"id": run.pk},
            },
        )
    return {sid: outputs.get(sid) for sid, step in wf.steps.items() if not step.children}


def _set_run_status(run: WorkflowRun, status: str, now: dt.datetime, **fields) -> None:
    """Write a run's status and fields."""
    run.status = status
    run.updated_at = now
    for name, value in fields.items():
        setattr(run, name, value)
    _update_row(WorkflowRun, run.pk, {"status": status, "updated_at": now, **fields})


def _fail_run(run, rows, events, now, error: dict[str, Any]) -> None:
    """Fail the run and cancel what is left of it; running work is discarded at its finish."""
    _cancel_open_steps(run, events, now, reason="run_failed")
    for row in rows.values():  # keep the rows the caller holds as the database now has them
        if row.status not in STEP_FINISHED:
            row.status = StepStatus.CANCELLED
    _set_run_status(run, RunStatus.FAILED, now, error=error, finished_at=now)
    events.add(EventKind.RUN_FAILED, error=error)


def _cancel_open_steps(run, events, now, reason: str) -> None:
    """Cancel every step of a run that has not finished, with one event each."""
    open_steps = list(StepRun.objects.filter(run=run).exclude(status__in=STEP_FINISHED))
    for row in open_steps:
        events.add(EventKind.STEP_CANCELLED, row, reason=reason, was=row.status)
    StepRun.objects.filter(pk__in=[row.pk for row in open_steps]).update(
        status=StepStatus.CANCELLED,
        finished_at=now,
        lease_token="",
        lease_expires_at=None,
        error={"type": "Cancelled", "reason": reason},
    )


# --- operations on runs --------------------------------------------------------------------------


@requires_actor
def send_signal(
    run_id: int, name: str, payload: Any = None, *, sent_by, owner_app: bool = False
) -> RunSignal:
    """Deliver a named signal to a run; the step waiting for it (now or later) takes it.

    Names under a reserved prefix (`approval:`, `escalation:`) carry decisions that only their
    owning app may announce (`owner_app=True`), after its own checks; anyone else is refused.
    """
    if why := limits.text_problem(name, limits.limit("max_signal_name_chars")):
        raise EngineError(f"the signal's name {why}")
    if why := limits.problem(payload, what="payload"):
        raise EngineError(f"the signal {name!r} cannot be accepted: {why}")
    reserved = reserved_signal_prefix(name)
    if reserved and not owner_app:
        raise EngineError(
            f"signals named {reserved}... are reserved: decide through the approval or "
            "escalation itself, not by signalling the run"
        )
    now = clock.now()
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status in RUN_FINISHED:
            raise EngineError(f"run {run.pk} is {run.status}; only unfinished runs accept signals")
        events = EventLog(run, now, actor=sent_by)
        signal = RunSignal(run=run, name=name)
        _deliver_signal(run, name, payload, sent_by, events, now, signal=signal)
        events.flush()
    return signal


def _deliver_signal(run, name, payload, sent_by, events, now, claim_next=False, signal=None):
    """Record a signal for a locked run and wake the step waiting for it, if one is."""
    signal = signal or RunSignal(run=run, name=name)
    signal.payload = payload if payload is not None else {}
    signal.sent_by = sent_by if sent_by is not None and sent_by.pk else None
    signal.sent_by_name = getattr(sent_by, "username", "") if sent_by else ""
    signal.received_at = now
    signal.save()
    waiting = (
        StepRun.objects.select_for_update(no_key=True)
        .filter(run=run, status=StepStatus.WAITING, wait_signal=name)
        .order_by("id")
        .first()
    )
    if waiting is None:
        events.add(EventKind.SIGNAL_RECEIVED, signal=name, waiting_step=None)
        return None
    _consume(signal, waiting, now)
    events.add(EventKind.SIGNAL_RECEIVED, waiting, signal=name)
    definition = definition_of(compiled_version(run.version_id), waiting.step_id)
    return _wake(run, waiting, definition, "signal", signal.payload, events, now, claim_next)


@requires_actor
def cancel_run(run_id: int, *, actor, reason: str = "") -> WorkflowRun:
    """Cancel a run: open steps stop; a running step's work is discarded at its next checkpoint."""
    now = clock.now()
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status in RUN_FINISHED:
            raise EngineError(f"run {run.pk} is already {run.status}")
        events = EventLog(run, now, actor=actor)
        _cancel_open_steps(run, events, now, reason="run_cancelled")
        _set_run_status(
            run,
            RunStatus.CANCELLED,
            now,
            finished_at=now,
            error={"type": "Cancelled", "reason": reason},
        )
        events.add(EventKind.RUN_CANCELLED, reason=reason)
        events.flush()
    return run


@requires_actor
def pause_run(run_id: int, *, actor) -> WorkflowRun:
    """Pause a run: running steps finish their attempt, nothing new starts until resumed."""
    now = clock.now()
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status != RunStatus.RUNNING:
            raise EngineError(f"run {run.pk} is {run.status}; only a running run can be paused")
        _set_run_status(run, RunStatus.PAUSED, now)
        events = EventLog(run, now, actor=actor)
        events.add(EventKind.RUN_PAUSED)
        events.flush()
    return run


@requires_actor
def resume_run(run_id: int, *, actor) -> WorkflowRun:
    """Resume a paused run and dispatch the steps that became ready meanwhile."""
    now = clock.now()
    with transaction.atomic():
        run = _lock_run(run_id)
        if run.status != RunStatus.PAUSED:
            raise EngineError(f"run {run.pk} is {run.status}; only a paused run can be resumed")
        _set_run_status(run, RunStatus.RUNNING, now)
        ready = list(
            StepRun.objects.filter(run=run, status=StepStatus.READY, ready_at__lte=now).values_list(
                "pk", flat=True
            )
        )
        StepRun.objects.filter(pk__in=ready).update(dispatched_at=now)
        events = EventLog(run, now, actor=actor)
        events.add(EventKind.RUN_RESUMED, ready_steps=len(ready))
        events.flush()
        publish_on_commit(ready)
    return run


@requires_actor
def retry_step(step_run_id: int, *, actor) -> StepRun:
    """Try a failed step again from a fresh attempt count; a failed run resumes with it."""
    now = clock.now()
    with transaction.atomic():
        step = StepRun.objects.select_related("run").get(pk=step_run_id)
        run = _lock_run(step.run_id)
        step = StepRun.objects.select_for_update(no_key=True).get(pk=step_run_id)
        if step.status != StepStatus.FAILED:
            raise EngineError(f"step {step} is {step.status}; only a failed step can be retried")
        if is_child(step):
            raise EngineError(
                f"step {step} was added by another step, which already received its failure; "
                "retry that step instead"
            )
        if run.status in (RunStatus.CANCELLED, RunStatus.SUCCEEDED):
            raise EngineError(f"run {run.pk} is {run.status}; its steps cannot be retried")
        events = EventLog(run, now, actor=actor)
        if run.status == RunStatus.FAILED:
            # Steps the failure cancelled go back to where they can be reached again; the
            # history names each of them, and the run coming back to life.
            reopened = StepRun.objects.filter(
                run=run, status=StepStatus.CANCELLED, error__reason="run_failed"
            )
            for cancelled in reopened:
                events.add(EventKind.STEP_SCHEDULED, cancelled, reopened_by_retry_of=step.pk)
            reopened.update(
                status=StepStatus.PENDING,
                error=None,
                finished_at=None,
                wake_at=None,
                wait_signal="",
            )
            StepRun.objects.filter(run=run, status=StepStatus.PENDING).exclude(
                item_index=NO_ITEM
            ).update(status=StepStatus.READY, ready_at=now, dispatched_at=None)
            _set_run_status(run, RunStatus.RUNNING, now, error=None, finished_at=None)
            events.add(EventKind.RUN_RESUMED, reason="step_retried", step_run=step.pk)
        targets = [step]
        items = StepRun.objects.filter(parent=step, step_id=step.step_id)
        if (step.error or {}).get("stage") == "activation":
            # Its `when` or `foreach` could not be evaluated: evaluate them again, as the
            # step's activation would, instead of running the step past them.
            _set_status(step, StepStatus.PENDING, now, attempt=0, error=None, finished_at=None)
            events.add(EventKind.STEP_RETRIED, step)
            targets = []
        elif step.item_index == NO_ITEM and items.exists():
            targets = list(items.filter(status=StepStatus.FAILED))
            _set_status(step, StepStatus.RUNNING, now, error=None, finished_at=None)
        elif step.parent_id:
            StepRun.objects.filter(pk=step.parent_id).update(
                status=StepStatus.RUNNING, error=None, finished_at=None
            )
        for target in targets:
            _set_status(
                target,
                StepStatus.READY,
                now,
                attempt=0,
                error=None,
                ready_at=now,
                dispatched_at=now,
                finished_at=None,
            )
            events.add(EventKind.STEP_RETRIED, target)
        wf = compiled_version(run.version_id)
        rows = {row.step_id: row for row in StepRun.objects.filter(run=run, item_index=NO_ITEM)}
        pending = [sid for sid, row in rows.items() if row.status == StepStatus.PENDING]
        ready = _activate(run, wf, rows, pending, events, now)
        ready += list(
            StepRun.objects.filter(
                run=run, status=StepStatus.READY, dispatched_at__isnull=True
            ).values_list("pk", flat=True)
        )
        ready += [target.pk for target in targets]
        events.flush()
        publish_on_commit(sorted(set(ready)))
    return step


@requires_actor
def resolve_parked_step(
    step_run_id: int, *, output: Any = None, retry: bool = False, actor, note: str = ""
) -> StepRun:
    """Apply a person's resolution to a step its `on_failure` handler parked.

    Either supply the step's output (it succeeds and the run goes on), or, with `retry`, send
    it back for a fresh set of attempts. To stop the run instead, cancel it.
    """
    now = clock.now()
    with transaction.atomic():
        run_id = StepRun.objects.filter(pk=step_run_id).values_list("run_id", flat=True).first()
        if run_id is None:
            raise EngineError(f"no step run has the id {step_run_id}")
        run = _lock_run(run_id)
        step = StepRun.objects.select_for_update(no_key=True).get(pk=step_run_id)
        if step.status != StepStatus.WAITING or not (step.error or {}).get("awaiting"):
            raise EngineError(f"step {step} is {step.status}, not waiting for a person")
        if run.status in RUN_FINISHED:
            raise EngineError(f"run {run.pk} is already {run.status}")
        if retry:
            _set_status(step, StepStatus.FAILED, now, finished_at=now)
            return retry_step(step_run_id, actor=actor)
        events = EventLog(run, now, actor=actor)
        _set_status(
            step,
            StepStatus.SUCCEEDED,
            now,
            output=output,
            error=None,
            finished_at=now,
            wake_at=None,
            wait_signal="",
        )
        events.add(EventKind.STEP_SUCCEEDED, step, supplied_by_person=True, note=note)
        _after_step_finished(run, step, events, now)
        events.flush()
    return step


# --- the sweeper ---------------------------------------------------------------------------------


def sweep(now: dt.datetime | None = None, limit: int = 500) -> dict[str, int]:
    """Repair what messages cannot: dead workers, timeouts, due timers, retries, lost messages.

    Last, it checks the engine's invariant and repairs (and reports) the runs that break it.
    """
    now = now or clock.now()
    counts = {"reclaimed": 0, "timers": 0, "republished": 0, "repaired": 0}
    overdue = StepRun.objects.filter(status=StepStatus.RUNNING).filter(
        Q(lease_expires_at__lt=now) | Q(deadline_at__lt=now)
    )
    for step_id, run_id in overdue.values_list("pk", "run_id")[:limit]:
        counts["reclaimed"] += _reclaim(step_id, run_id, now)
    due = StepRun.objects.filter(status=StepStatus.WAITING, wake_at__lte=now)
    for step_id, run_id in due.values_list("pk", "run_id")[:limit]:
        counts["timers"] += _fire_timer(step_id, run_id, now)
    counts["republished"] = _republish(now, limit)
    for run_id in runs_breaking_invariant(limit):
        counts["repaired"] += repair_run(run_id, now)
    metrics.add_sweeper_repairs(counts)
    return counts


# --- the invariant: no run hangs -----------------------------------------------------------------
# A running (or paused) run always has a step that something will move: one that is ready, one
# that is waiting, or one that a worker holds under a lease. Otherwise it is settled. A run that
# breaks this would hang for ever; the sweeper repairs it and reports it.


def _moving_steps() -> Q:
    """Return the condition of a step that will move: ready, waiting, or leased by a worker.

    Waiting is for a timer, a signal or a person; a leased step is taken back by the sweeper
    if its worker dies.
    """
    return Q(status__in=[StepStatus.READY, StepStatus.WAITING]) | (
        Q(status=StepStatus.RUNNING) & ~Q(lease_token="")
    )


def runs_breaking_invariant(limit: int = 500) -> list[int]:
    """Return the ids of unfinished runs with no ready, waiting or leased running step."""
    moving = StepRun.objects.filter(_moving_steps(), run_id=OuterRef("pk"))
    return list(
        WorkflowRun.objects.filter(status__in=[RunStatus.RUNNING, RunStatus.PAUSED])
        .exclude(Exists(moving))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def _violation(run: WorkflowRun) -> str | None:
    """Describe how a locked unfinished run breaks the invariant, or None when it holds."""
    if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
        return None
    steps = StepRun.objects.filter(run=run)
    if steps.filter(_moving_steps()).exists():
        return None
    statuses = [
        f"{sid if index == NO_ITEM else f'{sid}[{index}]'}={status}"
        for sid, index, status in steps.exclude(status__in=STEP_FINISHED)
        .order_by("id")
        .values_list("step_id", "item_index", "status")
    ]
    return f"run {run.pk} is {run.status} but no step is ready, running or waiting" + (
        f" (open: {', '.join(statuses)})" if statuses else " (every step has finished)"
    )


def repair_run(run_id: int, now: dt.datetime | None = None) -> int:
    """Settle a run that breaks the invariant, as its steps' outcomes say; return 1 if repaired.

    Foreach steps whose items have all finished are closed, a step that failed without
    `on_failure: continue` fails the run, pending steps whose parents are done are activated,
    and a run with nothing left is settled. What cannot be moved on fails the run with
    `RunStuck`. Every event the repair writes names the violation (the audit log has them),
    and the repair is logged as an error: it means an engine path lost a run.
    """
    now = now or clock.now()
    with transaction.atomic():
        run = _lock_run(run_id)
        violation = _violation(run)
        if violation is None:
            return 0
        log.error("engine invariant broken, repairing: %s", violation)
        wf = compiled_version(run.version_id)
        events = EventLog(run, now)
        for parent in StepRun.objects.filter(run=run, status=StepStatus.RUNNING, lease_token=""):
            last_item = StepRun.objects.filter(parent=parent).order_by("-item_index").first()
            if last_item is not None and last_item.status in STEP_FINISHED:
                _after_step_finished(run, last_item, events, now)
        rows = StepRows(run, wf)
        rows.load_all()
        blocked = [sid for sid, row in rows.items() if _blocks_children(row, wf.steps[sid])]
        if run.status in (RunStatus.RUNNING, RunStatus.PAUSED) and blocked:
            error = {"step": blocked[0], **(rows[blocked[0]].error or {})}
            _fail_run(run, rows, events, now, error)
        if run.status in (RunStatus.RUNNING, RunStatus.PAUSED):
            pending = [sid for sid, row in rows.items() if row.status == StepStatus.PENDING]
            publish_on_commit(_activate(run, wf, rows, pending, events, now))
            _settle_run(run, wf, rows, events, now)
        if _violation(run) is not None:
            _fail_run(
                run,
                rows,
                events,
                now,
                {"type": "RunStuck", "types": ["RunStuck"], "message": violation},
            )
        for event in events.events:
            event.data = {**event.data, "repair": violation}
        events.flush()
    return 1


def _reclaim(step_id: int, run_id: int, now: dt.datetime) -> int:
    """Take back a step whose worker died or whose attempt ran past its timeout."""
    with transaction.atomic():
        run = _lock_run(run_id)
        step = (
            StepRun.objects.select_for_update(no_key=True)
            .filter(pk=step_id, status=StepStatus.RUNNING)
            .filter(Q(lease_expires_at__lt=now) | Q(deadline_at__lt=now))
            .first()
        )
        if step is None:
            return 0
        timed_out = step.deadline_at is not None and step.deadline_at < now
        if timed_out:
            failure = Fail(
                {
                    "type": "StepTimeout",
                    "types": ["StepTimeout", "TimeoutError"],
                    "message": "the attempt ran past its timeout",
                },
                True,
            )
        else:
            failure = Fail(
                {
                    "type": "LeaseExpired",
                    "types": ["LeaseExpired", "WorkerLost"],
                    "message": f"worker {step.worker} stopped renewing its lease",
                },
                True,
            )
        events = EventLog(run, now)
        events.add(EventKind.LEASE_EXPIRED, step, worker=step.worker, timed_out=timed_out)
        definition = definition_of(compiled_version(run.version_id), step.step_id)
        _record_failure(run, step, definition, failure, events, now)
        events.flush()
    return 1


def _fire_timer(step_id: int, run_id: int, now: dt.datetime) -> int:
    """Wake a step whose timer or wait timeout is due."""
    with transaction.atomic():
        run = _lock_run(run_id)
        step = (
            StepRun.objects.select_for_update(no_key=True)
            .filter(pk=step_id, status=StepStatus.WAITING, wake_at__lte=now)
            .first()
        )
        if step is None:
            return 0
        reason = "timeout" if step.wait_signal else "timer"
        events = EventLog(run, now)
        events.add(EventKind.WAIT_TIMED_OUT if reason == "timeout" else EventKind.TIMER_FIRED, step)
        definition = definition_of(compiled_version(run.version_id), step.step_id)
        _wake(run, step, definition, reason, None, events, now)
        events.flush()
    return 1


def republish_interval(waiting_seconds: float) -> float:
    """Return how long to wait before sending a ready step's message again, queue not short.

    Half the time it has waited, between STEWARD_REPUBLISH_AFTER_SECONDS and
    STEWARD_REPUBLISH_MAX_SECONDS: while the broker holds a message for every ready step, a
    step that waits long is most likely queued behind others or waiting for a worker to run
    at all, and copies would only flood the broker (their number grows with the logarithm of
    the outage). When the queue is short, `_republish` sends the missing ones sooner.
    """
    base = settings.STEWARD_REPUBLISH_AFTER_SECONDS
    return min(max(base, waiting_seconds / 2), max(base, settings.STEWARD_REPUBLISH_MAX_SECONDS))


def _queued_step_messages() -> int | None:
    """Return how many step messages wait in the broker's queue; None when it cannot tell."""
    from orchestrator.celery import app

    try:
        with app.pool.acquire(block=True, timeout=2) as conn:
            declared = conn.default_channel.queue_declare(
                queue=app.conf.task_default_queue, durable=True, auto_delete=False
            )
            return declared.message_count
    except Exception:  # broker down: the growing interval alone decides
        log.warning("could not read the length of the step queue", exc_info=True)
        return None


queued_messages = _queued_step_messages


def _missing_messages(now: dt.datetime) -> int:
    """Return how many ready steps at least have no message waiting in the broker's queue.

    Fewer queued messages than ready steps: some message was lost, or is held by a worker
    that died (Redis returns those only after its visibility timeout, an hour by default).
    """
    queued = queued_messages()
    if queued is None:
        return 0
    ready = StepRun.objects.filter(
        status=StepStatus.READY, ready_at__lte=now, run__status=RunStatus.RUNNING
    )
    return max(0, ready.count() - queued)


def _republish(now: dt.datetime, limit: int) -> int:
    """Publish ready steps that are due and whose message is missing or overdue.

    A step never sent goes at once. When the queue holds fewer messages than there are ready
    steps, as many overdue steps as messages are missing go again, those sent longest ago
    first: the queue is first in, first out, so theirs are the messages already delivered (to
    a worker that died, or lost). The rest wait for `republish_interval`. A message lost or
    held by a dead worker is so sent again within STEWARD_REPUBLISH_AFTER_SECONDS and a sweep,
    without a flood of copies while no worker runs.
    """
    stale = now - dt.timedelta(seconds=settings.STEWARD_REPUBLISH_AFTER_SECONDS)
    with transaction.atomic():
        candidates = list(
            StepRun.objects.filter(
                status=StepStatus.READY, ready_at__lte=now, run__status=RunStatus.RUNNING
            )
            .filter(Q(dispatched_at__isnull=True) | Q(dispatched_at__lt=stale))
            .order_by(F("dispatched_at").asc(nulls_first=True))
            .values_list("pk", "ready_at", "dispatched_at")[: limit * 4]
        )
        never_sent = sum(1 for _, _, dispatched_at in candidates if dispatched_at is None)
        missing = 0
        if never_sent < len(candidates):
            missing = _missing_messages(now) - never_sent
        ids = []
        for pk, ready_at, dispatched_at in candidates:
            if dispatched_at is not None and missing > 0:
                missing -= 1
            elif dispatched_at is not None and (
                now - dispatched_at
            ).total_seconds() < republish_interval((now - ready_at).total_seconds()):
                continue
            ids.append(pk)
        ids = ids[:limit]
        if ids:
            StepRun.objects.filter(pk__in=ids, status=StepStatus.READY).update(dispatched_at=now)
            publish_on_commit(ids)
    return len(ids)


def drain(max_steps: int = 10_000, now: dt.datetime | None = None) -> int:
    """Run every due ready step in this process until none is left (tests and the demo's CLI)."""
    executed = 0
    while executed < max_steps:
        current = now or clock.now()
        ids = list(
            StepRun.objects.filter(
                status=StepStatus.READY, ready_at__lte=current, run__status=RunStatus.RUNNING
            )
            .order_by("id")
            .values_list("pk", flat=True)[:100]
        )
        if not ids:
            return executed
        for step_id in ids:
            executed += run_step(step_id)
    return executed
