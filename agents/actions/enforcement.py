"""The policy enforcement point: the one place every tool call an agent proposes goes through.

A model's output is untrusted input. It proposes a call; this module decides, in this order:

1. the agent is active (the kill switch);
2. the tool is in the agent's mandate, registered, and enabled;
3. the arguments are a JSON object valid against the tool's schema, and resolve to the
   canonical things the tool acts on (its `canonical` hook): every later check, the approval's
   digest, the records and the call use the canonical arguments (the proposed ones are kept
   beside them as evidence);
4. the agent's principal holds the permission the tool needs on its target (guardian);
5. the rate limit of the agent and tool, shared by every worker;
6. the governance policy decision: allow, deny, require approval, or escalate; the tool's own
   approval rule applies on top of an allow and of a policy's approval (both are then needed).

A refusal is final for that call and goes back to the model as a refusal. An approval is opened
for exactly these arguments (bound to their SHA-256 digest) and the step waits for it; an
escalation opens a task for a person. Every verdict, allowed or not, is audited with the check
or the policy rule and version that decided it, and kept as a ToolInvocation row.
Nothing the model says can grant anything: no argument is read as a permission or an approval.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist
from django.db import models, transaction

from agents import ratelimit
from agents.actions.registry import mark_active
from agents.models import Agent, AgentStatus, Tool, ToolInvocation, Verdict
from agents.tools import (
    ArgumentsRefused,
    FatalToolError,
    ToolContext,
    ToolSpec,
    registered_tools,
)
from audit import clock
from audit import services as audit
from governance.actions.approvals import request_approval, require_approval_for
from governance.actions.common import GovernanceError, digest
from governance.actions.escalations import open_escalation
from governance.actions.policies import PolicyDecision, decide
from governance.models import ApprovalRule, Effect, Role
from governance.permissions import AccessDenied, NotVisible, can, has_model_permission

DELEGATE_PERMISSION = "delegate"


class TargetRefused(Exception):
    """A tool's target resolution refuses the call (unknown object, host not allow-listed...)."""


class AgentStopped(Exception):
    """The agent was suspended or quarantined: it must not make another call."""

    retryable = False


@dataclass(frozen=True)
class CallSite:
    """Where a proposed call happens: its run and step, and the journal key of the call."""

    key: str
    run_id: int | None = None
    step_run_id: int | None = None
    step_id: str = ""
    run_initiator_id: int | None = None
    attempt: int = 1
    workflow_id: int | None = None


@dataclass(frozen=True)
class ToolVerdict:
    """What the control layer decided about one proposed call, and on what grounds."""

    verdict: str
    stage: str
    reason: str
    tool: str
    arguments_digest: str = ""
    policy: dict[str, Any] = field(default_factory=dict)
    approval_request: int | None = None
    escalation: int | None = None
    target: dict[str, Any] = field(default_factory=dict)
    approval_requests: list[int] = field(default_factory=list)
    arguments: dict[str, Any] | None = None  # decided on (canonical), as records keep them
    proposed_arguments: dict[str, Any] | None = None  # as proposed, when resolving changed them

    @property
    def required_approvals(self) -> list[int]:
        """Return every approval request the call needs (a policy's and the tool's own)."""
        if self.approval_requests:
            return list(self.approval_requests)
        return [self.approval_request] if self.approval_request is not None else []

    @property
    def allowed(self) -> bool:
        """Tell whether the call may run now."""
        return self.verdict == Verdict.ALLOW

    def as_json(self) -> dict[str, Any]:
        """Return the verdict as JSON (journaled, so a resumed step never decides twice)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolVerdict:
        """Rebuild a journaled verdict."""
        return cls(**data)


def _describe_target(target) -> dict[str, Any]:
    """Return a JSON description of a target (an instance, a model class, or None)."""
    if target is None:
        return {}
    if isinstance(target, type) and issubclass(target, models.Model):
        return {"type": target._meta.label_lower, "id": "", "repr": f"a new {target.__name__}"}
    if isinstance(target, models.Model):
        return {"type": target._meta.label_lower, "id": str(target.pk), "repr": str(target)[:200]}
    return {"type": "", "id": "", "repr": str(target)[:200]}


def _policy_target(target):
    """Return what the policy decision is told about the target (an instance or a description)."""
    if isinstance(target, models.Model):
        return target
    return _describe_target(target) or None


def _classification(target) -> str | None:
    """Return the data classification of a target, when it has one."""
    return getattr(target, "classification", None) if isinstance(target, models.Model) else None


def recordable(name: str, arguments: Any) -> Any:
    """Return a call's arguments as records keep them (a tool's digested ones by SHA-256)."""
    spec = registered_tools().get(name)
    return spec.recordable(arguments) if spec is not None else arguments


def _holds(agent: Agent, spec: ToolSpec, target) -> tuple[bool, str]:
    """Tell whether the agent's principal holds the tool's permission on its target."""
    if not spec.permission or target is None:
        return True, ""
    user = agent.user
    if spec.permission == DELEGATE_PERMISSION:
        if isinstance(target, Agent) and agent.delegates.filter(pk=target.pk).exists():
            return True, ""
        return False, f"{agent.slug} may not delegate to {getattr(target, 'slug', target)}"
    if isinstance(target, type) and issubclass(target, models.Model):
        if has_model_permission(user, spec.permission, target):
            return True, ""
        return False, f"{agent.slug} may not {spec.permission} {target._meta.verbose_name_plural}"
    if can(user, spec.permission, target):
        return True, ""
    return False, f"{agent.slug} may not {spec.permission} {target._meta.verbose_name} {target.pk}"


def decide_tool_call(
    agent_id: int,
    name: str,
    arguments: Any,
    site: CallSite,
    *,
    argument_error: str = "",
    now: dt.datetime | None = None,
) -> ToolVerdict:
    """Decide a proposed tool call through every check, record it and audit it."""
    now = now or clock.now()
    agent = Agent.objects.select_related("user", "owner").get(pk=agent_id)
    readable = isinstance(arguments, dict) and not argument_error
    digest_ = digest(arguments) if readable else ""
    context = ToolContext(
        idempotency_key=site.key,
        run_id=site.run_id,
        step_id=site.step_id,
        attempt=site.attempt,
        actor_id=agent.user_id,
        agent_id=agent.pk,
        workflow_id=site.workflow_id,
    )

    proposed = None

    def conclude(verdict: str, stage: str, reason: str, **extra) -> ToolVerdict:
        return _record(
            agent,
            ToolVerdict(
                verdict=verdict,
                stage=stage,
                reason=reason,
                tool=name,
                arguments_digest=digest_,
                arguments=recordable(name, arguments) if readable else None,
                proposed_arguments=proposed,
                **extra,
            ),
            arguments,
            site,
            now,
        )

    # 1. the kill switch
    if agent.status != AgentStatus.ACTIVE:
        return conclude(
            Verdict.DENY, "status", f"agent {agent.slug} is {agent.status}: {agent.status_reason}"
        )
    # 2. the mandate, the registry, the switch on the tool
    tool_row = Tool.objects.filter(name=name).first()
    spec = registered_tools().get(name)
    in_mandate = tool_row is not None and agent.tools.filter(pk=tool_row.pk).exists()
    if spec is None or not in_mandate:
        return conclude(Verdict.DENY, "mandate", f"{name!r} is not among {agent.slug}'s tools")
    if not tool_row.enabled:
        return conclude(Verdict.DENY, "disabled", f"tool {name!r} is disabled")
    # 3. the arguments
    if not readable:
        error = argument_error or "arguments must be a JSON object"
        return conclude(Verdict.DENY, "arguments", f"arguments refused: {error}")
    if errors := spec.argument_errors(arguments):
        return conclude(Verdict.DENY, "arguments", "arguments refused: " + "; ".join(errors))
    try:
        canonical = spec.canonical_arguments(arguments, context)
    except ArgumentsRefused as exc:
        return conclude(Verdict.DENY, "arguments", f"arguments refused: {exc}")
    if digest(canonical) != digest_:  # from here on, everything is decided on what it acts on
        proposed, arguments, digest_ = spec.recordable(arguments), canonical, digest(canonical)
    # 4. the permission on the target
    try:
        target = spec.target(arguments, context) if spec.target is not None else None
    except (TargetRefused, ObjectDoesNotExist, LookupError, ValueError) as exc:
        message = str(exc) if isinstance(exc, TargetRefused) else "it does not exist"
        return conclude(Verdict.DENY, "permission", f"target refused: {message}")
    described = _describe_target(target)
    allowed, why = _holds(agent, spec, target)
    if not allowed:
        return conclude(Verdict.DENY, "permission", why, target=described)
    # 5. the rate limit
    if tool_row.rate_limit is not None:
        within, count = ratelimit.hit(
            agent.pk,
            name,
            limit=tool_row.rate_limit,
            window=max(tool_row.rate_window_seconds, 1),
            now=now,
        )
        if not within:
            return conclude(
                Verdict.DENY,
                "rate_limit",
                f"rate limit of {tool_row.rate_limit} calls per "
                f"{tool_row.rate_window_seconds}s exceeded ({count})",
                target=described,
            )
    # 6. the policy decision
    decision = decide(
        actor=agent.user,
        action=f"tool.{name}",
        target=_policy_target(target),
        arguments=spec.recordable(arguments),  # a digested value is decided on by its digest
        classification=_classification(target),
        risk=tool_row.risk,
        run_id=site.run_id,
        step_id=site.step_id,
    )
    policy = decision.as_record()
    if decision.effect == Effect.DENY:
        return conclude(Verdict.DENY, "policy", decision.reason, policy=policy, target=described)
    if decision.effect == Effect.ESCALATE:
        escalation = open_escalation(
            reason="policy",
            summary=f"{agent.name} wants to call {name}: {decision.reason}",
            context={"tool": name, "arguments": recordable(name, arguments), "decision": policy},
            role=Role.objects.filter(pk=decision.escalate_to_id).first(),
            run_id=site.run_id,
            step_run_id=site.step_run_id,
            step_id=site.step_id,
            raised_by=agent.user,
            now=now,
        )
        return conclude(
            Verdict.ESCALATE,
            "policy",
            decision.reason,
            policy=policy,
            target=described,
            escalation=escalation.pk,
        )
    rules: list[ApprovalRule] = []
    if decision.effect == Effect.REQUIRE_APPROVAL and decision.approval_rule_id:
        rules.append(ApprovalRule.objects.get(pk=decision.approval_rule_id))
    if tool_row.approval_rule_id and tool_row.approval_rule_id not in {r.pk for r in rules}:
        rules.append(tool_row.approval_rule)  # the tool's own rule applies on top of policies
    if not rules and decision.effect == Effect.REQUIRE_APPROVAL:
        return conclude(
            Verdict.DENY,
            "policy",
            "the policy requires an approval but names no approval rule",
            policy=policy,
            target=described,
        )
    if rules:
        requests = [
            _open_approval(
                agent, name, spec.recordable(arguments), target, rule, decision, site, now
            )
            for rule in rules
        ]
        policy_asked = decision.effect == Effect.REQUIRE_APPROVAL
        return conclude(
            Verdict.APPROVAL,
            "policy" if policy_asked else "tool_approval_rule",
            "needs approval under " + " and ".join(repr(rule.slug) for rule in rules),
            policy=policy,
            target=described,
            approval_request=requests[0].pk,
            approval_requests=[request.pk for request in requests],
        )
    return conclude(Verdict.ALLOW, "policy", decision.reason, policy=policy, target=described)


def _open_approval(agent, name, arguments, target, rule, decision: PolicyDecision, site, now):
    """Open an approval request bound to exactly these arguments."""
    initiator = None
    if site.run_initiator_id:
        initiator = get_user_model().objects.filter(pk=site.run_initiator_id).first()
    return request_approval(
        action=f"tool.{name}",
        approval_rule=rule,
        arguments=arguments,
        target=target if isinstance(target, models.Model) else _describe_target(target) or None,
        summary=f"{agent.name} ({agent.slug}) asks to call {name} with "
        f"{json.dumps(arguments, sort_keys=True)[:500]}",
        risk=max(
            [decision.risk, Tool.objects.get(name=name).risk],
            key=lambda risk: {"low": 0, "medium": 1, "high": 2, "critical": 3}.get(risk, 1),
        ),
        requested_by=agent.user,
        run_initiator=initiator,
        accountable_owner=agent.owner,
        run_id=site.run_id,
        step_run_id=site.step_run_id,
        step_id=site.step_id,
        decision=decision,
        now=now,
    )


def _record(agent: Agent, verdict: ToolVerdict, arguments, site: CallSite, now) -> ToolVerdict:
    """Keep the verdict as a ToolInvocation and write it to the audit log."""
    policy = verdict.policy or {}
    arguments = recordable(verdict.tool, arguments)
    ToolInvocation.objects.create(
        agent=agent,
        agent_slug=agent.slug,
        tool=verdict.tool[:200],
        arguments=arguments if isinstance(arguments, dict) else {"unreadable": str(arguments)},
        proposed_arguments=verdict.proposed_arguments,
        arguments_digest=verdict.arguments_digest,
        verdict=verdict.verdict,
        stage=verdict.stage,
        reason=verdict.reason,
        policy=policy.get("policy_slug") or "",
        policy_version=policy.get("policy_version"),
        policy_rule=policy.get("rule_id"),
        approval_request=verdict.approval_request,
        escalation=verdict.escalation,
        key=site.key,
        run_id=site.run_id,
        step_id=site.step_id,
        created_at=now,
    )
    audit.record(
        action="agents.tool.decided",
        actor=agent.user,
        actor_kind="agent",
        target_type="agents.tool",
        target_id=verdict.tool[:64],
        target_repr=verdict.target.get("repr", "") or verdict.tool,
        run_id=site.run_id,
        step_id=site.step_id or None,
        decision={
            "verdict": verdict.verdict,
            "stage": verdict.stage,
            "rule": policy.get("rule_id")
            if verdict.stage == "policy"
            else f"control:{verdict.stage}",
            "policy": policy.get("policy_slug") or "",
            "policy_version": policy.get("policy_version"),
        },
        body={
            "agent": agent.slug,
            "tool": verdict.tool,
            "arguments": arguments if isinstance(arguments, dict) else str(arguments),
            "proposed_arguments": verdict.proposed_arguments,
            "arguments_digest": verdict.arguments_digest,
            "reason": verdict.reason,
            "target": verdict.target,
            "approval_request": verdict.approval_request,
            "approval_requests": verdict.required_approvals,
            "escalation": verdict.escalation,
            "key": site.key,
        },
    )
    return verdict


def as_decided(spec: ToolSpec, arguments: dict, context: ToolContext, verdict: ToolVerdict):
    """Return the canonical arguments a call runs with; refuse ones the verdict was not taken on.

    They are resolved again (a catalogue may have changed since the decision): arguments that
    no longer resolve, or resolve to other things than the decision saw, need a new decision.
    """
    canonical = spec.canonical_arguments(arguments, context)
    if verdict.arguments_digest and digest(canonical) != verdict.arguments_digest:
        raise ArgumentsRefused(
            f"the arguments of {spec.name} now resolve to other things than when the call was "
            "decided; propose it again"
        )
    return canonical


def refusal(verdict: ToolVerdict, reason: str | None = None) -> dict[str, Any]:
    """Return what the model is told about a call it may not make."""
    return {
        "ok": False,
        "refused": True,
        "stage": verdict.stage,
        "reason": reason or verdict.reason,
    }


def execute_tool_call(
    agent_id: int,
    name: str,
    arguments: dict[str, Any],
    verdict: ToolVerdict,
    context: ToolContext,
    *,
    invocation_key: str,
    workflow_id: int | None = None,
) -> dict[str, Any]:
    """Run a call the control layer allowed (or that was approved for these arguments).

    The kill switch is read again right before the call; the arguments are resolved again and
    must be what the verdict was taken on; an approval is checked again against their digest
    (the call gets exactly the canonical arguments it covers). A tool's own refusal (a final
    error, a permission re-check) is an outcome for the model; a retryable error propagates so
    the step's retry policy applies.
    """
    agent = Agent.objects.select_related("user").get(pk=agent_id)
    if agent.status != AgentStatus.ACTIVE:
        raise AgentStopped(f"agent {agent.slug} is {agent.status}: {agent.status_reason}")
    spec = registered_tools()[name]
    context = dataclasses.replace(
        context, actor_id=agent.user_id, agent_id=agent.pk, workflow_id=workflow_id
    )
    arguments = as_decided(spec, arguments, context, verdict)
    if verdict.verdict == Verdict.APPROVAL:
        for request_id in verdict.required_approvals:
            require_approval_for(request_id, recordable(name, arguments))
    elif verdict.verdict != Verdict.ALLOW:
        raise ValueError(f"a {verdict.verdict} verdict cannot be executed")
    try:
        with transaction.atomic():
            outcome = {"ok": True, "result": spec.call(arguments, context)}
    except (FatalToolError, AccessDenied, NotVisible, GovernanceError) as exc:
        outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        if hasattr(exc, "audit"):  # its audit entry was undone with the tool's savepoint
            exc.recorded = False
            exc.audit()
    try:
        json.dumps(outcome)
    except (TypeError, ValueError):
        outcome = {"ok": False, "error": "ResultNotJSON", "message": f"{name} returned non-JSON"}
    now = clock.now()
    ToolInvocation.objects.filter(key=invocation_key).update(executed_at=now, outcome=outcome)
    audit.record(
        action="agents.tool.called",
        actor=agent.user,
        actor_kind="agent",
        target_type="agents.tool",
        target_id=name[:64],
        target_repr=verdict.target.get("repr", "") or name,
        run_id=context.run_id,
        step_id=context.step_id or None,
        decision={
            "verdict": verdict.verdict,
            "approval_request": verdict.approval_request,
            "policy_version": (verdict.policy or {}).get("policy_version"),
        },
        body={
            "agent": agent.slug,
            "tool": name,
            "arguments": spec.recordable(arguments),
            "arguments_digest": digest(arguments),
            "outcome": outcome,
            "idempotency_key": context.idempotency_key,
        },
    )
    mark_active(agent.pk)
    return outcome
