"""Admin for workflows and runs: read-only history, and operations that go through services.

Every page goes through governance's restrict() / can(): workflows and runs with the governed
admin (GovernedAdminMixin), and the rows that belong to them (versions, steps, events, effects)
through the workflow or run they belong to. Operations (start, publish, signal, cancel, pause,
resume, retry) call orchestrator.services, which authorise the user and audit refusals; a page or
action the user may not use is a 403 (or a 404 for what they may not see), audited.
"""

from __future__ import annotations

import json
from contextvars import ContextVar

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from simple_history.admin import SimpleHistoryAdmin

from governance.admin_mixins import (
    GovernedAdminMixin,
    ObjectPermissionsThroughRolesMixin,
    ReadOnlyInline,
    RestrictedChoicesMixin,
    audited_view,
)
from governance.permissions import AccessDenied, NotVisible, can, has_model_permission
from orchestrator import inbound, services
from orchestrator.forms import PublishVersionForm, SendSignalForm, StartRunForm
from orchestrator.models import (
    EffectJournal,
    InboundEndpoint,
    InboundHook,
    ManualBaseline,
    RunEvent,
    RunSignal,
    StepRun,
    StepStatus,
    Workflow,
    WorkflowRun,
    WorkflowVersion,
)

# Who is looking at the page being rendered: display callables see only the object, and the
# operations they offer depend on the viewer (a context variable: admins are shared by threads).
_viewer: ContextVar = ContextVar("orchestrator_admin_viewer", default=None)


def pretty_json(value) -> str:
    """Render JSON for reading in the admin."""
    return format_html("<pre style='white-space: pre-wrap'>{}</pre>", json.dumps(value, indent=2))


class VersionInline(ReadOnlyInline):
    model = WorkflowVersion
    fields = ["number", "status", "digest", "published_at", "published_by_name", "note"]
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


def _refuse_unavailable_action(model_admin, request) -> None:
    """Refuse (403, audited by the page) a declared bulk action the user may not use."""
    if request.method != "POST" or "action" not in request.POST:
        return
    name = request.POST["action"]
    declared = {model_admin.get_action(action)[1] for action in model_admin.actions}
    if name in declared and name not in model_admin.get_actions(request):
        raise AccessDenied(
            request.user,
            "change",
            model=model_admin.model,
            detail=f"You may not use the action {name!r} here.",
        )


class RestrictedThroughParentAdmin(RestrictedChoicesMixin, admin.ModelAdmin):
    """Read-only rows of a governed workflow or run: visible exactly when their parent is
    (their querysets' `permission_parent`)."""

    parent_field = "run"
    parent_model = WorkflowRun

    def get_queryset(self, request):
        """List the rows whose parent the user may view (restrict() follows the parent)."""
        return super().get_queryset(request).restrict(request.user, "view")

    def has_view_permission(self, request, obj=None):
        """View a row whose parent the user may view; the list when some parent is visible."""
        if has_model_permission(request.user, "view", self.parent_model):
            return True
        if obj is None:
            return self.parent_model.objects.restrict(request.user, "view").exists()
        return can(request.user, "view", obj)

    def has_module_permission(self, request):
        """Show the app to users who may view some parent."""
        return self.has_view_permission(request)

    def has_add_permission(self, request, *args):
        """Written by the engine only."""
        return False

    def has_change_permission(self, request, obj=None):
        """Written by the engine only: the page is read-only, with no Save button."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Records of what happened are not deleted."""
        return False

    def get_object(self, request, object_id, from_field=None):
        """Return the row, or a 404 when it is missing or its parent is hidden."""
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise NotVisible(request.user, "view", self.model, object_id)
        return obj

    @audited_view("view")
    def changelist_view(self, request, extra_context=None):
        """The list, with refusals (of the page, or of an action not offered) audited."""
        _refuse_unavailable_action(self, request)
        return super().changelist_view(request, extra_context)

    @audited_view("view")
    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The (read-only) page of one row, with refusals audited."""
        return super().change_view(request, object_id, form_url, extra_context)

    @audited_view("view")
    def history_view(self, request, object_id, extra_context=None):
        """The admin log of one row, for those who may see it."""
        self.get_object(request, unquote(object_id))
        return super().history_view(request, object_id, extra_context)

    @audited_view("delete")
    def delete_view(self, request, object_id, extra_context=None):
        """Refused (audited): records are not deleted."""
        return super().delete_view(request, object_id, extra_context)


@admin.register(Workflow)
class WorkflowAdmin(GovernedAdminMixin, ObjectPermissionsThroughRolesMixin, SimpleHistoryAdmin):
    list_display = [
        "slug",
        "name",
        "is_active",
        "live",
        "latest",
        "version_approval_required",
        "run_count",
        "created_at",
    ]
    list_filter = ["is_active", "version_approval_required"]
    search_fields = ["slug", "name", "description"]
    inlines = [VersionInline]
    readonly_fields = ["created_at", "live", "start_link"]

    @admin.display(description="Live version")
    def live(self, obj):
        version = obj.live_version
        return f"v{version.number}" if version else "— (none approved yet)"

    @admin.display(description="Latest version")
    def latest(self, obj):
        version = obj.latest_version()
        return f"v{version.number} ({version.get_status_display().lower()})" if version else "—"

    @admin.display(description="Runs")
    def run_count(self, obj):
        return obj.runs.count()

    @admin.display(description="Operations")
    def start_link(self, obj):
        """Offer starting (to those who may change it) and publishing (who may publish)."""
        user = _viewer.get()
        if not obj.pk:
            return "—"
        links = []
        if can(user, "change", obj):
            links.append(
                format_html(
                    '<a class="button" href="{}">Start a run</a>',
                    reverse("admin:orchestrator_workflow_start", args=[obj.pk]),
                )
            )
        if can(user, "publish", obj):
            links.append(
                format_html(
                    '<a class="button" href="{}?workflow={}">Propose a new version</a>',
                    reverse("admin:orchestrator_workflowversion_add"),
                    obj.pk,
                )
            )
        return format_html(" ".join(["{}"] * len(links)), *links) if links else "—"

    def get_readonly_fields(self, request, obj=None):
        """Remember who looks; the approval switch is read-only to those who may not exempt."""
        _viewer.set(request.user)
        fields = list(super().get_readonly_fields(request, obj))
        may_exempt = (
            can(request.user, "exempt", obj)
            if obj is not None
            else has_model_permission(request.user, "exempt", Workflow)
        )
        if not may_exempt:
            fields.append("version_approval_required")
        return fields

    def save_model(self, request, obj, form, change):
        """Save through the service layer, which checks the approval switch (and keeps the live
        version: it changes only when a version is approved, a revert included)."""
        reason = self.change_reason(request, form)
        fields = {name: getattr(obj, name) for name in services.EDITABLE_WORKFLOW_FIELDS}
        if not change:
            created = services.create_workflow(actor=request.user, **fields)
            obj.pk = created.pk
            obj._state.adding = False
            return
        services.update_workflow(obj, actor=request.user, reason=reason, **fields)

    def get_urls(self):
        return [
            path(
                "<int:pk>/start/",
                self.admin_site.admin_view(self.start_view),
                name="orchestrator_workflow_start",
            ),
            *super().get_urls(),
        ]

    @audited_view("change")
    def start_view(self, request, pk):
        """Start a run from the admin through the service layer (needs change on the workflow)."""
        workflow = self.get_object(request, str(pk))
        if not can(request.user, "change", workflow):
            raise AccessDenied(
                request.user, "change", workflow, detail=f"You may not start runs of {workflow}."
            )
        form = StartRunForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                run = services.start_run(
                    workflow,
                    form.cleaned_data["input"],
                    started_by=request.user,
                    trigger="admin",
                    business_key=form.cleaned_data["business_key"],
                    business_key_policy="fail",  # a second open run for a key is a mistake here
                    idempotency_key=form.cleaned_data["idempotency_key"] or None,
                )
            except (PermissionDenied, Http404):
                raise
            except services.EngineError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Started run {run.pk}.")
                return redirect("admin:orchestrator_workflowrun_change", run.pk)
        return _operation_page(self, request, f"Start a run of {workflow}", form, workflow, "Start")


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(RestrictedThroughParentAdmin):
    """Versions are published through a validating form and never changed afterwards."""

    parent_field = "workflow"
    parent_model = Workflow
    form = PublishVersionForm
    list_display = [
        "__str__",
        "workflow",
        "number",
        "status",
        "is_live",
        "published_at",
        "published_by_name",
    ]
    list_filter = ["status", "workflow"]
    search_fields = ["workflow__slug", "note", "digest"]

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["workflow", "definition_text", "note"]
        return [
            "workflow",
            "number",
            "status",
            "is_live",
            "approval_link",
            "digest",
            "diff_pretty",
            "definition_pretty",
            "note",
            "published_at",
            "published_by_name",
            "decided_at",
        ]

    @admin.display(description="Live", boolean=True)
    def is_live(self, obj):
        return obj.workflow.live_version_id == obj.pk

    @admin.display(description="Approval request")
    def approval_link(self, obj):
        if obj.approval_request_id is None:
            return "— (published without approval)"
        return format_html(
            '<a href="{}">request #{}</a>',
            reverse("admin:governance_approvalrequest_change", args=[obj.approval_request_id]),
            obj.approval_request_id,
        )

    @admin.display(description="Changes against the version live when proposed")
    def diff_pretty(self, obj):
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.diff or "(none)")

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return self.get_fields(request, obj)

    @admin.display(description="Definition")
    def definition_pretty(self, obj):
        return pretty_json(obj.definition)

    def has_add_permission(self, request, *args):
        """Propose when the user may publish some workflow (the chosen one is checked on save)."""
        return Workflow.objects.restrict(request.user, "publish").exists()

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """Offer the workflows the user may see."""
        if db_field.name == "workflow":
            kwargs["queryset"] = Workflow.objects.restrict(request.user, "view")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @audited_view("add")
    def add_view(self, request, form_url="", extra_context=None):
        """Propose a version; a workflow the user may not publish is refused (403, audited)."""
        try:
            return super().add_view(request, form_url, extra_context)
        except services.VersionApprovalUnavailable as exc:  # rolled back: nothing was proposed
            self.message_user(request, str(exc), messages.ERROR)
            return redirect(request.get_full_path())

    def save_model(self, request, obj, form, change):
        """Propose through the service layer, which checks the workflow and numbers the version."""
        version = services.publish_version(
            form.cleaned_data["workflow"],
            form.cleaned_data["definition_text"],
            actor=request.user,
            note=form.cleaned_data["note"],
        )
        obj.pk = version.pk
        obj.number = version.number
        obj._state.adding = False
        if version.approval_request_id is not None:
            self.message_user(
                request,
                f"{version} is proposed: it goes live once a second person approves "
                f"request #{version.approval_request_id}.",
                messages.WARNING,
            )


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
            except (PermissionDenied, Http404) as refusal:
                # The service refused and audited it; the other runs still go ahead.
                modeladmin.message_user(request, f"Run {run.pk}: {refusal}", messages.ERROR)
            except services.EngineError as exc:
                modeladmin.message_user(request, f"Run {run.pk}: {exc}", messages.WARNING)
        if done:
            modeladmin.message_user(request, f"{label}: {done} run(s).", messages.SUCCESS)

    action.short_description = f"{label} selected runs"
    action.__name__ = f"{label.lower()}_runs"
    action.allowed_permissions = ("change",)
    return action


@admin.register(WorkflowRun)
class WorkflowRunAdmin(GovernedAdminMixin, ObjectPermissionsThroughRolesMixin, admin.ModelAdmin):
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
        """Offer a signal to those who may change an unfinished run."""
        if obj.is_finished or not can(_viewer.get(), "change", obj):
            return "—"
        return format_html(
            '<a class="button" href="{}">Send a signal</a>',
            reverse("admin:orchestrator_workflowrun_signal", args=[obj.pk]),
        )

    def has_add_permission(self, request, *args):
        """Runs start from their workflow's page, through the service layer."""
        return False

    def get_readonly_fields(self, request, obj=None):
        """Remember who looks, so the operations offered are the ones they may use."""
        _viewer.set(request.user)
        return super().get_readonly_fields(request, obj)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """A run's page is a record: no Save buttons (operations are actions and links)."""
        extra_context = {
            **(extra_context or {}),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @audited_view("change")
    def changelist_view(self, request, extra_context=None):
        """The list; an action the user is not offered is refused (403, audited)."""
        _refuse_unavailable_action(self, request)
        return super().changelist_view(request, extra_context)

    def response_action(self, request, queryset):
        """Apply an action to every selected run; the service checks (and audits) each."""
        # Not GovernedAdminMixin's silent narrowing: each run the user may not change is refused
        # by the service, audited, and reported.
        return admin.ModelAdmin.response_action(self, request, queryset)

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
        if not can(request.user, "change", run):
            raise AccessDenied(request.user, "change", run, detail=f"You may not signal {run}.")
        form = SendSignalForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                services.send_signal(
                    run,
                    form.cleaned_data["name"],
                    form.cleaned_data["payload"],
                    sent_by=request.user,
                )
            except (PermissionDenied, Http404):
                raise
            except services.EngineError as exc:
                # A finished run, or a name reserved for governance's decisions.
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Signal {form.cleaned_data['name']!r} sent.")
                return redirect("admin:orchestrator_workflowrun_change", run.pk)
        return _operation_page(self, request, f"Send a signal to run {run.pk}", form, run, "Send")

    def save_model(self, request, obj, form, change):
        """Runs are never saved from the admin form."""


@admin.action(description="Retry selected failed steps", permissions=["retry"])
def retry_steps(modeladmin, request, queryset):
    """Retry each selected failed step through the service layer."""
    for step in queryset:
        try:
            services.retry_step(step, actor=request.user)
            modeladmin.message_user(request, f"Retrying {step}.", messages.SUCCESS)
        except (PermissionDenied, Http404) as refusal:
            modeladmin.message_user(request, f"{step}: {refusal}", messages.ERROR)
        except services.EngineError as exc:
            modeladmin.message_user(request, f"{step}: {exc}", messages.WARNING)


@admin.register(StepRun)
class StepRunAdmin(RestrictedThroughParentAdmin):
    """Steps of the runs the user may view; read-only, retried through an action."""

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

    def has_retry_permission(self, request):
        """Offer retrying to those who may change some run (the service checks each step's)."""
        return WorkflowRun.objects.restrict(request.user, "change").exists()


@admin.register(RunEvent)
class RunEventAdmin(RestrictedThroughParentAdmin):
    """The history of the runs the user may view."""

    list_display = ["created_at", "run", "kind", "step_id", "item_index", "attempt", "actor_name"]
    list_filter = ["kind", "run__workflow", "created_at"]
    search_fields = ["=run__id", "step_id"]
    list_select_related = ["run"]
    readonly_fields = [f.name for f in RunEvent._meta.fields]


@admin.register(EffectJournal)
class EffectJournalAdmin(RestrictedThroughParentAdmin):
    """Recorded side effects of the runs the user may view (without a run: model-wide viewers)."""

    list_display = ["key", "name", "run", "step_run", "created_at"]
    search_fields = ["key", "name", "=run__id"]
    list_select_related = ["run", "step_run"]
    readonly_fields = [f.name for f in EffectJournal._meta.fields]


@admin.register(InboundEndpoint)
class InboundEndpointAdmin(GovernedAdminMixin, SimpleHistoryAdmin):
    """Inbound webhook endpoints: configured here; the signing secret is shown once, on add."""

    list_display = ["slug", "name", "action", "workflow", "principal", "active"]
    list_filter = ["action", "active"]
    search_fields = ["slug", "name"]
    fields = [
        "slug",
        "name",
        "principal",
        "action",
        "workflow",
        "input_mapping",
        "business_key_pointer",
        "business_key_policy",
        "signal_name",
        "signal_payload_pointer",
        "active",
    ]

    def save_model(self, request, obj, form, change):
        """Create through the inbound service (showing the secret once); edit as governed."""
        if change:
            return super().save_model(request, obj, form, change)
        data = form.cleaned_data
        endpoint, secret = inbound.create_endpoint(
            slug=data["slug"],
            name=data["name"],
            principal=data["principal"],
            action=data["action"],
            workflow=data["workflow"],
            input_mapping=data.get("input_mapping") or {},
            business_key_pointer=data.get("business_key_pointer", ""),
            business_key_policy=data.get("business_key_policy") or "use_existing",
            signal_name=data.get("signal_name", ""),
            signal_payload_pointer=data.get("signal_payload_pointer", ""),
            actor=request.user,
        )
        obj.pk = endpoint.pk
        obj._state.adding = False
        self.message_user(
            request,
            f"Endpoint /api/v1/hooks/{endpoint.slug}/ created. Give the sender its secret now; "
            f"it is not shown again: {secret}",
            messages.WARNING,
        )


@admin.register(InboundHook)
class InboundHookAdmin(RestrictedThroughParentAdmin):
    """Received webhooks: which webhook-id did what (a replayed id is answered, not redone)."""

    parent_field = "endpoint"
    parent_model = InboundEndpoint

    list_display = ["endpoint", "webhook_id", "received_at", "business_key", "run_id"]
    list_filter = ["endpoint"]
    search_fields = ["webhook_id", "business_key"]


@admin.register(ManualBaseline)
class ManualBaselineAdmin(GovernedAdminMixin, SimpleHistoryAdmin):
    """Manual baselines: what a workflow's figures were before orchestration, and the source.

    Declared by governance admins (model permissions); every change is kept in its history and
    the audit log, with the reason the form asks for. The KPI page compares against them.
    """

    list_display = ["workflow", "ack_seconds", "target_ack_seconds", "manual_runs_per_week"]
    search_fields = ["workflow__slug", "workflow__name", "source"]
    fields = ["workflow", "ack_seconds", "target_ack_seconds", "manual_runs_per_week", "source"]
