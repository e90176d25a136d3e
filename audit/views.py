"""The audit report page and its CSV / JSON exports (staff only for now)."""

from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from audit.forms import AuditReportForm
from audit.queries import AuditFilter, iter_csv, iter_json, search_entries
from audit.services import latest_checkpoint


def _criteria(request) -> AuditFilter | None:
    """Return the filter in the query string, or None when it is invalid."""
    form = AuditReportForm(request.GET or None)
    if not request.GET:
        return AuditFilter()
    return form.to_filter() if form.is_valid() else None


@staff_member_required
def report(request):
    """Show the audit entries matching the filter, a page at a time."""
    form = AuditReportForm(request.GET or None)
    criteria = form.to_filter() if form.is_valid() else AuditFilter()
    page = Paginator(search_entries(criteria), 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "audit/report.html",
        {
            "form": form,
            "page": page,
            "query": query.urlencode(),
            "checkpoint": latest_checkpoint(),
            "title": "Audit report",
        },
    )


@staff_member_required
def export(request, fmt: str):
    """Stream the entries matching the filter as CSV or JSON."""
    criteria = _criteria(request)
    if criteria is None:
        return HttpResponseBadRequest("Invalid filter.")
    entries = search_entries(criteria)
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        response = StreamingHttpResponse(iter_csv(entries), content_type="text/csv")
    else:
        response = StreamingHttpResponse(iter_json(entries), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response
