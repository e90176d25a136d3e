"""The filters of approval requests and escalations, shared by the API and the web pages.

Each filterset narrows a queryset the caller may already see (`restrict(user, "view")`); its
`scope` picks the inbox by the one eligibility rule (`restrict(user, "decide")` for requests,
`restrict(user, "resolve")` for escalations), what the caller decided, or everything visible.
The web inbox's tabs are the approval scopes, so a tab and the API list the same rows.
"""

from __future__ import annotations

import datetime as dt

import django_filters
from django import forms
from django.db.models import Q

from audit import clock
from audit.filters import IsoDateTimeFilter
from governance import inbox
from governance.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalStatus,
    Escalation,
    EscalationStatus,
    PrincipalKind,
    RiskLevel,
)

MINE, ROLES, DECIDED, ALL = "mine", "roles", "decided", "all"
SCOPES = [
    (MINE, "Waiting for me to decide"),
    (DECIDED, "Decided by me"),
    (ALL, "Everything I may see"),
]
APPROVAL_SCOPES = list(inbox.TABS.items())  # the web inbox's tabs, in its words
DUE_CHOICES = [
    ("overdue", "Overdue"),
    ("hour", "Due within an hour"),
    ("day", "Due within a day"),
]
SORT_FIELDS = (("due_at", "due"), ("created_at", "created"), ("decided_at", "decided"))


class _ScopedFilterSet(django_filters.FilterSet):
    """A filterset whose `scope` (default `mine`) is applied even when the caller omits it."""

    scope = django_filters.ChoiceFilter(choices=SCOPES, method="filter_scope", empty_label=None)

    def __init__(self, data=None, queryset=None, *, user=None, **kwargs):
        super().__init__(data, queryset, **kwargs)
        self.user = user if user is not None else getattr(self.request, "user", None)

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
    """Approval requests: the inbox scope, status, action, risk, agent, workflow, run, due.

    The API reads it from query parameters; the web inbox renders it as its filter form, with
    `with_choices=True` offering as choices only the actions, agents and workflows of the rows
    being filtered (already narrowed by restrict()), so a form never names what its viewer may
    not see. Rows come sorted by due time (then id) unless `sort` asks otherwise; the API's
    cursor pages keep their own order.
    """

    scope = django_filters.ChoiceFilter(
        choices=APPROVAL_SCOPES, method="filter_scope", empty_label=None
    )
    status = django_filters.ChoiceFilter(choices=ApprovalStatus.choices)
    action = django_filters.CharFilter(help_text="The exact action, e.g. `tool.refund`.")
    risk = django_filters.ChoiceFilter(choices=RiskLevel.choices)
    agent = django_filters.CharFilter(
        method="filter_agent", help_text="The asking agent principal's username."
    )
    workflow = django_filters.CharFilter(
        method="filter_workflow", help_text="The slug of the workflow the request belongs to."
    )
    run = django_filters.NumberFilter(field_name="run_id")
    due = django_filters.ChoiceFilter(choices=DUE_CHOICES, method="filter_due")
    due_before = IsoDateTimeFilter(field_name="due_at", lookup_expr="lt")
    sort = django_filters.OrderingFilter(fields=SORT_FIELDS, label="Sort")

    class Meta:
        model = ApprovalRequest
        fields = [
            "scope",
            "status",
            "action",
            "risk",
            "agent",
            "workflow",
            "run",
            "due",
            "due_before",
        ]

    def __init__(self, data=None, queryset=None, *, with_choices: bool = False, **kwargs):
        super().__init__(data, queryset, **kwargs)
        if with_choices:
            self._offer_choices()

    def _offer_choices(self) -> None:
        """Render action, agent and workflow as choices drawn from the rows being filtered."""
        base = self.queryset.order_by()
        actions = base.values_list("action", flat=True).distinct().order_by("action")
        agents = (
            base.filter(requested_by__principal__kind=PrincipalKind.AGENT)
            .values_list("requested_by__username", flat=True)
            .distinct()
            .order_by("requested_by__username")
        )
        offered = {
            "action": [(action, action) for action in actions],
            "agent": [(name, name) for name in agents],
            "workflow": inbox.workflow_choices(self.user, base) if self.user is not None else [],
        }
        for name, choices in offered.items():
            self.filters[name].extra["widget"] = forms.Select(choices=[("", "Any"), *choices])

    def filter_scope(self, queryset, name, value):
        """mine: what the caller may decide now; roles: pending for a role they hold;
        decided: what they decided; all: as given."""
        user = self.user
        if value == MINE:
            # One row re-read (`only`) asks the rule of that row alone, not the whole inbox.
            only = getattr(self, "only", None)
            mine = inbox.decidable(user) if only is None else inbox.decidable_among(user, [only])
            return queryset.filter(pk__in=mine.values("pk"))
        if value == ROLES:
            held = ApprovalRequest.objects.filter(
                status=ApprovalStatus.PENDING, eligible_roles__group__user=user
            )
            return queryset.filter(pk__in=held.values("pk"))
        if value == DECIDED:
            return queryset.filter(
                pk__in=ApprovalDecision.objects.filter(decided_by=user).values("request_id")
            )
        return queryset

    def filter_agent(self, queryset, name, value):
        """Requests an agent asked for."""
        return _agent_requester(queryset, "requested_by", value)

    def filter_workflow(self, queryset, name, value):
        """Requests of one workflow: its runs' requests and its own versions."""
        return inbox.of_workflow(queryset, value)

    def filter_due(self, queryset, name, value):
        """Pending requests whose current SLA ends before a horizon (or has ended)."""
        now = clock.now()
        horizon = {"overdue": now, "hour": now + dt.timedelta(hours=1)}.get(
            value, now + dt.timedelta(days=1)
        )
        return queryset.filter(Q(due_at__lte=horizon), status=ApprovalStatus.PENDING)

    @property
    def qs(self):
        """The filtered rows, sorted by due time (then id) unless another sort was asked."""
        queryset = super().qs
        if not (self.form.is_bound and self.form.cleaned_data.get("sort")):
            queryset = queryset.order_by("due_at", "pk")
        return queryset


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
        user = self.user
        if value == MINE:
            return queryset.filter(pk__in=Escalation.objects.restrict(user, "resolve"))
        if value == DECIDED:
            return queryset.filter(resolved_by=user)
        return queryset

    def filter_agent(self, queryset, name, value):
        """Escalations an agent raised."""
        return _agent_requester(queryset, "raised_by", value)
