"""Read-only admin for the audit trail, with filters and each entry's verification status."""

from __future__ import annotations

import hashlib

from django.contrib import admin
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils.html import format_html

from audit.leaves import entry_leaf_hash, entry_row
from audit.models import AuditCheckpoint, AuditEntry
from audit.queries import iter_csv, iter_json


class ReadOnlyAdmin(admin.ModelAdmin):
    """An admin that shows rows and never adds, changes or deletes them."""

    def has_add_permission(self, request, obj=None):
        """Nobody adds audit rows by hand."""
        return False

    def has_change_permission(self, request, obj=None):
        """Audit rows are never changed."""
        return False

    def has_delete_permission(self, request, obj=None):
        """Audit rows are never deleted."""
        return False


class RunFilter(admin.SimpleListFilter):
    """Filter by run id, typed into the URL or picked from the runs with the most entries."""

    title = "run"
    parameter_name = "run_id"

    def lookups(self, request, model_admin):
        """Offer the most recent runs."""
        runs = (
            AuditEntry.objects.exclude(run_id="")
            .order_by("-id")
            .values_list("run_id", flat=True)[:200]
        )
        seen = list(dict.fromkeys(runs))[:20]
        return [(run, f"run {run}") for run in seen]

    def queryset(self, request, queryset):
        """Keep the entries of the chosen run."""
        return queryset.filter(run_id=self.value()) if self.value() else queryset


def entry_status(entry: AuditEntry) -> tuple[str, str]:
    """Return (status, detail) of one entry: pending, verified, erased or tampered."""
    try:
        leaf = entry.leaf
    except AuditEntry.leaf.RelatedObjectDoesNotExist:
        return "pending", "not sequenced yet"
    if entry_leaf_hash(leaf.seq, entry_row(entry)) != bytes(leaf.leaf_hash):
        return "tampered", f"seq {leaf.seq}: entry does not match its leaf"
    try:
        body = entry.body_row
    except AuditEntry.body_row.RelatedObjectDoesNotExist:
        body = None
    if body is not None and body.content is None:
        return "erased", f"seq {leaf.seq}: body erased by entry #{body.erasure_entry_id}"
    if body is not None and hashlib.sha256(body.content.encode()).hexdigest() != entry.body_digest:
        return "tampered", f"seq {leaf.seq}: body does not match its digest"
    return "verified", f"seq {leaf.seq}: leaf and body match"


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    """Audit entries: read-only, filterable, each with its verification status."""

    list_display = (
        "id",
        "seq",
        "created_at",
        "actor_kind",
        "actor_name",
        "action",
        "target",
        "run_id",
        "verification",
    )
    list_filter = (
        "actor_kind",
        ("actor_name", admin.AllValuesFieldListFilter),
        ("action", admin.AllValuesFieldListFilter),
        ("target_type", admin.AllValuesFieldListFilter),
        RunFilter,
        "created_at",
    )
    search_fields = ("=actor_name", "action", "=target_id", "target_repr", "=run_id", "=request_id")
    date_hierarchy = "created_at"
    list_select_related = ("leaf", "body_row")
    readonly_fields = ("verification", "seq", "body")
    actions = ("export_csv", "export_json")
    show_full_result_count = False

    @admin.display(description="seq")
    def seq(self, entry):
        """Show the sequence number, or a dash while pending."""
        try:
            return entry.leaf.seq
        except AuditEntry.leaf.RelatedObjectDoesNotExist:
            return "—"

    @admin.display(description="target")
    def target(self, entry):
        """Show the target's type, id and copied name."""
        if not entry.target_type:
            return "—"
        return f"{entry.target_type}:{entry.target_id} {entry.target_repr}".strip()

    @admin.display(description="verification")
    def verification(self, entry):
        """Show whether the entry still matches its Merkle leaf and its body digest."""
        status, detail = entry_status(entry)
        colour = {"verified": "green", "erased": "grey", "pending": "orange"}.get(status, "red")
        return format_html('<span style="color:{}" title="{}">{}</span>', colour, detail, status)

    @admin.display(description="body")
    def body(self, entry):
        """Show the body, or that it was erased."""
        try:
            row = entry.body_row
        except AuditEntry.body_row.RelatedObjectDoesNotExist:
            return "—"
        if row.content is None:
            return f"erased at {row.erased_at:%Y-%m-%d %H:%M:%S} by entry #{row.erasure_entry_id}"
        return format_html("<pre style='white-space:pre-wrap'>{}</pre>", row.content[:20000])

    def changelist_view(self, request, extra_context=None):
        """Link the report page from the list."""
        extra_context = {**(extra_context or {}), "audit_report_url": reverse("audit:report")}
        return super().changelist_view(request, extra_context)

    @admin.action(description="Export selected entries as CSV")
    def export_csv(self, request, queryset):
        """Stream the selected entries as CSV."""
        response = StreamingHttpResponse(iter_csv(queryset), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="audit.csv"'
        return response

    @admin.action(description="Export selected entries as JSON")
    def export_json(self, request, queryset):
        """Stream the selected entries as JSON."""
        response = StreamingHttpResponse(iter_json(queryset), content_type="application/json")
        response["Content-Disposition"] = 'attachment; filename="audit.json"'
        return response


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    """Signed checkpoints, read-only."""

    list_display = ("id", "tree_size", "root_hash", "timestamp", "key_id")
    date_hierarchy = "created_at"
