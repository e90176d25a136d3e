"""The filtersets of workflows and runs, shared by the API and the web pages."""

from __future__ import annotations

import django_filters
from django.db.models import Exists, OuterRef, Q

from audit.filters import IsoDateTimeFilter
from orchestrator.models import RunStatus, StepRun, StepStatus, Workflow, WorkflowRun

# What a waiting step waits on, read from how the engine parks it: a reserved signal names an
# approval or an escalation; a step parked by its `on_failure` handler has neither signal nor
# timer and names what it awaits in its error; a timer alone is a sleep; any other signal is one
# sent from outside. (A parent waiting for its children, `children:...`, waits on none of these.)
WAITING_ON = {
    "timer": Q(wait_signal="", wake_at__isnull=False),
    "signal": Q(wait_signal__gt="")
    & ~Q(wait_signal__startswith="approval:")
    & ~Q(wait_signal__startswith="escalation:")
    & ~Q(wait_signal__startswith="children:"),
    "approval": Q(wait_signal__startswith="approval:"),
    "escalation": Q(wait_signal__startswith="escalation:")
    | Q(wait_signal="", wake_at__isnull=True, error__has_key="awaiting"),
}


def waiting_on_q(what: str) -> Q:
    """Return the runs with a step waiting on `what` (timer, signal, approval, escalation)."""
    steps = StepRun.objects.filter(WAITING_ON[what], run=OuterRef("pk"), status=StepStatus.WAITING)
    return Q(Exists(steps))


HANDLED_BY = [
    ("person", "a person (escalation or approval)"),
    ("escalation", "a person, on an escalation"),
    ("approval", "a person, on an approval"),
    ("nobody", "no person"),
]


def _people_q(what: str) -> Q:
    """Return the runs with an escalation, an approval request, or either (`person`)."""
    from governance.models import ApprovalRequest, Escalation

    escalations = Q(Exists(Escalation.objects.filter(run_id=OuterRef("pk"))))
    approvals = Q(Exists(ApprovalRequest.objects.filter(run_id=OuterRef("pk"))))
    return {"escalation": escalations, "approval": approvals}.get(what, escalations | approvals)


class WorkflowFilter(django_filters.FilterSet):
    """Workflows by activity."""

    is_active = django_filters.BooleanFilter()

    class Meta:
        model = Workflow
        fields = ["is_active"]


class RunFilter(django_filters.FilterSet):
    """Runs by workflow and version, status, business key, who started them, when, the agents
    that worked on them, the step that failed, and what they wait on."""

    workflow = django_filters.CharFilter(field_name="workflow__slug", help_text="Workflow slug.")
    # No DISTINCT (django-filter's default for multiple choices): status is the run's own column,
    # so no row repeats, and DISTINCT over every column sorted each match before the page's
    # LIMIT (p95 428 ms for status=failed over 1M runs, bench/api.py; docs/benchmarks.md).
    status = django_filters.MultipleChoiceFilter(
        choices=RunStatus.choices, distinct=False, label="Status"
    )
    business_key = django_filters.CharFilter(label="Business key")
    started_by = django_filters.CharFilter(
        field_name="started_by_name",
        label="Started by",
        help_text="Username of who started the run.",
    )
    created_after = IsoDateTimeFilter(
        field_name="created_at", lookup_expr="gte", label="Created after"
    )
    created_before = IsoDateTimeFilter(
        field_name="created_at", lookup_expr="lt", label="Created before"
    )
    version = django_filters.NumberFilter(
        field_name="version__number", label="Version", help_text="Version number of the workflow."
    )
    agent = django_filters.CharFilter(
        method="filter_agent",
        label="Agent",
        help_text="Slug of an agent that made a model or tool call in it.",
    )
    failed_step = django_filters.CharFilter(
        method="filter_failed_step",
        label="Failed at step",
        help_text="Runs in which this step (one of its items or delegated children) failed.",
    )
    finished_after = IsoDateTimeFilter(
        field_name="finished_at", lookup_expr="gte", label="Ended after"
    )
    finished_before = IsoDateTimeFilter(
        field_name="finished_at", lookup_expr="lt", label="Ended before"
    )
    escalated = django_filters.CharFilter(
        method="filter_escalated",
        label="Escalated for",
        help_text="Runs escalated to a person for this reason (policy, low_confidence, "
        "step_failed, ...), or `any`.",
    )
    handled_by = django_filters.ChoiceFilter(
        choices=HANDLED_BY,
        method="filter_handled_by",
        label="Handled by",
        help_text="Runs a person acted on (an escalation or an approval), or that none did.",
    )
    acknowledged_after = IsoDateTimeFilter(method="filter_acknowledged", label="Acknowledged after")
    acknowledged_before = IsoDateTimeFilter(
        method="filter_acknowledged", label="Acknowledged before"
    )
    waiting_on = django_filters.ChoiceFilter(
        choices=[(key, key) for key in WAITING_ON],
        method="filter_waiting_on",
        label="Waiting on",
        help_text="Runs with a step waiting on a timer, a signal, an approval or an escalation.",
    )

    class Meta:
        model = WorkflowRun
        fields = ["workflow", "status", "business_key", "started_by"]

    def filter_agent(self, queryset, name, value):
        """Keep the runs an agent of that slug worked on (a model call or a tool call)."""
        if not value:
            return queryset
        from agents.models import ModelCall, ToolInvocation

        calls = ModelCall.objects.filter(run_id=OuterRef("pk"), agent_slug=value)
        tools = ToolInvocation.objects.filter(run_id=OuterRef("pk"), agent_slug=value)
        return queryset.filter(Q(Exists(calls)) | Q(Exists(tools)))

    def filter_failed_step(self, queryset, name, value):
        """Keep the runs in which the step, or one of its items or children, failed."""
        if not value:
            return queryset
        failed = StepRun.objects.filter(run=OuterRef("pk"), status=StepStatus.FAILED).filter(
            Q(step_id=value) | Q(step_id__startswith=f"{value}/")
        )
        return queryset.filter(Exists(failed))

    def filter_escalated(self, queryset, name, value):
        """Keep the runs escalated to a person for this reason (any reason for `any`)."""
        if not value:
            return queryset
        from governance.models import Escalation

        escalations = Escalation.objects.filter(run_id=OuterRef("pk"))
        if value != "any":
            escalations = escalations.filter(reason=value)
        return queryset.filter(Exists(escalations))

    def filter_handled_by(self, queryset, name, value):
        """Keep the runs a person acted on (or, for `nobody`, that none did)."""
        if not value:
            return queryset
        if value == "nobody":
            return queryset.exclude(_people_q("person"))
        return queryset.filter(_people_q(value))

    def filter_acknowledged(self, queryset, name, value):
        """Keep the runs acknowledged (as their workflow declares) at or after / before a time."""
        if not value:
            return queryset
        from orchestrator.models import KpiAck

        lookup = "gte" if name == "acknowledged_after" else "lt"
        acks = KpiAck.objects.filter(run_id=OuterRef("pk"), **{f"acknowledged_at__{lookup}": value})
        return queryset.filter(Exists(acks))

    def filter_waiting_on(self, queryset, name, value):
        """Keep the runs with a step waiting on `value`."""
        return queryset.filter(waiting_on_q(value)) if value else queryset
