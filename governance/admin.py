"""The governance admin: roles, principals, policies (with dry run), approval rules, delegations,
the pending-approvals list with its decisions, and escalations.

Every page goes through restrict() / can() (GovernedAdminMixin); every write goes through the
governance services with the change reason the form asks for; history with diff and revert
comes from simple-history; guardian's object-permission pages hang off each governed object.
Decided approvals and resolved escalations are read-only records.
"""

from __future__ import annotations

import json
from contextvars import ContextVar

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join
from guardian.models import GroupObjectPermission
from simple_history.admin import SimpleHistoryAdmin

from governance import services
from governance.actions.approvals import NEEDS_REASON
from governance.actions.principals import kind_of
from governance.actions.tokens import AGENT_REFUSAL
from governance.admin_mixins import (
    REASON_FIELD,
    ChangeReasonForm,
    GovernedAdminMixin,
    ObjectPermissionsThroughRolesMixin,
    ReadOnlyInline,
    RestrictedAdminMixin,
    RestrictedChoicesMixin,
    audited_view,
    with_reason,
)
from governance.models import (
    ApiToken,
    ApprovalDecision,
    ApprovalRequest,
    ApprovalRule,
    ApprovalStatus,
    DecisionKind,
    Delegation,
    Escalation,
    EscalationLevel,
    EscalationStatus,
    Policy,
    PolicyRule,
    Principal,
    PrincipalKind,
    Resolution,
    Role,
    RoleChange,
    WebhookDelivery,
    WebhookSubscription,
)
from governance.permissions import can, has_model_permission, restricted

GOVERNED_APPS = ["governance", "orchestrator", "agents", "audit", "guardian"]

# Who is looking at the page being rendered: display callables see only the object (a context
# variable: admins are shared by threads).
_viewer: ContextVar = ContextVar("governance_admin_viewer", default=None)


def pretty_json(value) -> str:
    """Render JSON for reading in the admin."""
    return format_html("<pre style='white-space: pre-wrap'>{}</pre>", json.dumps(value, indent=2))


class GovernedModelAdmin(
    GovernedAdminMixin, ObjectPermissionsThroughRolesMixin, SimpleHistoryAdmin
):
    """A governed model: restricted pages, change reasons, history, object permissions.

    Its object-permission pages grant to roles through governance's grant() / revoke().
    """


def _differs(obj, fields) -> bool:
    """Tell whether an edited object differs from its stored row (a revert starts from history)."""
    stored = type(obj)._default_manager.filter(pk=obj.pk).first()
    return stored is None or any(getattr(stored, name) != getattr(obj, name) for name in fields)


def _reason(request) -> str:
    """Return the change reason the main form of this request gave (inlines share it)."""
    return getattr(request, "_governance_reason", "") or "changed in the admin"


# --- roles and principals -----------------------------------------------------------------------


class RoleForm(ChangeReasonForm):
    """A role with its members and its model-wide permissions."""

    members = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.order_by("username"),
        required=False,
        widget=admin.widgets.FilteredSelectMultiple("members", is_stacked=False),
    )
    permissions = forms.ModelMultipleChoiceField(
        queryset=Permission.objects.filter(content_type__app_label__in=GOVERNED_APPS)
        .select_related("content_type")
        .order_by("content_type__app_label", "content_type__model", "codename"),
        required=False,
        help_text="Model-wide: every row of the model. Object by object: use the "
        "'Object permissions' page of that object.",
        widget=admin.widgets.FilteredSelectMultiple("permissions", is_stacked=False),
    )

    # Set per request by RoleAdmin.get_form: the people the editor may see, and the members.
    visible_members = None

    class Meta:
        model = Role
        fields = ["name", "description", "owner"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.visible_members is not None:
            self.fields["members"].queryset = self.visible_members
        if self.instance.pk:
            self.fields["members"].initial = list(self.instance.group.user_set.all())
            self.fields["permissions"].initial = list(self.instance.group.permissions.all())


@admin.register(Role)
class RoleAdmin(GovernedModelAdmin):
    form = RoleForm
    list_display = ["name", "owner_name", "member_count", "description"]
    search_fields = ["name", "description"]
    readonly_fields = ["object_permissions", "changes", "created_at"]

    @admin.display(description="Changes of members and permissions (latest 50)")
    def changes(self, obj):
        """List who changed the role's members and permissions, when and why (newest first)."""
        viewer = _viewer.get()
        people = restricted(viewer, get_user_model())
        rows = []
        for change in (
            RoleChange.objects.filter(role=obj)
            .select_related("target_ct")
            .order_by("-at", "-pk")[:50]
        ):
            # Named only when the viewer may see them, as the object permissions below are.
            member = change.member_name
            if change.member_id is not None and not people.filter(pk=change.member_id).exists():
                member = f"person #{change.member_id}"
            what = member or change.permission
            if change.target_id:
                model = change.target_ct.model_class() if change.target_ct else None
                seen = model is not None and (
                    restricted(viewer, model).filter(pk=change.target_id).exists()
                )
                kind = change.target_ct.model if change.target_ct else "object"
                what += f" on {change.target_repr if seen else kind} #{change.target_id}"
            by = change.actor_name or "the system"
            label = f"{change.role_name}: {change.get_kind_display().lower()} {what} by {by}"
            rows.append((f"{change.at:%Y-%m-%d %H:%M} UTC", label, change.reason))
        if not rows:
            return "—"
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}: {} ({})</li>", rows))

    def get_readonly_fields(self, request, obj=None):
        """Remember who looks: the object permissions name only what the viewer may see."""
        _viewer.set(request.user)
        return super().get_readonly_fields(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        """Offer as members the people the editor may see, and keep the current members."""
        form = super().get_form(request, obj, change=change, **kwargs)
        people = restricted(request.user, get_user_model()).values("pk")
        members = Q(pk__in=people) | (Q(groups=obj.group_id) if obj is not None else Q())
        visible = get_user_model().objects.filter(members).distinct().order_by("username")
        return type(form.__name__, (form,), {"visible_members": visible})

    @admin.display(description="Members")
    def member_count(self, obj):
        return obj.group.user_set.count()

    @admin.display(description="Object permissions held")
    def object_permissions(self, obj):
        """List the guardian permissions the role holds object by object."""
        rows = (
            GroupObjectPermission.objects.filter(group=obj.group)
            .select_related("permission", "content_type")
            .order_by("content_type__model", "object_pk")
        )
        items = []
        for row in rows:
            model = row.content_type.model_class()
            # Named only when the viewer may see it; otherwise its kind and id.
            visible = restricted(_viewer.get(), model) if model else None
            target = visible.filter(pk=row.object_pk).first() if visible is not None else None
            label = (
                f"{row.permission.codename} on {target or row.content_type.model} #{row.object_pk}"
            )
            try:
                url = reverse(
                    f"admin:{row.content_type.app_label}_{row.content_type.model}_permissions",
                    args=[row.object_pk],
                )
            except NoReverseMatch:
                url = ""
            items.append((url, label))
        if not items:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", '<li><a href="{}">{}</a></li>', items),
        )

    def save_model(self, request, obj, form, change):
        """Create or change the role through the services."""
        reason = self.change_reason(request, form)
        request._governance_reason = reason
        if not change:
            role = services.create_role(
                name=obj.name,
                description=obj.description,
                owner=obj.owner,
                actor=request.user,
                reason=reason,
            )
            obj.pk, obj.group_id, obj.created_at = role.pk, role.group_id, role.created_at
            obj._state.adding = False
            return
        services.update_role(
            obj,
            actor=request.user,
            reason=reason,
            name=obj.name,
            description=obj.description,
            owner=obj.owner,
        )

    def save_related(self, request, form, formsets, change):
        """Apply members and model-wide permissions through the services (each audited)."""
        role = form.instance
        reason = _reason(request)
        if "members" in form.changed_data:
            services.set_members(
                role, form.cleaned_data["members"], actor=request.user, reason=reason
            )
        if "permissions" in form.changed_data:
            wanted = set(form.cleaned_data["permissions"])
            held = set(role.group.permissions.all())
            for permission in wanted - held:
                label = f"{permission.content_type.app_label}.{permission.codename}"
                services.grant(role, label, actor=request.user, reason=reason)
            for permission in held - wanted:
                label = f"{permission.content_type.app_label}.{permission.codename}"
                services.revoke(role, label, actor=request.user, reason=reason)

    def delete_model(self, request, obj):
        services.delete_role(obj, actor=request.user, reason="deleted in the admin")


@admin.register(Principal)
class PrincipalAdmin(GovernedModelAdmin):
    list_display = ["user", "kind", "display_name", "owner_name", "created_at"]
    list_filter = ["kind"]
    search_fields = ["user__username", "display_name", "owner_name"]
    fields = ["user", "kind", "display_name", "description", "owner", REASON_FIELD]
    readonly_fields = ["user", "kind"]

    def has_add_permission(self, request, *args):
        """Principals are created with their users (services and commands)."""
        return False

    def save_model(self, request, obj, form, change):
        """A new owner goes through set_owner; an agent left without one never gets here.

        The form refuses it (Principal.clean, run by the form's model validation), and so
        would save_governed's full_clean for any other path.
        """
        reason = self.change_reason(request, form)
        if "owner" in form.changed_data and obj.owner is not None:
            services.set_owner(obj, obj.owner, actor=request.user, reason=reason)
        else:
            super().save_model(request, obj, form, change)


# --- policies -----------------------------------------------------------------------------------


class PolicyRuleForm(forms.ModelForm):
    """A rule, validated as the services validate it (condition, effect's companions)."""

    class Meta:
        model = PolicyRule
        fields = [
            "position",
            "name",
            "status",
            "action",
            "condition",
            "effect",
            "reason",
            "approval_rule",
            "escalate_to",
            "risk",
            "replaces",
        ]
        widgets = {"condition": forms.Textarea(attrs={"rows": 2, "cols": 60})}

    def clean(self):
        cleaned = super().clean()
        draft = self.instance
        for name, value in cleaned.items():
            if hasattr(draft, name):
                setattr(draft, name, value)
        for field, problems in services.rule_problems(draft).items():
            for problem in problems:
                self.add_error(field if field in self.fields else None, problem)
        return cleaned


class PolicyRuleInline(RestrictedChoicesMixin, admin.StackedInline):
    model = PolicyRule
    form = PolicyRuleForm
    extra = 0
    ordering = ["position", "id"]
    show_change_link = True

    def _may_change_policy(self, request, obj) -> bool:
        if obj is None:
            return has_model_permission(request.user, "add", Policy)
        return can(request.user, "change", obj)

    def has_add_permission(self, request, obj=None):
        return self._may_change_policy(request, obj)

    def has_change_permission(self, request, obj=None):
        return self._may_change_policy(request, obj)

    def has_delete_permission(self, request, obj=None):
        return self._may_change_policy(request, obj)

    def has_view_permission(self, request, obj=None):
        return obj is None or can(request.user, "view", obj)


class PolicyForm(ChangeReasonForm):
    class Meta:
        model = Policy
        fields = ["slug", "name", "description", "priority", "is_active"]


# Admin actions a higher app offers on policies (agents: the dry run of a draft against past
# tool calls). Governance does not import them; they register here when their admin loads.
POLICY_ACTIONS: list = []


@admin.register(Policy)
class PolicyAdmin(GovernedModelAdmin):
    form = PolicyForm
    inlines = [PolicyRuleInline]
    actions = ["publish_draft"]
    list_display = ["slug", "name", "version", "priority", "is_active", "rule_count", "updated_at"]
    list_filter = ["is_active"]
    search_fields = ["slug", "name", "description"]
    readonly_fields = ["version", "updated_at"]

    @admin.display(description="Rules")
    def rule_count(self, obj):
        return obj.rules.count()

    def get_actions(self, request):
        """The policy actions of this admin and those other apps registered (POLICY_ACTIONS)."""
        actions = super().get_actions(request)
        for action in POLICY_ACTIONS:
            actions[action.__name__] = self.get_action(action)
        return actions

    @admin.action(description="Publish the draft (its draft rules go live)")
    def publish_draft(self, request, queryset):
        """Publish each selected policy's draft version, with the reason asked for."""
        return with_reason(
            self,
            request,
            queryset,
            title="Publish the draft",
            apply=lambda policy, reason: services.publish_draft(
                policy, actor=request.user, reason=reason
            ),
        )

    def save_model(self, request, obj, form, change):
        """Create the policy, or change it (a new version) when its own fields changed."""
        reason = self.change_reason(request, form)
        request._governance_reason = reason
        fields = {name: getattr(obj, name) for name in PolicyForm.Meta.fields}
        if not change:
            created = services.create_policy(**fields, actor=request.user, reason=reason)
            obj.pk, obj.version = created.pk, created.version
            obj._state.adding = False
        elif _differs(obj, fields):
            services.update_policy(obj, actor=request.user, reason=reason, **fields)

    def save_formset(self, request, form, formset, change):
        """Save each changed rule through the services: validated, each a new policy version."""
        rules = formset.save(commit=False)
        for rule in formset.deleted_objects:
            services.delete_rule(rule, actor=request.user, reason=_reason(request))
        for rule in rules:
            rule.policy = form.instance
            services.save_rule(rule, actor=request.user, reason=_reason(request))


class PolicyRuleAdminForm(PolicyRuleForm, ChangeReasonForm):
    class Meta(PolicyRuleForm.Meta):
        fields = ["policy", *PolicyRuleForm.Meta.fields]


@admin.register(PolicyRule)
class PolicyRuleAdmin(GovernedAdminMixin, SimpleHistoryAdmin):
    """Rules one by one: where drafts are written and dry-run against recorded decisions."""

    form = PolicyRuleAdminForm
    change_form_template = "admin/governance/policyrule/change_form.html"
    list_display = ["name", "policy", "position", "status", "action", "effect", "risk", "version"]
    list_filter = ["status", "effect", "policy"]
    search_fields = ["name", "action", "condition"]
    readonly_fields = ["version"]

    def save_model(self, request, obj, form, change):
        services.save_rule(obj, actor=request.user, reason=self.change_reason(request, form))

    def delete_model(self, request, obj):
        services.delete_rule(obj, actor=request.user, reason="deleted in the admin")

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        """A POST with `_dryrun` replays recorded decisions with the form's rule; nothing saved."""
        if request.method == "POST" and "_dryrun" in request.POST:
            return self.dry_run_view(request, object_id)
        return super().changeform_view(request, object_id, form_url, extra_context)

    @audited_view("view")
    def dry_run_view(self, request, object_id=None):
        """Show what the rule in the form would have changed among recorded decisions."""
        obj = self.get_object(request, object_id) if object_id else None
        if obj is not None and not self.has_view_permission(request, obj):
            raise PermissionDenied
        form_class = self.get_form(request, obj, change=obj is not None)
        form = form_class(request.POST, instance=obj or PolicyRule())
        if REASON_FIELD in form.fields:
            form.fields[REASON_FIELD].required = False
        report = None
        if form.is_valid():
            draft = form.save(commit=False)
            if not can(request.user, "view", draft.policy):
                raise PermissionDenied
            report = services.dry_run(draft)
        context = {
            **self.admin_site.each_context(request),
            "title": "Dry run",
            "opts": self.model._meta,
            "form": form,
            "report": report,
            "original": obj,
        }
        return TemplateResponse(request, "admin/governance/policyrule/dry_run.html", context)


# --- approval rules and delegations --------------------------------------------------------------


class EscalationLevelInline(RestrictedChoicesMixin, admin.TabularInline):
    model = EscalationLevel
    extra = 1
    fields = ["position", "role"]
    ordering = ["position"]

    def has_add_permission(self, request, obj=None):
        return obj is None or can(request.user, "change", obj)

    def has_change_permission(self, request, obj=None):
        return obj is None or can(request.user, "change", obj)

    def has_delete_permission(self, request, obj=None):
        return obj is None or can(request.user, "change", obj)

    def has_view_permission(self, request, obj=None):
        return obj is None or can(request.user, "view", obj)


class ApprovalRuleForm(ChangeReasonForm):
    class Meta:
        model = ApprovalRule
        fields = ["slug", "name", "description", "role", "approvals_required", "sla_seconds"]


@admin.register(ApprovalRule)
class ApprovalRuleAdmin(GovernedModelAdmin):
    form = ApprovalRuleForm
    inlines = [EscalationLevelInline]
    list_display = ["slug", "name", "role", "approvals_required", "sla_seconds", "version"]
    search_fields = ["slug", "name"]
    readonly_fields = ["version", "updated_at"]

    def save_model(self, request, obj, form, change):
        reason = self.change_reason(request, form)
        request._governance_reason = reason
        fields = {name: getattr(obj, name) for name in ApprovalRuleForm.Meta.fields}
        if not change:
            created = services.create_approval_rule(**fields, actor=request.user, reason=reason)
            obj.pk, obj.version = created.pk, created.version
            obj._state.adding = False
        elif _differs(obj, fields):
            services.update_approval_rule(obj, actor=request.user, reason=reason, **fields)

    def save_formset(self, request, form, formset, change):
        """Replace the escalation chain through the service when the inline changed."""
        formset.save(commit=False)  # for the admin's change message; the service writes
        if not formset.has_changed():
            return
        levels = [
            (row["position"], row["role"])
            for row in formset.cleaned_data
            if row and not row.get("DELETE") and row.get("role") is not None
        ]
        roles = [role for _, role in sorted(levels, key=lambda level: level[0])]
        services.update_approval_rule(
            form.instance, actor=request.user, reason=_reason(request), escalation=roles
        )


class DelegationForm(ChangeReasonForm):
    class Meta:
        model = Delegation
        fields = ["delegator", "delegate", "role", "starts_at", "ends_at", "note"]


@admin.register(Delegation)
class DelegationAdmin(GovernedModelAdmin):
    form = DelegationForm
    list_display = ["delegator", "delegate", "role", "starts_at", "ends_at", "revoked_at", "note"]
    list_filter = ["role"]
    search_fields = ["delegator__username", "delegate__username", "note"]
    readonly_fields = ["revoked_at", "created_at"]
    actions = ["revoke"]

    def has_add_permission(self, request, *args):
        """A person holding a role may delegate their own approvals; an outsider has none."""
        if super().has_add_permission(request):
            return True
        return services.is_person(request.user) and bool(services.roles_of(request.user))

    def visible_choices(self, db_field, request):
        """Delegate your own approvals (others' with the model permission), to a person you
        may see, for a role you may see or hold."""
        user = request.user
        if db_field.name == "delegator" and not has_model_permission(user, "add", Delegation):
            return get_user_model().objects.filter(pk=user.pk)
        if db_field.name == "role":
            visible = Role.objects.restrict(user, "view").values("pk")
            return Role.objects.filter(Q(pk__in=visible) | Q(group__user=user))
        people = super().visible_choices(db_field, request)
        return people.filter(principal__kind=PrincipalKind.PERSON)

    def get_changeform_initial_data(self, request):
        return {"delegator": request.user.pk, **super().get_changeform_initial_data(request)}

    def save_model(self, request, obj, form, change):
        reason = self.change_reason(request, form)
        if not change:
            created = services.create_delegation(
                delegator=obj.delegator,
                delegate=obj.delegate,
                starts_at=obj.starts_at,
                ends_at=obj.ends_at,
                role=obj.role,
                note=obj.note,
                actor=request.user,
            )
            obj.pk = created.pk
            obj._state.adding = False
            return
        fields = {name: getattr(obj, name) for name in DelegationForm.Meta.fields}
        services.update_delegation(obj, actor=request.user, reason=reason, **fields)

    def delete_model(self, request, obj):
        services.delete_delegation(obj, actor=request.user, reason="deleted in the admin")

    @admin.action(description="Revoke the selected delegations now", permissions=["change"])
    def revoke(self, request, queryset):
        for delegation in queryset.filter(revoked_at__isnull=True):
            try:
                services.revoke_delegation(delegation, actor=request.user, reason="admin")
            except (services.AccessDenied, services.NotVisible) as exc:
                self.message_user(request, f"{delegation}: {exc}", messages.ERROR)


# --- approval requests: the pending list and decisions ------------------------------------------


class StateFilter(admin.SimpleListFilter):
    """Pending requests first: the list opens on what waits for a decision."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("pending", "Pending"), ("decided", "Final"), ("all", "All")]

    def choices(self, changelist):
        value = self.value() or "pending"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value() or "pending"
        if value == "pending":
            return queryset.filter(status=ApprovalStatus.PENDING)
        if value == "decided":
            return queryset.exclude(status=ApprovalStatus.PENDING)
        return queryset


class DecisionInline(ReadOnlyInline):
    model = ApprovalDecision
    fields = [
        "decided_at",
        "decided_by_name",
        "on_behalf_of_name",
        "role_name",
        "decision",
        "comment",
        "policy_version",
        "arguments_digest",
    ]
    readonly_fields = fields
    show_change_link = False


class DecisionForm(forms.Form):
    comment = forms.CharField(
        required=False,
        label="Reason",
        help_text="Required to reject or request changes; kept with the decision.",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    expected_digest = forms.CharField(widget=forms.HiddenInput)


def _decide_action(kind: str, label: str):
    """Make an admin action that decides each selected request under every rule.

    Approving needs no words; rejecting asks for the reason on an intermediate page (the
    decision service refuses a rejection without one).
    """

    def decide(request, approval, comment: str) -> None:
        services.decide_approval(approval, user=request.user, decision=kind, comment=comment)

    def action(modeladmin, request, queryset):
        if kind in NEEDS_REASON:
            return with_reason(
                modeladmin,
                request,
                queryset,
                title=f"{label} requests",
                apply=lambda approval, reason: decide(request, approval, reason),
            )
        done = 0
        for approval in queryset:
            try:
                decide(request, approval, f"{label} in the admin list")
                done += 1
            except services.ApprovalRefused as exc:
                modeladmin.message_user(request, f"#{approval.pk}: {exc}", messages.ERROR)
        if done:
            modeladmin.message_user(request, f"{label}: {done} request(s).", messages.SUCCESS)
        return None

    action.short_description = f"{label} selected requests"
    action.__name__ = f"{kind}_selected"
    action.allowed_permissions = ("decide",)
    return action


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(GovernedAdminMixin, admin.ModelAdmin):
    """The pending-approvals list; decisions go through the decision service, never a form."""

    change_form_template = "admin/governance/approvalrequest/change_form.html"
    list_display = [
        "id",
        "action",
        "target_repr",
        "risk",
        "status",
        "role",
        "approvals",
        "requested_by_name",
        "due_at",
        "expires_at",
    ]
    list_filter = [StateFilter, "risk", "role", "action"]
    search_fields = ["=id", "action", "target_repr", "summary", "requested_by_name"]
    list_select_related = ["role"]
    inlines = [DecisionInline]
    actions = [
        _decide_action(DecisionKind.APPROVE, "Approve"),
        _decide_action(DecisionKind.REJECT, "Reject"),
    ]
    fields = [
        "status",
        "action",
        "summary",
        "target_type",
        "target_id",
        "target_repr",
        "arguments_pretty",
        "arguments_digest",
        "risk",
        "requested_by_name",
        "run_initiator_name",
        "accountable_owner_name",
        "run_link",
        "step_id",
        "policy_basis",
        "role",
        "level",
        "approvals",
        "created_at",
        "due_at",
        "expires_at",
        "decided_at",
    ]
    readonly_fields = fields

    @admin.display(description="Approvals")
    def approvals(self, obj):
        given = obj.decisions.filter(decision=DecisionKind.APPROVE).count()
        return f"{given} of {obj.approvals_required}"

    @admin.display(description="Arguments")
    def arguments_pretty(self, obj):
        return pretty_json(obj.arguments)

    @admin.display(description="Run")
    def run_link(self, obj):
        if obj.run_id is None:
            return "—"
        try:
            url = reverse("admin:orchestrator_workflowrun_change", args=[obj.run_id])
        except NoReverseMatch:
            return f"run {obj.run_id}"
        return format_html('<a href="{}">run {}</a>', url, obj.run_id)

    @admin.display(description="Required by")
    def policy_basis(self, obj):
        rule = obj.approval_rule.slug if obj.approval_rule else "—"
        policy = obj.decision_basis.get("policy_slug") or "no policy rule"
        version = f" v{obj.policy_version}" if obj.policy_version else ""
        return f"{policy}{version} / rule {obj.decision_basis.get('rule_name') or '—'} / " + (
            f"approval rule {rule} v{obj.approval_rule_version}"
        )

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        """A request is a record: never edited, only decided."""
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def response_action(self, request, queryset):
        """Decide every selected request the user sees, each through the decision service.

        Narrowing to the decidable ones first (restrict(user, "decide")) would drop the others
        silently; the service refuses each of them with its reason instead.
        """
        return admin.ModelAdmin.response_action(self, request, queryset)

    def has_decide_permission(self, request, obj=None):
        """Tell whether the user may decide this request; without one, whether to offer the
        bulk decisions (to a person who sees requests: each is then refused with its reason)."""
        if obj is not None:
            return can(request.user, "decide", obj)
        return (
            services.is_person(request.user)
            and ApprovalRequest.objects.restrict(request.user, "view").exists()
        )

    def get_urls(self):
        return [
            path(
                "<int:pk>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="governance_approvalrequest_decide",
            ),
            *super().get_urls(),
        ]

    @audited_view("view")
    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Show the request, its decisions, who may decide, and the decision form."""
        obj = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if obj.status == ApprovalStatus.PENDING and self.has_decide_permission(request, obj):
            extra["decision_form"] = DecisionForm(initial={"expected_digest": obj.arguments_digest})
            extra["decision_url"] = reverse(
                "admin:governance_approvalrequest_decide", args=[obj.pk]
            )
            extra["decision_kinds"] = DecisionKind.choices
            extra["eligible"] = services.eligible_deciders(obj)
        return super().change_view(request, object_id, form_url, extra)

    @audited_view("decide")
    def decide_view(self, request, pk):
        """Apply one decision through the decision service (every rule re-checked there)."""
        if request.method != "POST":
            return redirect("admin:governance_approvalrequest_change", pk)
        obj = self.get_object(request, str(pk))
        form = DecisionForm(request.POST)
        decision = request.POST.get("decision", "")
        if not form.is_valid() or decision not in DecisionKind.values:
            self.message_user(request, "Choose approve, reject or request changes.", messages.ERROR)
            return redirect("admin:governance_approvalrequest_change", pk)
        try:
            services.decide_approval(
                obj,
                user=request.user,
                decision=decision,
                comment=form.cleaned_data["comment"],
                expected_digest=form.cleaned_data["expected_digest"],
            )
        except services.ApprovalRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return redirect("admin:governance_approvalrequest_change", pk)
        obj.refresh_from_db()
        self.message_user(
            request,
            f"Request #{obj.pk}: your decision ({decision.replace('_', ' ')}) is recorded; "
            f"the request is {obj.get_status_display().lower()}.",
            messages.SUCCESS,
        )
        return redirect("admin:governance_approvalrequest_changelist")


# --- escalations --------------------------------------------------------------------------------


class ResolveForm(forms.Form):
    resolution = forms.ChoiceField(choices=Resolution.choices, widget=forms.RadioSelect)
    result = forms.JSONField(
        required=False, help_text="For 'take over': the step's output, as JSON.", initial=None
    )
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))


@admin.register(Escalation)
class EscalationAdmin(GovernedAdminMixin, admin.ModelAdmin):
    """Tasks for people: take over, retry or stop; resolved ones are records."""

    change_form_template = "admin/governance/escalation/change_form.html"
    list_display = ["id", "reason", "status", "role", "run_id", "step_id", "created_at"]
    list_filter = ["status", "reason", "role"]
    search_fields = ["=id", "=run_id", "step_id", "summary"]
    fields = [
        "status",
        "reason",
        "summary",
        "context_pretty",
        "role",
        "run_id",
        "step_id",
        "raised_by_name",
        "created_at",
        "resolution",
        "result",
        "comment",
        "resolved_by_name",
        "resolved_at",
    ]
    readonly_fields = fields

    @admin.display(description="Context")
    def context_pretty(self, obj):
        return pretty_json(obj.context)

    def has_add_permission(self, request, *args):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        return [
            path(
                "<int:pk>/resolve/",
                self.admin_site.admin_view(self.resolve_view),
                name="governance_escalation_resolve",
            ),
            *super().get_urls(),
        ]

    @audited_view("view")
    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Show the escalation and, to those who may resolve it, the resolution form."""
        obj = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if obj.status == EscalationStatus.OPEN and can(request.user, "resolve", obj):
            extra["resolve_form"] = ResolveForm()
            extra["resolve_url"] = reverse("admin:governance_escalation_resolve", args=[obj.pk])
        return super().change_view(request, object_id, form_url, extra)

    @audited_view("resolve")
    def resolve_view(self, request, pk):
        """Resolve through the service; the engine carries the resolution out."""
        if request.method != "POST":
            return redirect("admin:governance_escalation_change", pk)
        obj = self.get_object(request, str(pk))
        form = ResolveForm(request.POST)
        if not form.is_valid():
            self.message_user(request, f"Invalid resolution: {form.errors}", messages.ERROR)
            return redirect("admin:governance_escalation_change", pk)
        try:
            services.resolve_escalation(
                obj,
                user=request.user,
                resolution=form.cleaned_data["resolution"],
                result=form.cleaned_data["result"],
                comment=form.cleaned_data["comment"],
            )
        except (services.GovernanceError, services.AccessDenied, services.NotVisible) as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return redirect("admin:governance_escalation_change", pk)
        self.message_user(request, f"Escalation #{obj.pk} resolved.", messages.SUCCESS)
        return redirect("admin:governance_escalation_changelist")


# --- API tokens ---------------------------------------------------------------------------------


class ApiTokenForm(forms.ModelForm):
    """Issue a token: whom it acts as, what for, read-only or not, until when."""

    class Meta:
        model = ApiToken
        fields = ["user", "name", "read_only", "expires_at"]

    def clean_user(self):
        """Refuse an agent here, with the service's words, rather than after the form."""
        user = self.cleaned_data["user"]
        if kind_of(user) == PrincipalKind.AGENT:
            raise forms.ValidationError(AGENT_REFUSAL)
        return user


@admin.register(ApiToken)
class ApiTokenAdmin(GovernedAdminMixin, SimpleHistoryAdmin):
    """Tokens are issued here and by `manage.py api_tokens`; the token is shown once."""

    form = ApiTokenForm
    ask_change_reason = False
    list_display = ["prefix", "name", "user", "read_only", "expires_at", "revoked_at"]
    list_display += ["last_used_at"]
    list_filter = ["read_only"]
    search_fields = ["prefix", "name", "user__username"]
    actions = ["revoke_selected"]

    def get_fields(self, request, obj=None):
        """The issuing form on add; the token's facts afterwards."""
        if obj is None:
            return ["user", "name", "read_only", "expires_at"]
        return [
            "prefix",
            "user",
            "name",
            "read_only",
            "expires_at",
            "created_by_name",
            "created_at",
            "last_used_at",
            "revoked_at",
            "revoked_by_name",
            "revoke_reason",
        ]

    def get_readonly_fields(self, request, obj=None):
        """Nothing of an issued token changes but its revocation (an action)."""
        return self.get_fields(request, obj) if obj is not None else []

    def has_add_permission(self, request, *args):
        """Issue with the model permission (the service checks the principal too)."""
        return has_model_permission(request.user, "add", ApiToken)

    def has_delete_permission(self, request, obj=None):
        """A token is revoked, never deleted: its row is the record of who could call."""
        return False

    def save_model(self, request, obj, form, change):
        """Issue through the service and show the token this once."""
        row, token = services.issue_token(
            form.cleaned_data["user"],
            actor=request.user,
            name=form.cleaned_data["name"],
            read_only=form.cleaned_data["read_only"],
            expires_at=form.cleaned_data["expires_at"],
        )
        obj.pk = row.pk
        obj._state.adding = False
        self.message_user(
            request,
            f"Token {row.prefix} issued. Copy it now; it is not shown again: {token}",
            messages.WARNING,
        )

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke_selected(self, request, queryset):
        """Revoke each selected token the user may change, each audited."""
        for token in queryset:
            services.revoke_token(
                token, actor=request.user, reason=f"revoked in the admin by {request.user}"
            )
        self.message_user(request, "Revoked.", messages.SUCCESS)


# --- outbound webhooks -----------------------------------------------------------------------


class WebhookDeliveryInline(ReadOnlyInline):
    """The latest deliveries of a subscription."""

    model = WebhookDelivery
    fields = ["event_type", "webhook_id", "status", "attempts", "last_status_code", "last_error"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    max_num = 0
    show_change_link = True


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(GovernedAdminMixin, admin.ModelAdmin):
    """Subscriptions are made through the API or the services (the secret is shown once there);
    here they are read, disabled and re-activated, each change through the webhook services."""

    ask_change_reason = False
    list_display = ["owner", "url", "active", "disabled_reason", "consecutive_failures"]
    list_filter = ["active"]
    search_fields = ["url", "owner__username", "description"]
    fields = [
        "owner",
        "url",
        "description",
        "event_types",
        "active",
        "disabled_reason",
        "consecutive_failures",
        "created_by_name",
        "created_at",
        "updated_at",
    ]
    readonly_fields = fields
    inlines = [WebhookDeliveryInline]
    actions = ["disable_selected", "reactivate_selected"]

    def has_add_permission(self, request, *args):
        """Subscribe through the API, which shows the signing secret once."""
        return False

    def delete_model(self, request, obj):
        """Delete through the webhook service (audited)."""
        services.delete_subscription(obj, actor=request.user)

    @admin.action(description="Disable the selected subscriptions", permissions=["change"])
    def disable_selected(self, request, queryset):
        """Stop sending to each selected subscription."""
        for subscription in queryset:
            services.update_subscription(subscription, actor=request.user, active=False)
        self.message_user(request, "Disabled.", messages.SUCCESS)

    @admin.action(description="Re-activate the selected subscriptions", permissions=["change"])
    def reactivate_selected(self, request, queryset):
        """Send again to each selected subscription; its failure count starts over."""
        for subscription in queryset:
            services.update_subscription(subscription, actor=request.user, active=True)
        self.message_user(request, "Re-activated.", messages.SUCCESS)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(GovernedAdminMixin, admin.ModelAdmin):
    """The outbox: every delivery, its attempts and its outcome; replayed by an action."""

    ask_change_reason = False
    list_display = ["event_type", "subscription", "status", "attempts", "last_status_code"]
    list_display += ["created_at", "delivered_at"]
    list_filter = ["status", "event_type"]
    search_fields = ["webhook_id", "subscription__url"]
    list_select_related = ["subscription__owner"]
    fields = [
        "subscription",
        "event_type",
        "webhook_id",
        "payload_json",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "replay_of",
        "created_at",
        "delivered_at",
    ]
    readonly_fields = fields
    actions = ["replay_selected"]

    @admin.display(description="Payload")
    def payload_json(self, obj):
        """Show the body that was signed and sent."""
        return pretty_json(obj.payload)

    def has_add_permission(self, request, *args):
        """Deliveries are written by events, never by hand."""
        return False

    def has_delete_permission(self, request, obj=None):
        """A delivery is the record of what was sent."""
        return False

    @admin.action(description="Replay the selected deliveries", permissions=["change"])
    def replay_selected(self, request, queryset):
        """Send each selected delivery's payload again (a new webhook-id), through the service."""
        for delivery in queryset.select_related("subscription"):
            services.replay_delivery(delivery, actor=request.user)
        self.message_user(request, "Queued again.", messages.SUCCESS)


# --- Django's users and groups ---------------------------------------------------------------


def _restricted_admin(model, admin_class):
    """Register `model` again with its admin narrowed through restricted()."""
    narrowed = type(
        admin_class.__name__,
        (RestrictedAdminMixin, admin_class),
        {"__doc__": f"{admin_class.__doc__ or model.__name__}, narrowed through restricted()."},
    )
    admin.site.unregister(model)
    admin.site.register(model, narrowed)


for _model in (get_user_model(), Group):
    if admin.site.is_registered(_model):
        _restricted_admin(_model, type(admin.site.get_model_admin(_model)))
