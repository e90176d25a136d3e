"""The filters of agents, tools, tool invocations and model calls, shared by the API and the web
pages. Each narrows a queryset the caller may already see (`restrict(user, "view")`).
"""

from __future__ import annotations

import django_filters

from agents.models import Agent, AgentStatus, ModelCall, Tool, ToolInvocation, Verdict
from governance.models import RiskLevel

EXECUTED, NOT_EXECUTED = "executed", "not_executed"


class AgentFilter(django_filters.FilterSet):
    """Agents: by kill-switch status, accountable owner, provider."""

    status = django_filters.ChoiceFilter(choices=AgentStatus.choices)
    owner = django_filters.CharFilter(field_name="owner_name", help_text="The owner's username.")
    provider = django_filters.CharFilter(field_name="provider__slug")

    class Meta:
        model = Agent
        fields = ["status", "owner", "provider"]


class ToolFilter(django_filters.FilterSet):
    """Tools: enabled or not, by risk, still registered by code or not."""

    enabled = django_filters.BooleanFilter()
    risk = django_filters.ChoiceFilter(choices=RiskLevel.choices)
    registered = django_filters.BooleanFilter()

    class Meta:
        model = Tool
        fields = ["enabled", "risk", "registered"]


class ToolInvocationFilter(django_filters.FilterSet):
    """Tool invocations: by run, agent, tool, the control layer's decision and execution."""

    run = django_filters.NumberFilter(field_name="run_id")
    agent = django_filters.CharFilter(field_name="agent_slug", help_text="The agent's slug.")
    tool = django_filters.CharFilter()
    decision = django_filters.ChoiceFilter(field_name="verdict", choices=Verdict.choices)
    status = django_filters.ChoiceFilter(
        choices=[(EXECUTED, "Executed"), (NOT_EXECUTED, "Not executed")],
        method="filter_status",
    )

    class Meta:
        model = ToolInvocation
        fields = ["run", "agent", "tool", "decision", "status"]

    def filter_status(self, queryset, name, value):
        """Calls that ran (their outcome recorded) or that did not (yet)."""
        return queryset.filter(executed_at__isnull=value != EXECUTED)


class ModelCallFilter(django_filters.FilterSet):
    """Model calls: by run, agent and provider."""

    run = django_filters.NumberFilter(field_name="run_id")
    agent = django_filters.CharFilter(field_name="agent_slug", help_text="The agent's slug.")
    provider = django_filters.CharFilter(help_text="The provider's slug.")

    class Meta:
        model = ModelCall
        fields = ["run", "agent", "provider"]
