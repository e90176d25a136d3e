"""The agents admin: agents (with the kill switch and the review page), providers, tools,
tickets, the notification inbox, shared memory, and the journals of what agents did.

Governed models reuse governance's `GovernedModelAdmin` (restrict()-based pages, a change
reason on every form, history with diff and revert, audited refusals, guardian's object
permission pages); every write goes through the agents services, as governance's admin does
for its models. Journals (model calls, tool invocations), memory entries and incident updates
are read-only records.
"""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html

from agents import review, services
from agents.actions.registry import AGENT_SETTINGS
from agents.models import (
    Agent,
    AgentStatus,
    DryRunStatus,
    IncidentUpdate,
    MemoryEntry,
    MemoryNamespace,
    ModelCall,
    ModelProvider,
    Notification,
    PolicyDryRun,
    ProviderKind,
    Ticket,
    TicketComment,
    Tool,
    ToolInvocation,
)
from agents.tools import registered_tools
from audit import clock
from governance.actions.common import GovernanceError
from governance.admin import POLICY_ACTIONS, GovernedModelAdmin, pretty_json
from governance.admin_mixins import (
    REASON_FIELD,
    ChangeReasonForm,
    GovernedAdminMixin,
    ReadOnlyInline,
    ReasonForm,
    audited_view,
    with_reason,
)
from governance.models import Policy, PolicyRule, RuleStatus
from governance.permissions import AccessDenied, NotVisible, can

REFUSALS = (GovernanceError, AccessDenied, NotVisible)


def _stored(obj):
    """Return the row as stored now (a revert starts from a historical copy)."""
    return type(obj)._default_manager.get(pk=obj.pk)


def _changed(obj, stored, names) -> dict:
    """Return the fields whose value on `obj` differs from the stored row."""
    return {
        name: getattr(obj, name) for name in names if getattr(stored, name) != getattr(obj, name)
    }


def _run_link(run_id):
    """Link a copied run id to its run page."""
    if run_id is None:
        return "—"
    try:
        url = reverse("admin:orchestrator_workflowrun_change", args=[run_id])
    except NoReverseMatch:
        return f"run {run_id}"
    return format_html('<a href="{}">run {}</a>', url, run_id)


class ReadOnlyAdmin(GovernedAdminMixin, admin.ModelAdmin):
    """A journal or record: listed through restrict(), never added, edited or deleted by hand."""

    ask_change_reason = False

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- providers -------------------------------------------------------------------------------


class ModelProviderForm(ChangeReasonForm):
    """A provider; its API key is entered here, stored encrypted, and never shown again."""

    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Enter a key to store (or replace) it encrypted. Leave empty to keep the "
        "stored key. It is never displayed back.",
    )
    clear_api_key = forms.BooleanField(required=False, help_text="Remove the stored key.")

    class Meta:
        model = ModelProvider
        fields = [
            "slug",
            "name",
            "kind",
            "base_url",
            "timeout_seconds",
            "max_retries",
            "max_output_tokens",
            "input_price_per_mtok",
            "output_price_per_mtok",
            "is_active",
        ]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("api_key") and cleaned.get("clear_api_key"):
            raise forms.ValidationError("Enter a new key or clear it, not both.")
        return cleaned


PROVIDER_SETTINGS = [name for name in ModelProviderForm.Meta.fields if name != "slug"]


@admin.register(ModelProvider)
class ModelProviderAdmin(GovernedModelAdmin):
    form = ModelProviderForm
    list_display = ["slug", "name", "kind", "scripted", "key_stored", "base_url", "is_active"]
    list_filter = ["kind", "is_active"]
    search_fields = ["slug", "name", "base_url"]
    readonly_fields = ["key_stored", "created_at", "updated_at"]

    @admin.display(description="Scripted (not a model)", boolean=True)
    def scripted(self, obj):
        return obj.kind == ProviderKind.SCRIPTED

    @admin.display(description="API key stored", boolean=True)
    def key_stored(self, obj):
        return obj.has_api_key

    def get_readonly_fields(self, request, obj=None):
        """The slug names the provider in journals: it is fixed once created."""
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, "slug"] if obj is not None else fields

    def save_model(self, request, obj, form, change):
        """Create or change the provider, then store the key through the encrypted-key service."""
        reason = self.change_reason(request, form)
        key = form.cleaned_data.get("api_key") or ""
        if not change:
            settings = {name: getattr(obj, name) for name in PROVIDER_SETTINGS}
            created = services.create_provider(
                slug=obj.slug, api_key=key, actor=request.user, reason=reason, **settings
            )
            obj.pk, obj.api_key_encrypted = created.pk, created.api_key_encrypted
            obj._state.adding = False
            return
        stored = _stored(obj)
        obj.api_key_encrypted = stored.api_key_encrypted  # history never holds the key
        if changed := _changed(obj, stored, PROVIDER_SETTINGS):
            services.update_provider(stored, actor=request.user, reason=reason, **changed)
        if key or form.cleaned_data.get("clear_api_key"):
            services.set_provider_key(stored, key, actor=request.user, reason=reason)

    def save_related(self, request, form, formsets, change):
        """Nothing related is edited here."""


# --- tools -----------------------------------------------------------------------------------


def describe_tool_target(tool: Tool) -> str:
    """Say what a tool acts on and the permission it needs there."""
    spec = registered_tools().get(tool.name)
    if spec is None:
        return "not registered by code any more"
    labels = spec.target_labels(tool.config)
    if spec.permission == "delegate":
        return "delegate to the agent's listed delegates (agents.agent)"
    if spec.permission and labels:
        return f"{spec.permission} on {' or '.join(labels)} (the agent's principal must hold it)"
    if spec.target is not None:
        return "a target checked by the tool's own rule (e.g. an allow-list in its settings)"
    return "no object: nothing is checked beyond mandate, rate limit and policies"


class ToolForm(ChangeReasonForm):
    class Meta:
        model = Tool
        fields = [
            "description",
            "enabled",
            "risk",
            "rate_limit",
            "rate_window_seconds",
            "approval_rule",
            "config",
        ]


TOOL_SETTINGS = ToolForm.Meta.fields


@admin.register(Tool)
class ToolAdmin(GovernedModelAdmin):
    """Tool rows mirror registered tools (synced after migrate); admins govern their use."""

    form = ToolForm
    list_display = [
        "name",
        "enabled",
        "risk",
        "rate",
        "approval_rule",
        "acts_on",
        "side_effects",
        "registered",
    ]
    list_filter = ["enabled", "risk", "side_effects", "registered"]
    search_fields = ["name", "description"]
    fields = ["name", "acts_on", "side_effects", "registered", *TOOL_SETTINGS, REASON_FIELD]
    readonly_fields = ["name", "acts_on", "side_effects", "registered"]

    @admin.display(description="Acts on")
    def acts_on(self, obj):
        return describe_tool_target(obj)

    @admin.display(description="Rate limit")
    def rate(self, obj):
        if obj.rate_limit is None:
            return "—"
        return f"{obj.rate_limit} per {obj.rate_window_seconds}s"

    def has_add_permission(self, request, *args):
        """Rows come from the code's registry, not from the admin."""
        return False

    def has_delete_permission(self, request, obj=None):
        """A tool is disabled, not deleted: journals and history keep referring to it."""
        return False

    def save_model(self, request, obj, form, change):
        stored = _stored(obj)
        if changed := _changed(obj, stored, TOOL_SETTINGS):
            services.update_tool(
                stored, actor=request.user, reason=self.change_reason(request, form), **changed
            )

    def save_related(self, request, form, formsets, change):
        """Nothing related is edited here."""


# --- agents ----------------------------------------------------------------------------------


class AgentForm(ChangeReasonForm):
    """An agent; a scripted provider needs valid rules (checked as the services check them)."""

    class Meta:
        model = Agent
        fields = [
            "slug",
            "name",
            "mandate",
            "owner",
            "provider",
            "model",
            "instructions",
            "script",
            "roles",
            "tools",
            "delegates",
            "output_schema",
            "confidence_threshold",
            "max_steps",
            "max_tokens",
            "max_cost",
            "max_wall_seconds",
        ]
        widgets = {
            "roles": admin.widgets.FilteredSelectMultiple("roles", is_stacked=False),
            "tools": admin.widgets.FilteredSelectMultiple("tools", is_stacked=False),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "owner" in self.fields:
            self.fields["owner"].required = True
        if "delegates" in self.fields and self.instance.pk:
            self.fields["delegates"].queryset = Agent.objects.exclude(pk=self.instance.pk)

    def clean(self):
        cleaned = super().clean()
        provider = cleaned.get("provider")
        if provider is not None and provider.kind == ProviderKind.SCRIPTED:
            for problem in services.script_problems(cleaned.get("script")):
                self.add_error("script", problem)
        return cleaned


class StatusFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "scripted"

    def lookups(self, request, model_admin):
        return [("yes", "Scripted (no model)"), ("no", "A real model")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(provider__kind=ProviderKind.SCRIPTED)
        if self.value() == "no":
            return queryset.exclude(provider__kind=ProviderKind.SCRIPTED)
        return queryset


def _status_action(status: str, label: str):
    """Make an admin action that sets the kill switch of each selected agent, with a reason."""

    def action(modeladmin, request, queryset):
        return with_reason(
            modeladmin,
            request,
            queryset,
            title=f"{label} agents",
            apply=lambda agent, reason: services.set_status(
                agent, status, actor=request.user, reason=reason
            ),
        )

    action.short_description = f"{label} selected agents"
    action.__name__ = f"make_{status}"
    action.allowed_permissions = ("change",)
    return action


@admin.register(Agent)
class AgentAdmin(GovernedModelAdmin):
    form = AgentForm
    change_list_template = "admin/agents/agent/change_list.html"
    list_display = [
        "slug",
        "name",
        "status",
        "runs_on",
        "owner_name",
        "tool_count",
        "last_active_at",
    ]
    list_filter = ["status", StatusFilter, "provider"]
    search_fields = ["slug", "name", "mandate", "owner_name"]
    list_select_related = ["provider"]
    readonly_fields = [
        "runs_on",
        "status",
        "status_reason",
        "service_account",
        "last_active_at",
        "created_at",
        "updated_at",
    ]
    actions = [
        _status_action(AgentStatus.SUSPENDED, "Suspend"),
        _status_action(AgentStatus.QUARANTINED, "Quarantine (kill switch)"),
        _status_action(AgentStatus.ACTIVE, "Reactivate"),
    ]

    @admin.display(description="Runs on")
    def runs_on(self, obj):
        """Say plainly whether a model answers or declared rules do."""
        if not obj.pk and not obj.provider_id:
            return "—"
        if obj.is_scripted:
            return format_html(
                '<strong title="{}">Scripted: declared rules, no model</strong>',
                "Answers come from the rules in its script, not from a language model.",
            )
        return f"{obj.provider.name}: {obj.model}"

    @admin.display(description="Tools")
    def tool_count(self, obj):
        return obj.tools.count()

    @admin.display(description="Service account")
    def service_account(self, obj):
        return obj.user.get_username() if obj.user_id else "— (created with the agent)"

    def save_model(self, request, obj, form, change):
        """Create or change the agent through the registry services, with the form's reason."""
        reason = self.change_reason(request, form)
        data = form.cleaned_data
        if not change:
            created = services.create_agent(
                slug=obj.slug,
                owner=obj.owner,
                roles=data.get("roles", ()),
                tools=data.get("tools", ()),
                delegates=data.get("delegates", ()),
                actor=request.user,
                reason=reason,
                **{name: getattr(obj, name) for name in AGENT_SETTINGS},
            )
            obj.pk, obj.user_id = created.pk, created.user_id
            obj._state.adding = False
            return
        stored = _stored(obj)
        if changed := _changed(obj, stored, AGENT_SETTINGS):
            services.update_agent(stored, actor=request.user, reason=reason, **changed)
        if obj.owner_id != stored.owner_id:
            services.set_owner(stored, obj.owner, actor=request.user, reason=reason)
        if "roles" in data and set(data["roles"]) != set(stored.roles.all()):
            services.set_roles(stored, data["roles"], actor=request.user, reason=reason)
        if "tools" in data and set(data["tools"]) != set(stored.tools.all()):
            services.set_tools(stored, data["tools"], actor=request.user, reason=reason)
        if "delegates" in data and set(data["delegates"]) != set(stored.delegates.all()):
            services.set_delegates(stored, data["delegates"], actor=request.user, reason=reason)

    def save_related(self, request, form, formsets, change):
        """Roles, tools and delegates were set through the services in save_model."""

    def get_urls(self):
        return [
            path(
                "review/",
                self.admin_site.admin_view(self.review_view),
                name="agents_agent_review",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra = {"review_url": reverse("admin:agents_agent_review"), **(extra_context or {})}
        return super().changelist_view(request, extra)

    @audited_view("view")
    def review_view(self, request):
        """The agent review: idle agents with permissions, ownerless agents, overreaching tools."""
        if not self.has_view_permission(request):
            raise PermissionDenied("You may not review agents.")
        try:
            days = max(int(request.GET.get("days", review.DEFAULT_IDLE_DAYS)), 0)
        except ValueError:
            days = review.DEFAULT_IDLE_DAYS
        visible = self.get_queryset(request)
        context = {
            **self.admin_site.each_context(request),
            "title": "Agent review",
            "opts": Agent._meta,
            "days": days,
            "idle": review.idle_agents(days, agents=visible),
            "ownerless": review.ownerless_agents(agents=visible),
            "overreach": review.overreaching_agents(agents=visible),
        }
        return TemplateResponse(request, "admin/agents/agent/review.html", context)


# --- journals --------------------------------------------------------------------------------


@admin.register(ModelCall)
class ModelCallAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "agent_slug",
        "provider",
        "model",
        "input_tokens",
        "output_tokens",
        "cost",
        "latency_ms",
        "attempts",
        "tool_calls",
        "run",
        "step_id",
        "error",
    ]
    list_filter = ["provider", "model", "agent_slug"]
    search_fields = ["agent_slug", "key", "=run_id", "step_id", "error"]
    date_hierarchy = "created_at"

    @admin.display(description="Run")
    def run(self, obj):
        return _run_link(obj.run_id)


@admin.register(ToolInvocation)
class ToolInvocationAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "caller_name",
        "caller_kind",
        "tool",
        "verdict",
        "stage",
        "reason",
        "policy_basis",
        "executed_at",
        "run",
        "step_id",
    ]
    list_filter = ["verdict", "stage", "caller_kind", "tool", "agent_slug"]
    search_fields = [
        "agent_slug",
        "caller_name",
        "tool",
        "key",
        "=run_id",
        "reason",
        "arguments_digest",
    ]
    date_hierarchy = "created_at"
    exclude = ["arguments", "proposed_arguments", "outcome"]
    readonly_fields = ["arguments_pretty", "proposed_pretty", "outcome_pretty"]

    @admin.display(description="Run")
    def run(self, obj):
        return _run_link(obj.run_id)

    @admin.display(description="Policy")
    def policy_basis(self, obj):
        if not obj.policy:
            return "—"
        return f"{obj.policy} v{obj.policy_version} / rule {obj.policy_rule or '—'}"

    @admin.display(description="Arguments")
    def arguments_pretty(self, obj):
        return pretty_json(obj.arguments)

    @admin.display(description="Proposed as")
    def proposed_pretty(self, obj):
        if obj.proposed_arguments is None:
            return "as decided"
        return pretty_json(obj.proposed_arguments)

    @admin.display(description="Outcome")
    def outcome_pretty(self, obj):
        return pretty_json(obj.outcome) if obj.outcome is not None else "not executed"


@admin.register(IncidentUpdate)
class IncidentUpdateAdmin(ReadOnlyAdmin):
    """Incident updates the demo tools posted, searchable by incident and channel."""

    list_display = ["posted_at", "incident", "channel", "message", "run_id", "step_id"]
    list_filter = ["channel", "incident"]
    search_fields = ["incident", "channel", "message", "idempotency_key"]
    date_hierarchy = "posted_at"


# --- tickets and the inbox -------------------------------------------------------------------


class TicketCommentInline(ReadOnlyInline):
    model = TicketComment
    fields = ["created_at", "author_name", "body", "run_id"]
    readonly_fields = fields
    show_change_link = False


class TicketForm(ChangeReasonForm):
    class Meta:
        model = Ticket
        fields = ["title", "description", "status", "priority", "service", "assignee"]


TICKET_SETTINGS = TicketForm.Meta.fields


@admin.register(Ticket)
class TicketAdmin(GovernedModelAdmin):
    form = TicketForm
    inlines = [TicketCommentInline]
    list_display = ["id", "title", "status", "priority", "service", "assignee", "created_by_name"]
    list_filter = ["status", "priority", "service"]
    search_fields = ["=id", "title", "description", "service"]
    readonly_fields = ["created_by_name", "run", "created_at", "updated_at"]

    @admin.display(description="Run")
    def run(self, obj):
        return _run_link(obj.run_id)

    def save_model(self, request, obj, form, change):
        reason = self.change_reason(request, form)
        if not change:
            created = services.create_ticket(
                title=obj.title,
                description=obj.description,
                priority=obj.priority,
                service=obj.service,
                actor=request.user,
            )
            if changed := _changed(obj, created, ["status", "assignee"]):
                services.update_ticket(created, actor=request.user, reason=reason, **changed)
            obj.pk = created.pk
            obj._state.adding = False
            return
        stored = _stored(obj)
        if changed := _changed(obj, stored, TICKET_SETTINGS):
            services.update_ticket(stored, actor=request.user, reason=reason, **changed)

    def save_related(self, request, form, formsets, change):
        """Comments are added by people and agents through the comment service, not here."""


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    """The inbox: each person sees what was sent to them (and more only with a permission)."""

    list_display = ["created_at", "subject", "recipient", "sent_by_name", "unread", "run"]
    list_filter = ["read_at"]
    search_fields = ["subject", "body", "sent_by_name"]
    fields = [
        "recipient",
        "subject",
        "body",
        "sent_by_name",
        "run",
        "deliveries",
        "created_at",
        "read_at",
    ]
    readonly_fields = fields

    @admin.display(description="Unread", boolean=True)
    def unread(self, obj):
        return obj.read_at is None

    @admin.display(description="Run")
    def run(self, obj):
        return _run_link(obj.run_id)

    def has_view_permission(self, request, obj=None):
        """Everyone has an inbox; what is in it is restrict()'s answer."""
        if obj is None:
            return request.user.is_active and request.user.is_staff
        return can(request.user, "view", obj)

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    @admin.action(description="Mark the selected notifications read")
    def mark_read(self, request, queryset):
        count = services.mark_read(queryset.filter(recipient=request.user), user=request.user)
        self.message_user(request, f"{count} notification(s) marked read.", messages.SUCCESS)

    actions = ["mark_read"]


# --- shared memory ---------------------------------------------------------------------------


class MemoryEntryInline(ReadOnlyInline):
    model = MemoryEntry
    fields = ["key", "version", "agent_name", "written_by_name", "written_at", "expires_at"]
    readonly_fields = fields
    show_change_link = True

    def has_view_permission(self, request, obj=None):
        """Entries are shown in a namespace only to those who may view it."""
        return obj is None or can(request.user, "view", obj)


class MemoryNamespaceForm(ChangeReasonForm):
    class Meta:
        model = MemoryNamespace
        fields = [
            "slug",
            "name",
            "scope",
            "run_id",
            "workflow_id",
            "classification",
            "retention_seconds",
        ]


@admin.register(MemoryNamespace)
class MemoryNamespaceAdmin(GovernedModelAdmin):
    form = MemoryNamespaceForm
    inlines = [MemoryEntryInline]
    list_display = [
        "slug",
        "name",
        "scope",
        "classification",
        "retention_seconds",
        "legal_hold",
        "entry_count",
    ]
    list_filter = ["scope", "classification", "legal_hold"]
    search_fields = ["slug", "name", "legal_hold_reason"]
    readonly_fields = ["legal_hold", "legal_hold_reason", "created_at"]
    actions = ["place_legal_hold", "lift_legal_hold"]

    @admin.display(description="Entries")
    def entry_count(self, obj):
        return obj.entries.count()

    def get_readonly_fields(self, request, obj=None):
        """Scope and slug are what agents and runs address a namespace by: fixed once made."""
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            fields += ["slug", "scope", "run_id", "workflow_id"]
        return fields

    def save_model(self, request, obj, form, change):
        reason = self.change_reason(request, form)
        if not change:
            created = services.create_namespace(
                **{name: getattr(obj, name) for name in MemoryNamespaceForm.Meta.fields},
                actor=request.user,
                reason=reason,
            )
            obj.pk = created.pk
            obj._state.adding = False
            return
        stored = _stored(obj)
        obj.legal_hold, obj.legal_hold_reason = stored.legal_hold, stored.legal_hold_reason
        super().save_model(request, obj, form, change)

    def _hold(self, request, queryset, hold: bool):
        label = "Place a legal hold on" if hold else "Lift the legal hold of"
        return with_reason(
            self,
            request,
            queryset,
            title=f"{label} namespaces",
            apply=lambda namespace, reason: services.set_legal_hold(
                namespace, hold, actor=request.user, reason=reason
            ),
        )

    @admin.action(description="Place a legal hold (stops purges)", permissions=["change"])
    def place_legal_hold(self, request, queryset):
        return self._hold(request, queryset, True)

    @admin.action(description="Lift the legal hold", permissions=["change"])
    def lift_legal_hold(self, request, queryset):
        return self._hold(request, queryset, False)


@admin.register(MemoryEntry)
class MemoryEntryAdmin(ReadOnlyAdmin):
    """Entries are written only through the memory service (versioned, audited)."""

    list_display = [
        "namespace",
        "key",
        "version",
        "agent_name",
        "written_by_name",
        "written_at",
        "expires_at",
    ]
    list_filter = ["namespace"]
    search_fields = ["key", "namespace__slug", "agent_name"]
    exclude = ["value"]
    readonly_fields = ["value_pretty"]

    @admin.display(description="Value")
    def value_pretty(self, obj):
        return pretty_json(obj.value)


# --- policy dry runs -----------------------------------------------------------------------------


class DryRunForm(forms.Form):
    """What to replay: a policy's draft version, on the recorded calls of a period."""

    policy = forms.ModelChoiceField(queryset=Policy.objects.none())
    period_start = forms.DateTimeField(help_text="Calls recorded from this moment (included).")
    period_end = forms.DateTimeField(help_text="Up to this moment (excluded; now at the latest).")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        drafted = PolicyRule.objects.filter(status=RuleStatus.DRAFT).values("policy_id")
        self.fields["policy"].queryset = Policy.objects.restrict(user, "change").filter(
            pk__in=drafted
        )

    def clean(self):
        cleaned = super().clean()
        start, end = cleaned.get("period_start"), cleaned.get("period_end")
        if start and end and start >= end:
            self.add_error("period_end", "The period ends after it starts.")
        return cleaned


@admin.action(description="Dry-run the draft against past tool calls", permissions=["change"])
def dry_run_draft(modeladmin, request, queryset):
    """Open the dry-run form for the selected policy (one at a time)."""
    policies = list(queryset[:2])
    if len(policies) != 1:
        modeladmin.message_user(request, "Select one policy to dry-run.", messages.WARNING)
        return None
    return redirect(f"{reverse('admin:agents_policydryrun_new')}?policy={policies[0].pk}")


POLICY_ACTIONS.append(dry_run_draft)


@admin.register(PolicyDryRun)
class PolicyDryRunAdmin(ReadOnlyAdmin):
    """Dry runs of policy drafts: asked for here (or from a policy), followed, then published."""

    list_display = [
        "__str__",
        "status",
        "progress",
        "changed",
        "period_start",
        "period_end",
        "requested_by_name",
        "created_at",
    ]
    list_filter = ["status", "policy_slug"]
    change_form_template = "admin/agents/policydryrun/result.html"

    @admin.display(description="Progress")
    def progress(self, obj):
        return f"{obj.processed} / {obj.total}"

    def has_add_permission(self, request, *args):
        return Policy.objects.restrict(request.user, "change").exists()

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("new/", view(self.new_view), name="agents_policydryrun_new"),
            path(
                "<path:object_id>/progress/",
                view(self.progress_view),
                name="agents_policydryrun_progress",
            ),
            path(
                "<path:object_id>/publish/",
                view(self.publish_view),
                name="agents_policydryrun_publish",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request, form_url="", extra_context=None):
        return redirect("admin:agents_policydryrun_new")

    @audited_view("add")
    def new_view(self, request):
        """Ask for a dry run of a policy's draft; it runs in the background."""
        if not self.has_add_permission(request):
            raise PermissionDenied("You may not change any policy.")
        if request.method == "POST":
            form = DryRunForm(request.POST, user=request.user)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    dry_run = services.request_dry_run(
                        data["policy"],
                        period_start=data["period_start"],
                        period_end=data["period_end"],
                        actor=request.user,
                    )
                except REFUSALS as exc:
                    form.add_error(None, str(exc))
                else:
                    return redirect("admin:agents_policydryrun_change", dry_run.pk)
        else:
            now = clock.now()
            form = DryRunForm(
                initial={
                    "policy": request.GET.get("policy"),
                    "period_start": now - dt.timedelta(days=30),
                    "period_end": now,
                },
                user=request.user,
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Dry-run a policy draft",
            "opts": self.model._meta,
            "form": form,
        }
        return TemplateResponse(request, "admin/agents/policydryrun/new.html", context)

    def _result_context(self, request, dry_run) -> dict:
        """What the result page and its progress partial show."""
        policy = dry_run.policy
        return {
            "dry_run": dry_run,
            "effect": services.kpi_effect(dry_run),
            "counts": dry_run.counts or {},
            "may_publish": dry_run.status == DryRunStatus.DONE
            and policy is not None
            and can(request.user, "change", policy)
            and policy.version == dry_run.policy_version,
            "draft_changed": policy is not None and policy.version != dry_run.policy_version,
        }

    def change_view(self, request, object_id, form_url="", extra_context=None):
        dry_run = self.get_object(request, object_id)
        changes = dry_run.changes.order_by("invocation_id")
        context = {
            **(extra_context or {}),
            **self._result_context(request, dry_run),
            "changes": changes[:500],
            "more_changes": max(changes.count() - 500, 0),
            "reason_form": ReasonForm(),
        }
        return super().change_view(request, object_id, form_url, context)

    @audited_view("view")
    def progress_view(self, request, object_id):
        """The progress bar partial the result page polls while the replay runs."""
        dry_run = self.get_object(request, object_id)
        response = TemplateResponse(
            request,
            "admin/agents/policydryrun/partials/progress.html",
            self._result_context(request, dry_run),
        )
        if dry_run.is_finished and request.headers.get("HX-Request"):
            response["HX-Refresh"] = "true"  # the whole page shows the result
        return response

    @audited_view("change")
    def publish_view(self, request, object_id):
        """Publish the draft this dry run tested (refused if the policy changed since)."""
        dry_run = self.get_object(request, object_id)
        if request.method != "POST":
            return redirect("admin:agents_policydryrun_change", dry_run.pk)
        form = ReasonForm(request.POST)
        if not form.is_valid():
            self.message_user(request, "Say why the draft is published.", messages.ERROR)
            return redirect("admin:agents_policydryrun_change", dry_run.pk)
        try:
            policy = services.publish_tested_draft(
                dry_run, actor=request.user, reason=form.cleaned_data["reason"]
            )
        except REFUSALS as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return redirect("admin:agents_policydryrun_change", dry_run.pk)
        self.message_user(request, f"Published: {policy} is live.", messages.SUCCESS)
        return redirect("admin:governance_policy_change", policy.pk)
