"""Admin for workflows and runs: read-only history, and operations that go through services."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from governance.admin_mixins import GovernedAdminMixin, audited_view
from orchestrator import services
from orchestrator.forms import PublishVersionForm, SendSignalForm, StartRunForm
from orchestrator.models import (
    RunEvent,
    RunSignal,
    StepRun,
    StepStatus,
    Workflow,
    WorkflowRun,
    WorkflowVersion,
)


def pretty_json(value) -> str:
    """Render JSON for reading in the admin."""
    return format_html("<pre style='white-space: pre-wrap'>{}</pre>", json.dumps(value, indent=2))


class ReadOnlyInline(admin.TabularInline):
    """An inline that only shows rows."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        """Rows here are written by the engine, not by hand."""
        return False

    def has_change_permission(self, request, obj=None):
        """Rows here are written by the engine, not by hand."""
        return False


class VersionInline(ReadOnlyInline):
    model = WorkflowVersion
    fields = ["number", "digest", "published_at", "published_by_name", "note"]
    readonly_fields = fields
    ordering = ["-number"]


def _operation_page(model_admin, request, title, form, obj, submit_label):
    """Render the shared form page for an admin operation."""
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "form": form,
        "object": obj,
        "opts": model_admin.model._meta,
        "submit_label": submit_label,
    }
    return TemplateResponse(request, "admin/orchestrator/operation_form.html", context)


@admin.register(Workflow)
class WorkflowAdmin(GovernedAdminMixin, SimpleHistoryAdmin):
    list_display = ["slug", "name", "is_active", "latest", "run_count", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["slug", "name", "description"]
    inlines = [VersionInline]
    readonly_fields = ["created_at", "start_link"]

    @admin.display(description="Latest version")
    def latest(self, obj):
        version = obj.latest_version()
        return f"v{version.number}" if version else "—"

    @admin.display(description="Runs")
    def run_count(self, obj):
        return obj.runs.count()

    @admin.display(description="Operations")
    def start_link(self, obj):
        if not obj.pk:
            return "—"
        return format_html(
            '<a class="button" href="{}">Start a run</a> '
            '<a class="button" href="{}?workflow={}">Publish a new version</a>',
            reverse("admin:orchestrator_workflow_start", args=[obj.pk]),
            reverse("admin:orchestrator_workflowversion_add"),
            obj.pk,
        )

    def get_urls(self):
        return [
            path(
                "<int:pk>/start/",
                self.admin_site.admin_view(self.start_view),
                name="orchestrator_workflow_start",
            ),
            *super().get_urls(),
        ]

    @audited_view("add")
    def start_view(self, request, pk):
        """Start a run from the admin through the service layer."""
        workflow = self.get_object(request, str(pk))
        if not self.has_view_permission(request, workflow) or not request.user.has_perm(
            "orchestrator.add_workflowrun"
        ):
            raise PermissionDenied
        form = StartRunForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                run = services.start_run(
                    workflow,
                    form.cleaned_data["input"],
                    started_by=request.user,
                    trigger="admin",
                    business_key=form.cleaned_data["business_key"],
                    idempotency_key=form.cleaned_data["idempotency_key"] or None,
                )
            except services.EngineError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Started run {run.pk}.")
                return redirect("admin:orchestrator_workflowrun_change", run.pk)
        return _operation_page(self, request, f"Start a run of {workflow}", form, workflow, "Start")


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
    """Versions are published through a validating form and never changed afterwards."""

    form = PublishVersionForm
    list_display = ["__str__", "workflow", "number", "published_at", "published_by_name"]
    list_filter = ["workflow"]
    search_fields = ["workflow__slug", "note", "digest"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workflow", "definition_text", "note"]
        return [
            "workflow",
            "number",
            "digest",
            "definition_pretty",
            "note",
            "published_at",
            "published_by_name",
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return self.get_fields(request, obj)

    @admin.display(description="Definition")
    def definition_pretty(self, obj):
        return pretty_json(obj.definition)

    def has_change_permission(self, request, obj=None):
        """Published versions are immutable; viewing is allowed through view permission."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Runs are pinned to versions; they are never deleted."""
        return False

    def save_model(self, request, obj, form, change):
        """Publish through the service layer, which numbers the version."""
        version = services.publish_version(
            form.cleaned_data["workflow"],
            form.cleaned_data["definition_text"],
            actor=request.user,
            note=form.cleaned_data["note"],
        )
        obj.pk = version.pk
        obj.number = version.number
        obj._state.adding = False


class StepInline(ReadOnlyInline):
    model = StepRun
    fk_name = "run"
    fields = [
        "step_id",
        "item_index",
        "step_type",
        "status",
        "attempt",
        "started_at",
        "finished_at",
        "error",
    ]
    readonly_fields = fields


class EventInline(ReadOnlyInline):
    model = RunEvent
    fields = ["created_at", "kind", "step_id", "item_index", "attempt", "actor_name", "data"]
    readonly_fields = fields
    show_change_link = False
    ordering = ["id"]


class SignalInline(ReadOnlyInline):
    model = RunSignal
    fields = ["name", "payload", "sent_by_name", "received_at", "consumed_by", "consumed_at"]
    readonly_fields = fields
    show_change_link = False


def _bulk_operation(label, operation):
    """Make an admin action that applies a run operation to each selected run."""

    def action(modeladmin, request, queryset):
        done = 0
        for run in queryset:
            try:
                operation(run, actor=request.user)
                done += 1
            except services.EngineError as exc:
                modeladmin.message_user(request, f"Run {run.pk}: {exc}", messages.WARNING)
        if done:
            modeladmin.message_user(request, f"{label}: {done} run(s).", messages.SUCCESS)

    action.short_description = f"{label} selected runs"
    action.__name__ = f"{label.lower()}_runs"
    action.allowed_permissions = ("change",)
    return action


@admin.register(WorkflowRun)
class WorkflowRunAdmin(GovernedAdminMixin, admin.ModelAdmin):
    """Runs are written by the engine; the admin shows them and applies operations."""

    list_display = [
        "id",
        "workflow",
        "version_number",
        "colored_status",
        "phase",
        "business_key",
        "started_by_name",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "workflow", "trigger", "created_at"]
    search_fields = ["=id", "business_key", "idempotency_key", "workflow__slug"]
    date_hierarchy = "created_at"
    list_select_related = ["workflow", "version"]
    inlines = [StepInline, SignalInline, EventInline]
    actions = [
        _bulk_operation("Cancel", services.cancel_run),
        _bulk_operation("Pause", services.pause_run),
        _bulk_operation("Resume", services.resume_run),
    ]
    fields = [
        "workflow",
        "version",
        "status",
        "phase",
        "operations",
        "input_pretty",
        "output_pretty",
        "error_pretty",
        "started_by_name",
        "trigger",
        "business_key",
        "idempotency_key",
        "created_at",
        "updated_at",
        "finished_at",
    ]
    readonly_fields = fields

    @admin.display(description="Version")
    def version_number(self, obj):
        return f"v{obj.version.number}"

    @admin.display(description="Status", ordering="status")
    def colored_status(self, obj):
        return format_html(
            '<span class="steward-status-{}">{}</span>', obj.status, obj.get_status_display()
        )

    @admin.display(description="Now")
    def phase(self, obj):
        """Say what an unfinished run is doing: running steps, or waiting for a timer or signal."""
        if obj.is_finished:
            return "—"
        counts = {s: 0 for s in StepStatus.values}
        for status in obj.steps.values_list("status", flat=True):
            counts[status] += 1
        if counts["running"] or counts["ready"]:
            return f"{counts['running']} running, {counts['ready']} ready"
        if counts["waiting"]:
            return f"waiting ({counts['waiting']} step(s))"
        return obj.get_status_display()

    @admin.display(description="Input")
    def input_pretty(self, obj):
        return pretty_json(obj.input)

    @admin.display(description="Output")
    def output_pretty(self, obj):
        return pretty_json(obj.output)

    @admin.display(description="Error")
    def error_pretty(self, obj):
        return pretty_json(obj.error) if obj.error else "—"

    @admin.display(description="Operations")
    def operations(self, obj):
        if obj.is_finished:
            return "—"
        return format_html(
            '<a class="button" href="{}">Send a signal</a>',
            reverse("admin:orchestrator_workflowrun_signal", args=[obj.pk]),
        )

    def has_add_permission(self, request):
        """Runs start from their workflow's page, through the service layer."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Runs are records; they are not deleted from the admin."""
        return False

    def get_urls(self):
        return [
            path(
                "<int:pk>/signal/",
                self.admin_site.admin_view(self.signal_view),
                name="orchestrator_workflowrun_signal",
            ),
            *super().get_urls(),
        ]

    @audited_view("change")
    def signal_view(self, request, pk):
        """Send a signal to a run through the service layer."""
        run = self.get_object(request, str(pk))
        if not self.has_change_permission(request, run):
            raise PermissionDenied
        form = SendSignalForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.send_signal(
                    run,
                    form.cleaned_data["name"],
                    form.cleaned_data["payload"],
                    sent_by=request.user,
                )
            except services.EngineError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Signal {form.cleaned_data['name']!r} sent.")
                return redirect("admin:orchestrator_workflowrun_change", run.pk)
        return _operation_page(self, request, f"Send a signal to run {run.pk}", form, run, "Send")

    def save_model(self, request, obj, form, change):
        """Runs are never saved from the admin form."""


@admin.action(description="Retry selected failed steps", permissions=["change"])
def retry_steps(modeladmin, request, queryset):
    """Retry each selected failed step through the service layer."""
    for step in queryset:
        try:
            services.retry_step(step, actor=request.user)
            modeladmin.message_user(request, f"Retrying {step}.", messages.SUCCESS)
        except services.EngineError as exc:
            modeladmin.message_user(request, f"{step}: {exc}", messages.WARNING)


@admin.register(StepRun)
class StepRunAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "run",
        "step_type",
        "status",
        "attempt",
        "worker",
        "ready_at",
        "started_at",
        "finished_at",
    ]
    list_filter = ["status", "step_type", "run__workflow"]
    search_fields = ["step_id", "=run__id", "worker"]
    list_select_related = ["run"]
    actions = [retry_steps]
    readonly_fields = [f.name for f in StepRun._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        """Steps are written by the engine only."""


@admin.register(RunEvent)
class RunEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "run", "kind", "step_id", "item_index", "attempt", "actor_name"]
    list_filter = ["kind", "run__workflow", "created_at"]
    search_fields = ["=run__id", "step_id"]
    list_select_related = ["run"]
    readonly_fields = [f.name for f in RunEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
