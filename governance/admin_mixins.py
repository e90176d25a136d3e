"""The governed admin: every admin page of a governed model goes through restrict() / can().

`GovernedAdminMixin` makes an admin list only what `queryset.restrict(user, "view")` returns,
answer its has_*_permission questions with can(), turn an object the user may not see into a
404 (not the admin's "perhaps it was deleted" redirect), ask for a change reason on every form
(set on the object before it is saved, for simple-history), save through a function that
re-checks the result inside the admin's transaction, and write every refusal (403 or 404) to the
audit log once the refused transaction has rolled back. That covers the pages the admin gets from
simple-history (a past version and its revert) too. `ObjectPermissionsThroughRolesMixin` adds
guardian's object-permission pages, through the same path, granting only through governance's
grant() / revoke(). Other apps use both for their governed models (the engine's workflows and
runs, the agents).
"""

from __future__ import annotations

import functools

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.template.response import TemplateResponse
from guardian.admin import AdminGroupObjectPermissionsForm, ReinforcedGuardedModelAdminMixin
from guardian.shortcuts import get_group_perms

from governance.actions.common import GovernanceError, delete_governed, save_governed
from governance.actions.roles import grant, revoke
from governance.models import Role
from governance.permissions import (
    AccessDenied,
    NotVisible,
    can,
    has_model_permission,
    permission_name,
    restricted,
)

REASON_FIELD = "change_reason"
REFUSALS = (GovernanceError, AccessDenied, NotVisible)


class ReadOnlyInline(admin.TabularInline):
    """An inline that only shows rows, on the page of an object the viewer may view."""

    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        """Rows shown here are written by services, not by hand in the inline."""
        return False

    def has_change_permission(self, request, obj=None):
        """Rows shown here are written by services, not by hand in the inline."""
        return False

    def has_view_permission(self, request, obj=None):
        """Show the rows of the object whose page this is (that page checked it)."""
        return True


class ChangeReasonForm(forms.ModelForm):
    """A model form that asks why: the reason is recorded with the change in its history."""

    change_reason = forms.CharField(
        max_length=100,
        required=True,
        help_text="Why this change? Kept in the history and the audit log.",
    )


def _refusal_for(request, model, action: str, object_id, exc) -> AccessDenied | NotVisible:
    """Turn a refusal raised by Django's admin into one of ours, so it can be audited."""
    if isinstance(exc, AccessDenied | NotVisible):
        return exc
    if isinstance(exc, Http404):
        return NotVisible(request.user, action, model, object_id or "")
    return AccessDenied(request.user, action, model=model, detail=str(exc) or "")


def audited_view(action: str):
    """Wrap an admin view so a 403 or 404 it raises is audited (after its transaction ended)."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(self, request, object_id=None, *args, **kwargs):
            try:
                if object_id is None:
                    return view(self, request, *args, **kwargs)
                return view(self, request, object_id, *args, **kwargs)
            except (PermissionDenied, Http404) as exc:
                refusal = _refusal_for(request, self.model, action, object_id, exc)
                refusal.audit()
                raise refusal from None

        return wrapper

    return decorate


class RestrictedRelatedFieldListFilter(admin.RelatedFieldListFilter):
    """A list filter on a relation that names only the related rows the viewer may see."""

    def field_choices(self, field, request, model_admin):
        """Offer the related rows restricted() lets the viewer see."""
        visible = restricted(request.user, field.related_model).values("pk")
        ordering = self.field_admin_ordering(field, request, model_admin)
        return field.get_choices(
            include_blank=False, ordering=ordering, limit_choices_to={"pk__in": visible}
        )


def _restricted_filter(model, spec):
    """Turn a list filter on a relation ('workflow', 'run__workflow') into a restricted one."""
    if not isinstance(spec, str):
        return spec
    from django.contrib.admin.utils import get_fields_from_path

    field = get_fields_from_path(model, spec)[-1]
    if getattr(field, "related_model", None) is None:
        return spec
    return (spec, RestrictedRelatedFieldListFilter)


def _current_values(obj, db_field) -> list:
    """Return the primary keys a stored object holds in a relation (none for a new one)."""
    if obj is None or obj.pk is None or not isinstance(obj, db_field.model):
        return []
    if db_field.many_to_many:
        return list(getattr(obj, db_field.name).values_list("pk", flat=True))
    value = getattr(obj, db_field.attname, None)
    return [] if value is None else [value]


def _within(queryset, visible):
    """Keep the rows of `queryset` that are in `visible` (as is when `visible` is everything)."""
    if visible.query.is_empty():
        return queryset.none()
    if not visible.query.has_filters():
        return queryset
    return queryset.filter(pk__in=visible.values("pk"))


class RestrictedChoicesMixin:
    """What an admin page names of other models goes through restricted(): the choices of its
    foreign keys and many-to-many fields, its list filters on relations, and its search (which
    also answers the autocomplete and raw-id popups of other pages)."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        """Offer only the related rows the user may see."""
        kwargs["queryset"] = self._visible_choices(db_field, request, kwargs.get("queryset"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        """Offer only the related rows the user may see."""
        if not db_field.remote_field.through._meta.auto_created:
            return super().formfield_for_manytomany(db_field, request, **kwargs)  # no field
        kwargs["queryset"] = self._visible_choices(db_field, request, kwargs.get("queryset"))
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def visible_choices(self, db_field, request):
        """Return what the user may pick for a relation (a page may narrow or widen it)."""
        return restricted(request.user, db_field.related_model)

    def get_form(self, request, obj=None, change=False, **kwargs):
        """Remember the object of the page: its current values stay choices (they are shown)."""
        request._choices_of = obj
        return super().get_form(request, obj, change=change, **kwargs)

    def _visible_choices(self, db_field, request, queryset):
        """Narrow a field's choices (the admin's default, or one given) to what the user sees."""
        visible = self.visible_choices(db_field, request)
        current = _current_values(getattr(request, "_choices_of", None), db_field)
        if current:
            visible = db_field.related_model._default_manager.filter(
                Q(pk__in=visible.values("pk")) | Q(pk__in=current)
            )
        if queryset is None:
            queryset = self.get_field_queryset(None, db_field, request)
        if queryset is None:
            return visible
        return _within(queryset, visible)

    def get_list_filter(self, request):
        """Filters on a relation name only what the user may see."""
        return [_restricted_filter(self.model, spec) for spec in super().get_list_filter(request)]

    def get_search_results(self, request, queryset, search_term):
        """Search (the list, autocomplete, raw-id popups) only among the rows the user sees."""
        queryset = _within(queryset, restricted(request.user, self.model))
        return super().get_search_results(request, queryset, search_term)


class RestrictedAdminMixin(RestrictedChoicesMixin):
    """An admin of a model that is not governed here (Django's users and groups):
    its own permission checks stay, and it lists only what restricted() lets the user see."""

    def get_queryset(self, request):
        """List only the rows the user may see."""
        return _within(super().get_queryset(request), restricted(request.user, self.model))


class GovernedAdminMixin(RestrictedChoicesMixin):
    """Admin pages of a governed model, through the one authorisation path."""

    form = ChangeReasonForm
    ask_change_reason = True

    # --- what the user may see and do ---------------------------------------------------------

    def get_queryset(self, request):
        """List only the rows the user may view."""
        queryset = super().get_queryset(request)
        return queryset.restrict(request.user, "view")

    def _may(self, request, action: str, obj=None) -> bool:
        """Tell whether the user may do `action` on `obj`, or on at least one row without it."""
        user = request.user
        if obj is not None:
            return can(user, action, obj)
        if has_model_permission(user, action, self.model):
            return True
        if action == "add":
            return False
        manager = self.model._default_manager
        return manager.all().restrict(user, action).exists()

    def has_view_permission(self, request, obj=None):
        """View what restrict() lets the user view (or change)."""
        return self._may(request, "view", obj) or self._may(request, "change", obj)

    def has_change_permission(self, request, obj=None):
        """Change what can() allows."""
        return self._may(request, "change", obj)

    def has_delete_permission(self, request, obj=None):
        """Delete what can() allows."""
        return self._may(request, "delete", obj)

    def has_add_permission(self, request, *args):
        """Add with the model-level permission."""
        parent = getattr(self.model._default_manager.all(), "permission_parent", None)
        if parent:
            related = self.model._meta.get_field(parent).related_model
            return self._may_on(request, "change", related)
        return has_model_permission(request.user, "add", self.model)

    def _may_on(self, request, action: str, model) -> bool:
        """Tell whether the user may do `action` on some row of another model."""
        if has_model_permission(request.user, action, model):
            return True
        return model._default_manager.all().restrict(request.user, action).exists()

    def has_module_permission(self, request):
        """Show the app to users who may view something in it."""
        return self.has_view_permission(request)

    def get_object(self, request, object_id, from_field=None):
        """Return the object, or raise a 404 when it is missing or not the user's to see."""
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise NotVisible(request.user, "view", self.model, object_id)
        return obj

    def response_action(self, request, queryset):
        """Apply a bulk action only to the selected rows the user may act on as it requires."""
        name = request.POST.get("action", "")
        action = self.get_actions(request).get(name)
        for permission in getattr(action[0], "allowed_permissions", ()) if action else ():
            queryset = queryset.restrict(request.user, permission)
        return super().response_action(request, queryset)

    # --- saving with a reason, re-checked ---------------------------------------------------

    def _asks_reason(self, request, obj) -> bool:
        """Tell whether this page asks for a change reason (only where the user may change)."""
        view_only = obj is not None and not self.has_change_permission(request, obj)
        return self.ask_change_reason and not view_only

    def get_fields(self, request, obj=None):
        """Leave the reason out of the layout where it is not asked: a view-only page would
        otherwise look it up as a read-only attribute and find the change_reason method."""
        fields = super().get_fields(request, obj)
        if REASON_FIELD in fields and not self._asks_reason(request, obj):
            return [name for name in fields if name != REASON_FIELD]
        return fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        """Ask for the change reason only where the user may change."""
        form = super().get_form(request, obj, change=change, **kwargs)
        if REASON_FIELD in form.base_fields and not self._asks_reason(request, obj):
            form.base_fields.pop(REASON_FIELD)
        return form

    def change_reason(self, request, form) -> str:
        """Return the reason given in the form (or say where the change came from)."""
        reason = (form.cleaned_data.get(REASON_FIELD) or "").strip() if form is not None else ""
        return reason or f"changed in the admin by {request.user.get_username()}"

    def save_model(self, request, obj, form, change):
        """Save through the governed write path: checked, reasoned, re-checked after saving."""
        save_governed(obj, actor=request.user, reason=self.change_reason(request, form))

    def delete_model(self, request, obj):
        """Delete through the governed write path."""
        delete_governed(
            obj, actor=request.user, reason=f"deleted in the admin by {request.user.get_username()}"
        )

    def delete_queryset(self, request, queryset):
        """Delete one by one, so each deletion is checked and keeps its history."""
        for obj in queryset:
            self.delete_model(request, obj)

    # --- views: refusals audited ------------------------------------------------------------

    @audited_view("view")
    def changelist_view(self, request, extra_context=None):
        """The list, with refusals audited."""
        return super().changelist_view(request, extra_context)

    @audited_view("change")
    def change_view(self, request, object_id, form_url="", extra_context=None):
        """The change page, with refusals audited and governance errors shown."""
        try:
            return super().change_view(request, object_id, form_url, extra_context)
        except GovernanceError as exc:
            return self._refused_write(request, exc)

    @audited_view("add")
    def add_view(self, request, form_url="", extra_context=None):
        """The add page, with refusals audited."""
        try:
            return super().add_view(request, form_url, extra_context)
        except GovernanceError as exc:
            return self._refused_write(request, exc)

    def _refused_write(self, request, exc: GovernanceError):
        """Show a refused write (already rolled back) on the page it came from."""
        exc.audit()
        self.message_user(request, str(exc), messages.ERROR)
        return HttpResponseRedirect(request.get_full_path())

    @audited_view("delete")
    def delete_view(self, request, object_id, extra_context=None):
        """The delete page, with refusals audited."""
        return super().delete_view(request, object_id, extra_context)

    @audited_view("view")
    def history_view(self, request, object_id, extra_context=None):
        """The history page (diff of each change, revert), with refusals audited.

        The history of an object the user cannot see is a 404; a deleted object's history is
        shown to those who may view every row of its model.
        """
        visible = self.get_queryset(request).filter(pk=unquote(object_id)).exists()
        if not visible and not has_model_permission(request.user, "view", self.model):
            raise NotVisible(request.user, "view", self.model, object_id)
        return super().history_view(request, object_id, extra_context)

    @audited_view("view")
    def history_form_view(self, request, object_id, version_id, extra_context=None):
        """One past version and its revert (simple-history), through the authorisation path.

        A version of an object the user cannot see is a 404 (a deleted object's versions are
        shown to those who may view every row of its model); reverting is a change, refused
        with a 403 to those who may not change the object. Both refusals are audited.
        """
        obj = self.get_queryset(request).filter(pk=unquote(object_id)).first()
        if obj is None and not has_model_permission(request.user, "view", self.model):
            raise NotVisible(request.user, "view", self.model, object_id)
        if request.method == "POST":
            may_revert = (
                self.has_change_permission(request, obj)
                if obj is not None
                else has_model_permission(request.user, "change", self.model)
            )
            if not may_revert:
                raise AccessDenied(
                    request.user,
                    "change",
                    obj,
                    model=self.model,
                    detail=f"You may not revert {obj or self.model._meta.verbose_name}.",
                )
        return super().history_form_view(request, object_id, version_id, extra_context)


class ObjectPermissionsThroughRolesMixin(ReinforcedGuardedModelAdminMixin):
    """Guardian's object-permission pages, with every grant going through governance's services.

    Put it after GovernedAdminMixin (whose get_queryset restricts). Guardian's own pages answer
    a hidden object with an unaudited 404, check only that the user may change *some* row of
    the model, send a user without its permissions back to the index without a word, and write
    permission rows directly. Here the object must be visible (audited 404) and changeable by
    the user, and guardian's permissions held (audited 403). Object permissions are held by
    roles (their groups), never by a person directly: saving a role's permissions on the object
    calls governance's grant() / revoke() for each change, so nobody grants what they do not
    hold, and each refusal is audited by those services.
    """

    def _object_for_permissions(self, request, object_pk, *guardian_perms: str):
        """Return the object whose permissions the user may manage, or raise an audited refusal."""
        obj = self.get_queryset(request).filter(pk=unquote(object_pk)).first()
        if obj is None:
            raise NotVisible(request.user, "change", self.model, object_pk)
        if not can(request.user, "change", obj):
            raise AccessDenied(
                request.user,
                "change",
                obj,
                detail=f"You may not manage who may do what to {obj}.",
            )
        missing = [perm for perm in guardian_perms if not request.user.has_perm(perm)]
        if missing:
            raise AccessDenied(
                request.user,
                "change",
                obj,
                detail=f"Managing object permissions needs {', '.join(missing)}.",
            )
        return obj

    @audited_view("change")
    def obj_perms_manage_view(self, request, object_pk):
        """Who holds which permission on this object, for those who may manage it."""
        self._object_for_permissions(
            request,
            object_pk,
            "guardian.view_userobjectpermission",
            "guardian.view_groupobjectpermission",
        )
        return super().obj_perms_manage_view(request, object_pk)

    @audited_view("change")
    def obj_perms_manage_user_view(self, request, object_pk, user_id):
        """Refused: object permissions go to roles, so that every grant is a governed one."""
        obj = self._object_for_permissions(request, object_pk)
        raise AccessDenied(
            request.user,
            "change",
            obj,
            detail="Object permissions are granted to roles, not to people: "
            "give the person a role that holds them.",
        )

    @audited_view("change")
    def obj_perms_manage_group_view(self, request, object_pk, group_id):
        """Change what one role holds on this object, through governance's grant service."""
        obj = self._object_for_permissions(
            request, object_pk, "guardian.change_groupobjectpermission"
        )
        role = (
            Role.objects.restrict(request.user, "view")
            .select_related("group")
            .filter(group_id=group_id)
            .first()
        )
        if role is None:
            raise NotVisible(request.user, "view", Role, group_id)
        form = AdminGroupObjectPermissionsForm(role.group, obj, request.POST or None)
        if request.method == "POST" and form.is_valid():
            self._apply_role_permissions(request, role, obj, form)
            return redirect(request.get_full_path())
        context = self.get_obj_perms_base_context(request, obj)
        context.update(
            group_obj=role.group, group_perms=get_group_perms(role.group, obj), form=form
        )
        request.current_app = self.admin_site.name
        return render(request, self.get_obj_perms_manage_group_template(), context)

    def _apply_role_permissions(self, request, role, obj, form) -> None:
        """Grant and revoke the difference one by one, each through the services, and report.

        A refused change is audited by the service that refused it; the others still apply.
        """
        wanted = set(form.cleaned_data[form.get_obj_perms_field_name()])
        held = set(get_group_perms(role.group, obj))
        app_label = obj._meta.app_label
        changes = [(grant, name) for name in sorted(wanted - held)]
        changes += [(revoke, name) for name in sorted(held - wanted)]
        done = []
        for change, codename in changes:
            try:
                change(role, f"{app_label}.{codename}", obj, actor=request.user)
            except (AccessDenied, NotVisible, GovernanceError) as refusal:
                self.message_user(request, str(refusal), messages.ERROR)
            else:
                done.append(f"{'granted' if change is grant else 'revoked'} {codename}")
        if done:
            self.message_user(request, f"{role}: {', '.join(done)}.", messages.SUCCESS)


def permission_label(model, action: str) -> str:
    """Return 'app.action_model' for messages."""
    return permission_name(model, action)


class ReasonForm(forms.Form):
    """Why an operation is done: kept in the history and the audit log."""

    reason = forms.CharField(max_length=400, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}))


def with_reason(modeladmin, request, queryset, *, title: str, apply) -> TemplateResponse | None:
    """Ask for a reason on an intermediate page, then apply `apply(obj, reason)` to each row."""
    form = ReasonForm(request.POST if "apply" in request.POST else None)
    if "apply" in request.POST and form.is_valid():
        done = 0
        for obj in queryset:
            try:
                apply(obj, form.cleaned_data["reason"])
                done += 1
            except REFUSALS as exc:
                modeladmin.message_user(request, f"{obj}: {exc}", messages.ERROR)
        if done:
            modeladmin.message_user(request, f"{title}: {done} done.", messages.SUCCESS)
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": modeladmin.model._meta,
        "form": form,
        "objects": list(queryset),
        "action": request.POST.get("action", ""),
        "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
    }
    return TemplateResponse(request, "admin/action_reason.html", context)
