"""The agent review: idle agents that still hold permissions, ownerless agents, overreaching tools.

Read-only questions the admin's review page asks (docs/agents.md, "The review page"):

* idle: no tool call for `days` days (`last_active_at`, or the creation time when it never
  acted), yet its service account still holds a permission, model-wide or on some object,
  directly or through a role;
* without an accountable owner: the owner is gone, inactive, or not a person;
* tools beyond its roles: a tool in its mandate whose declared permission on its target model
  the agent's principal holds nowhere (so either the tool is useless to it or the roles are
  missing a grant someone assumed), `delegate` with no delegates, or a high- or critical-risk
  tool with side effects whose row names no approval rule (no role lets an agent act at that
  risk unattended; a policy may still ask for approval, but only the tool's own rule applies
  to every call, whatever the policies say).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth.models import Permission
from django.db.models import Q, QuerySet
from guardian.models import GroupObjectPermission, UserObjectPermission
from guardian.shortcuts import get_objects_for_user

from agents.models import Agent, Tool
from agents.tools import registered_tools
from audit import clock
from governance.actions.principals import is_person
from governance.models import RiskLevel
from governance.permissions import has_model_permission, permission_name

DEFAULT_IDLE_DAYS = 30
UNATTENDED_RISKS = {RiskLevel.HIGH, RiskLevel.CRITICAL}


@dataclass(frozen=True)
class IdleAgent:
    """An agent that has not acted for a while, and how many permissions it still holds."""

    agent: Agent
    last_active_at: dt.datetime | None
    permissions: int


@dataclass(frozen=True)
class Overreach:
    """A tool in an agent's mandate that its roles do not back, and why."""

    agent: Agent
    tool: Tool
    reason: str


def permission_count(user) -> int:
    """Count the permissions a user holds: model-wide or per object, its own or its roles'."""
    groups = user.groups.all()
    return (
        user.user_permissions.count()
        + Permission.objects.filter(group__in=groups).count()
        + UserObjectPermission.objects.filter(user=user).count()
        + GroupObjectPermission.objects.filter(group__in=groups).count()
    )


def _agents(agents: QuerySet | None) -> QuerySet:
    """Return the agents to review (all of them unless a restricted queryset is given)."""
    return agents if agents is not None else Agent.objects.all()


def idle_agents(
    days: int = DEFAULT_IDLE_DAYS,
    *,
    agents: QuerySet | None = None,
    now: dt.datetime | None = None,
) -> list[IdleAgent]:
    """Return agents idle for `days` days or more that still hold some permission."""
    cutoff = (now or clock.now()) - dt.timedelta(days=days)
    candidates = (
        _agents(agents)
        .filter(
            Q(last_active_at__lt=cutoff) | Q(last_active_at__isnull=True, created_at__lt=cutoff)
        )
        .select_related("user", "owner")
    )
    found = []
    for agent in candidates:
        held = permission_count(agent.user)
        if held:
            found.append(IdleAgent(agent, agent.last_active_at, held))
    return found


def ownerless_agents(*, agents: QuerySet | None = None) -> list[tuple[Agent, str]]:
    """Return agents nobody answers for, with what is wrong with their owner."""
    found = []
    for agent in _agents(agents).select_related("owner"):
        if agent.owner is None:
            gone = f" (was {agent.owner_name})" if agent.owner_name else ""
            found.append((agent, f"no owner{gone}"))
        elif not agent.owner.is_active:
            found.append((agent, f"owner {agent.owner.get_username()} is deactivated"))
        elif not is_person(agent.owner):
            found.append((agent, f"owner {agent.owner.get_username()} is not a person"))
    return found


def _holds_anywhere(user, action: str, label: str) -> bool:
    """Tell whether a user holds `action` on a model, model-wide or on at least one object."""
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        return False
    if has_model_permission(user, action, model):
        return True
    if not user.is_active:
        return False
    return get_objects_for_user(
        user,
        permission_name(model, action),
        klass=model,
        accept_global_perms=False,
        with_superuser=False,
    ).exists()


def tool_overreach(agent: Agent, tool: Tool) -> str:
    """Return why a tool exceeds what the agent's roles allow ('' when it does not)."""
    spec = registered_tools().get(tool.name)
    if spec is None:
        return ""
    if tool.risk in UNATTENDED_RISKS and tool.side_effects and tool.approval_rule_id is None:
        return f"{tool.get_risk_display().lower()} risk with side effects and no approval rule"
    if spec.permission == "delegate":
        return "" if agent.delegates.exists() else "delegate, but no agent to delegate to"
    if not spec.permission:
        return ""
    labels = spec.target_labels(tool.config)
    if not labels:
        return ""
    if any(_holds_anywhere(agent.user, spec.permission, label) for label in labels):
        return ""
    return f"needs {spec.permission} on {' or '.join(labels)}, which its principal holds nowhere"


def overreaching_agents(*, agents: QuerySet | None = None) -> list[Overreach]:
    """Return every (agent, tool) pair where the tool exceeds what the agent's roles allow."""
    found = []
    for agent in _agents(agents).select_related("user").prefetch_related("tools"):
        for tool in agent.tools.all():
            if reason := tool_overreach(agent, tool):
                found.append(Overreach(agent, tool, reason))
    return found
