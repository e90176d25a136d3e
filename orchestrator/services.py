"""Workflow and run operations: the one write path for admin, API, commands, tasks and consumers.

Every operation takes the person or principal who asks (`actor`, `started_by`, `sent_by`) and
checks them through governance's one authorisation path (can() on the workflow or the run):

| operation                                        | needs                                      |
|--------------------------------------------------|--------------------------------------------|
| create_workflow                                  | `add` on workflows (model-wide)            |
| publish_version, start_run                       | `change` on that workflow                  |
| send_signal, cancel_run, pause_run, resume_run   | `change` on that run                       |
| retry_step                                       | `change` on the step's run                 |

An object the actor may not see is refused as not found (404), a visible one they may not act on
as forbidden (403); both are audited as `governance.access_denied`. A refusal is also an
EngineError, so every caller that reports the engine's refusals (the `runs` command, the admin
forms) reports it too. `SYSTEM` (audit.actors) is the engine, the sweeper, Celery tasks and
seeding: it is not checked, because it acts on behalf of work an authorised person started;
no person's request can produce it. `None` is no actor and is refused (TypeError).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q

from audit.actors import SYSTEM, requires_actor
from governance.actions.common import digest
from governance.permissions import AccessDenied, NotVisible, can, has_model_permission
from orchestrator import engine
from orchestrator.definitions import (
    DefinitionError,
    definition_digest,
    load_definition,
    validate_definition,
)
from orchestrator.engine import EngineError, InvalidInput
from orchestrator.models import (
    STEP_FINISHED,
    EffectJournal,
    RunSignal,
    StepRun,
    Workflow,
    WorkflowRun,
    WorkflowVersion,
)

__all__ = [
    "DefinitionError",
    "EngineError",
    "InvalidInput",
    "OperationDenied",
    "OperationNotVisible",
    "authorise",
    "cancel_run",
    "create_workflow",
    "pause_run",
    "publish_version",
    "resume_run",
    "retry_step",
    "send_signal",
    "start_run",
]


class OperationDenied(AccessDenied, EngineError):
    """The actor may see the workflow or run but not do this to it (403)."""


class OperationNotVisible(NotVisible, EngineError):
    """The workflow or run does not exist for this actor (404)."""


def _refuse(refusal: OperationDenied | OperationNotVisible):
    """Audit a refusal and raise it."""
    # If the caller's transaction rolls back and takes this entry with it, whoever handles the
    # refusal afterwards (the governed admin) calls audit() again, which writes it anew only then.
    refusal.audit()
    raise refusal


def authorise(actor, action: str, obj: Workflow | WorkflowRun) -> None:
    """Refuse (audited) unless `actor` may do `action` to `obj`; SYSTEM may do anything."""
    if actor is None:
        raise TypeError("No actor given: pass a user or SYSTEM.")
    if actor is SYSTEM or can(actor, action, obj):
        return
    if action != "view" and can(actor, "view", obj):
        _refuse(OperationDenied(actor, action, obj))
    _refuse(OperationNotVisible(actor, action, type(obj), obj.pk))


@requires_actor
def create_workflow(
    *, slug: str, name: str, description: str = "", definition=None, actor
) -> Workflow:
    """Create a workflow, and publish its first version when a definition is given."""
    if actor is not SYSTEM and not has_model_permission(actor, "add", Workflow):
        _refuse(OperationDenied(actor, "add", model=Workflow))
    with transaction.atomic():
        workflow = Workflow(slug=slug, name=name, description=description)
        workflow._change_reason = "created"
        if actor is not SYSTEM:
            workflow._history_user = actor
        workflow.save()
        if definition is not None:
            # Creating a workflow with its definition is one act: the first version needs only
            # the right to create the workflow.
            _publish(workflow, definition, actor=actor, note="first version")
    return workflow


@requires_actor
def publish_version(
    workflow: Workflow, definition: dict[str, Any] | str, *, actor, note: str = ""
) -> WorkflowVersion:
    """Validate a definition and publish it as the workflow's next immutable version."""
    authorise(actor, "change", workflow)
    return _publish(workflow, definition, actor=actor, note=note)


def _publish(workflow: Workflow, definition, *, actor, note: str) -> WorkflowVersion:
    """Validate and number a new version (the caller has authorised it)."""
    if isinstance(definition, str):
        definition = load_definition(definition)
    problems = validate_definition(definition)
    if problems:
        raise DefinitionError(problems)
    with transaction.atomic():
        locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
        latest = locked.versions.order_by("-number").values_list("number", flat=True).first() or 0
        return WorkflowVersion.objects.create(
            workflow=locked,
            number=latest + 1,
            definition=definition,
            digest=definition_digest(definition),
            note=note,
            published_by=actor if actor.pk else None,
            published_by_name=getattr(actor, "username", ""),
        )


@requires_actor
def start_run(
    workflow: Workflow | str,
    input: dict[str, Any] | None = None,
    *,
    started_by,
    trigger: str = "",
    business_key: str = "",
    idempotency_key: str | None = None,
    request_id: str = "",
) -> WorkflowRun:
    """Start a run (by workflow or slug) as `started_by`; one idempotency key, one run."""
    if isinstance(workflow, str):
        workflow = _workflow_by_slug(workflow, started_by)
    authorise(started_by, "change", workflow)
    return engine.start_run(
        workflow,
        input,
        started_by=started_by,
        trigger=trigger,
        business_key=business_key,
        idempotency_key=idempotency_key,
        request_id=request_id,
    )


@requires_actor
def send_signal(run: WorkflowRun | int, name: str, payload: Any = None, *, sent_by) -> RunSignal:
    """Send a named signal to a run; a finished run, or a reserved name, is refused."""
    run = _run(run, sent_by)
    authorise(sent_by, "change", run)
    return engine.send_signal(run.pk, name, payload, sent_by=sent_by)


@requires_actor
def cancel_run(run: WorkflowRun | int, *, actor, reason: str = "") -> WorkflowRun:
    """Cancel a run."""
    run = _run(run, actor)
    authorise(actor, "change", run)
    return engine.cancel_run(run.pk, actor=actor, reason=reason)


@requires_actor
def pause_run(run: WorkflowRun | int, *, actor) -> WorkflowRun:
    """Pause a running run."""
    run = _run(run, actor)
    authorise(actor, "change", run)
    return engine.pause_run(run.pk, actor=actor)


@requires_actor
def resume_run(run: WorkflowRun | int, *, actor) -> WorkflowRun:
    """Resume a paused run."""
    run = _run(run, actor)
    authorise(actor, "change", run)
    return engine.resume_run(run.pk, actor=actor)


@requires_actor
def retry_step(step: StepRun | int, *, actor) -> StepRun:
    """Retry a failed step; its failed run resumes."""
    step_id = step.pk if isinstance(step, StepRun) else step
    run = WorkflowRun.objects.filter(steps__pk=step_id).first()
    if run is None:
        if actor is not SYSTEM:
            _refuse(OperationNotVisible(actor, "change", StepRun, step_id))
        raise EngineError(f"no step run has the id {step_id}")
    authorise(actor, "change", run)
    return engine.retry_step(step_id, actor=actor)


def _workflow_by_slug(slug: str, actor) -> Workflow:
    """Find a workflow by slug; for an actor, a hidden one is as missing as an absent one."""
    workflow = Workflow.objects.filter(slug=slug).first()
    if workflow is None:
        if actor is not SYSTEM:
            _refuse(OperationNotVisible(actor, "change", Workflow, slug))
        raise EngineError(f"no workflow has the slug {slug!r}")
    return workflow


def _run(run: WorkflowRun | int, actor) -> WorkflowRun:
    """Accept a run or its id; for an actor, a missing run is refused like a hidden one."""
    if isinstance(run, WorkflowRun):
        return run
    found = WorkflowRun.objects.filter(pk=run).first()
    if found is None:
        if actor is not SYSTEM:
            _refuse(OperationNotVisible(actor, "change", WorkflowRun, run))
        raise EngineError(f"no run has the id {run}")
    return found


def redact_model_call_journals(model_calls: dict[int, int | None]) -> dict[str, Any]:
    """Redact the journal rows of model calls (by audit entry id) whose steps have finished.

    A step still running resumes from its journal, so its rows are kept and named in "kept":
    a later purge redacts them once the step has finished.
    """
    runs = {run_id for run_id in model_calls.values() if run_id is not None}
    rows = (
        EffectJournal.objects.filter(
            Q(run_id__in=runs) | Q(run__isnull=True),
            name__startswith="model:",
            result__audit_entry__in=list(model_calls),
        )
        .select_related("step_run")
        .select_for_update(of=("self",))
    )
    redacted: dict[int, int] = {}
    kept: list[int] = []
    for row in rows:
        entry_id = row.result["audit_entry"]
        if row.step_run is not None and row.step_run.status not in STEP_FINISHED:
            kept.append(entry_id)
            continue
        row.request = _redacted(row.request)
        row.result = _redacted(row.result)
        row.save(update_fields=["request", "result"])
        redacted[entry_id] = redacted.get(entry_id, 0) + 1
    return {"redacted": redacted, "kept": kept}


def _redacted(content) -> dict:
    """Return the marker that replaces a journal field whose retention passed."""
    return {"redacted": "memory retention", "sha256": digest(content)}
