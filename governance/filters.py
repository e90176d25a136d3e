"""Governance's filtersets (django-filter), shared by the web pages and the API."""

from __future__ import annotations

import datetime as dt

import django_filters
from django.db.models import Q

from audit import clock
from governance import inbox
from governance.models import ApprovalRequest, PrincipalKind, RiskLevel

DUE_CHOICES = [
    ("overdue", "Overdue"),
    ("hour", "Due within an hour"),
    ("day", "Due within a day"),
]
SORT_FIELDS = (("due_at", "due"), ("created_at", "created"), ("decided_at", "decided"))


class ApprovalRequestFilter(django_filters.FilterSet):
    """Approval requests by workflow, risk, agent, action and due time; sorted by due time.

    The choices of workflow, agent and action are drawn from the requests being filtered (which
    the caller has already narrowed with restrict()), so a list never names what its viewer may
    not see. Pass `user` for the workflow choices.
    """

    workflow = django_filters.ChoiceFilter(method="filter_workflow", label="Workflow")
    risk = django_filters.ChoiceFilter(choices=RiskLevel.choices, label="Risk")
    agent = django_filters.ChoiceFilter(
        field_name="requested_by__username", label="Agent", method="filter_agent"
    )
    action = django_filters.ChoiceFilter(label="Action")
    due = django_filters.ChoiceFilter(choices=DUE_CHOICES, method="filter_due", label="Due")
    sort = django_filters.OrderingFilter(fields=SORT_FIELDS, label="Sort")

    class Meta:
        model = ApprovalRequest
        fields = ["workflow", "risk", "agent", "action", "due"]

    def __init__(self, data=None, queryset=None, *, user=None, **kwargs):
        super().__init__(data, queryset, **kwargs)
        base = self.queryset.order_by()
        self.filters["action"].extra["choices"] = [
            (action, action)
            for action in base.values_list("action", flat=True).distinct().order_by("action")
        ]
        agents = base.filter(requested_by__principal__kind=PrincipalKind.AGENT)
        self.filters["agent"].extra["choices"] = [
            (name, name)
            for name in agents.values_list("requested_by__username", flat=True)
            .distinct()
            .order_by("requested_by__username")
        ]
        self.filters["workflow"].extra["choices"] = (
            inbox.workflow_choices(user, base) if user is not None else []
        )

    def filter_workflow(self, queryset, name, value):
        """The requests of one workflow's runs and versions."""
        return inbox.of_workflow(queryset, value)

    def filter_agent(self, queryset, name, value):
        """The requests an agent asked for."""
        return queryset.filter(
            requested_by__username=value, requested_by__principal__kind=PrincipalKind.AGENT
        )

    def filter_due(self, queryset, name, value):
        """The requests whose current SLA ends before a horizon (or has ended)."""
        now = clock.now()
        horizon = {"overdue": now, "hour": now + dt.timedelta(hours=1)}.get(
            value, now + dt.timedelta(days=1)
        )
        return queryset.filter(Q(due_at__lte=horizon), status="pending")

    @property
    def qs(self):
        """The filtered rows, sorted by due time (then id) unless another sort was asked."""
        queryset = super().qs
        if not (self.form.is_bound and self.form.cleaned_data.get("sort")):
            queryset = queryset.order_by("due_at", "pk")
        return queryset
