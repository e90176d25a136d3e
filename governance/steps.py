"""Governance's parts of the engine, duck-typed: the `approval` step type and `escalate`.

The engine registers them in OrchestratorConfig.ready(); governance never imports it. The step
type follows orchestrator/steptypes.py: `execute(ctx)` answers with ctx.complete / ctx.wait /
ctx.fail / ctx.resume, and `on_wake(ctx, reason, payload)` continues after a signal or a timer.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from audit.actors import SYSTEM
from governance.actions import approvals
from governance.actions.escalations import escalate_failed_step
from governance.models import (
    ApprovalRequest,
    ApprovalRule,
    ApprovalStatus,
    Effect,
    Escalation,
    EscalationStatus,
    Resolution,
    RiskLevel,
)

__all__ = ["ApprovalStep", "escalate_failed_step"]

_FAILURES = {
    ApprovalStatus.REJECTED: ("ApprovalRejected", "rejected"),
    ApprovalStatus.CHANGES_REQUESTED: ("ChangesRequested", "sent back for changes"),
    ApprovalStatus.EXPIRED: ("ApprovalExpired", "expired: nobody decided in time"),
    ApprovalStatus.CANCELLED: ("ApprovalCancelled", "cancelled"),
}
BUSY_RETRY_SECONDS = 1.0


def _seconds_until(moment: dt.datetime, now: dt.datetime) -> float:
    """Return the seconds from now to a moment (0 when it has passed)."""
    return max((moment - now).total_seconds(), 0.0)


class ApprovalStep:
    """Wait until a person (or N distinct people) decides; rejection follows `on_failure`.

    Fields: `rule` (an approval rule's slug: role, N, SLA, escalation chain), `action` (what
    the policy decision is about; default `workflow.<slug>.<step>`), `arguments` (templated:
    exactly what is approved, bound by its digest), `summary`, `risk`, `classification`.
    The step's timer is the SLA: when it fires the request escalates, and the step waits again.
    A policy that escalates instead opens a human escalation, which the step waits for: taken
    over, the person's result is the step's output; sent back, the step asks again (the policy
    decides anew); stopped or cancelled, the step fails.
    """

    name = "approval"
    fields: dict[str, Any] = {
        "rule": {"type": "string", "minLength": 1},
        "action": {"type": "string", "minLength": 1},
        "arguments": {"type": "object"},
        "summary": {"type": "string"},
        "risk": {"enum": list(RiskLevel.values)},
        "classification": {"type": "string"},
    }
    required = ("rule",)
    transactional = True

    def check(self, step: dict[str, Any]) -> list[tuple[str, str]]:
        """Refuse an approval rule that does not exist."""
        if not ApprovalRule.objects.filter(slug=step["rule"]).exists():
            return [("rule", f"no approval rule has the slug {step['rule']!r}")]
        return []

    def execute(self, ctx):
        """Take the policy decision, open the request, and wait for its outcome or its SLA."""
        spec = ctx.spec
        arguments = ctx.render(spec.get("arguments", {}))
        request, decision = approvals.open_step_approval(
            run=ctx.run,
            step=ctx.step,
            rule_slug=spec["rule"],
            arguments=arguments,
            action=spec.get("action", ""),
            summary=str(ctx.render(spec.get("summary", ""))),
            risk=spec.get("risk"),
            classification=spec.get("classification"),
            now=ctx.now,
        )
        if request is None and decision.effect == Effect.ESCALATE:
            escalation = approvals.policy_escalation_for_step(ctx.step.pk)
            ctx.record_input(
                {
                    "escalation": escalation.pk,
                    "arguments": arguments,
                    "arguments_digest": escalation.context.get("arguments_digest"),
                    "policy": decision.as_record(),
                }
            )
            return ctx.wait(signal=escalation.signal_name)
        if request is None:
            return ctx.fail(
                "PolicyDenied", decision.reason, retryable=False, policy=decision.as_record()
            )
        ctx.record_input(
            {
                "approval_request": request.pk,
                "arguments": arguments,
                "arguments_digest": request.arguments_digest,
            }
        )
        return ctx.wait(signal=request.signal_name, seconds=_seconds_until(request.due_at, ctx.now))

    def on_wake(self, ctx, reason: str, payload: Any):
        """On the decision: go on or fail. On the SLA timer: escalate and wait again."""
        if "escalation" in (ctx.step.input or {}):
            return self._after_escalation(ctx)
        request_id = (ctx.step.input or {}).get("approval_request")
        if reason == "signal":
            # The request row, not the signal's payload, says what was decided: a signal only
            # says "look again", so no sender can approve by forging one.
            request = ApprovalRequest.objects.get(pk=request_id)
            if request.status == ApprovalStatus.PENDING:
                return ctx.wait(
                    signal=request.signal_name, seconds=_seconds_until(request.due_at, ctx.now)
                )
            return self._outcome(ctx, request.status, approvals.outcome_payload(request))
        request = approvals.escalate_overdue(
            request_id, actor=SYSTEM, now=ctx.now, announce_to_run=False
        )
        if request is None:  # someone is deciding right now; look again shortly
            return ctx.wait(signal=f"approval:{request_id}", seconds=BUSY_RETRY_SECONDS)
        if request.status == ApprovalStatus.PENDING:
            return ctx.wait(
                signal=request.signal_name, seconds=_seconds_until(request.due_at, ctx.now)
            )
        return self._outcome(ctx, request.status, approvals.outcome_payload(request))

    def _outcome(self, ctx, status: str | None, payload: dict[str, Any]):
        """Complete on approval; fail (not retryable) on anything else."""
        if status == ApprovalStatus.APPROVED:
            return ctx.complete({"approved": True, **payload})
        error_type, words = _FAILURES.get(status, ("ApprovalFailed", f"ended as {status!r}"))
        return ctx.fail(
            error_type,
            f"approval request #{payload.get('request')} was {words}",
            retryable=False,
            approval=payload,
        )

    def _after_escalation(self, ctx):
        """Carry out what a person resolved for the policy's escalation this step waits for.

        The Escalation row, not the signal's payload, says what was resolved (as for approval
        requests): a signal only says "look again".
        """
        escalation = Escalation.objects.get(pk=ctx.step.input["escalation"])
        if escalation.status == EscalationStatus.OPEN:
            return ctx.wait(signal=escalation.signal_name)
        if escalation.status == EscalationStatus.CANCELLED:
            return ctx.fail(
                "EscalationCancelled",
                f"escalation #{escalation.pk} was cancelled: {escalation.comment}",
                retryable=False,
                escalation=escalation.pk,
            )
        if escalation.resolution == Resolution.TAKE_OVER:
            return ctx.complete(escalation.result)
        if escalation.resolution == Resolution.RETRY:
            # Sent back: execute again, so the policy decides anew on the same arguments.
            return ctx.resume()
        return ctx.fail(
            "StoppedByPerson",
            f"{escalation.resolved_by_name} stopped it: {escalation.comment}".rstrip(": "),
            retryable=False,
            escalation=escalation.pk,
        )
