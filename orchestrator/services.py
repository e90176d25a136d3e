"""Workflow and run operations: the one write path for admin, API, commands, tasks and consumers."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from orchestrator import engine
from orchestrator.definitions import (
    DefinitionError,
    definition_digest,
    load_definition,
    validate_definition,
)
from orchestrator.engine import EngineError, InvalidInput
from orchestrator.models import RunSignal, StepRun, Workflow, WorkflowRun, WorkflowVersion

__all__ = [
    "DefinitionError",
    "EngineError",
    "InvalidInput",
    "cancel_run",
    "create_workflow",
    "pause_run",
    "publish_version",
    "resume_run",
    "retry_step",
    "send_signal",
    "start_run",
]


def create_workflow(
    *, slug: str, name: str, description: str = "", definition=None, actor=None
) -> Workflow:
    """Create a workflow, and publish its first version when a definition is given."""
    with transaction.atomic():
        workflow = Workflow(slug=slug, name=name, description=description)
        workflow._change_reason = "created"
        workflow.save()
        if definition is not None:
            publish_version(workflow, definition, actor=actor, note="first version")
    return workflow


def publish_version(
    workflow: Workflow, definition: dict[str, Any] | str, *, actor=None, note: str = ""
) -> WorkflowVersion:
    """Validate a definition and publish it as the workflow's next immutable version."""
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
            published_by=actor if actor is not None and actor.pk else None,
            published_by_name=getattr(actor, "username", "") if actor else "",
        )


def start_run(
    workflow: Workflow | str,
    input: dict[str, Any] | None = None,
    *,
    started_by=None,
    trigger: str = "",
    business_key: str = "",
    idempotency_key: str | None = None,
    request_id: str = "",
) -> WorkflowRun:
    """Start a run (by workflow or slug); the same idempotency key returns the same run."""
    if isinstance(workflow, str):
        try:
            workflow = Workflow.objects.get(slug=workflow)
        except Workflow.DoesNotExist:
            raise EngineError(f"no workflow has the slug {workflow!r}") from None
    return engine.start_run(
        workflow,
        input,
        started_by=started_by,
        trigger=trigger,
        business_key=business_key,
        idempotency_key=idempotency_key,
        request_id=request_id,
    )


def send_signal(
    run: WorkflowRun | int, name: str, payload: Any = None, *, sent_by=None
) -> RunSignal:
    """Send a named signal to a run; a finished run refuses it."""
    return engine.send_signal(_run_id(run), name, payload, sent_by=sent_by)


def cancel_run(run: WorkflowRun | int, *, actor=None, reason: str = "") -> WorkflowRun:
    """Cancel a run."""
    return engine.cancel_run(_run_id(run), actor=actor, reason=reason)


def pause_run(run: WorkflowRun | int, *, actor=None) -> WorkflowRun:
    """Pause a running run."""
    return engine.pause_run(_run_id(run), actor=actor)


def resume_run(run: WorkflowRun | int, *, actor=None) -> WorkflowRun:
    """Resume a paused run."""
    return engine.resume_run(_run_id(run), actor=actor)


def retry_step(step: StepRun | int, *, actor=None) -> StepRun:
    """Retry a failed step; its failed run resumes."""
    return engine.retry_step(step.pk if isinstance(step, StepRun) else step, actor=actor)


def _run_id(run: WorkflowRun | int) -> int:
    """Accept a run or its id."""
    if isinstance(run, WorkflowRun):
        return run.pk
    if not WorkflowRun.objects.filter(pk=run).exists():
        raise EngineError(f"no run has the id {run}")
    return run
