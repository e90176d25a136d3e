"""Step types: what a step of each `type` does when the engine runs it.

A step type is any object with `name`, `fields` (JSON Schema properties of its own fields),
`required`, `transactional`, `check(step) -> [(field, message)]`, `execute(ctx)` and
`on_wake(ctx, reason, payload)`. Handlers answer through the context: `ctx.complete(output)`,
`ctx.wait(...)`, `ctx.fail(...)`, or by raising. Other apps (governance's approvals, agents)
provide theirs; this app registers them in `OrchestratorConfig.ready`, so the engine's core never
changes to add one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction

from agents.actions import enforcement
from agents.tools import ToolContext, UnknownTool, get_tool
from audit.actors import SYSTEM
from governance.actions.approvals import POLICY_ESCALATION, escalate_overdue
from governance.models import ApprovalRequest, ApprovalStatus, Escalation, Resolution
from orchestrator.durations import parse_duration
from orchestrator.models import EffectJournal

DECISION_SUFFIX = "decision"  # the journal key of a tool step's verdict: <step key>:decision
BUSY_RETRY_SECONDS = 1.0

_step_types: dict[str, Any] = {}
_failure_handlers: dict[str, Callable] = {}
_reserved_signal_prefixes: set[str] = set()


def register_step_type(step_type) -> None:
    """Make a step type available to workflow definitions."""
    _step_types[step_type.name] = step_type


def step_types() -> dict[str, Any]:
    """Return every registered step type by name."""
    return _step_types


def register_failure_handler(name: str, handler: Callable) -> None:
    """Add an `on_failure` choice, e.g. `escalate`, handled by another app."""
    _failure_handlers[name] = handler


def failure_handlers() -> dict[str, Callable]:
    """Return the extra `on_failure` handlers by name."""
    return _failure_handlers


def reserve_signal_prefix(prefix: str) -> None:
    """Keep signals named `prefix...` for the app that owns them (e.g. `approval:`)."""
    _reserved_signal_prefixes.add(prefix)


def reserved_signal_prefix(name: str) -> str | None:
    """Return the reserved prefix a signal name starts with, if any."""
    return next((p for p in _reserved_signal_prefixes if name.startswith(p)), None)


class StepType:
    """Defaults for step types: no fields, no checks, transactional, nothing to do on wake."""

    name = ""
    fields: dict[str, Any] = {}
    required: tuple[str, ...] = ()
    transactional = True
    # False when execute() writes nothing to the database: the engine then needs no savepoint.
    writes_database = True

    def check(self, step: dict[str, Any]) -> list[tuple[str, str]]:
        """Return (field, message) for each problem beyond the JSON Schema."""
        return []

    def execute(self, ctx):
        """Run the step and return ctx.complete(...), ctx.wait(...) or ctx.fail(...)."""
        raise NotImplementedError

    def on_wake(self, ctx, reason: str, payload: Any):
        """Continue a waiting step after a timer, a signal or a timeout."""
        return ctx.fail("UnexpectedWake", f"{self.name} steps do not wait (woken by {reason})")


class ToolStep(StepType):
    """Call a registered tool through the enforcement point, for the run's initiator.

    The call is decided like an agent's (agents/actions/enforcement.py), acting for the person
    who started the run (the system when nobody did), with the workflow and run in the policy's
    context. A denial fails the step (its `on_failure` applies) naming what decided it; an
    approval or an escalation makes the step wait durably and resume on the decision. The
    verdict and the result are each journaled once: a redelivered or resumed step replays them,
    so it never decides twice, never opens a second request and never calls twice. Right before
    the call, everything that can have changed since the decision is checked again.
    """

    name = "tool"
    fields = {"tool": {"type": "string", "minLength": 1}, "args": {"type": "object"}}
    required = ("tool",)
    # The call and its journal entry commit on their own, before the step is finished: a worker
    # that dies (or loses its lease) after the call leaves the result for the next attempt,
    # which reuses it instead of calling again.
    transactional = False

    def check(self, step):
        try:
            spec = get_tool(step["tool"])
        except UnknownTool as exc:
            return [("tool", str(exc))]
        args = step.get("args", {})
        if "{{" in str(args) or "{%" in str(args):
            return []  # templated arguments are validated when rendered, before the call
        return [("args", message) for message in spec.argument_errors(args)]

    def execute(self, ctx):
        spec = get_tool(ctx.spec["tool"])
        arguments = ctx.render(ctx.spec.get("args", {}))
        ctx.record_input(arguments)
        caller = enforcement.Caller.of_user(ctx.run.started_by_id)
        site = _call_site(ctx)
        verdict = self._verdict(ctx, spec.name, arguments, caller, site)
        context = ToolContext(
            idempotency_key=ctx.idempotency_key,
            run_id=ctx.run.pk,
            step_id=ctx.step.step_id,
            attempt=ctx.attempt,
            workflow_id=ctx.run.workflow_id,
        )
        standing = enforcement.standing(verdict, arguments, context)
        if standing.state == enforcement.DECIDE_AGAIN:
            return self.execute(ctx)  # the sent-back escalation counts: a fresh decision key
        if standing.state == enforcement.WAIT:
            seconds = None
            if standing.due_at is not None:
                seconds = max((standing.due_at - ctx.now).total_seconds(), 0.0)
            return ctx.wait(signal=standing.signal, seconds=seconds)
        if standing.state == enforcement.SUPPLIED:
            return ctx.complete(standing.result)
        if standing.state != enforcement.RUN:
            return ctx.fail(
                standing.error_type,
                standing.reason,
                retryable=False,
                stage=verdict.stage,
                policy=verdict.policy,
            )

        def perform(context):
            outcome = enforcement.execute_tool_call(
                caller,
                spec.name,
                arguments,
                verdict,
                context,
                invocation_key=site.key,
                workflow=site.workflow,
                errors_as_outcome=False,
            )
            return outcome["result"]

        try:
            result = ctx.effect(spec.name, arguments, perform)
        except enforcement.CallRefused as refused:
            # The refusal undid the attempt's writes; it is kept and audited on its own.
            with transaction.atomic():
                context = ToolContext(
                    idempotency_key=ctx.idempotency_key,
                    run_id=ctx.run.pk,
                    step_id=ctx.step.step_id,
                    attempt=ctx.attempt,
                    workflow_id=ctx.run.workflow_id,
                )
                enforcement.record_refused(
                    caller, spec.name, arguments, verdict, refused, context, invocation_key=site.key
                )
            return ctx.fail(
                "ToolCallRefused",
                refused.reason,
                retryable=False,
                stage=refused.stage,
                policy=refused.policy,
            )
        return ctx.complete(result)

    def _verdict(self, ctx, name, arguments, caller, site) -> enforcement.ToolVerdict:
        """Take (or replay) the enforcement point's verdict on the step's call."""
        request = {
            "tool": name,
            "arguments": enforcement.recordable(name, arguments),
            "decision": True,
        }
        data = ctx.effect(
            f"decide:{name}",
            request,
            lambda context: enforcement.decide_tool_call(caller, name, arguments, site).as_json(),
            key_suffix=site.key.removeprefix(f"{ctx.idempotency_key}:"),
        )
        return enforcement.ToolVerdict.from_json(data)

    def on_wake(self, ctx, reason, payload):
        """A decision or a resolution arrived (or an approval's SLA passed): look again."""
        if reason != "signal":
            waiting = self._pending_approval(ctx)
            if waiting is not None:
                request = escalate_overdue(
                    waiting, actor=SYSTEM, now=ctx.now, announce_to_run=False
                )
                if request is None:  # someone is deciding right now: look again shortly
                    return ctx.wait(signal=f"approval:{waiting}", seconds=BUSY_RETRY_SECONDS)
                if request.status == ApprovalStatus.PENDING:
                    seconds = max((request.due_at - ctx.now).total_seconds(), 0.0)
                    return ctx.wait(signal=request.signal_name, seconds=seconds)
        return ctx.resume()

    def _pending_approval(self, ctx) -> int | None:
        """Return the pending approval request the step's journaled verdict waits for."""
        key = _call_site(ctx).key
        data = EffectJournal.objects.filter(key=key).values_list("result", flat=True).first()
        if not data:
            return None
        verdict = enforcement.ToolVerdict.from_json(data)
        pending = ApprovalRequest.objects.filter(
            pk__in=verdict.required_approvals, status=ApprovalStatus.PENDING
        )
        return pending.order_by("pk").values_list("pk", flat=True).first()


def _decision_suffix(ctx) -> str:
    """Return the journal key suffix of the step's current verdict.

    Each policy escalation a person sent back asks for a fresh decision: `decision.<n>` after n.
    """
    sent_back = Escalation.objects.filter(
        step_run_id=ctx.step.pk, reason=POLICY_ESCALATION, resolution=Resolution.RETRY
    ).count()
    return DECISION_SUFFIX if not sent_back else f"{DECISION_SUFFIX}.{sent_back}"


def _call_site(ctx) -> enforcement.CallSite:
    """Return where a tool step's call happens, for the enforcement point."""
    return enforcement.CallSite(
        key=f"{ctx.idempotency_key}:{_decision_suffix(ctx)}",
        run_id=ctx.run.pk,
        step_run_id=ctx.step.pk,
        step_id=ctx.step.step_id,
        run_initiator_id=ctx.run.started_by_id,
        attempt=ctx.attempt,
        workflow_id=ctx.run.workflow_id,
        workflow=ctx.run.workflow.slug,
    )


class SetStep(StepType):
    """Compute a value from the run input and earlier outputs."""

    name = "set"
    writes_database = False
    fields = {"value": {}}
    required = ("value",)

    def execute(self, ctx):
        return ctx.complete(ctx.render(ctx.spec["value"]))


class NoopStep(StepType):
    """Do nothing; useful to join branches or as a placeholder."""

    name = "noop"
    writes_database = False

    def execute(self, ctx):
        return ctx.complete(None)


class SleepStep(StepType):
    """Wait durably for a duration (seconds to days); the timer lives in the database."""

    name = "sleep"
    writes_database = False
    fields = {"duration": {"type": ["number", "string"]}}
    required = ("duration",)

    def check(self, step):
        value = step["duration"]
        if isinstance(value, str) and "{{" in value:
            return []
        try:
            parse_duration(value)
        except ValueError as exc:
            return [("duration", str(exc))]
        return []

    def execute(self, ctx):
        seconds = parse_duration(ctx.render(ctx.spec["duration"]))
        return ctx.wait(seconds=seconds)

    def on_wake(self, ctx, reason, payload):
        return ctx.complete({"slept_seconds": parse_duration(ctx.render(ctx.spec["duration"]))})


class WaitStep(StepType):
    """Wait for a named signal from outside, with a timeout and what to do when it passes."""

    name = "wait"
    writes_database = False
    fields = {
        "signal": {"type": "string", "minLength": 1},
        "timeout": {"type": ["number", "string"]},
        "on_timeout": {"enum": ["fail", "continue"]},
        "timeout_output": {},
    }
    required = ("signal",)

    def check(self, step):
        if "timeout" in step:
            try:
                parse_duration(step["timeout"])
            except ValueError as exc:
                return [("timeout", str(exc))]
        return []

    def execute(self, ctx):
        timeout = ctx.spec.get("timeout")
        return ctx.wait(
            signal=ctx.render(ctx.spec["signal"]),
            seconds=parse_duration(timeout) if timeout is not None else None,
        )

    def on_wake(self, ctx, reason, payload):
        if reason == "signal":
            return ctx.complete(payload)
        if ctx.spec.get("on_timeout", "fail") == "continue":
            return ctx.complete(ctx.render(ctx.spec.get("timeout_output")))
        return ctx.fail(
            "WaitTimedOut", f"no signal {ctx.spec['signal']!r} arrived in time", retryable=False
        )


for _builtin in (ToolStep(), SetStep(), NoopStep(), SleepStep(), WaitStep()):
    register_step_type(_builtin)
