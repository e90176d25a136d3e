"""What the approvals inbox reads: its tabs, its counts, and what a request page shows.

Reads only; every write goes through governance.services. Every queryset starts from
restrict(): "waiting for me" is `restrict(user, "decide")`, the eligibility rule the decision
service itself asks (governance/actions/eligibility.py), so a request is listed there exactly
when the person may decide it; the other tabs are what `restrict(user, "view")` lets them see,
each row saying whether it is theirs to decide.

Governance never imports the engine: the workflow of a run comes from a lookup the
orchestrator registers (`register_workflow_lookup`), as the run initiator's does.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet

from audit import clock, context
from governance.actions.eligibility import (
    RESOLVE_ALL,
    approval_eligibility,
    eligible_deciders,
)
from governance.actions.principals import kind_of
from governance.models import (
    ApprovalRequest,
    ApprovalStatus,
    DecisionKind,
    Delegation,
    Escalation,
    EscalationLevel,
    EscalationStatus,
    PrincipalKind,
    Role,
)
from governance.permissions import visible_people

TABS = {
    "mine": "Waiting for me",
    "roles": "Waiting for my roles",
    "decided": "What I decided",
    "all": "All I may see",
}
DEFAULT_TAB = "mine"
PUBLISH_ACTION = "workflow.publish"  # the orchestrator's action for a workflow version

# Why a person may not decide, as a headline (the eligibility rule's message says the detail).
REFUSAL_TITLES = {
    "requester": "You asked for this approval",
    "run_initiator": "You started the run that asks",
    "accountable_owner": "You answer for the agent that asks",
    "already_decided_by_you": "You have already decided this request",
    "already_decided": "This request is already final",
    "deadline_passed": "The deadline has passed",
    "not_eligible": "You do not hold a role that decides this",
    "self_granted": "You would decide under a power you gave yourself",
    "delegation_not_in_force": "Your delegation is not in force now",
    "delegation_out_of_scope": "Your delegation does not cover this request",
    "target_gone": "What this request is about no longer exists",
    "not_a_person": "Only people decide",
    "anon": "Sign in to decide",
}


@dataclass(frozen=True)
class WorkflowLookup:
    """How governance learns a run's workflow: the engine's answer, registered at start-up."""

    # (user, queryset of run ids) -> [(slug, name)] of the workflows the user may see
    workflows_of: Callable[[Any, QuerySet], list[tuple[str, str]]]
    # slug -> queryset of the ids of that workflow's runs
    runs_of: Callable[[str], QuerySet]
    # slug -> queryset of the workflow's id as text (requests that target the workflow itself)
    target_keys_of: Callable[[str], QuerySet]


_workflow_lookup: WorkflowLookup | None = None


def register_workflow_lookup(lookup: WorkflowLookup) -> None:
    """Let the engine tell the inbox which workflow runs belong to (for its workflow filter)."""
    global _workflow_lookup
    _workflow_lookup = lookup


def workflow_choices(user, requests: QuerySet) -> list[tuple[str, str]]:
    """Return the workflows (slug, name) of the runs `requests` belong to, as `user` sees them."""
    if _workflow_lookup is None:
        return []
    run_ids = requests.exclude(run_id__isnull=True).values("run_id")
    return _workflow_lookup.workflows_of(user, run_ids)


def of_workflow(requests: QuerySet, slug: str) -> QuerySet:
    """Narrow requests to those of one workflow: its runs', its versions' and its own."""
    condition = Q(action__startswith=f"workflow.{slug}.") | Q(
        action=PUBLISH_ACTION, arguments__workflow=slug
    )
    if _workflow_lookup is not None:
        condition |= Q(run_id__in=_workflow_lookup.runs_of(slug))
        condition |= Q(
            target_type="orchestrator.workflow",
            target_id__in=_workflow_lookup.target_keys_of(slug),
        )
    return requests.filter(condition)


# --- tabs and counts ----------------------------------------------------------------------------


def decidable(user) -> QuerySet:
    """Return the requests `user` may decide now (`restrict(user, "decide")`), as a queryset.

    Kept on the user object for the HTTP request it serves (keyed by the request id): the
    navigation's count, the page's tab and its rows' marks narrow the one set the rule was
    asked for (a SQL condition: narrowing it to a page, or counting it, is one query).
    Outside a request, and in the next one, it is asked again.
    """
    request_id = context.current().request_id
    cached = getattr(user, "_steward_decidable", None)
    if request_id and cached is not None and cached[0] == request_id:
        return cached[1]
    requests = ApprovalRequest.objects.restrict(user, "decide")
    if request_id and getattr(user, "pk", None):
        user._steward_decidable = (request_id, requests)
    return requests


def decidable_among(user, among) -> QuerySet:
    """Return which of the requests `among` (ids, or a queryset of them) `user` may decide
    now: the set this HTTP request already asked for, narrowed, or else the rule asked of
    those requests alone (one row re-read does not pay for the whole inbox)."""
    request_id = context.current().request_id
    cached = getattr(user, "_steward_decidable", None)
    if request_id and cached is not None and cached[0] == request_id:
        return cached[1].filter(pk__in=among)
    return ApprovalRequest.objects.filter(pk__in=among).restrict(user, "decide")


def decidable_ids(user, among) -> frozenset[int]:
    """Return which of the requests `among` (ids) `user` may decide now."""
    return frozenset(decidable_among(user, among).values_list("pk", flat=True))


def forget_decidable(user) -> None:
    """Drop the remembered decidable and resolvable ids (after a decision changed them)."""
    for name in ("_steward_decidable", "_steward_resolvable_ids"):
        with contextlib.suppress(AttributeError):
            delattr(user, name)


def resolvable_ids(user) -> frozenset[int]:
    """Return the ids of the open escalations `user` may resolve now (remembered as above)."""
    request_id = context.current().request_id
    cached = getattr(user, "_steward_resolvable_ids", None)
    if request_id and cached is not None and cached[0] == request_id:
        return cached[1]
    ids = frozenset(Escalation.objects.restrict(user, "resolve").values_list("pk", flat=True))
    if request_id and getattr(user, "pk", None):
        user._steward_resolvable_ids = (request_id, ids)
    return ids


def resolvable_count(user) -> int:
    """Return how many open escalations `user` may resolve now."""
    return len(resolvable_ids(user))


def inbox_count(user) -> int:
    """Return how many decisions `user` owes now (requests and escalations)."""
    return decidable(user).count() + resolvable_count(user)


def is_approver(user) -> bool:
    """Tell whether a person takes part in approvals: a role of an approval chain, a role that
    escalations go to, a delegation to them, or a request they may see."""
    if not getattr(user, "is_authenticated", False) or kind_of(user) != PrincipalKind.PERSON:
        return False
    roles = Role.objects.filter(group__user=user)
    chained = roles.filter(
        Q(approval_rules__isnull=False) | Q(pk__in=EscalationLevel.objects.values("role"))
    )
    return (
        chained.exists()
        or user.has_perm(RESOLVE_ALL)
        or Delegation.objects.filter(delegate=user, revoked_at__isnull=True).exists()
        or ApprovalRequest.objects.restrict(user, "view").exists()
    )


def approves_first_hand(user) -> bool:
    """Tell whether a person holds the role of an approval rule (not only a later hop)."""
    return Role.objects.filter(group__user=user, approval_rules__isnull=False).exists()


def _rows(queryset: QuerySet) -> QuerySet:
    """Return a tab's rows with what a row shows, in one query."""
    return queryset.select_related("role", "requested_by__principal", "approval_rule").annotate(
        approvals_given=Count("decisions", filter=Q(decisions__decision=DecisionKind.APPROVE))
    )


def visible_rows(user) -> QuerySet:
    """Return the requests `user` may see, with what a row shows (the filterset scopes them)."""
    return _rows(ApprovalRequest.objects.restrict(user, "view"))


# --- one request --------------------------------------------------------------------------------


def action_in_words(request: ApprovalRequest) -> str:
    """Say what approving a request lets happen, in words."""
    action = request.action
    arguments = request.arguments if isinstance(request.arguments, dict) else {}
    if action == PUBLISH_ACTION:
        workflow = arguments.get("workflow") or request.target_repr
        return f"Make version {arguments.get('version', '?')} of workflow {workflow} live"
    if action.startswith("tool."):
        words = f"Call the tool {action[5:]}"
        return words + (f" on {request.target_repr}" if request.target_repr else "")
    if action.startswith("workflow.") and action.count(".") >= 2:
        _, slug, step = action.split(".", 2)
        return f"Let workflow {slug} continue past its approval step {step}"
    if action.startswith("memory."):
        return f"Write to shared memory ({action[7:]})"
    if action.startswith("role."):
        return f"Change the role {request.target_repr or ''} ({action[5:]})".replace("  ", " ")
    return action


def asker(request: ApprovalRequest) -> dict[str, str]:
    """Return who asks: their name and kind, and who answers for them when not a person."""
    user = request.requested_by
    if user is None:
        name = request.requested_by_name
        return {"name": name or "the system", "kind": "person" if name else "system", "owner": ""}
    kind = kind_of(user)
    owner = request.accountable_owner_name if kind != PrincipalKind.PERSON else ""
    return {"name": request.requested_by_name or user.get_username(), "kind": kind, "owner": owner}


def pretty_arguments(arguments: Any) -> str:
    """Render arguments canonically (sorted keys) and for reading (indented)."""
    return json.dumps(arguments, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _next_hop(request: ApprovalRequest) -> dict[str, Any] | None:
    """Return where the request goes when its SLA passes: the next role and when, or None."""
    if request.is_final or request.level + 1 >= len(request.chain):
        return None
    role = Role.objects.filter(pk=request.chain[request.level + 1]).first()
    return {"role": role.name if role else "a role that no longer exists", "at": request.due_at}


def _last_approved_diff(user, request: ApprovalRequest) -> dict[str, Any] | None:
    """Return the last approved call of the same action on the same target with other
    arguments, as the user may see it, with a diff of its arguments against these."""
    if request.action == PUBLISH_ACTION:
        return None
    earlier = (
        ApprovalRequest.objects.restrict(user, "view")
        .filter(
            action=request.action,
            target_type=request.target_type,
            target_id=request.target_id,
            status=ApprovalStatus.APPROVED,
        )
        .exclude(pk=request.pk)
        .exclude(arguments_digest=request.arguments_digest)
        .order_by("-decided_at", "-pk")
        .first()
    )
    if earlier is None:
        return None
    lines = difflib.unified_diff(
        pretty_arguments(earlier.arguments).splitlines(),
        pretty_arguments(request.arguments).splitlines(),
        fromfile=f"approved #{earlier.pk}",
        tofile=f"this request #{request.pk}",
        lineterm="",
    )
    return {"request": earlier, "diff": list(lines)}


def _other_deciders(user, request: ApprovalRequest) -> dict[str, Any]:
    """Return who else may decide now: the names `user` may see, and how many others."""
    people = [person for person in eligible_deciders(request) if person.pk != user.pk]
    visible = set(visible_people(user).filter(pk__in=[p.pk for p in people]).values_list("pk"))
    named = [person.get_username() for person in people if (person.pk,) in visible]
    return {"named": named, "unnamed": len(people) - len(named)}


def request_page(user, request: ApprovalRequest) -> dict[str, Any]:
    """Return everything a request page shows to `user` (who may see the request)."""
    arguments = request.arguments if isinstance(request.arguments, dict) else {}
    eligibility = approval_eligibility(user, request)
    decisions = list(request.decisions.order_by("decided_at", "pk"))
    version_diff = arguments.get("diff") if request.action == PUBLISH_ACTION else None
    role_change = None
    if {"before", "after"} <= set(arguments):
        role_change = {
            "before": pretty_arguments(arguments["before"]),
            "after": pretty_arguments(arguments["after"]),
        }
    return {
        "words": action_in_words(request),
        "asker": asker(request),
        "arguments_pretty": pretty_arguments(request.arguments),
        "eligibility": eligibility,
        "refusal_title": REFUSAL_TITLES.get(eligibility.code, "You may not decide this request"),
        "decisions": decisions,
        "approvals_given": sum(d.decision == DecisionKind.APPROVE for d in decisions),
        "others": _other_deciders(user, request) if not request.is_final else None,
        "next_hop": _next_hop(request),
        "version_diff": version_diff if isinstance(version_diff, list) else None,
        "role_change": role_change,
        "last_approved": _last_approved_diff(user, request),
        "basis": {
            "policy": request.decision_basis.get("policy_slug") or "",
            "policy_version": request.policy_version,
            "rule": request.decision_basis.get("rule_name") or "",
            "reason": request.decision_basis.get("reason") or "",
            "approval_rule": request.approval_rule.name if request.approval_rule else "",
            "approval_rule_version": request.approval_rule_version,
        },
    }


# --- escalations ---------------------------------------------------------------------------------

# The request filters that say nothing of escalations: while one is set, the list shows none.
REQUEST_ONLY_FILTERS = ("risk", "action", "due")
ESCALATION_REFUSAL_TITLES = {
    **REFUSAL_TITLES,
    "run_initiator": "You started the run this escalation is about",
    "accountable_owner": "You answer for the agent that raised this",
    "already_resolved": "This escalation is already resolved",
    "not_eligible": "You do not hold the role this escalation goes to",
}


def escalation_rows(user, tab: str, query) -> QuerySet:
    """Return the escalations a tab lists for `user`, through the escalations' filterset.

    mine: what they may resolve now (the resolution's own rule); roles: open for a role they
    hold; decided: what they resolved; all: what they may see. The page's agent and workflow
    filters narrow them; a filter only requests have (risk, action, due) leaves none.
    """
    from governance.filters import EscalationFilter

    if any(query.get(name) for name in REQUEST_ONLY_FILTERS):
        return Escalation.objects.none()
    base = Escalation.objects.restrict(user, "view").select_related("role")
    if tab == "mine":
        # The ids the navigation's count already asked the rule for (the filterset's own `mine`
        # scope asks the same rule again).
        base = base.filter(pk__in=resolvable_ids(user))
    elif tab == "roles":
        base = base.filter(
            status=EscalationStatus.OPEN,
            pk__in=Escalation.objects.filter(role__group__user=user).values("pk"),
        )
    data = {"scope": "decided" if tab == "decided" else "all"}
    if query.get("agent"):
        data["agent"] = query["agent"]
    queryset = EscalationFilter(data, base, user=user).qs
    slug = query.get("workflow")
    if slug:
        if _workflow_lookup is None:
            return Escalation.objects.none()
        queryset = queryset.filter(run_id__in=_workflow_lookup.runs_of(slug))
    if tab in ("mine", "roles"):
        return queryset.order_by("created_at", "pk")  # the longest waiting first
    return queryset.order_by("-created_at", "-pk")


def escalation_needs(escalation: Escalation) -> str:
    """Say what an escalation needs from the person who resolves it."""
    agent = (escalation.context or {}).get("agent") if isinstance(escalation.context, dict) else ""
    who = f"The agent {agent}" if agent else "The agent"
    step = f"step {escalation.step_id}" if escalation.step_id else "step"
    needs = {
        "step_failed": f"The {step} failed for good. Supply its output to take over, send it "
        "back for another attempt, or stop the run.",
        "low_confidence": f"{who} is not confident enough in its result. Confirm or correct "
        "the result (take over), send it back to try again, or stop the run.",
        "invalid_result": f"{who} gave answers that do not validate. Supply a valid result, "
        "send it back to try again, or stop the run.",
        "policy": "A policy sends this action to a person rather than to an approver. Take "
        "over with the step's outcome, send it back for a retry, or stop the run.",
    }
    return needs.get(
        escalation.reason,
        f"A person decides how the {step} goes on: take over with its output, send it back for a "
        "retry, or stop the run.",
    )


def proposed_result(escalation: Escalation) -> Any:
    """Return the result a take-over starts from: the agent's own, when it gave one."""
    context_data = escalation.context if isinstance(escalation.context, dict) else {}
    return context_data.get("result")


def escalation_page(user, escalation: Escalation) -> dict[str, Any]:
    """Return everything an escalation's page shows to `user` (who may see it)."""
    from governance.actions.eligibility import escalation_eligibility

    context_data = escalation.context if isinstance(escalation.context, dict) else {}
    eligibility = escalation_eligibility(user, escalation)
    arguments = context_data.get("arguments") if escalation.reason == "policy" else None
    return {
        "needs": escalation_needs(escalation),
        "eligibility": eligibility,
        "refusal_title": ESCALATION_REFUSAL_TITLES.get(
            eligibility.code, "You may not resolve this escalation"
        ),
        "context_pretty": pretty_arguments(escalation.context),
        "arguments_pretty": pretty_arguments(arguments) if arguments is not None else "",
        "arguments_digest": context_data.get("arguments_digest", ""),
        "resolvers": escalation_resolvers(user, escalation)
        if escalation.status == EscalationStatus.OPEN
        else None,
    }


# --- what a run waits on (the run inspector asks) -----------------------------------------------


def next_hop(request: ApprovalRequest) -> dict[str, Any] | None:
    """Return where a pending request goes when its SLA passes (None: it expires instead)."""
    return _next_hop(request)


# Why someone else may not decide, said of them (the eligibility rule's message says the detail).
EXCLUSION_TITLES = {
    "requester": "asked for this approval",
    "run_initiator": "started the run that asks",
    "accountable_owner": "answers for the agent that asks",
    "already_decided_by_you": "has already decided this request",
    "already_decided": "the request is already final",
    "deadline_passed": "the deadline has passed",
    "not_eligible": "holds no role that decides this",
    "self_granted": "would decide under a power they gave themselves",
    "delegation_not_in_force": "their delegation is not in force now",
    "delegation_out_of_scope": "their delegation does not cover this request",
    "target_gone": "what the request is about no longer exists",
    "not_a_person": "is not a person: only people decide",
    "not_visible": "may not see it",
    "already_resolved": "it is already resolved",
}


def _visible_ids(user, people: list) -> set[int]:
    """Return the ids among `people` that `user` may see by name."""
    ids = [person.pk for person in people]
    return set(visible_people(user).filter(pk__in=ids).values_list("pk", flat=True))


def _exclusion(person, answer) -> dict[str, str]:
    """Return why one person may not decide, for the run inspector's "why it is waiting"."""
    return {
        "name": person.get_username(),
        "code": answer.code,
        "title": EXCLUSION_TITLES.get(answer.code, answer.code),
        "message": answer.message,
    }


def approval_deciders(user, request: ApprovalRequest) -> dict[str, Any]:
    """Return who may decide a pending request now and who of its roles is excluded, and why.

    The candidates are the members of the request's eligible roles and their in-force delegates;
    each is asked the eligibility rule itself. Names are those `user` may see; others counted.
    """
    from django.contrib.auth import get_user_model

    from governance.actions.eligibility import prior_deciders

    members = get_user_model().objects.filter(
        groups__role__in=request.eligible_roles.all(), is_active=True
    )
    delegates = Delegation.objects.active_at(clock.now()).filter(delegator__in=members)
    people = list(
        get_user_model()
        .objects.filter(Q(pk__in=members.values("pk")) | Q(pk__in=delegates.values("delegate")))
        .distinct()
        .order_by("username")
    )
    # Whom separation of duties names (the asker, the run's initiator, the agent's owner) are
    # shown excluded even when they hold none of the roles.
    for person in (request.requested_by, request.run_initiator, request.accountable_owner):
        if person is not None and all(person.pk != other.pk for other in people):
            people.append(person)
    prior = prior_deciders(request)
    visible = _visible_ids(user, people)
    may, excluded, hidden_may, hidden_excluded = [], [], 0, 0
    for person in people:
        answer = approval_eligibility(person, request, prior=prior)
        if answer:
            if person.pk in visible:
                may.append(person.get_username())
            else:
                hidden_may += 1
        elif person.pk in visible:
            excluded.append(_exclusion(person, answer))
        else:
            hidden_excluded += 1
    return {
        "may": may,
        "hidden_may": hidden_may,
        "excluded": excluded,
        "hidden_excluded": hidden_excluded,
        "roles": [role.name for role in request.eligible_roles.all()],
    }


def escalation_resolvers(user, escalation: Escalation) -> dict[str, Any]:
    """Return who may resolve an open escalation now and who of its role is excluded, and why."""
    from django.contrib.auth import get_user_model

    from governance.actions.eligibility import escalation_eligibility

    people = []
    if escalation.role_id is not None:
        people = list(
            get_user_model()
            .objects.filter(groups__role=escalation.role_id, is_active=True)
            .distinct()
            .order_by("username")
        )
    visible = _visible_ids(user, people)
    may, excluded, hidden = [], [], 0
    for person in people:
        answer = escalation_eligibility(person, escalation)
        if person.pk not in visible:
            hidden += 1
        elif answer:
            may.append(person.get_username())
        else:
            excluded.append(_exclusion(person, answer))
    return {
        "may": may,
        "excluded": excluded,
        "hidden": hidden,
        "role": escalation.role.name if escalation.role_id else "",
    }
