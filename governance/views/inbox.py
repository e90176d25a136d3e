"""The approvals inbox: tabs, filters, one request's page, and a person's decision on it.

Thin: what a tab lists and what a page shows come from governance.inbox (every queryset through
restrict() and the eligibility rule); a decision goes through services.decide_approval, which
re-checks every rule and the digest. A request the person may not see is a 404 (audited).

A later live layer needs only to ask the page to re-read one item: the row (`inbox:row`), the
open request (`inbox:request` with `HX-Target: detail`) and the navigation count
(`inbox:count`) each re-render alone (static/steward/steward.js: `Steward.reread(id)`).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from governance import inbox, live, services
from governance.filters import ApprovalRequestFilter
from governance.forms import BulkApproveForm, DecisionForm, ResolutionForm
from governance.models import (
    ApprovalRequest,
    ApprovalStatus,
    DecisionKind,
    Escalation,
    Resolution,
)

PAGE_SIZE = 100
DONE_WORDS = {
    DecisionKind.APPROVE: "approved",
    DecisionKind.REJECT: "rejected",
    DecisionKind.REQUEST_CHANGES: "sent back for changes",
}
RESOLVED_WORDS = {
    Resolution.TAKE_OVER: "taken over by you: the step goes on with your result",
    Resolution.RETRY: "sent back by you: the step runs again",
    Resolution.STOP: "stopped by you: the run is cancelled",
}


# The filters the inbox's form offers (the tabs are its scope; the rest serve the API).
PAGE_FILTERS = ("workflow", "risk", "agent", "action", "due", "sort")


def _tab(query: QueryDict) -> str:
    """Return the tab a query asks for (the default when it names none or an unknown one)."""
    tab = query.get("tab", inbox.DEFAULT_TAB)
    return tab if tab in inbox.TABS else inbox.DEFAULT_TAB


def _filter(user, query: QueryDict, tab: str, *, with_choices: bool = False, pk=None):
    """Return the one approval filterset over what `user` may see (one request of it, given
    `pk`), scoped to a tab."""
    data = query.copy()
    data.pop("tab", None)
    data["scope"] = tab
    rows = inbox.visible_rows(user)
    if pk is not None:
        rows = rows.filter(pk=pk)
    filterset = ApprovalRequestFilter(data, rows, user=user, with_choices=with_choices)
    filterset.only = pk
    return filterset


def _listing(user, query: QueryDict) -> dict:
    """Return a tab's filtered, sorted rows and what the list around them shows."""
    tab = _tab(query)
    filterset = _filter(user, query, tab, with_choices=True)
    rows = list(filterset.qs[:PAGE_SIZE])
    _mark_rows(user, rows)
    escalations = list(inbox.escalation_rows(user, tab, query)[:PAGE_SIZE])
    resolvable = inbox.resolvable_ids(user)
    for escalation in escalations:
        escalation.yours = escalation.pk in resolvable
    kept = query.copy()
    kept.pop("tab", None)
    return {
        "tab": tab,
        "tabs": inbox.TABS,
        "page_filters": PAGE_FILTERS,
        "filter": filterset,
        "rows": rows,
        "escalations": escalations,
        "bulk": any(row.bulk for row in rows),
        "filters_query": kept.urlencode(),
        "query": query.urlencode(),
        "truncated": len(rows) == PAGE_SIZE,
        "active": "inbox",
    }


def _mark_rows(user, rows) -> None:
    """Say of each row whether it is the person's to decide, and whether it may go in bulk.

    A row goes in bulk when the person may decide it and another row of the page they may
    decide shares its bulk class (services.bulk_class: low risk, one policy verdict).
    """
    mine = inbox.decidable_ids(user, [row.pk for row in rows])
    classes: dict[tuple, int] = {}
    for row in rows:
        row.yours = row.pk in mine
        row.bulk_class = services.bulk_class(row) if row.yours else None
        if row.bulk_class is not None:
            classes[row.bulk_class] = classes.get(row.bulk_class, 0) + 1
    for row in rows:
        row.bulk = row.bulk_class is not None and classes[row.bulk_class] > 1


def _detail_context(request, approval, form=None) -> dict:
    """Return what a request page shows, and the decision form when the person may decide."""
    page = inbox.request_page(request.user, approval)
    query = request.GET.urlencode()
    if form is None and page["eligibility"]:
        form = DecisionForm(initial={"expected_digest": approval.arguments_digest, "back": query})
    return {
        "approval": approval,
        "page": page,
        "form": form if page["eligibility"] else None,
        "run_url": _run_url(approval.run_id),
        "query": query,
    }


def _run_url(run_id) -> str:
    """Return where a run is shown: the run inspector when it exists, else the admin's page."""
    if run_id is None:
        return ""
    from django.urls import NoReverseMatch

    for name in ("runs:detail", "admin:orchestrator_workflowrun_change"):
        try:
            return reverse(name, args=[run_id])
        except NoReverseMatch:
            continue
    return ""


def _visible(user, pk: int) -> ApprovalRequest:
    """Return a request the user may see (404, audited, otherwise)."""
    queryset = ApprovalRequest.objects.select_related(
        "role", "approval_rule", "requested_by__principal"
    )
    return services.get_for(user, queryset, pk)


@login_required
@require_GET
def index(request):
    """The inbox: a tab of requests, filtered and sorted by due time."""
    if request.htmx and request.htmx.target == "inbox-list":
        context = _listing(request.user, request.GET)
        return render(request, "governance/partials/request_list.html", context)
    cursor = _live_cursor()  # before reading: the page reflects every event up to it
    context = _listing(request.user, request.GET)
    return render(
        request, "governance/inbox.html", {**context, "title": "Inbox", "live_cursor": cursor}
    )


def _live_cursor() -> str:
    """Return the live cursor a page rendered now starts from (governance/live.py)."""
    return live.format_cursor(live.head())


@login_required
@require_GET
def detail(request, pk: int):
    """One request: what it asks, why it needs a decision, and the decision or why not."""
    whole_page = not (request.htmx and request.htmx.target == "detail")
    cursor = _live_cursor() if whole_page else None
    approval = _visible(request.user, pk)
    services.record_approval_seen(approval, user=request.user)  # KPIs: waiting to be seen ends
    context = _detail_context(request, approval)
    if not whole_page:
        return render(request, "governance/partials/request_detail.html", context)
    listing = _listing(request.user, request.GET)
    return render(
        request,
        "governance/inbox.html",
        {
            **listing,
            **context,
            "title": f"#{approval.pk} {approval.action}",
            "live_cursor": cursor,
        },
    )


@login_required
@require_GET
def row(request, pk: int):
    """One row of the list, re-read in the page's tab and filters (empty once it left them)."""
    tab = _tab(request.GET)
    approval = _filter(request.user, request.GET, tab, pk=pk).qs.first()
    if approval is None:
        return HttpResponse("")
    approval.yours = approval.pk in inbox.decidable_ids(request.user, [approval.pk])
    # Alone, a row cannot tell whether another of the page shares its class: it keeps its box
    # when it may go in bulk at all (the service refuses a mixed batch).
    approval.bulk = approval.yours and services.bulk_class(approval) is not None
    context = {"row": approval, "tab": tab, "query": request.GET.urlencode()}
    return render(request, "governance/partials/request_row.html", context)


@login_required
@require_GET
def count(request):
    """The navigation's count of what the person owes, re-read."""
    return render(
        request, "governance/partials/inbox_count.html", {"count": inbox.inbox_count(request.user)}
    )


def _next_request(user, back: QueryDict) -> int | None:
    """Return the first request in the person's tab and filters that they may decide now."""
    listing = _filter(user, back, _tab(back))
    mine = listing.qs.filter(pk__in=inbox.decidable(user).values("pk"))
    return mine.values_list("pk", flat=True).first()


def _invalid(request, approval, form) -> HttpResponse:
    """Show the request again with the form's errors (422), in the tab the person came from."""
    request.GET = QueryDict(request.POST.get("back", ""))
    context = _detail_context(request, approval, form=form)
    listing = _listing(request.user, request.GET)
    return render(request, "governance/inbox.html", {**listing, **context}, status=422)


@login_required
@require_POST
def decide(request, pk: int):
    """Record the person's decision through the decision service; then open the next item."""
    approval = _visible(request.user, pk)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        return _invalid(request, approval, form)
    back = QueryDict(form.cleaned_data["back"])
    again = reverse("inbox:request", args=[pk]) + (f"?{back.urlencode()}" if back else "")
    try:
        services.decide_approval(
            approval,
            user=request.user,
            decision=form.cleaned_data["decision"],
            comment=form.cleaned_data["comment"].strip(),
            expected_digest=form.cleaned_data["expected_digest"],
        )
    except services.ReasonRequired as refusal:
        form.add_error("comment", str(refusal))
        return _invalid(request, approval, form)
    except services.ApprovalRefused as refusal:
        if refusal.code == "arguments_changed":
            messages.error(
                request,
                f"Not recorded: the arguments of request #{pk} changed since you opened it "
                f"(you saw digest {form.cleaned_data['expected_digest'][:12]}…, it is now "
                f"{approval.arguments_digest[:12]}…). Read them again before you decide.",
            )
        else:
            messages.error(request, f"Not recorded: {refusal}")
        return redirect(again)
    approval.refresh_from_db(fields=["status"])
    state = (
        ""
        if approval.status == ApprovalStatus.PENDING
        else f"; the request is {approval.get_status_display().lower()}"
    )
    messages.success(
        request,
        f"#{pk} {DONE_WORDS[form.cleaned_data['decision']]} by you{state}.",
    )
    inbox.forget_decidable(request.user)
    following = _next_request(request.user, back)
    if following is None:
        messages.info(request, "Nothing else in this list waits for your decision.")
        return redirect(reverse("inbox:index") + (f"?{back.urlencode()}" if back else ""))
    return redirect(
        reverse("inbox:request", args=[following]) + (f"?{back.urlencode()}" if back else "")
    )


# --- escalations ---------------------------------------------------------------------------------


def _visible_escalation(user, pk: int) -> Escalation:
    """Return an escalation the user may see (404, audited, otherwise)."""
    return services.get_for(user, Escalation.objects.select_related("role"), pk)


def _escalation_context(request, escalation, form=None) -> dict:
    """Return what an escalation's page shows, and the resolution form when the person may."""
    page = inbox.escalation_page(request.user, escalation)
    query = request.GET.urlencode()
    if form is None and page["eligibility"]:
        proposed = inbox.proposed_result(escalation)
        form = ResolutionForm(initial={"back": query, "result": proposed})
    return {
        "escalation": escalation,
        "epage": page,
        "resolve_form": form if page["eligibility"] else None,
        "run_url": _run_url(escalation.run_id),
        "query": query,
    }


@login_required
@require_GET
def escalation_detail(request, pk: int):
    """One escalation: what happened, what it needs, and the resolution or why not."""
    whole_page = not (request.htmx and request.htmx.target == "detail")
    cursor = _live_cursor() if whole_page else None
    escalation = _visible_escalation(request.user, pk)
    context = _escalation_context(request, escalation)
    if not whole_page:
        return render(request, "governance/partials/escalation_detail.html", context)
    listing = _listing(request.user, request.GET)
    return render(
        request,
        "governance/inbox.html",
        {
            **listing,
            **context,
            "title": f"Escalation #{escalation.pk}",
            "live_cursor": cursor,
        },
    )


@login_required
@require_GET
def escalation_row(request, pk: int):
    """One escalation's row, re-read in the page's tab and filters (empty once it left them)."""
    tab = _tab(request.GET)
    escalation = inbox.escalation_rows(request.user, tab, request.GET).filter(pk=pk).first()
    if escalation is None:
        return HttpResponse("")
    escalation.yours = escalation.pk in inbox.resolvable_ids(request.user)
    context = {"esc": escalation, "tab": tab, "query": request.GET.urlencode()}
    return render(request, "governance/partials/escalation_row.html", context)


def _next_item(user, back: QueryDict) -> str | None:
    """Return the page of the first item in the person's tab they owe: escalations, then
    requests."""
    tab = _tab(back)
    resolvable = inbox.resolvable_ids(user)
    for pk in inbox.escalation_rows(user, tab, back).values_list("pk", flat=True)[:PAGE_SIZE]:
        if pk in resolvable:
            return reverse("inbox:escalation", args=[pk])
    following = _next_request(user, back)
    return reverse("inbox:request", args=[following]) if following is not None else None


@login_required
@require_POST
def resolve(request, pk: int):
    """Record the person's resolution through the resolution service; then open the next item."""
    escalation = _visible_escalation(request.user, pk)
    form = ResolutionForm(request.POST)
    if not form.is_valid():
        request.GET = QueryDict(request.POST.get("back", ""))
        context = _escalation_context(request, escalation, form=form)
        listing = _listing(request.user, request.GET)
        return render(request, "governance/inbox.html", {**listing, **context}, status=422)
    back = QueryDict(form.cleaned_data["back"])
    suffix = f"?{back.urlencode()}" if back else ""
    resolution = form.cleaned_data["resolution"]
    try:
        services.resolve_escalation(
            escalation,
            user=request.user,
            resolution=resolution,
            result=form.cleaned_data["result"],
            comment=form.cleaned_data["comment"].strip(),
        )
    except services.GovernanceError as refusal:
        messages.error(request, f"Not recorded: {refusal}")
        return redirect(reverse("inbox:escalation", args=[pk]) + suffix)
    messages.success(request, f"Escalation #{pk} {RESOLVED_WORDS[resolution]}.")
    inbox.forget_decidable(request.user)
    following = _next_item(request.user, back)
    if following is None:
        messages.info(request, "Nothing else in this list waits for you.")
        return redirect(reverse("inbox:index") + suffix)
    return redirect(following + suffix)


# --- bulk approval -------------------------------------------------------------------------------


@login_required
@require_POST
def bulk_approve(request):
    """Approve the chosen requests of one low-risk class, each on its own digest; show each
    item's outcome."""
    form = BulkApproveForm(request.POST)
    back = QueryDict(request.POST.get("back", ""))
    if not form.is_valid():
        errors = " ".join(str(e) for errors in form.errors.values() for e in errors)
        messages.error(request, f"Nothing approved: {errors or 'choose the requests first.'}")
        return redirect(reverse("inbox:index") + (f"?{back.urlencode()}" if back else ""))
    items = form.cleaned_data["items"]
    try:
        outcomes = services.bulk_approve(items, user=request.user)
    except services.MixedBatch as refusal:
        messages.error(request, f"Nothing approved: {refusal}")
        return redirect(reverse("inbox:index") + (f"?{back.urlencode()}" if back else ""))
    inbox.forget_decidable(request.user)
    actions = dict(
        ApprovalRequest.objects.restrict(request.user, "view")
        .filter(pk__in=[o.request_id for o in outcomes])
        .values_list("pk", "action")
    )
    results = [
        {
            "outcome": outcome,
            "action": actions.get(outcome.request_id, ""),
            "status_words": ApprovalStatus(outcome.status).label.lower() if outcome.status else "",
        }
        for outcome in outcomes
    ]
    approved = sum(outcome.recorded for outcome in outcomes)
    request.GET = back
    listing = _listing(request.user, back)
    return render(
        request,
        "governance/inbox.html",
        {
            **listing,
            "bulk_results": results,
            "bulk_summary": f"{approved} of {len(outcomes)} approved by you",
            "title": "Bulk approval",
            "live_cursor": _live_cursor(),
            "query": back.urlencode(),
        },
    )
