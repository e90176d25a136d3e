"""The audit pages, outside the admin, for those the admin lets view audit entries: the report
(filtered by the one AuditEntryFilter, a cursor page at a time) with its streamed CSV / JSON
exports, each entry's page with its proof checked, a run's evidence bundle, the trail's health.

Thin: what an entry page and the health page show comes from audit.reading; the exports from
audit.queries; the bundle from audit.export, as the API builds it."""

from __future__ import annotations

from functools import wraps

from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from audit import reading
from audit import services as audit
from audit.export import ExportError, build_bundle, dump_bundle
from audit.filters import MAX_SEQ, AuditEntryFilter
from audit.models import AuditCheckpoint, AuditEntry
from audit.paging import keyset_page
from audit.queries import entry_listing, iter_csv, iter_json

PAGE_SIZE = 50


def may_read_audit(request) -> bool:
    """Tell whether the admin would show this user the audit entries: the admin's own checks.

    The admin site's (an active staff member) and the audit entry admin's view permission
    (`audit.view_auditentry`, through the authentication backends, as the admin asks it).
    """
    model_admin = admin.site.get_model_admin(AuditEntry)
    return admin.site.has_permission(request) and model_admin.has_view_permission(request)


def audit_reader_required(view):
    """Send an anonymous visitor to the admin login; refuse (403) anyone else who may not read."""

    @wraps(view)
    def guarded(request, *args, **kwargs):
        """Run the view for an audit reader only."""
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not may_read_audit(request):
            audit.record(
                action="governance.access_denied",
                actor=request.user,
                target_type="audit.auditentry",
                body={
                    "action": "view",
                    "permission": "audit.view_auditentry",
                    "outcome": "forbidden",
                    "detail": f"the audit page {request.path}",
                },
            )
            raise PermissionDenied(
                "Viewing the audit trail needs the audit.view_auditentry permission."
            )
        return view(request, *args, **kwargs)

    return guarded


def _filtered(request) -> AuditEntryFilter:
    """Return the report's filter of the query string over the entries this reader may read."""
    entries = entry_listing().restrict(request.user, "view")
    return AuditEntryFilter(request.GET or None, queryset=entries)


@audit_reader_required
def report(request):
    """Show the audit entries matching the filter, a page at a time."""
    query = request.GET.copy()
    cursor = query.pop("cursor", [None])[-1]
    entries = entry_listing().restrict(request.user, "view")
    filtered = AuditEntryFilter(query or None, queryset=entries)
    # An invalid field is shown with its error and does not filter; the valid ones do.
    rows, next_cursor = keyset_page(
        filtered.qs, "created_at", descending=True, cursor=cursor, size=PAGE_SIZE
    )
    return render(
        request,
        "audit/report.html",
        {
            "form": filtered.form,
            "rows": rows,
            "next_cursor": next_cursor,
            "is_first_page": not cursor,
            "query": query.urlencode(),
            "health": reading.health(request.user),
            "title": "Audit report",
            "active": "audit",
        },
    )


@audit_reader_required
def export(request, fmt: str):
    """Stream the entries matching the filter as CSV or JSON."""
    filtered = _filtered(request)
    if filtered.is_bound and not filtered.is_valid():
        return HttpResponseBadRequest("Invalid filter.")
    entries = filtered.qs
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        response = StreamingHttpResponse(iter_csv(entries), content_type="text/csv")
    else:
        response = StreamingHttpResponse(iter_json(entries), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response


def _newest_checkpoint(request) -> AuditCheckpoint | None:
    """Return the newest checkpoint the reader may see."""
    return AuditCheckpoint.objects.restrict(request.user, "view").order_by("-id").first()


@audit_reader_required
def entry(request, pk: int):
    """One entry: what happened, who acted, on what, its body (or erasure), seq and proof."""
    found = None
    if pk <= MAX_SEQ:
        found = (
            AuditEntry.objects.restrict(request.user, "view")
            .select_related("leaf", "body_row")
            .filter(pk=pk)
            .first()
        )
    if found is None:
        raise Http404(f"No audit entry {pk}.")
    page = reading.entry_page(found, _newest_checkpoint(request))
    return render(
        request,
        "audit/entry.html",
        {**page, "title": f"Audit entry {found.pk}", "active": "audit"},
    )


EVIDENCE_LIMIT = 10_000


@audit_reader_required
def evidence(request):
    """Download the evidence bundle (checkable offline) of a run's entries (`run`), or of what
    the report's filter matches (a time range, an actor, ...), up to EVIDENCE_LIMIT entries."""
    query = request.GET.copy()
    run = query.pop("run", [""])[-1].strip()[:64]
    query.pop("cursor", None)
    if run:
        query["run_id"] = run
    filtered = AuditEntryFilter(query, queryset=AuditEntry.objects.restrict(request.user, "view"))
    if not any(value for value in query.values()):
        return HttpResponseBadRequest("Choose the entries: a run, a time range or another filter.")
    if not filtered.is_valid():
        return HttpResponseBadRequest("Invalid filter.")
    rows = list(filtered.qs.order_by("id").values_list("id", "leaf__seq")[: EVIDENCE_LIMIT + 1])
    if not rows:
        raise Http404("No audit entries match.")
    if len(rows) > EVIDENCE_LIMIT:
        return HttpResponseBadRequest(
            f"More than {EVIDENCE_LIMIT} entries match: narrow the filter, or use audit_export."
        )
    checkpoint = _newest_checkpoint(request)
    if checkpoint is None:
        return HttpResponse("No signed checkpoint covers these entries yet.", status=409)
    seqs = [seq for _, seq in rows if seq is not None and seq < checkpoint.tree_size]
    not_covered = sorted(pk for pk, seq in rows if seq is None or seq >= checkpoint.tree_size)
    if not seqs:
        return HttpResponse("No signed checkpoint covers these entries yet.", status=409)
    try:
        bundle = build_bundle(seqs, checkpoint=checkpoint)
    except ExportError as exc:
        return HttpResponse(str(exc), status=409)
    bundle["not_covered"] = not_covered
    label = f"run-{run}" if run else timezone.now().strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    response = HttpResponse(dump_bundle(bundle), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="evidence-{safe}.json"'
    return response


@audit_reader_required
def health(request):
    """The trail's health: last checkpoint and signature, sequencer lag, last verification."""
    return render(
        request,
        "audit/health.html",
        {"health": reading.health(request.user), "title": "Audit trail health", "active": "audit"},
    )
