"""The web app's navigation: what each person's roles let them use, and where `/` lands them.

Each entry is shown only to whom it serves.
* Inbox (with the count of decisions owed): people who take part in approvals.
* Runs (the run inspector): whoever may see a run.
* Audit (the audit report, outside the admin): whoever the admin lets read the audit trail.
* KPIs: managers, i.e. whoever may see every run (`orchestrator.view_workflowrun`).
* Admin: staff who hold a permission (governance admins).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.urls import reverse
from django.utils.functional import SimpleLazyObject

from governance import inbox
from governance.permissions import has_model_permission


@dataclass(frozen=True)
class NavEntry:
    """One link of the navigation."""

    key: str
    label: str
    url: str
    count: int | None = None


def _sees_runs(user) -> bool:
    """Tell whether the user may see any run."""
    from orchestrator.models import WorkflowRun

    return WorkflowRun.objects.restrict(user, "view").exists()


def _is_manager(user) -> bool:
    """Tell whether the user may see every run (what KPI pages are about)."""
    from orchestrator.models import WorkflowRun

    return has_model_permission(user, "view", WorkflowRun)


def _reads_audit(request) -> bool:
    """Tell whether the audit report would let the user in."""
    from audit.views import may_read_audit

    return may_read_audit(request)


def _is_admin(user) -> bool:
    """Tell whether the admin has anything for the user (staff holding some permission)."""
    return user.is_staff and (user.is_superuser or bool(user.get_all_permissions()))


def entries(request) -> list[NavEntry]:
    """Return the navigation of the request's user (none for an anonymous visitor)."""
    user = request.user
    if not user.is_authenticated:
        return []
    found = []
    if inbox.is_approver(user) or inbox.decidable(user).exists():
        found.append(NavEntry("inbox", "Inbox", reverse("inbox:index"), inbox.inbox_count(user)))
    if _sees_runs(user):
        found.append(NavEntry("runs", "Runs", reverse("runs:list")))
    if _reads_audit(request):
        found.append(NavEntry("audit", "Audit", reverse("audit:report")))
    if _is_manager(user):
        found.append(NavEntry("kpis", "KPIs", reverse("kpis")))
    if _is_admin(user):
        found.append(NavEntry("admin", "Admin", reverse("admin:index")))
    return found


def landing(request, nav: list[NavEntry]) -> str | None:
    """Return where `/` takes the user: the first page that fits them, or None (the home page).

    Decisions waiting come first; then the inbox for whoever approves first-hand (an approval
    rule's own role: approvers, governance admins who approve versions); then, for managers,
    the KPIs; the audit report for auditors; the admin.
    Someone the navigation offers nothing stays on the home page, which says so.
    """
    by_key = {entry.key: entry for entry in nav}
    if "inbox" in by_key and (by_key["inbox"].count or inbox.approves_first_hand(request.user)):
        return by_key["inbox"].url
    for key in ("kpis", "runs", "audit", "admin", "inbox"):
        if key in by_key:
            return by_key[key].url
    return None


def _entries_once(request) -> list[NavEntry]:
    """Return the navigation of the request's user, computed once per request."""
    nav = getattr(request, "_steward_nav", None)
    if nav is None:
        nav = entries(request)
        request._steward_nav = nav
    return nav


def navigation(request) -> dict:
    """Context processor: the navigation of the page's viewer, computed once per request, and
    only when a template shows it (a partial htmx re-reads does not pay the inbox's count)."""
    nav = SimpleLazyObject(lambda: _entries_once(request))
    # Pages of someone with an inbox open the live channel (its count, and the inbox itself).
    live = SimpleLazyObject(lambda: any(entry.key == "inbox" for entry in _entries_once(request)))
    return {"steward_nav": nav, "steward_live": live}
