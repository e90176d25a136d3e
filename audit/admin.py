"""Read-only admin for the audit trail, with filters and each entry's verification status."""

from __future__ import annotations

import hashlib
import time

from django.contrib import admin
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils.html import format_html

from audit import keys
from audit.leaves import entry_leaf_hash, entry_row
from audit.merkle import inclusion_proof, verify_inclusion
from audit.models import AuditCheckpoint, AuditEntry, AuditLeaf
from audit.queries import iter_csv, iter_json
from audit.verification import check_checkpoint_signature


class ReadOnlyAdmin(admin.ModelAdmin):
    """An admin that shows rows (those restrict() gives the reader) and never changes them."""

    def get_queryset(self, request):
        """List, search, filter and export only what the reader may read."""
        return super().get_queryset(request).restrict(request.user, "view")

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
            model_admin.get_queryset(request)
            .exclude(run_id="")
            .order_by("-id")
            .values_list("run_id", flat=True)[:200]
        )
        seen = list(dict.fromkeys(runs))[:20]
        return [(run, f"run {run}") for run in seen]

    def queryset(self, request, queryset):
        """Keep the entries of the chosen run."""
        return queryset.filter(run_id=self.value()) if self.value() else queryset


def entry_status(entry: AuditEntry) -> tuple[str, str]:
    """Return (status, detail) of an entry against its own leaf: pending, matches, erased, tampered.

    This compares the entry with the leaf hash stored when it was sequenced, and its body with
    its digest. It does not show that the stored leaf is the one a signed root commits to: see
    checkpoint_status() and entry_proof(), and audit_verify for the whole log.
    """
    try:
        leaf = entry.leaf
    except AuditEntry.leaf.RelatedObjectDoesNotExist:
        return "pending", "not sequenced yet"
    if entry_leaf_hash(leaf.seq, entry_row(entry)) != bytes(leaf.leaf_hash):
        return "tampered", f"seq {leaf.seq}: entry does not match its stored leaf hash"
    try:
        body = entry.body_row
    except AuditEntry.body_row.RelatedObjectDoesNotExist:
        body = None
    if body is not None and body.content is None:
        return "erased", f"seq {leaf.seq}: body erased by entry #{body.erasure_entry_id}"
    if body is not None and hashlib.sha256(body.content.encode()).hexdigest() != entry.body_digest:
        return "tampered", f"seq {leaf.seq}: body does not match its digest"
    return "matches leaf", f"seq {leaf.seq}: entry matches its stored leaf hash, body its digest"


def signed_checkpoint() -> AuditCheckpoint | None:
    """Return the newest checkpoint whose signature verifies with the configured key, or None."""
    public_key = keys.public_key()
    for checkpoint in AuditCheckpoint.objects.order_by("-id")[:20]:
        if check_checkpoint_signature(checkpoint.as_dict(), public_key) is None:
            return checkpoint
    return None


def checkpoint_status(entry: AuditEntry, checkpoint: AuditCheckpoint | None) -> tuple[str, str]:
    """Return (status, detail): whether a validly signed checkpoint covers the entry's seq."""
    try:
        seq = entry.leaf.seq
    except AuditEntry.leaf.RelatedObjectDoesNotExist:
        return "pending", "not sequenced yet"
    if checkpoint is None or seq >= checkpoint.tree_size:
        return "not yet", "no checkpoint with a valid signature covers this seq yet"
    return (
        f"in #{checkpoint.pk}",
        f"covered by checkpoint #{checkpoint.pk} (size {checkpoint.tree_size}), whose signature "
        "verifies; the entry's page checks its inclusion proof against that signed root",
    )


PROOF_LIMIT = 250_000
# (expiry on the monotonic clock, checkpoint): a page of 100 rows checks one signature, not 100.
_signed_cache: tuple[float, AuditCheckpoint | None] = (0.0, None)


def entry_proof(entry: AuditEntry, checkpoint: AuditCheckpoint | None) -> str:
    """Check the entry's stored leaf against a signed root with an inclusion proof; say what held.

    Building the proof reads the leaf hashes up to the checkpoint's size, so beyond PROOF_LIMIT
    leaves the page points to audit_export instead.
    """
    status, detail = checkpoint_status(entry, checkpoint)
    if not status.startswith("in #"):
        return detail
    seq = entry.leaf.seq
    size = checkpoint.tree_size
    if size > PROOF_LIMIT:
        return (
            f"{detail}. The log is too large to prove it on this page: run "
            f"`manage.py audit_export --entry {entry.pk}` and scripts/verify_evidence.py."
        )
    hashes = [
        bytes(digest)
        for digest in AuditLeaf.objects.filter(seq__lt=size)
        .order_by("seq")
        .values_list("leaf_hash", flat=True)
    ]
    proof = inclusion_proof(hashes, seq) if len(hashes) == size else []
    leaf = bytes(entry.leaf.leaf_hash)
    if len(hashes) == size and verify_inclusion(
        leaf, seq, size, proof, bytes.fromhex(checkpoint.root_hash)
    ):
        return (
            f"The stored leaf of seq {seq} is in the tree of checkpoint #{checkpoint.pk} "
            f"(size {size}, root {checkpoint.root_hash[:16]}…): its inclusion proof verifies "
            "against the signed root."
        )
    return (
        f"FAILED: the stored leaves do not reach the signed root of checkpoint #{checkpoint.pk} "
        f"(size {size}) for seq {seq}: the log was changed after it was signed; run audit_verify."
    )


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
        "signed",
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
    readonly_fields = ("verification", "signed", "inclusion", "seq", "body")
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

    @admin.display(description="entry vs. its leaf")
    def verification(self, entry):
        """Show whether the entry still matches its stored leaf hash and its body its digest."""
        status, detail = entry_status(entry)
        colour = {"matches leaf": "green", "erased": "grey", "pending": "orange"}.get(status, "red")
        return format_html('<span style="color:{}" title="{}">{}</span>', colour, detail, status)

    @admin.display(description="signed checkpoint")
    def signed(self, entry):
        """Show whether a checkpoint with a valid signature covers the entry's seq."""
        status, detail = checkpoint_status(entry, self._checkpoint())
        colour = "green" if status.startswith("in #") else "orange"
        return format_html('<span style="color:{}" title="{}">{}</span>', colour, detail, status)

    @admin.display(description="inclusion proof")
    def inclusion(self, entry):
        """On the entry's page: its stored leaf checked against the signed root."""
        return entry_proof(entry, self._checkpoint())

    def _checkpoint(self):
        """Return the newest validly signed checkpoint, looked up at most once a second."""
        global _signed_cache
        now = time.monotonic()
        expires, checkpoint = _signed_cache
        if now >= expires:
            checkpoint = signed_checkpoint()
            _signed_cache = (now + 1.0, checkpoint)
        return checkpoint

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
