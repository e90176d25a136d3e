"""Workflow and run operations: the one write path for admin, API, commands, tasks and consumers.

Every operation takes the person or principal who asks (`actor`, `started_by`, `sent_by`) and
checks them through governance's one authorisation path (can() on the workflow or the run):

| operation                                        | needs                                      |
|--------------------------------------------------|--------------------------------------------|
| create_workflow                                  | `add` on workflows (model-wide)            |
| update_workflow                                  | `change` on that workflow                  |
| publish_version                                  | `publish` on that workflow                 |
| set_version_approval (and that field anywhere)   | `exempt` on that workflow                  |
| start_run                                        | `change` on that workflow                  |
| cancel_run, pause_run, resume_run                | `change` on that run (*)                   |
| retry_step                                       | `change` on the step's run (*)             |
| send_signal                                      | `signal` on that run: `change` on it, or   |
|                                                  | on its workflow (who may start, may signal)|
| get_workflow, get_version, get_run (reads)       | `view` on that workflow or run             |
| start_or_signal                                  | `change` on that workflow (and, to use an  |
|                                                  | open run: `view` on it, `signal` to signal)|
| signal_by_business_key                           | `signal` on the run the key names          |

(*) or having started the run, while still holding `change` on its workflow
(orchestrator.models.WorkflowRunQuerySet: the rule lives in restrict() and can()).

An object the actor may not see is refused as not found (404), a visible one they may not act on
as forbidden (403); both are audited as `governance.access_denied`. A refusal is also an
EngineError, so every caller that reports the engine's refusals (the `runs` command, the admin
forms) reports it too. `SYSTEM` (audit.actors) is the engine, the sweeper, Celery tasks and
seeding: it is not checked, because it acts on behalf of work an authorised person started;
no person's request can produce it. `None` is no actor and is refused (TypeError).

A new version is governed configuration: published by a person, it is *proposed* and opens an
approval request (action `workflow.publish`, the version as target, its definition digest and
its diff against the live version as arguments, the author as requester, so separation of
duties keeps the author from approving it). The approval rule named by
STEWARD_VERSION_APPROVAL_RULE says who approves. Once approved it becomes the workflow's live
version (settle_version, called on governance's decision signal); rejected, expired or
cancelled it never runs. Runs start on the live version only. A workflow whose
`version_approval_required` is off (set by someone who may `exempt` it), and the system,
publish live at once.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q

from audit import clock
from audit.actors import SYSTEM, requires_actor
from governance import services as governance
from governance.actions.common import digest, save_governed
from governance.models import ApprovalRequest, ApprovalRule, ApprovalStatus
from governance.permissions import AccessDenied, NotVisible, can, has_model_permission
from orchestrator import engine
from orchestrator.definitions import (
    DefinitionError,
    definition_diff,
    definition_digest,
    load_definition,
    validate_definition,
)
from orchestrator.engine import EngineError, InvalidInput
from orchestrator.models import (
    STEP_FINISHED,
    EffectJournal,
    IdempotencyKey,
    ManualBaseline,
    RunSignal,
    RunStatus,
    SavedRunView,
    StepRun,
    VersionStatus,
    Workflow,
    WorkflowRun,
    WorkflowVersion,
)

PUBLISH_ACTION = "workflow.publish"
# What a version's request finishing as each status does to the version.
_SETTLED_AS = {
    ApprovalStatus.APPROVED: VersionStatus.APPROVED,
    ApprovalStatus.REJECTED: VersionStatus.REJECTED,
    ApprovalStatus.CHANGES_REQUESTED: VersionStatus.REJECTED,
    ApprovalStatus.EXPIRED: VersionStatus.WITHDRAWN,
    ApprovalStatus.CANCELLED: VersionStatus.WITHDRAWN,
}

__all__ = [
    "BUSINESS_KEY_POLICIES",
    "BusinessKeyConflict",
    "EDITABLE_WORKFLOW_FIELDS",
    "DefinitionError",
    "EngineError",
    "InvalidInput",
    "OperationDenied",
    "OperationNotVisible",
    "PUBLISH_ACTION",
    "VersionApprovalUnavailable",
    "authorise",
    "cancel_run",
    "create_workflow",
    "declare_manual_baseline",
    "get_run",
    "get_version",
    "get_workflow",
    "pause_run",
    "publish_version",
    "purge_idempotency_keys",
    "resume_run",
    "retry_step",
    "save_run_view",
    "delete_run_view",
    "send_signal",
    "set_version_approval",
    "settle_version",
    "signal_by_business_key",
    "start_or_signal",
    "start_run",
    "update_workflow",
    "version_arguments",
]


class OperationDenied(AccessDenied, EngineError):
    """The actor may see the workflow or run but not do this to it (403)."""


class OperationNotVisible(NotVisible, EngineError):
    """The workflow or run does not exist for this actor (404)."""


class VersionApprovalUnavailable(EngineError):
    """A version needs approval, but no approval rule says who approves versions."""


class BusinessKeyConflict(EngineError):
    """An open run already holds the business key a new start asked for (409)."""

    code = "business_key_conflict"

    def __init__(self, run: WorkflowRun):
        self.run = run
        super().__init__(
            f"run {run.pk} of {run.workflow.slug!r} is {run.status} with business key "
            f"{run.business_key!r}; start with business_key_policy 'use_existing' to use it"
        )


# What a start does when an open run of the workflow already holds its business key (as
# Temporal's WorkflowIdConflictPolicy): refuse (`fail`, the default) or use that run.
BUSINESS_KEY_POLICIES = ("fail", "use_existing")
# A run holds its business key while it may still change: running or paused.
_OPEN = (RunStatus.RUNNING, RunStatus.PAUSED)


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
    *,
    slug: str,
    name: str,
    description: str = "",
    definition=None,
    actor,
    version_approval_required: bool = True,
) -> Workflow:
    """Create a workflow, and propose (or publish) its first version when a definition is given."""
    if actor is not SYSTEM and not has_model_permission(actor, "add", Workflow):
        _refuse(OperationDenied(actor, "add", model=Workflow))
    exempting = not version_approval_required and actor is not SYSTEM
    if exempting and not has_model_permission(actor, "exempt", Workflow):
        _refuse(
            OperationDenied(
                actor,
                "exempt",
                model=Workflow,
                detail="You may not create a workflow whose versions need no approval.",
            )
        )
    with transaction.atomic():
        workflow = Workflow(
            slug=slug,
            name=name,
            description=description,
            version_approval_required=version_approval_required,
        )
        workflow._change_reason = "created"
        if actor is not SYSTEM:
            workflow._history_user = actor
        workflow.save()
        if definition is not None:
            # Creating a workflow with its definition is one act: the first version needs only
            # the right to create the workflow, and a second person's approval like any other.
            _publish(workflow, definition, actor=actor, note="first version")
    return workflow


# The fields a person edits on a workflow; `version_approval_required` also needs `exempt`, and
# the live version changes only when a version is approved.
EDITABLE_WORKFLOW_FIELDS = ("slug", "name", "description", "is_active", "version_approval_required")


@requires_actor
def update_workflow(workflow: Workflow, *, actor, reason: str = "", **fields) -> Workflow:
    """Change a workflow's name, description, activity (or, with `exempt`, its approval rule)."""
    unknown = set(fields) - set(EDITABLE_WORKFLOW_FIELDS)
    if unknown:
        raise TypeError(f"update_workflow cannot change {sorted(unknown)}")
    # Refusals are checked (and audited) outside the write's transaction, so their entry stays.
    stored = Workflow.objects.get(pk=workflow.pk)
    authorise(actor, "change", stored)
    wanted = fields.get("version_approval_required", stored.version_approval_required)
    if wanted != stored.version_approval_required:
        authorise(actor, "exempt", stored)
    with transaction.atomic():
        locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
        if locked.version_approval_required != stored.version_approval_required:
            authorise(actor, "exempt", locked)  # it changed meanwhile: checked again
        for name, value in fields.items():
            setattr(locked, name, value)
        _save_workflow(locked, actor=actor, reason=reason or "changed")
    return locked


@requires_actor
def set_version_approval(workflow: Workflow, required: bool, *, actor, reason: str) -> Workflow:
    """Say whether a workflow's new versions need a second person's approval (needs `exempt`)."""
    return update_workflow(workflow, actor=actor, reason=reason, version_approval_required=required)


def _save_workflow(workflow: Workflow, *, actor, reason: str) -> None:
    """Save a workflow with who and why set first, for its history and the audit log."""
    workflow._change_reason = reason
    if actor is not SYSTEM:
        workflow._history_user = actor
    workflow.full_clean()
    workflow.save()


@requires_actor
def publish_version(
    workflow: Workflow, definition: dict[str, Any] | str, *, actor, note: str = ""
) -> WorkflowVersion:
    """Propose a definition as the workflow's next version; it goes live once approved.

    Live at once where the workflow needs no approval, and for the system (`actor=SYSTEM`).
    """
    authorise(actor, "publish", workflow)
    return _publish(workflow, definition, actor=actor, note=note)


def _publish(workflow: Workflow, definition, *, actor, note: str) -> WorkflowVersion:
    """Validate, number and propose a new version (the caller has authorised it)."""
    if isinstance(definition, str):
        definition = load_definition(definition)
    problems = validate_definition(definition)
    if problems:
        raise DefinitionError(problems)
    with transaction.atomic():
        locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
        # Whoever exempted the workflow still needs a second person for their own versions:
        # no one both grants themselves a power and uses it.
        needs_approval = actor is not SYSTEM and (
            locked.version_approval_required or _exempted_by(locked) == actor.pk
        )
        rule = _version_approval_rule(locked) if needs_approval else None
        latest = locked.versions.order_by("-number").values_list("number", flat=True).first() or 0
        live = locked.live_version
        number = latest + 1
        version = WorkflowVersion(
            workflow=locked,
            number=number,
            definition=definition,
            digest=definition_digest(definition),
            note=note,
            published_by=actor if actor.pk else None,
            published_by_name=getattr(actor, "username", ""),
            status=VersionStatus.PROPOSED if needs_approval else VersionStatus.APPROVED,
            base_version=live,
            diff=definition_diff(
                live.definition if live else None,
                definition,
                old_label=f"{locked.slug} v{live.number} (live)" if live else "(no live version)",
                new_label=f"{locked.slug} v{number} (proposed)",
            ),
        )
        version._change_reason = note or ("proposed" if needs_approval else "published")
        if actor is not SYSTEM:
            version._history_user = actor
        version.save()
        if not needs_approval:
            _make_live(locked, version, actor=actor, reason=f"v{number} published")
            return version
        request = governance.request_approval(
            action=PUBLISH_ACTION,
            approval_rule=rule,
            arguments=version_arguments(version),
            target=version,
            summary=f"Publish {locked.slug} v{number}"
            + (f" (replacing live v{live.number})" if live else " (its first live version)")
            + (f": {note}" if note else ""),
            risk="high",
            requested_by=actor,
        )
        version.approval_request = request
        version.save(update_fields=["approval_request"])
    return version


def _exempted_by(workflow: Workflow) -> int | None:
    """Return the id of who exempted a workflow from version approval (None: it is not exempt).

    Read from the workflow's history: the change that switched the approval off and after which
    it stayed off.
    """
    if workflow.version_approval_required:
        return None
    exempter = None
    for record in workflow.history.order_by("-history_date", "-history_id").only(
        "version_approval_required", "history_user_id"
    ):
        if record.version_approval_required:
            break
        exempter = record.history_user_id
    return exempter


def _version_approval_rule(workflow: Workflow) -> ApprovalRule:
    """Return the approval rule for versions, or refuse clearly when there is none."""
    slug = settings.STEWARD_VERSION_APPROVAL_RULE
    rule = ApprovalRule.objects.filter(slug=slug).first()
    if rule is None:
        raise VersionApprovalUnavailable(
            f"A new version of {workflow.slug!r} needs a second person's approval, and no "
            f"approval rule {slug!r} says who approves workflow versions: a governance admin "
            "creates it (or exempts this workflow from version approval)."
        )
    return rule


def version_arguments(version: WorkflowVersion) -> dict[str, Any]:
    """Return what approving a version approves: exactly its definition, and its diff."""
    base = version.base_version
    return {
        "workflow": version.workflow.slug,
        "version": version.number,
        "definition_digest": version.digest,
        "live_version": base.number if base else None,
        "live_digest": base.digest if base else None,
        "diff": version.diff.splitlines(),
    }


def _make_live(workflow: Workflow, version: WorkflowVersion, *, actor, reason: str) -> None:
    """Point the (locked) workflow at a version: new runs start on it from now on."""
    workflow.live_version = version
    _save_workflow(workflow, actor=actor, reason=reason)
    # Proposals made against the version that was live are stale now (their diff no longer
    # says what they change): cancelled after commit, in their own transactions, so this one
    # takes no lock on another request (a concurrent decision may hold it).
    stale = list(
        WorkflowVersion.objects.filter(workflow=workflow, status=VersionStatus.PROPOSED)
        .exclude(pk=version.pk)
        .exclude(approval_request__isnull=True)
        .values_list("approval_request_id", flat=True)
    )
    if stale:
        transaction.on_commit(lambda: _cancel_superseded(stale, version, actor=actor))


def _cancel_superseded(request_ids: list[int], live: WorkflowVersion, *, actor) -> None:
    """Cancel the pending requests of proposals a newer live version superseded."""
    for request in ApprovalRequest.objects.filter(pk__in=request_ids, status="pending"):
        with transaction.atomic():
            governance.cancel_request(
                request,
                actor=actor,
                reason=f"superseded: {live} went live; propose again against it",
            )


@requires_actor
def settle_version(request_id: int, *, actor) -> WorkflowVersion | None:
    """Carry out the final decision on a version's request: make it live, or never run it.

    Called (by the receiver of governance's decision signal) inside the decision's transaction.
    The request is read again, so a forged signal settles nothing; an approval makes the
    version live only if it covers exactly the version's definition and diff, and only if the
    version it was diffed against is still the live one.
    """
    with transaction.atomic():
        request = ApprovalRequest.objects.filter(pk=request_id, action=PUBLISH_ACTION).first()
        if request is None or not request.is_final:
            return None
        version = (
            WorkflowVersion.objects.select_for_update(of=("self",))
            .select_related("workflow", "base_version")
            .filter(approval_request_id=request.pk)
            .first()
        )
        if version is None or version.status != VersionStatus.PROPOSED:
            return version
        workflow = Workflow.objects.select_for_update().get(pk=version.workflow_id)
        status = _SETTLED_AS[request.status]
        reason = f"request #{request.pk} {request.get_status_display().lower()}"
        if status == VersionStatus.APPROVED:
            if not governance.approval_applies(request, version_arguments(version)) or (
                version.digest != definition_digest(version.definition)
            ):
                status, reason = (
                    VersionStatus.WITHDRAWN,
                    f"request #{request.pk} covers other content",
                )
            elif workflow.live_version_id != version.base_version_id:
                status, reason = (
                    VersionStatus.WITHDRAWN,
                    f"superseded: the live version changed since v{version.number} was proposed",
                )
        version.status = status
        version.decided_at = request.decided_at or clock.now()
        version._change_reason = reason
        if actor is not SYSTEM:
            version._history_user = actor
        version.save(update_fields=["status", "decided_at"])
        if status == VersionStatus.APPROVED:
            _make_live(workflow, version, actor=actor, reason=f"v{version.number} {reason}")
    return version


@requires_actor
def start_run(
    workflow: Workflow | str,
    input: dict[str, Any] | None = None,
    *,
    started_by,
    trigger: str = "",
    business_key: str = "",
    business_key_policy: str | None = None,
    idempotency_key: str | None = None,
    request_id: str = "",
) -> WorkflowRun:
    """Start a run (by workflow or slug) as `started_by`; one idempotency key, one run.

    A start with a business key always takes the key's lock, so it serialises with every other
    start of that key; `business_key_policy` (`fail`, `use_existing`) applies the conflict rule
    of start_or_signal, and None starts alongside an open run holding the key (a deliberate
    duplicate). A replayed idempotency key gives back its run whatever the policy.
    """
    if isinstance(workflow, str):
        workflow = _workflow_by_slug(workflow, started_by)
    authorise(started_by, "change", workflow)
    if business_key:
        run, _ = _start(
            workflow,
            input,
            started_by=started_by,
            business_key=business_key,
            business_key_policy=business_key_policy,
            trigger=trigger,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )
        return run
    return engine.start_run(
        workflow,
        input,
        started_by=started_by,
        trigger=trigger,
        idempotency_key=idempotency_key,
        request_id=request_id,
    )


@requires_actor
def send_signal(run: WorkflowRun | int, name: str, payload: Any = None, *, sent_by) -> RunSignal:
    """Send a named signal to a run; a finished run, or a reserved name, is refused."""
    run = _run(run, sent_by)
    authorise(sent_by, "signal", run)
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
def retry_step(step: StepRun | int, *, actor, run: WorkflowRun | int | None = None) -> StepRun:
    """Retry a failed step (of `run`, when given); its failed run resumes."""
    step_id = step.pk if isinstance(step, StepRun) else step
    runs = WorkflowRun.objects.filter(steps__pk=step_id)
    if run is not None:
        runs = runs.filter(pk=run.pk if isinstance(run, WorkflowRun) else run)
    run = runs.first()
    if run is None:
        if actor is not SYSTEM:
            _refuse(OperationNotVisible(actor, "change", StepRun, step_id))
        raise EngineError(f"no step run has the id {step_id}")
    authorise(actor, "change", run)
    return engine.retry_step(step_id, actor=actor)


@requires_actor
def get_workflow(slug: str, *, actor) -> Workflow:
    """Return the workflow with this slug if the actor may see it; else refuse (404, audited)."""
    workflow = _workflow_by_slug(slug, actor, "view")
    authorise(actor, "view", workflow)
    return workflow


@requires_actor
def get_version(workflow: Workflow, number: int, *, actor) -> WorkflowVersion:
    """Return a workflow's version by number if the actor may see it; else refuse (404)."""
    authorise(actor, "view", workflow)
    version = (
        WorkflowVersion.objects.filter(workflow=workflow, number=number)
        .select_related("workflow", "base_version")
        .first()
    )
    if version is None:
        if actor is SYSTEM:
            raise EngineError(f"{workflow.slug} has no version {number}")
        _refuse(OperationNotVisible(actor, "view", WorkflowVersion, f"{workflow.slug} v{number}"))
    return version


@requires_actor
def get_run(run_id: int, *, actor) -> WorkflowRun:
    """Return a run if the actor may see it; else refuse (404, audited)."""
    run = _run(run_id, actor, "view")
    authorise(actor, "view", run)
    return run


@requires_actor
def start_or_signal(
    workflow: Workflow | str,
    input: dict[str, Any] | None = None,
    *,
    started_by,
    business_key: str = "",
    business_key_policy: str = "fail",
    signal: tuple[str, Any] | None = None,
    trigger: str = "",
    request_id: str = "",
) -> tuple[WorkflowRun, bool]:
    """Start a run, or meet the open run holding its business key; True when it started one.

    At most one open (running or paused) run of a workflow holds a business key: a second start
    is refused (`fail`, BusinessKeyConflict) or given that run (`use_existing`, which needs
    `view` on it). `signal` (name, payload) is delivered to the run either way, in the same
    transaction (signal-with-start); signalling an existing run needs `signal` on it. Starts with
    one business key are serialised by a transaction-scoped lock on (workflow, key), so two
    concurrent starts give one run.
    """
    if business_key_policy not in BUSINESS_KEY_POLICIES:
        raise ValueError(f"business_key_policy is one of {BUSINESS_KEY_POLICIES}")
    if isinstance(workflow, str):
        workflow = _workflow_by_slug(workflow, started_by)
    authorise(started_by, "change", workflow)
    return _start(
        workflow,
        input,
        started_by=started_by,
        business_key=business_key,
        business_key_policy=business_key_policy,
        signal=signal,
        trigger=trigger,
        request_id=request_id,
    )


def _start(
    workflow: Workflow,
    input: dict[str, Any] | None,
    *,
    started_by,
    business_key: str,
    business_key_policy: str | None,
    signal: tuple[str, Any] | None = None,
    trigger: str = "",
    idempotency_key: str | None = None,
    request_id: str = "",
) -> tuple[WorkflowRun, bool]:
    """Start under the business key's lock, applying its policy (None: no conflict rule)."""
    if business_key_policy is not None and business_key_policy not in BUSINESS_KEY_POLICIES:
        raise ValueError(f"business_key_policy is one of {BUSINESS_KEY_POLICIES}")
    engine.check_run_keys(business_key, idempotency_key, request_id)  # before they are queried
    try:
        with transaction.atomic():
            existing = None
            if business_key:
                _lock_business_key(workflow, business_key)
                replay = bool(idempotency_key) and (
                    WorkflowRun.objects.filter(idempotency_key=idempotency_key).exists()
                )
                if business_key_policy is not None and not replay:
                    existing = (
                        WorkflowRun.objects.filter(
                            workflow=workflow, business_key=business_key, status__in=_OPEN
                        )
                        .select_related("workflow", "version")
                        .order_by("-created_at", "-id")
                        .first()
                    )
            if existing is not None:
                if business_key_policy == "fail":
                    raise BusinessKeyConflict(existing)
                authorise(started_by, "view", existing)
                if signal is not None:
                    authorise(started_by, "signal", existing)
                    engine.send_signal(existing.pk, signal[0], signal[1], sent_by=started_by)
                return existing, False
            run = engine.start_run(
                workflow,
                input,
                started_by=started_by,
                trigger=trigger,
                business_key=business_key,
                idempotency_key=idempotency_key,
                request_id=request_id,
            )
            if signal is not None:
                # Part of the start the caller was allowed: no second check on the new run.
                engine.send_signal(run.pk, signal[0], signal[1], sent_by=started_by)
            return run, True
    except (OperationDenied, OperationNotVisible) as refusal:
        refusal.audit()  # its entry went with the rolled-back transaction: written again
        raise


def _lock_business_key(workflow: Workflow, business_key: str) -> None:
    """Hold, until the transaction ends, the right to start a run with this business key."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [f"steward:business-key:{workflow.pk}:{business_key}"],
            )
    else:
        Workflow.objects.select_for_update().filter(pk=workflow.pk).first()


@requires_actor
def signal_by_business_key(
    workflow: Workflow | str, business_key: str, name: str, payload: Any = None, *, sent_by
) -> RunSignal:
    """Send a signal to the open run of a workflow holding a business key (correlation).

    No open run with that key, or one the sender may not see, is refused as not found (404).
    """
    if isinstance(workflow, str):
        workflow = _workflow_by_slug(workflow, sent_by, "view")
    authorise(sent_by, "view", workflow)
    run = (
        WorkflowRun.objects.filter(workflow=workflow, business_key=business_key, status__in=_OPEN)
        .order_by("-created_at", "-id")
        .first()
        if business_key
        else None
    )
    if run is None:
        if sent_by is SYSTEM:
            raise EngineError(f"no open run of {workflow.slug!r} has business key {business_key!r}")
        _refuse(
            OperationNotVisible(
                sent_by,
                "change",
                WorkflowRun,
                f"{workflow.slug}:{business_key}",
                detail=f"No open run of {workflow.slug} with business key {business_key!r}.",
            )
        )
    return send_signal(run, name, payload, sent_by=sent_by)


def _workflow_by_slug(slug: str, actor, action: str = "change") -> Workflow:
    """Find a workflow by slug; for an actor, a hidden one is as missing as an absent one."""
    workflow = Workflow.objects.filter(slug=slug).select_related("live_version").first()
    if workflow is None:
        if actor is not SYSTEM:
            _refuse(OperationNotVisible(actor, action, Workflow, slug))
        raise EngineError(f"no workflow has the slug {slug!r}")
    return workflow


def _run(run: WorkflowRun | int, actor, action: str = "change") -> WorkflowRun:
    """Accept a run or its id; for an actor, a missing run is refused like a hidden one."""
    if isinstance(run, WorkflowRun):
        return run
    found = WorkflowRun.objects.filter(pk=run).select_related("workflow", "version").first()
    if found is None:
        if actor is not SYSTEM:
            _refuse(OperationNotVisible(actor, action, WorkflowRun, run))
        raise EngineError(f"no run has the id {run}")
    return found


# Expired keys go in batches, so one purge never holds a long lock on a large table.
_PURGE_BATCH = 5000


@requires_actor
def purge_idempotency_keys(*, actor, now=None) -> int:
    """Delete the API's Idempotency-Key rows past their expiry; return how many went."""
    cutoff = now or clock.now()
    purged = 0
    while True:
        batch = list(
            IdempotencyKey.objects.filter(expires_at__lte=cutoff).values_list("pk", flat=True)[
                :_PURGE_BATCH
            ]
        )
        if not batch:
            return purged
        # Conditional on the expiry, so a key claimed afresh meanwhile (a new row) is kept.
        deleted, _ = IdempotencyKey.objects.filter(pk__in=batch, expires_at__lte=cutoff).delete()
        purged += deleted
        if len(batch) < _PURGE_BATCH:
            return purged


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


# --- saved views of the runs list ----------------------------------------------------------------

SAVED_VIEWS_PER_PERSON = 50


@requires_actor
def save_run_view(name: str, query: str, *, actor) -> SavedRunView:
    """Save (or replace) one of the actor's named filters of the runs list."""
    from audit import services as audit

    if actor is SYSTEM or not getattr(actor, "is_authenticated", False):
        raise EngineError("only a person saves views of the runs list")
    name = name.strip()[:100]
    if not name:
        raise EngineError("a saved view needs a name")
    with transaction.atomic():
        view = SavedRunView.objects.filter(owner=actor, name=name).first()
        if view is None:
            if SavedRunView.objects.filter(owner=actor).count() >= SAVED_VIEWS_PER_PERSON:
                raise EngineError(f"at most {SAVED_VIEWS_PER_PERSON} saved views a person")
            view = SavedRunView(owner=actor, name=name, created_at=clock.now())
        view.query = query[:2000]
        view.save()
        audit.record(
            action="orchestrator.run_view.saved",
            actor=actor,
            target=view,
            body={"name": name, "query": view.query},
        )
    return view


@requires_actor
def delete_run_view(view_id: int, *, actor) -> None:
    """Delete one of the actor's saved views (someone else's is not visible: 404, audited)."""
    from audit import services as audit

    with transaction.atomic():
        view = SavedRunView.objects.restrict(actor, "delete").filter(pk=view_id).first()
        if view is None:
            _refuse(OperationNotVisible(actor, "delete", SavedRunView, view_id))
        audit.record(
            action="orchestrator.run_view.deleted",
            actor=actor,
            target=view,
            body={"name": view.name},
        )
        view.delete()


@requires_actor
def declare_manual_baseline(
    workflow: Workflow,
    *,
    ack_seconds: int,
    source: str,
    target_ack_seconds: int | None = None,
    manual_runs_per_week: int | None = None,
    actor,
    reason: str = "",
) -> ManualBaseline:
    """Declare (or change) a workflow's manual baseline with its source; checked, in history."""
    baseline = ManualBaseline.objects.filter(workflow=workflow).first() or ManualBaseline(
        workflow=workflow
    )
    baseline.ack_seconds = ack_seconds
    baseline.target_ack_seconds = target_ack_seconds
    baseline.manual_runs_per_week = manual_runs_per_week
    baseline.source = source
    with transaction.atomic():
        return save_governed(baseline, actor=actor, reason=reason or "manual baseline declared")
