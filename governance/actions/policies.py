"""Policies: versioned rules that decide, for an action, allow / deny / require approval / escalate.

Rules of active policies are tried in order (policy priority, then rule position); the first
whose action glob matches and whose condition holds decides. No matching rule: allow, saying so.
A condition that cannot be evaluated fails closed: an `allow` rule then does not match, any
other rule does. Every decision is audited with the rule and the policy version that produced
it, and with the facts it was taken on, which is what the dry run replays.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from django.core.exceptions import ValidationError

from audit import services as audit
from audit.actors import SYSTEM, requires_actor
from governance import expressions
from governance.actions.common import (
    GovernanceError,
    audited_refusals,
    delete_governed,
    save_governed,
)
from governance.actions.principals import kind_of
from governance.models import Effect, Policy, PolicyRule, RiskLevel, RuleStatus
from governance.permissions import require

DECISION_ACTION = "governance.policy.decided"
CONTEXT_NAMES = frozenset(
    {"actor", "action", "target", "classification", "arguments", "risk", "run"}
)


@dataclass(frozen=True)
class PolicyDecision:
    """The outcome of a policy decision and what produced it."""

    effect: str
    reason: str
    policy_id: int | None = None
    policy_slug: str = ""
    policy_version: int | None = None
    rule_id: int | None = None
    rule_name: str = ""
    approval_rule_id: int | None = None
    escalate_to_id: int | None = None
    risk: str = RiskLevel.MEDIUM
    errors: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        """Tell whether the action may go ahead without a person."""
        return self.effect == Effect.ALLOW

    def as_record(self) -> dict[str, Any]:
        """Return the decision as stored with audit entries and approval requests."""
        return asdict(self)


# --- rules: validation and writes ---------------------------------------------------------------


def rule_problems(rule: PolicyRule) -> dict[str, list[str]]:
    """Return what is wrong with a rule, by field (empty when it can be saved)."""
    problems: dict[str, list[str]] = {}
    condition = (rule.condition or "").strip()
    if condition:
        error = expressions.check_expression(condition)
        if error:
            problems.setdefault("condition", []).append(error)
        else:
            unknown = expressions.expression_names(condition) - CONTEXT_NAMES
            for name in sorted(unknown):
                problems.setdefault("condition", []).append(
                    f"unknown name {name!r} (use {', '.join(sorted(CONTEXT_NAMES))})"
                )
    if rule.effect == Effect.REQUIRE_APPROVAL and rule.approval_rule_id is None:
        problems.setdefault("approval_rule", []).append("'require approval' needs an approval rule")
    if rule.effect == Effect.ESCALATE and rule.escalate_to_id is None:
        problems.setdefault("escalate_to", []).append("'escalate' needs a role to escalate to")
    if rule.effect == Effect.DENY and not rule.reason.strip():
        problems.setdefault("reason", []).append("a deny rule states its reason")
    if not rule.action.strip():
        problems.setdefault("action", []).append("give an action or a glob such as 'tool.*'")
    if rule.replaces_id is not None:
        replaced = rule.replaces
        if rule.status != RuleStatus.DRAFT:
            problems.setdefault("replaces", []).append("only a draft replaces a rule")
        elif replaced.pk == rule.pk or replaced.policy_id != rule.policy_id:
            problems.setdefault("replaces", []).append(
                "a draft replaces another rule of its own policy"
            )
        elif replaced.status != RuleStatus.ACTIVE:
            problems.setdefault("replaces", []).append("a draft replaces an active rule")
    return problems


def validate_rule(rule: PolicyRule) -> None:
    """Raise ValidationError (by field) when a rule cannot be saved."""
    problems = rule_problems(rule)
    if problems:
        raise ValidationError(problems)


def _bump(policy: Policy, *, actor, reason: str) -> Policy:
    """Make a new version of a policy (its rules changed) in the name of who changed them.

    The caller has authorised the change; the version's history and audit entry name `actor`.
    """
    locked = Policy.objects.select_for_update().get(pk=policy.pk)
    locked.version += 1
    save_governed(locked, actor=actor, reason=reason, check=False)
    policy.version = locked.version
    return locked


@requires_actor
@audited_refusals
def create_policy(
    *,
    slug: str,
    name: str,
    description: str = "",
    priority: int = 100,
    is_active: bool = True,
    actor,
    reason: str = "",
) -> Policy:
    """Create a policy (version 1) with no rules."""
    policy = Policy(
        slug=slug, name=name, description=description, priority=priority, is_active=is_active
    )
    return save_governed(policy, actor=actor, reason=reason or "policy created")


@requires_actor
@audited_refusals
def update_policy(policy: Policy, *, actor, reason: str, **fields) -> Policy:
    """Change a policy's settings; this makes a new version."""
    for name, value in fields.items():
        if name not in {"slug", "name", "description", "priority", "is_active"}:
            raise TypeError(f"update_policy cannot change {name!r}")
        setattr(policy, name, value)
    if not policy._state.adding:
        policy.version = Policy.objects.select_for_update().get(pk=policy.pk).version + 1
    return save_governed(policy, actor=actor, reason=reason)


@requires_actor
@audited_refusals
def delete_policy(policy: Policy, *, actor, reason: str) -> None:
    """Delete a policy and its rules (each rule's history names who deleted it)."""
    if actor is not SYSTEM:
        require(actor, "delete", policy)
    for rule in list(policy.rules.all()):
        delete_governed(rule, actor=actor, reason=reason, check=False)
    delete_governed(policy, actor=actor, reason=reason)


@requires_actor
@audited_refusals
def save_rule(rule: PolicyRule, *, actor, reason: str) -> PolicyRule:
    """Create or change a rule (validated); its policy gets a new version the rule carries."""
    validate_rule(rule)
    policy = rule.policy
    if actor is not SYSTEM:
        # Changing a rule is changing its policy: the policy's permission decides.
        require(actor, "change", Policy.objects.get(pk=policy.pk))
    policy = _bump(policy, actor=actor, reason=f"rule {rule.name!r}: {reason or 'changed'}")
    rule.policy = policy
    rule.version = policy.version
    rule._change_reason = reason or "changed"
    if actor is not SYSTEM:
        rule._history_user = actor
    rule.full_clean()
    rule.save()
    return rule


@requires_actor
@audited_refusals
def delete_rule(rule: PolicyRule, *, actor, reason: str) -> None:
    """Delete a rule; its policy gets a new version."""
    if actor is not SYSTEM:
        require(actor, "change", rule.policy)
    _bump(rule.policy, actor=actor, reason=f"rule {rule.name!r} deleted: {reason}")
    delete_governed(rule, actor=actor, reason=reason, check=False)


# --- the decision -------------------------------------------------------------------------------


def actor_facts(user) -> dict[str, Any]:
    """Return what a condition may know about the actor."""
    if user is SYSTEM:
        return {"username": "", "id": None, "kind": "system", "is_agent": False, "roles": []}
    from governance.actions.roles import roles_of

    kind = kind_of(user)
    return {
        "username": user.get_username(),
        "id": user.pk,
        "kind": kind,
        "is_agent": kind == "agent",
        "roles": [role.name for role in roles_of(user)],
    }


def target_facts(target, classification: str | None) -> dict[str, Any]:
    """Return what a condition may know about the target (a model instance or a description)."""
    if target is None:
        return {"type": "", "id": "", "repr": "", "classification": classification or ""}
    if isinstance(target, dict):
        return {"classification": classification or "", **target}
    found = classification or getattr(target, "classification", "") or ""
    found = found or getattr(target, "data_classification", "") or ""
    return {
        "type": target._meta.label_lower,
        "id": str(target.pk),
        "repr": str(target)[:200],
        "classification": str(found),
    }


def active_rules() -> list[PolicyRule]:
    """Return the rules live decisions use, in evaluation order."""
    return list(
        PolicyRule.objects.filter(status=RuleStatus.ACTIVE, policy__is_active=True)
        .select_related("policy")
        .order_by("policy__priority", "policy__slug", "position", "id")
    )


def evaluate(rules: list[PolicyRule], context: dict[str, Any]) -> tuple[PolicyRule | None, list]:
    """Return the first rule that decides for a context, and the conditions that failed to run."""
    errors = []
    for rule in rules:
        if not fnmatchcase(context["action"], rule.action):
            continue
        condition = (rule.condition or "").strip()
        if not condition:
            return rule, errors
        try:
            matched = bool(expressions.evaluate(condition, context))
        except expressions.ExpressionError as exc:
            errors.append(f"rule {rule.pk} ({rule.name}): {exc}")
            matched = rule.effect != Effect.ALLOW  # fail closed
        if matched:
            return rule, errors
    return None, errors


def _decision_from(rule: PolicyRule | None, errors: list, risk: str | None) -> PolicyDecision:
    """Turn the deciding rule (or none) into a decision."""
    if rule is None:
        return PolicyDecision(
            effect=Effect.ALLOW,
            reason="no policy rule matched",
            risk=risk or RiskLevel.LOW,
            errors=errors,
        )
    return PolicyDecision(
        effect=rule.effect,
        reason=rule.reason or f"{rule.get_effect_display()} by rule {rule.name!r}",
        policy_id=rule.policy_id,
        policy_slug=rule.policy.slug,
        policy_version=rule.policy.version,
        rule_id=rule.pk,
        rule_name=rule.name,
        approval_rule_id=rule.approval_rule_id,
        escalate_to_id=rule.escalate_to_id,
        risk=rule.risk if risk is None else max(rule.risk, risk, key=_risk_rank),
        errors=errors,
    )


def _risk_rank(risk: str) -> int:
    """Order risk levels from low to critical."""
    return {"low": 0, "medium": 1, "high": 2, "critical": 3}.get(risk, 1)


@requires_actor
def build_context(
    *,
    actor,
    action: str,
    target=None,
    arguments: dict | None = None,
    classification: str | None = None,
    risk: str | None = None,
    run_id=None,
    step_id: str = "",
    workflow: str = "",
) -> dict[str, Any]:
    """Return the facts a policy decision is taken on (also what the audit keeps for replays)."""
    target_info = target_facts(target, classification)
    return {
        "actor": actor_facts(actor),
        "action": action,
        "target": target_info,
        "classification": target_info["classification"],
        "arguments": arguments or {},
        "risk": risk or "",
        "run": {"id": run_id, "step": step_id, "workflow": workflow},
    }


@requires_actor
def decide(
    *,
    actor,
    action: str,
    target=None,
    arguments: dict | None = None,
    classification: str | None = None,
    risk: str | None = None,
    run_id=None,
    step_id: str = "",
    workflow: str = "",
) -> PolicyDecision:
    """Decide an action under the active policies; audit the decision with its rule and version."""
    context = build_context(
        actor=actor,
        action=action,
        target=target,
        arguments=arguments,
        classification=classification,
        risk=risk,
        run_id=run_id,
        step_id=step_id,
        workflow=workflow,
    )
    return decide_on(context, actor=actor, target=target, risk=risk, run_id=run_id, step_id=step_id)


@requires_actor
def decide_on(
    context: dict[str, Any], *, actor, target=None, risk: str | None = None, run_id=None, step_id=""
) -> PolicyDecision:
    """Decide a built context (build_context) under the active policies and audit the decision.

    For callers that keep the context beside their own record (a tool call keeps it, so a dry run
    can replay it).
    """
    rule, errors = evaluate(active_rules(), context)
    decision = _decision_from(rule, errors, risk)
    audit.record(
        action=DECISION_ACTION,
        actor=actor,
        actor_kind=_actor_kind(actor),
        target=target if target is not None and not isinstance(target, dict) else None,
        target_type=context["target"]["type"],
        target_id=context["target"]["id"],
        target_repr=context["target"].get("repr", ""),
        run_id=run_id,
        step_id=step_id or None,
        decision={
            "effect": decision.effect,
            "reason": decision.reason,
            "policy": decision.policy_slug,
            "policy_version": decision.policy_version,
            "rule": decision.rule_id,
        },
        body={"context": context, "decision": decision.as_record()},
    )
    return decision


def _actor_kind(actor) -> str:
    """Return the audit actor kind of a principal."""
    if actor is SYSTEM:
        return "system"
    return "agent" if kind_of(actor) == "agent" else "user"


# --- the dry run --------------------------------------------------------------------------------


@dataclass
class DryRunRow:
    """One recorded decision replayed with and without the draft rule."""

    entry_id: int
    at: str
    actor: str
    action: str
    recorded: str
    current: str
    with_draft: str


@dataclass
class DryRunReport:
    """What a draft rule would have changed among recorded decisions."""

    examined: int = 0
    changed: list[DryRunRow] = field(default_factory=list)
    unreadable: int = 0


def dry_run(draft: PolicyRule, *, limit: int = 1000) -> DryRunReport:
    """Replay recorded decisions with the draft rule in place; list those whose outcome changes.

    The draft need not be saved. It replaces the saved rule it edits, or joins its policy's rules
    at its position. Each row shows the outcome recorded then, the outcome under today's active
    rules, and the outcome with the draft; only rows where the draft makes a difference are listed.
    """
    from audit.models import AuditEntry

    validate_rule(draft)
    current = active_rules()
    candidate = [rule for rule in current if draft.pk is None or rule.pk != draft.pk]
    draft_policy = draft.policy
    if draft_policy.is_active:
        candidate.append(draft)
    candidate.sort(
        key=lambda rule: (
            rule.policy.priority,
            rule.policy.slug,
            rule.position,
            rule.pk if rule.pk is not None else 0,
        )
    )
    report = DryRunReport()
    entries = (
        AuditEntry.objects.filter(action=DECISION_ACTION)
        .select_related("body_row")
        .order_by("-id")[:limit]
    )
    for entry in entries:
        try:
            body = json.loads(entry.body_row.content)
            context = body["context"]
            recorded = body["decision"]["effect"]
        except (AuditEntry.body_row.RelatedObjectDoesNotExist, TypeError, KeyError, ValueError):
            report.unreadable += 1  # erased or malformed bodies cannot be replayed
            continue
        report.examined += 1
        now_rule, _ = evaluate(current, context)
        draft_rule, _ = evaluate(candidate, context)
        now_effect = now_rule.effect if now_rule is not None else Effect.ALLOW
        draft_effect = draft_rule.effect if draft_rule is not None else Effect.ALLOW
        if now_effect != draft_effect:
            report.changed.append(
                DryRunRow(
                    entry_id=entry.pk,
                    at=entry.created_at.isoformat(),
                    actor=entry.actor_name,
                    action=context.get("action", ""),
                    recorded=recorded,
                    current=now_effect,
                    with_draft=draft_effect,
                )
            )
    return report


# --- draft versions: what a policy's drafts would make live, replayed and published -------------

# A policy's draft version is its active rules with its draft rules in place: a draft joins the
# rules at its position, or takes the place of the active rule it `replaces`. Publishing makes
# that version live in one step. Dry runs evaluate a snapshot of it, kept with their result, so
# a draft edited afterwards does not change what a finished (or resumed) dry run evaluated.

SNAPSHOT_FIELDS = (
    "id",
    "name",
    "position",
    "status",
    "action",
    "condition",
    "effect",
    "reason",
    "approval_rule_id",
    "escalate_to_id",
    "risk",
    "replaces_id",
)


def _rule_order(rule: PolicyRule) -> tuple:
    """Return a rule's place in evaluation order (policy priority, slug, position, id)."""
    return (rule.policy.priority, rule.policy.slug, rule.position, rule.pk or 0)


def policy_drafts(policy: Policy) -> list[PolicyRule]:
    """Return a policy's draft rules (what its draft version changes), in position order."""
    return list(
        PolicyRule.objects.filter(policy_id=policy.pk, status=RuleStatus.DRAFT)
        .select_related("policy", "replaces")
        .order_by("position", "id")
    )


def draft_rules(policy: Policy) -> list[PolicyRule]:
    """Return the rules live decisions would use once a policy's draft is published, in order."""
    drafts = policy_drafts(policy)
    if not drafts:
        raise GovernanceError(f"policy {policy.slug!r} has no draft rule", code="no_draft")
    replaced = {rule.replaces_id for rule in drafts if rule.replaces_id is not None}
    rules = [rule for rule in active_rules() if rule.pk not in replaced]
    if drafts[0].policy.is_active:
        rules.extend(drafts)
    return sorted(rules, key=_rule_order)


def rule_snapshot(rules: list[PolicyRule]) -> list[dict[str, Any]]:
    """Return rules as JSON, with their policy's id, slug, priority and version, in their order."""
    return [
        {
            **{name: getattr(rule, name) for name in SNAPSHOT_FIELDS},
            "policy": {
                "id": rule.policy_id,
                "slug": rule.policy.slug,
                "priority": rule.policy.priority,
                "version": rule.policy.version,
            },
        }
        for rule in rules
    ]


def rules_from_snapshot(snapshot: list[dict[str, Any]]) -> list[PolicyRule]:
    """Rebuild a snapshot's rules as unsaved instances, in its order, for evaluate()."""
    policies: dict[int, Policy] = {}
    rules = []
    for item in snapshot:
        fields = {name: item.get(name) for name in SNAPSHOT_FIELDS}
        about = item["policy"]
        policy = policies.get(about["id"])
        if policy is None:
            policy = policies[about["id"]] = Policy(
                id=about["id"],
                slug=about["slug"],
                priority=about["priority"],
                version=about["version"],
            )
        rules.append(PolicyRule(**fields, policy=policy))
    return rules


def replay(rules: list[PolicyRule], context: dict[str, Any]) -> tuple[str, PolicyRule | None]:
    """Return the effect rules would give a recorded context, and the rule that decides it.

    Pure: it reads nothing and writes nothing (no audit entry, unlike decide()).
    """
    rule, _ = evaluate(rules, context)
    return (rule.effect if rule is not None else Effect.ALLOW), rule


@requires_actor
@audited_refusals
def publish_draft(policy: Policy, *, actor, reason: str) -> Policy:
    """Make a policy's draft version live: drafts become active, what they replace is disabled."""
    if actor is not SYSTEM:
        require(actor, "change", Policy.objects.get(pk=policy.pk))
    Policy.objects.select_for_update().get(pk=policy.pk)
    drafts = policy_drafts(policy)
    if not drafts:
        raise GovernanceError(f"policy {policy.slug!r} has no draft to publish", code="no_draft")
    for draft in drafts:
        validate_rule(draft)
    why = reason or "draft published"
    locked = _bump(policy, actor=actor, reason=f"draft published: {why}")
    for draft in drafts:
        replaced = draft.replaces
        if replaced is not None:
            replaced.status = RuleStatus.DISABLED
            why_replaced = f"replaced by {draft.name!r}: {why}"
            _save_rule_as(replaced, locked, actor=actor, reason=why_replaced)
        draft.status = RuleStatus.ACTIVE
        draft.replaces = None  # its history keeps what it replaced
        _save_rule_as(draft, locked, actor=actor, reason=f"published: {why}")
    return locked


def _save_rule_as(rule: PolicyRule, policy: Policy, *, actor, reason: str) -> None:
    """Save a rule in a policy version the caller made and authorised, naming who and why."""
    rule.policy = policy
    rule.version = policy.version
    rule._change_reason = reason
    if actor is not SYSTEM:
        rule._history_user = actor
    rule.full_clean()
    rule.save()
