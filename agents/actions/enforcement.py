"""The policy enforcement point: the one place every tool call goes through.

Two callers propose calls: an agent (its model's output is untrusted input) and a workflow's
`tool` step, which acts for the run's initiator (a run with no initiator acts as the system:
policies see `actor.kind == "system"`, and it holds no permission on any target). Whoever the
call acts for (its `Caller`), this module decides, in this order:

1. the caller is active (an agent's kill switch; a person's account);
2. the tool is registered, has its governed row, is enabled, and (for an agent) is in its mandate;
3. the arguments are a JSON object valid against the tool's schema, and resolve to the
   canonical things the tool acts on (its `canonical` hook): every later check, the approval's
   digest, the records and the call use the canonical arguments (the proposed ones are kept
   beside them as evidence);
4. the caller holds the permission the tool needs on its target (guardian);
5. the rate limit of the caller and tool, shared by every worker;
6. the governance policy decision: allow, deny, require approval, or escalate; the tool's own
   approval rule applies on top of an allow and of a policy's approval (both are then needed).

A refusal is final for that call: the model is told, a tool step fails. An approval is opened
for exactly these arguments (bound to their SHA-256 digest) and the step waits for it; for a
tool step, an approval this run already holds for the same action, digest and approval rule
(a workflow's own `approval` step) stands instead of a new request. An escalation opens a task
for a person. Every verdict, allowed or not, is audited with the check or the policy rule and
version that decided it, and kept as a ToolInvocation row.

When the call executes, maybe long after (an approval waited, a retry came), everything that can
have changed is checked again (`recheck`): the caller is active, the tool enabled and in the
mandate, the permission on the target held, and the current policy's verdict still admits the
call with the approvals it has. Otherwise it does not run, and the refusal says what changed.
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
    storable_outcome,
)
from audit import clock
from audit import services as audit
from audit.actors import SYSTEM
from governance.actions.approvals import (
    approval_applies,
    request_approval,
    require_approval_for,
    standing_approval,
)
from governance.actions.common import GovernanceError, digest
from governance.actions.escalations import open_escalation
from governance.actions.policies import PolicyDecision, build_context, decide_on
from governance.models import (
    ApprovalRequest,
    ApprovalRule,
    ApprovalStatus,
    Effect,
    Escalation,
    EscalationStatus,
    Resolution,
    Role,
)
from governance.permissions import AccessDenied, NotVisible, can, has_model_permission

DELEGATE_PERMISSION = "delegate"


class TargetRefused(Exception):
    """A tool's target resolution refuses the call (unknown object, host not allow-listed...)."""


class AgentStopped(Exception):
    """The agent was suspended or quarantined: it must not make another call."""

    retryable = False


class CallRefused(Exception):
    """A decided call may not run now: something it was decided on changed (see `recheck`)."""

    retryable = False

    def __init__(self, stage: str, reason: str, policy: dict[str, Any] | None = None):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
        self.policy = policy or {}


@dataclass(frozen=True)
class Caller:
    """Who a tool call acts for: an agent, a person (a run's initiator), or the system.

    `user` is the agent's or person's user row, or SYSTEM (never None).
    """

    user: Any
    agent: Agent | None = None

    @classmethod
    def of_agent(cls, agent_id: int) -> Caller:
        """Return the caller for an agent (read now: its status and mandate are current)."""
        agent = Agent.objects.select_related("user", "owner").get(pk=agent_id)
        return cls(user=agent.user, agent=agent)

    @classmethod
    def of_user(cls, user_id: int | None) -> Caller:
        """Return the caller for a user by id (None, or a deleted user: SYSTEM).

        An agent's user acts as that agent (its mandate and kill switch apply). SYSTEM holds no
        permission on any target, so a call that needs one is refused for it.
        """
        agent = Agent.objects.select_related("user", "owner").filter(user_id=user_id).first()
        if user_id and agent is not None:
            return cls(user=agent.user, agent=agent)
        user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
        return cls(user=user if user is not None else SYSTEM)

    @property
    def kind(self) -> str:
        """Return the audit actor kind: agent, user or system."""
        if self.agent is not None:
            return "agent"
        return "system" if self.user is SYSTEM else "user"

    @property
    def name(self) -> str:
        """Return how records name the caller."""
        if self.agent is not None:
            return self.agent.slug
        return "the system" if self.user is SYSTEM else self.user.get_username()

    @property
    def rate_key(self) -> str:
        """Return the key the rate limit counts this caller's calls under."""
        if self.agent is not None:
            return f"agent:{self.agent.pk}"
        return "system" if self.user is SYSTEM else f"user:{self.user.pk}"

    def refreshed(self) -> Caller | None:
        """Return the caller as the database holds it now (None when it was deleted)."""
        if self.agent is not None:
            agent = Agent.objects.select_related("user", "owner").filter(pk=self.agent.pk).first()
            return Caller(user=agent.user, agent=agent) if agent is not None else None
        if self.user is SYSTEM:
            return self
        user = get_user_model().objects.filter(pk=self.user.pk).first()
        return Caller(user=user) if user is not None else None

    def inactive_reason(self) -> str:
        """Return why the caller may not act now ('' when it may)."""
        if self.agent is not None and self.agent.status != AgentStatus.ACTIVE:
            return f"agent {self.agent.slug} is {self.agent.status}: {self.agent.status_reason}"
        if self.agent is None and self.user is not SYSTEM and not self.user.is_active:
            return f"{self.name}'s account is deactivated"
        return ""


def as_caller(caller: Caller | int) -> Caller:
    """Return a Caller; an int is an agent's id (what the agent step passes)."""
    return caller if isinstance(caller, Caller) else Caller.of_agent(caller)


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
    workflow: str = ""  # the workflow's slug, for the policy decision's context


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


def _holds(caller: Caller, spec: ToolSpec, target) -> tuple[bool, str]:
    """Tell whether the caller holds the tool's permission on its target."""
    if not spec.permission or target is None:
        return True, ""
    user, who = caller.user, caller.name
    if spec.permission == DELEGATE_PERMISSION:
        agent = caller.agent
        if (
            agent is not None
            and isinstance(target, Agent)
            and agent.delegates.filter(pk=target.pk).exists()
        ):
            return True, ""
        return False, f"{who} may not delegate to {getattr(target, 'slug', target)}"
    if user is SYSTEM:
        return False, f"a run without an initiator holds no permission ({spec.permission} needed)"
    if isinstance(target, type) and issubclass(target, models.Model):
        if has_model_permission(user, spec.permission, target):
            return True, ""
        return False, f"{who} may not {spec.permission} {target._meta.verbose_name_plural}"
    if can(user, spec.permission, target):
        return True, ""
    return False, f"{who} may not {spec.permission} {target._meta.verbose_name} {target.pk}"


def _tool_refusal(caller: Caller, name: str) -> tuple[Tool | None, ToolSpec | None, str, str]:
    """Return the tool's row and spec, and (stage, reason) when the caller may not use it."""
    tool_row = Tool.objects.filter(name=name).first()
    spec = registered_tools().get(name)
    if caller.agent is not None:
        in_mandate = tool_row is not None and caller.agent.tools.filter(pk=tool_row.pk).exists()
        if spec is None or not in_mandate:
            return tool_row, spec, "mandate", f"{name!r} is not among {caller.name}'s tools"
    elif spec is None or tool_row is None:
        return tool_row, spec, "mandate", f"{name!r} is not a registered, governed tool"
    if not tool_row.enabled:
        return tool_row, spec, "disabled", f"tool {name!r} is disabled"
    return tool_row, spec, "", ""


def _tool_context(caller: Caller, site: CallSite) -> ToolContext:
    """Return the context a tool's target resolution sees for a call at this site."""
    return ToolContext(
        idempotency_key=site.key,
        run_id=site.run_id,
        step_id=site.step_id,
        attempt=site.attempt,
        actor_id=caller.user.pk,
        agent_id=caller.agent.pk if caller.agent is not None else None,
        workflow_id=site.workflow_id,
    )


def _resolve_target(spec: ToolSpec, arguments: dict, context: ToolContext):
    """Return the tool's target for these arguments; raise TargetRefused when there is none."""
    if spec.target is None:
        return None
    try:
        return spec.target(arguments, context)
    except TargetRefused:
        raise
    except (ObjectDoesNotExist, LookupError, ValueError) as exc:
        raise TargetRefused("it does not exist") from exc


def _policy_decision(
    caller: Caller, name, spec, arguments, target, tool_row, site
) -> tuple[PolicyDecision, dict[str, Any]]:
    """Take (and audit) the governance policy decision on a call; return it with its facts.

    The facts (the decision's context and the tool's own approval rule) are kept with the call,
    so a dry run can replay it under a draft policy without reading anything else.
    """
    policy_target = _policy_target(target)
    context = build_context(
        actor=caller.user,
        action=f"tool.{name}",
        target=policy_target,
        arguments=spec.recordable(arguments),  # a digested value is decided on by its digest
        classification=_classification(target),
        risk=tool_row.risk,
        run_id=site.run_id,
        step_id=site.step_id,
        workflow=site.workflow,
    )
    decision = decide_on(
        context,
        actor=caller.user,
        target=policy_target,
        risk=tool_row.risk,
        run_id=site.run_id,
        step_id=site.step_id,
    )
    return decision, {"context": context, "tool_approval_rule": tool_row.approval_rule_id}


def _approval_rules(decision: PolicyDecision, tool_row: Tool) -> list[ApprovalRule]:
    """Return the approval rules a call needs: the policy's, then the tool's own."""
    rules: list[ApprovalRule] = []
    if decision.effect == Effect.REQUIRE_APPROVAL and decision.approval_rule_id:
        rules.append(ApprovalRule.objects.get(pk=decision.approval_rule_id))
    if tool_row.approval_rule_id and tool_row.approval_rule_id not in {r.pk for r in rules}:
        rules.append(tool_row.approval_rule)  # the tool's own rule applies on top of policies
    return rules


def describe_decision(policy: dict[str, Any]) -> str:
    """Return a policy decision as people read it: the policy, its version, the rule, why."""
    if not policy.get("policy_slug"):
        return policy.get("reason", "")
    return (
        f"policy {policy['policy_slug']!r} v{policy.get('policy_version')}, rule "
        f"{policy.get('rule_id')} ({policy.get('rule_name', '')!r}): {policy.get('reason', '')}"
    )


def decide_tool_call(
    caller: Caller | int,
    name: str,
    arguments: Any,
    site: CallSite,
    *,
    argument_error: str = "",
    now: dt.datetime | None = None,
) -> ToolVerdict:
    """Decide a proposed tool call through every check, record it and audit it.

    `caller` is who the call acts for: an agent (a Caller, or the agent's id) or a person.
    """
    now = now or clock.now()
    caller = as_caller(caller)
    readable = isinstance(arguments, dict) and not argument_error
    digest_ = digest(arguments) if readable else ""
    context = _tool_context(caller, site)

    proposed = None
    facts = None  # the policy decision's, once taken

    def conclude(verdict: str, stage: str, reason: str, **extra) -> ToolVerdict:
        return _record(
            caller,
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
            policy_facts=facts,
        )

    # 1. the kill switch (an agent's), the account (a person's)
    if why := caller.inactive_reason():
        return conclude(Verdict.DENY, "status", why)
    # 2. the registry, the mandate, the switch on the tool
    tool_row, spec, stage, why = _tool_refusal(caller, name)
    if stage:
        return conclude(Verdict.DENY, stage, why)
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
        target = _resolve_target(spec, arguments, context)
    except TargetRefused as exc:
        return conclude(Verdict.DENY, "permission", f"target refused: {exc}")
    described = _describe_target(target)
    allowed, why = _holds(caller, spec, target)
    if not allowed:
        return conclude(Verdict.DENY, "permission", why, target=described)
    # 5. the rate limit
    if tool_row.rate_limit is not None:
        within, count = ratelimit.hit(
            caller.rate_key,
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
    decision, facts = _policy_decision(caller, name, spec, arguments, target, tool_row, site)
    policy = decision.as_record()
    if decision.effect == Effect.DENY:
        return conclude(Verdict.DENY, "policy", decision.reason, policy=policy, target=described)
    if decision.effect == Effect.ESCALATE:
        escalation = open_escalation(
            reason="policy",
            summary=f"{_asker(caller, site)} wants to call {name}: {decision.reason}",
            context={"tool": name, "arguments": recordable(name, arguments), "decision": policy},
            role=Role.objects.filter(pk=decision.escalate_to_id).first(),
            run_id=site.run_id,
            step_run_id=site.step_run_id,
            step_id=site.step_id,
            raised_by=caller.user,
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
    rules = _approval_rules(decision, tool_row)
    if not rules and decision.effect == Effect.REQUIRE_APPROVAL:
        return conclude(
            Verdict.DENY,
            "policy",
            "the policy requires an approval but names no approval rule",
            policy=policy,
            target=described,
        )
    if rules:
        bound = spec.recordable(arguments)
        requests = [
            _standing_or_new(caller, name, bound, target, rule, decision, tool_row, site, now)
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


def _asker(caller: Caller, site: CallSite) -> str:
    """Return who asks, as a request's summary says it."""
    if caller.agent is not None:
        return f"{caller.agent.name} ({caller.agent.slug})"
    where = f"step {site.step_id!r} of run {site.run_id}" if site.run_id else "a call"
    if site.workflow:
        where += f" ({site.workflow})"
    return f"{where}, for {caller.name}"


def _risk_of(decision: PolicyDecision, tool_row: Tool) -> str:
    """Return the higher of the decision's risk and the tool's."""
    return max(
        [decision.risk, tool_row.risk],
        key=lambda risk: {"low": 0, "medium": 1, "high": 2, "critical": 3}.get(risk, 1),
    )


def _standing_or_new(caller, name, arguments, target, rule, decision, tool_row, site, now):
    """Return the approval this run already holds for exactly this call, or open a request.

    Only a call that acts for the run's initiator (a tool step) finds one: a workflow's own
    `approval` step that asked for the same action and arguments under the same rule. An agent's
    calls always ask: its accountable owner is a party that approval did not exclude.
    """
    risk = _risk_of(decision, tool_row)
    if (
        caller.agent is None
        and caller.user is not SYSTEM
        and caller.user.pk == site.run_initiator_id
    ):
        found = standing_approval(
            run_id=site.run_id,
            action=f"tool.{name}",
            arguments=arguments,
            rule=rule,
            risk=risk,
            initiator=caller.user,
        )
        if found is not None:
            return found
    initiator = None
    if site.run_initiator_id:
        initiator = get_user_model().objects.filter(pk=site.run_initiator_id).first()
    return request_approval(
        action=f"tool.{name}",
        approval_rule=rule,
        arguments=arguments,
        target=target if isinstance(target, models.Model) else _describe_target(target) or None,
        summary=f"{_asker(caller, site)} asks to call {name} with "
        f"{json.dumps(arguments, sort_keys=True)[:500]}",
        risk=risk,
        requested_by=caller.user,
        run_initiator=initiator,
        accountable_owner=caller.agent.owner if caller.agent is not None else None,
        run_id=site.run_id,
        step_run_id=site.step_run_id,
        step_id=site.step_id,
        decision=decision,
        now=now,
    )


def _record(
    caller: Caller, verdict: ToolVerdict, arguments, site: CallSite, now, policy_facts=None
) -> ToolVerdict:
    """Keep the verdict as a ToolInvocation and write it to the audit log."""
    policy = verdict.policy or {}
    arguments = recordable(verdict.tool, arguments)
    ToolInvocation.objects.create(
        agent=caller.agent,
        agent_slug=caller.agent.slug if caller.agent is not None else "",
        caller_kind=caller.kind,
        caller_name=caller.name[:150],
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
        policy_facts=policy_facts,
        key=site.key,
        run_id=site.run_id,
        step_id=site.step_id,
        created_at=now,
    )
    audit.record(
        action="agents.tool.decided",
        actor=caller.user,
        actor_kind=caller.kind,
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
            "agent": caller.agent.slug if caller.agent is not None else None,
            "caller": {"kind": caller.kind, "name": caller.name},
            "workflow": site.workflow,
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


# --- where a decided call stands -----------------------------------------------------------------

RUN, REFUSED, WAIT, SUPPLIED, STOPPED = "run", "refused", "wait", "supplied", "stopped"
DECIDE_AGAIN = "decide_again"  # a person sent a policy escalation back: the policy decides anew
_NOT_APPROVED = {
    ApprovalStatus.REJECTED: "ApprovalRejected",
    ApprovalStatus.CHANGES_REQUESTED: "ChangesRequested",
    ApprovalStatus.EXPIRED: "ApprovalExpired",
    ApprovalStatus.CANCELLED: "ApprovalCancelled",
}


@dataclass(frozen=True)
class Standing:
    """Where a decided call stands now: run it, refused, wait for people, or what they said."""

    state: str
    reason: str = ""
    error_type: str = ""
    signal: str = ""
    due_at: dt.datetime | None = None
    waiting_for: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    supplied_by: str = ""


def standing(verdict: ToolVerdict, arguments: Any, context: ToolContext | None = None) -> Standing:
    """Tell what a journaled verdict means now that people may have decided on it.

    An approval admits the call only for exactly the arguments it was granted for (their
    canonical form, resolved with `context` when given: the form it was decided on); a pending
    one (or an open escalation) means waiting for its signal. A person's refusal is reported
    before the cancellations it caused.
    """
    if verdict.verdict == Verdict.DENY:
        reason = describe_decision({**(verdict.policy or {}), "reason": verdict.reason})
        error_type = "ArgumentsInvalid" if verdict.stage == "arguments" else "ToolCallDenied"
        return Standing(REFUSED, f"{verdict.stage}: {reason}", error_type)
    if verdict.verdict == Verdict.ALLOW:
        return Standing(RUN)
    if verdict.verdict == Verdict.APPROVAL:
        ids = verdict.required_approvals
        requests = sorted(ApprovalRequest.objects.filter(pk__in=ids), key=lambda r: ids.index(r.pk))
        if len(requests) != len(ids):
            return Standing(
                REFUSED, "an approval this call needs does not exist", "ApprovalMissing"
            )
        spec = registered_tools().get(verdict.tool)
        if context is not None and spec is not None and isinstance(arguments, dict):
            try:
                arguments = spec.canonical_arguments(arguments, context)
            except ArgumentsRefused as exc:
                return Standing(REFUSED, f"arguments refused: {exc}", "ArgumentsInvalid")
        bound = recordable(verdict.tool, arguments)
        for request in sorted(requests, key=lambda r: r.status == ApprovalStatus.CANCELLED):
            if request.status == ApprovalStatus.PENDING:
                continue
            if request.status != ApprovalStatus.APPROVED:
                words = request.get_status_display().lower()
                return Standing(
                    REFUSED,
                    f"approval request #{request.pk} was {words}",
                    _NOT_APPROVED.get(request.status, "ApprovalFailed"),
                )
            if not approval_applies(request, bound):
                return Standing(
                    REFUSED,
                    f"approval request #{request.pk} covers other arguments",
                    "ApprovalMismatch",
                )
        for request in requests:
            if request.status == ApprovalStatus.PENDING:
                return Standing(
                    WAIT,
                    signal=request.signal_name,
                    due_at=request.due_at,
                    waiting_for={"kind": "approval", "ref": request.pk},
                )
        return Standing(RUN)
    escalation = Escalation.objects.get(pk=verdict.escalation)
    if escalation.status == EscalationStatus.OPEN:
        return Standing(
            WAIT,
            signal=escalation.signal_name,
            waiting_for={"kind": "escalation", "ref": escalation.pk},
        )
    if escalation.status == EscalationStatus.CANCELLED:
        return Standing(
            REFUSED, f"escalation #{escalation.pk} was cancelled", "EscalationCancelled"
        )
    if escalation.resolution == Resolution.TAKE_OVER:
        return Standing(SUPPLIED, result=escalation.result, supplied_by=escalation.resolved_by_name)
    who = escalation.resolved_by_name or "nobody"
    said = escalation.comment or escalation.get_resolution_display()
    if escalation.resolution == Resolution.STOP:
        return Standing(STOPPED, f"{who} stopped it: {said}", "StoppedByPerson")
    return Standing(DECIDE_AGAIN, f"{who} sent it back: {said}")


# --- executing a decided call ---------------------------------------------------------------------


def recheck(
    caller: Caller,
    name: str,
    arguments: dict[str, Any],
    verdict: ToolVerdict,
    context: ToolContext,
    *,
    workflow: str = "",
) -> Caller:
    """Check again, right before a decided call runs, everything that can have changed since.

    The caller is still active, the tool still governed, enabled and (for an agent) in the
    mandate, the caller still holds the permission on the target, and the current policy's
    verdict still admits the call with the approvals it has. Returns the caller as it is now;
    raises CallRefused saying what changed. An agent stopped meanwhile raises AgentStopped.
    """
    since = "since the call was decided"
    now_caller = caller.refreshed()
    if now_caller is None:
        raise CallRefused("status", f"{caller.name} was deleted {since}")
    if why := now_caller.inactive_reason():
        if now_caller.agent is not None:
            raise AgentStopped(why)
        raise CallRefused("status", f"{why} {since}")
    tool_row, spec, stage, why = _tool_refusal(now_caller, name)
    if stage == "disabled":
        raise CallRefused(stage, f"tool {name!r} was disabled {since}")
    if stage == "mandate" and now_caller.agent is not None:
        raise CallRefused(stage, f"{name!r} was removed from {now_caller.name}'s tools {since}")
    if stage:
        raise CallRefused(stage, f"{why} ({since})")
    site = CallSite(
        key=context.idempotency_key,
        run_id=context.run_id,
        step_id=context.step_id,
        attempt=context.attempt,
        workflow_id=context.workflow_id,
        workflow=workflow,
    )
    try:
        target = _resolve_target(spec, arguments, _tool_context(now_caller, site))
    except TargetRefused as exc:
        raise CallRefused("permission", f"target refused {since}: {exc}") from exc
    allowed, why = _holds(now_caller, spec, target)
    if not allowed:
        raise CallRefused("permission", f"{why} any more: the permission was withdrawn {since}")
    decision, _ = _policy_decision(now_caller, name, spec, arguments, target, tool_row, site)
    policy = decision.as_record()
    if decision.effect == Effect.DENY:
        raise CallRefused(
            "policy", f"the policy now denies it: {describe_decision(policy)}", policy
        )
    if decision.effect == Effect.ESCALATE:
        raise CallRefused(
            "policy",
            f"the policy now escalates it to a person: {describe_decision(policy)}",
            policy,
        )
    rules = _approval_rules(decision, tool_row)
    if not rules and decision.effect == Effect.REQUIRE_APPROVAL:
        raise CallRefused(
            "policy", "the policy now requires an approval but names no approval rule", policy
        )
    approved = set()
    if verdict.verdict == Verdict.APPROVAL:
        approved = set(
            ApprovalRequest.objects.filter(
                pk__in=verdict.required_approvals, status=ApprovalStatus.APPROVED
            ).values_list("approval_rule_id", flat=True)
        )
    missing = [rule for rule in rules if rule.pk not in approved]
    if missing:
        needs = " and ".join(repr(rule.slug) for rule in missing)
        why = describe_decision(policy) if decision.effect == Effect.REQUIRE_APPROVAL else ""
        raise CallRefused(
            "policy" if decision.effect == Effect.REQUIRE_APPROVAL else "tool_approval_rule",
            f"it now needs an approval under {needs}, which it does not have"
            + (f" ({why})" if why else ""),
            policy,
        )
    return now_caller


def _audit_call(
    action: str, caller: Caller, name: str, verdict: ToolVerdict, context: ToolContext, **entry
) -> None:
    """Audit what became of a decided call (called or refused), naming the caller and tool."""
    body = entry.pop("body")
    audit.record(
        action=action,
        actor=caller.user,
        actor_kind=caller.kind,
        target_type="agents.tool",
        target_id=name[:64],
        target_repr=verdict.target.get("repr", "") or name,
        run_id=context.run_id,
        step_id=context.step_id or None,
        body={
            "agent": caller.agent.slug if caller.agent is not None else None,
            "caller": {"kind": caller.kind, "name": caller.name},
            **body,
        },
        **entry,
    )


def record_refused(
    caller: Caller,
    name: str,
    arguments: dict[str, Any],
    verdict: ToolVerdict,
    refused: CallRefused,
    context: ToolContext,
    *,
    invocation_key: str,
) -> dict[str, Any]:
    """Keep and audit that a decided call did not run because something changed; return it."""
    outcome = {"ok": False, "refused": True, "stage": refused.stage, "reason": refused.reason}
    ToolInvocation.objects.filter(key=invocation_key).update(outcome=outcome)
    _audit_call(
        "agents.tool.refused",
        caller,
        name,
        verdict,
        context,
        decision={
            "verdict": Verdict.DENY,
            "stage": refused.stage,
            "decided_verdict": verdict.verdict,
            "rule": refused.policy.get("rule_id")
            if refused.stage == "policy"
            else f"control:{refused.stage}",
            "policy": refused.policy.get("policy_slug") or "",
            "policy_version": refused.policy.get("policy_version"),
        },
        body={
            "tool": name,
            "arguments": recordable(name, arguments),
            "arguments_digest": digest(arguments),
            "reason": refused.reason,
            "invocation_key": invocation_key,
            "idempotency_key": context.idempotency_key,
        },
    )
    return outcome


def execute_tool_call(
    caller: Caller | int,
    name: str,
    arguments: dict[str, Any],
    verdict: ToolVerdict,
    context: ToolContext,
    *,
    invocation_key: str,
    workflow_id: int | None = None,
    workflow: str = "",
    errors_as_outcome: bool = True,
) -> dict[str, Any]:
    """Run a call the control layer allowed (or that was approved for these arguments).

    The arguments are resolved again and must be what the verdict was taken on (the call gets
    exactly the canonical arguments it covers); an approval is checked again against their
    digest, then everything that can have changed since the decision (`recheck`). With
    `errors_as_outcome` (an agent's call), a refusal and a tool's own final error (a permission
    re-check...) are outcomes for the model; without (a tool step), they raise, CallRefused for
    a refusal. A retryable error propagates so the step's retry policy applies.
    """
    caller = as_caller(caller)
    if caller.agent is not None and (why := caller.inactive_reason()):
        raise AgentStopped(why)
    spec = registered_tools()[name]
    context = dataclasses.replace(
        context,
        actor_id=caller.user.pk,
        agent_id=caller.agent.pk if caller.agent is not None else None,
        workflow_id=workflow_id if workflow_id is not None else context.workflow_id,
    )
    arguments = as_decided(spec, arguments, context, verdict)
    if verdict.verdict == Verdict.APPROVAL:
        for request_id in verdict.required_approvals:
            require_approval_for(request_id, recordable(name, arguments))
    elif verdict.verdict != Verdict.ALLOW:
        raise ValueError(f"a {verdict.verdict} verdict cannot be executed")
    try:
        caller = recheck(caller, name, arguments, verdict, context, workflow=workflow)
    except CallRefused as refused:
        if not errors_as_outcome:
            raise
        return record_refused(
            caller, name, arguments, verdict, refused, context, invocation_key=invocation_key
        )
    try:
        with transaction.atomic():
            outcome = {"ok": True, "result": spec.call(arguments, context)}
    except (FatalToolError, AccessDenied, NotVisible, GovernanceError) as exc:
        if not errors_as_outcome:
            raise
        outcome = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        if hasattr(exc, "audit"):  # its audit entry was undone with the tool's savepoint
            exc.recorded = False
            exc.audit()
    # The tool ran: what follows must not fail. Its records keep a storable outcome; a tool
    # step gets the raw one back, and its journal (ctx.effect) marks and fails what cannot be
    # stored, so a retry never runs the tool again.
    recorded = storable_outcome(name, outcome)
    now = clock.now()
    ToolInvocation.objects.filter(key=invocation_key).update(executed_at=now, outcome=recorded)
    _audit_call(
        "agents.tool.called",
        caller,
        name,
        verdict,
        context,
        decision={
            "verdict": verdict.verdict,
            "approval_request": verdict.approval_request,
            "policy_version": (verdict.policy or {}).get("policy_version"),
        },
        body={
            "tool": name,
            "arguments": spec.recordable(arguments),
            "arguments_digest": digest(arguments),
            "outcome": recorded,
            "idempotency_key": context.idempotency_key,
        },
    )
    if caller.agent is not None:
        mark_active(caller.agent.pk)
    return recorded if errors_as_outcome else outcome
