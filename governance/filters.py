"""The filters of approval requests and escalations, shared by the API and the web pages.

Each filterset narrows a queryset the caller may already see (`restrict(user, "view")`); its
`scope` picks the inbox by the one eligibility rule (`restrict(user, "decide")` for requests,
`restrict(user, "resolve")` for escalations), what the caller decided, or everything visible.
"""

from __future__ import annotations

import django_filters

from audit.filters import IsoDateTimeFilter
from governance.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalStatus,
    Escalation,
    EscalationStatus,
    PrincipalKind,
    RiskLevel,
)

MINE, DECIDED, ALL = "mine", "decided", "all"
SCOPES = [
    (MINE, "Waiting for me to decide"),
    (DECIDED, "Decided by me"),
    (ALL, "Everything I may see"),
]


class _ScopedFilterSet(django_filters.FilterSet):
    """A filterset whose `scope` (default `mine`) is applied even when the caller omits it."""

    scope = django_filters.ChoiceFilter(choices=SCOPES, method="filter_scope", empty_label=None)

    def filter_queryset(self, queryset):
        """Apply the scope first (its default too), then the other filters."""
        queryset = self.filter_scope(queryset, "scope", self.form.cleaned_data.get("scope") or MINE)
        cleaned = {k: v for k, v in self.form.cleaned_data.items() if k != "scope"}
        for name, value in cleaned.items():
            queryset = self.filters[name].filter(queryset, value)
        return queryset

    def filter_scope(self, queryset, name, value):
        """Narrow to the caller's scope (subclasses say what each scope means)."""
        raise NotImplementedError


def _agent_requester(queryset, field: str, value: str):
    """Rows raised by the agent principal with this username (e.g. `agent.closer`)."""
    return queryset.filter(
        **{f"{field}__username": value, f"{field}__principal__kind": PrincipalKind.AGENT}
    )


class ApprovalRequestFilter(_ScopedFilterSet):
    """Approval requests: the inbox scope, status, action, risk, agent, workflow, run, due."""

    status = django_filters.ChoiceFilter(choices=ApprovalStatus.choices)
    action = django_filters.CharFilter(help_text="The exact action, e.g. `tool.refund`.")
    risk = django_filters.ChoiceFilter(choices=RiskLevel.choices)
    agent = django_filters.CharFilter(
        method="filter_agent", help_text="The asking agent principal's username."
    )
    workflow = django_filters.NumberFilter(
        method="filter_workflow", help_text="The id of the workflow the request is about."
    )
    run = django_filters.NumberFilter(field_name="run_id")
    due_before = IsoDateTimeFilter(field_name="due_at", lookup_expr="lt")

    class Meta:
        model = ApprovalRequest
        fields = ["scope", "status", "action", "risk", "agent", "workflow", "run", "due_before"]

    def filter_scope(self, queryset, name, value):
        """mine: what the caller may decide now; decided: what they decided; all: as given."""
        user = self.request.user
        if value == MINE:
            return queryset.filter(pk__in=ApprovalRequest.objects.restrict(user, "decide"))
        if value == DECIDED:
            return queryset.filter(
                pk__in=ApprovalDecision.objects.filter(decided_by=user).values("request_id")
            )
        return queryset

    def filter_agent(self, queryset, name, value):
        """Requests an agent asked for."""
        return _agent_requester(queryset, "requested_by", value)

    def filter_workflow(self, queryset, name, value):
        """Requests about one workflow (a step's approval, a version to publish)."""
        return queryset.filter(target_type="orchestrator.workflow", target_id=str(int(value)))


class EscalationFilter(_ScopedFilterSet):
    """Escalations: the inbox scope, status, reason, agent, run, opened before."""

    status = django_filters.ChoiceFilter(choices=EscalationStatus.choices)
    reason = django_filters.CharFilter(help_text="step_failed, low_confidence, policy, ...")
    agent = django_filters.CharFilter(
        method="filter_agent", help_text="The raising agent principal's username."
    )
    run = django_filters.NumberFilter(field_name="run_id")
    opened_before = IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Escalation
        fields = ["scope", "status", "reason", "agent", "run", "opened_before"]

    def filter_scope(self, queryset, name, value):
        """mine: what the caller may resolve now; decided: what they resolved; all: as given."""
        user = self.request.user
        if value == MINE:
            return queryset.filter(pk__in=Escalation.objects.restrict(user, "resolve"))
        if value == DECIDED:
            return queryset.filter(resolved_by=user)
        return queryset

    def filter_agent(self, queryset, name, value):
        """Escalations an agent raised."""
        return _agent_requester(queryset, "raised_by", value)
