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

from audit.filters import AuditEntryFilter
from audit.models import AuditEntry
from audit.queries import entry_listing, iter_csv, iter_json
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


def _filtered(request) -> AuditEntryFilter:
    """Return the report's filter of the query string over the entries this reader may read."""
    entries = entry_listing().restrict(request.user, "view")
    return AuditEntryFilter(request.GET or None, queryset=entries)


@audit_reader_required
def report(request):
    """Show the audit entries matching the filter, a page at a time."""
    filtered = _filtered(request)
    # An invalid field is shown with its error and does not filter; the valid ones do.
    page = Paginator(filtered.qs, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "audit/report.html",
        {
            "form": filtered.form,
            "page": page,
            "query": query.urlencode(),
            "checkpoint": latest_checkpoint(),
            "title": "Audit report",
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
