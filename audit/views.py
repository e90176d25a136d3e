"""The audit report page and its CSV / JSON exports, for those the admin lets view audit entries."""

from __future__ import annotations

from functools import wraps

from django.contrib import admin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from audit.forms import AuditReportForm
from audit.models import AuditEntry
from audit.queries import AuditFilter, iter_csv, iter_json, search_entries
from audit.services import latest_checkpoint


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
            return redirect_to_login(request.get_full_path(), login_url="admin:login")
        if not may_read_audit(request):
            raise PermissionDenied(
                "Viewing the audit trail needs the audit.view_auditentry permission."
            )
        return view(request, *args, **kwargs)

    return guarded


def _criteria(request) -> AuditFilter | None:
    """Return the filter in the query string, or None when it is invalid."""
    form = AuditReportForm(request.GET or None)
    if not request.GET:
        return AuditFilter()
    return form.to_filter() if form.is_valid() else None


@audit_reader_required
def report(request):
    """Show the audit entries matching the filter, a page at a time."""
    form = AuditReportForm(request.GET or None)
    criteria = form.to_filter() if form.is_valid() else AuditFilter()
    entries = search_entries(criteria).restrict(request.user, "view")
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
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


@audit_reader_required
def export(request, fmt: str):
    """Stream the entries matching the filter as CSV or JSON."""
    criteria = _criteria(request)
    if criteria is None:
        return HttpResponseBadRequest("Invalid filter.")
    entries = search_entries(criteria).restrict(request.user, "view")
    stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
    if fmt == "csv":
        response = StreamingHttpResponse(iter_csv(entries), content_type="text/csv")
    else:
        response = StreamingHttpResponse(iter_json(entries), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    return response
