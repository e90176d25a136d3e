"""The run inspector: the runs list, a run's page, its steps, events and model calls, and the
actions a person may take on it.

Thin: lists come from restrict() through the one RunFilter; what a run page shows is computed
in orchestrator.inspector; every action goes through orchestrator.services (which authorise,
404 hidden / 403 forbidden, and audit), after a confirmation page. A run's parts each
re-render alone (header, graph, steps, one step, one row), so the live layer only tells the
page "run N changed" (governance/live.py, the engine's run events by id) and the page re-reads
its parts through restrict() (static/steward/steward.js: `Steward.rereadRun`).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, QueryDict
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from agents import services as agents
from audit.paging import keyset_page
from audit.views import may_read_audit
from governance import live
from governance.permissions import NotVisible, get_for
from orchestrator import inspector, services
from orchestrator.engine import EngineError
from orchestrator.filters import RunFilter
from orchestrator.forms import CancelRunForm, RunActionForm, SavedViewForm, SignalRunForm
from orchestrator.models import RunEvent, SavedRunView, StepRun, StepStatus, Workflow, WorkflowRun

PAGE_SIZE = 50
SORTS = {
    "-created": ("created_at", True, "Newest first"),
    "created": ("created_at", False, "Oldest first"),
    "-updated": ("updated_at", True, "Recently changed"),
}
DEFAULT_SORT = "-created"
# What the list's own query string carries besides the filters.
LIST_PARAMS = ("sort", "cursor")
# The live events a page follows (governance/live.py): the list those that change a run's row,
# a run's page every change of its run.
LIST_LIVE_TOPICS = "run.started run.succeeded run.failed run.changed"
RUN_LIVE_TOPICS = "run"


def _live_cursor() -> str:
    """Return the live cursor a page rendered now starts from (read before the page is)."""
    return live.format_cursor(live.head())


# --- the list -----------------------------------------------------------------------------------


def _visible_runs(user):
    """Return the runs `user` may see, with what a row shows (workflow and version number)."""
    return (
        WorkflowRun.objects.restrict(user, "view")
        .select_related("workflow", "version")
        .only(
            "pk",
            "status",
            "business_key",
            "started_by_name",
            "trigger",
            "created_at",
            "updated_at",
            "finished_at",
            "workflow__slug",
            "workflow__name",
            "version__number",
        )
    )


def _listing(user, query: QueryDict) -> dict:
    """Return a page of the filtered, sorted runs and what the list around them shows."""
    data = query.copy()
    for name in LIST_PARAMS:
        data.pop(name, None)
    filterset = RunFilter(data or None, queryset=_visible_runs(user))
    sort = query.get("sort", DEFAULT_SORT)
    sort = sort if sort in SORTS else DEFAULT_SORT
    field, descending, _ = SORTS[sort]
    rows, next_cursor = keyset_page(
        filterset.qs, field, descending=descending, cursor=query.get("cursor"), size=PAGE_SIZE
    )
    kept = query.copy()
    kept.pop("cursor", None)
    filters_only = kept.copy()
    filters_only.pop("sort", None)
    return {
        "filter": filterset,
        "rows": rows,
        "next_cursor": next_cursor,
        "sort": sort,
        "sorts": {key: label for key, (_, _, label) in SORTS.items()},
        "query": kept.urlencode(),
        "filters_query": filters_only.urlencode(),
        "is_first_page": not query.get("cursor"),
        "workflows": Workflow.objects.restrict(user, "view").values_list("slug", "name"),
        "saved_views": SavedRunView.objects.restrict(user, "view").order_by("name"),
        "save_form": SavedViewForm(initial={"query": kept.urlencode()}),
        "active": "runs",
    }


@login_required
@require_GET
def run_list(request):
    """The runs the person may see: filtered, sorted, a cursor page at a time; the URL is the
    filter, so a link shares it."""
    if request.htmx and request.htmx.target == "runs-list":
        context = _listing(request.user, request.GET)
        return render(request, "orchestrator/partials/run_list.html", context)
    cursor = _live_cursor()
    context = _listing(request.user, request.GET)
    return render(
        request,
        "orchestrator/runs.html",
        {**context, "title": "Runs", "live_topics": LIST_LIVE_TOPICS, "live_cursor": cursor},
    )


@login_required
@require_GET
def run_row(request, pk: int):
    """One row of the list, re-read alone (a live layer's "re-read run N"); gone if hidden."""
    run = _visible_runs(request.user).filter(pk=pk).first()
    return render(request, "orchestrator/partials/run_row.html", {"run": run})


@login_required
@require_POST
def save_view(request):
    """Save the list's current filter under a name (the person's own)."""
    form = SavedViewForm(request.POST)
    if form.is_valid():
        try:
            services.save_run_view(
                form.cleaned_data["name"], form.cleaned_data["query"], actor=request.user
            )
            messages.success(request, f"Saved the view “{form.cleaned_data['name']}”.")
        except EngineError as exc:
            messages.error(request, str(exc))
    else:
        messages.error(request, "A saved view needs a name.")
    query = form.data.get("query", "")
    return redirect(reverse("runs:list") + (f"?{query}" if query else ""))


@login_required
@require_POST
def delete_view(request, pk: int):
    """Delete one of the person's saved views."""
    services.delete_run_view(pk, actor=request.user)
    messages.success(request, "Deleted the saved view.")
    return redirect("runs:list")


# --- one run ------------------------------------------------------------------------------------


def _run(request, pk: int) -> WorkflowRun:
    """Return a run the person may see (404, audited, otherwise)."""
    return services.get_run(pk, actor=request.user)


def _header(request, run: WorkflowRun) -> dict:
    """Return what the run's header shows: status, what it waits for, the actions offered."""
    return {
        "run": run,
        "waits": inspector.waits(request.user, run),
        "paused_by": inspector.paused_by(request.user, run),
        "actions": inspector.actions(request.user, run),
        "reads_audit": may_read_audit(request),
    }


def _steps_page(user, run: WorkflowRun, after: str | None) -> dict:
    """Return a page of the run's own steps and their timeline."""
    rows, next_after = inspector.page_after(
        inspector.main_steps(user, run), after, inspector.STEPS_PAGE
    )
    here = reverse("runs:steps", args=[run.pk])
    return {
        "steps": rows,
        "steps_next": next_after,
        "steps_url": f"{here}?steps_after={after}" if after and after.isdigit() else here,
        "timeline": inspector.timeline(user, run, rows),
    }


def _events_page(user, run: WorkflowRun, query: QueryDict) -> dict:
    """Return a page of the run's events, filtered by kind and step."""
    kind = query.get("kind", "")
    kind = kind if kind in dict(inspector.EVENT_KINDS) else ""
    step = query.get("event_step", "")[:100]
    rows, next_after = inspector.page_after(
        inspector.events(user, run, kind=kind, step=step).select_related("step_run"),
        query.get("events_after"),
        inspector.EVENTS_PAGE,
    )
    kept = QueryDict(mutable=True)
    if kind:
        kept["kind"] = kind
    if step:
        kept["event_step"] = step
    here = kept.copy()
    after = query.get("events_after", "")
    if after.isdigit():
        here["events_after"] = after
    return {
        "events_url": f"{reverse('runs:events', args=[run.pk])}?{here.urlencode()}",
        "events": rows,
        "events_next": next_after,
        "event_kind": kind,
        "event_step": step,
        "event_kinds": inspector.EVENT_KINDS,
        "events_query": kept.urlencode(),
    }


def _step(request, run: WorkflowRun, step_pk) -> StepRun:
    """Return a step of a run the person may see (404 otherwise)."""
    step = StepRun.objects.restrict(request.user, "view").filter(run=run, pk=step_pk).first()
    if step is None:
        raise Http404(f"Run {run.pk} has no step {step_pk}.")
    return step


def _step_context(request, run: WorkflowRun, step: StepRun) -> dict:
    """Return what a step's panel shows, with its first page of items and children."""
    items, items_next = inspector.page_after(
        inspector.folded_rows(request.user, step),
        request.GET.get("items_after"),
        inspector.ITEMS_PAGE,
    )
    return {
        "run": run,
        "panel": inspector.step_page(request.user, step),
        "items": items,
        "items_next": items_next,
        "items_timeline": inspector.timeline(request.user, run, items) if items else None,
        "may_retry": inspector.actions(request.user, run)["retry"]
        and step.status == StepStatus.FAILED,
    }


@login_required
@require_GET
def run_detail(request, pk: int):
    """A run's page: graph, timeline, what it waits for, steps, events and actions."""
    cursor = _live_cursor()  # before reading: the page reflects every event up to it
    run = _run(request, pk)
    context = {
        "live_topics": RUN_LIVE_TOPICS,
        "live_ids": f"run:{run.pk}",
        "live_cursor": cursor,
        **_header(request, run),
        **_steps_page(request.user, run, request.GET.get("steps_after")),
        **_events_page(request.user, run, request.GET),
        "graph": inspector.graph(request.user, run),
        "input": inspector.pretty(run.input),
        "output": inspector.pretty(run.output) if run.output is not None else "",
        "error": inspector.pretty(run.error) if run.error else "",
        "title": f"Run {run.pk}",
        "active": "runs",
    }
    if request.GET.get("step", "").isdigit():
        context["open_step"] = _step_context(request, run, _step(request, run, request.GET["step"]))
    return render(request, "orchestrator/run.html", context)


@login_required
@require_GET
def run_header(request, pk: int):
    """The run's header alone (a live layer's "re-read run N")."""
    run = _run(request, pk)
    return render(request, "orchestrator/partials/run_header.html", _header(request, run))


@login_required
@require_GET
def run_graph(request, pk: int):
    """The run's graph alone (re-read as the run moves)."""
    run = _run(request, pk)
    return render(
        request,
        "orchestrator/partials/run_graph.html",
        {"run": run, "graph": inspector.graph(request.user, run)},
    )


@login_required
@require_GET
def run_steps(request, pk: int):
    """A page of the run's steps with their timeline."""
    run = _run(request, pk)
    return render(
        request,
        "orchestrator/partials/run_steps.html",
        {"run": run, **_steps_page(request.user, run, request.GET.get("steps_after"))},
    )


@login_required
@require_GET
def run_events(request, pk: int):
    """A page of the run's events, filtered by kind and step."""
    run = _run(request, pk)
    context = {"run": run, **_events_page(request.user, run, request.GET)}
    if request.htmx:
        return render(request, "orchestrator/partials/run_events.html", context)
    return render(
        request,
        "orchestrator/events.html",
        {**context, "title": f"Events of run {run.pk}", "active": "runs"},
    )


@login_required
@require_GET
def run_event(request, pk: int, event_pk: int):
    """One event of a run, at an address of its own."""
    run = _run(request, pk)
    event = (
        RunEvent.objects.restrict(request.user, "view")
        .filter(run=run, pk=event_pk)
        .select_related("step_run")
        .first()
    )
    if event is None:
        raise Http404(f"Run {run.pk} has no event {event_pk}.")
    return render(
        request,
        "orchestrator/event.html",
        {
            "run": run,
            "event": event,
            "data": inspector.pretty(event.data),
            "title": f"Event {event.pk} of run {run.pk}",
            "active": "runs",
        },
    )


@login_required
@require_GET
def step_detail(request, pk: int, step_pk: int):
    """One step's panel: input, output, error, what it waits for, its items, its conversation
    (a live layer's "re-read step M"); the whole run page with it open without htmx."""
    run = _run(request, pk)
    step = _step(request, run, step_pk)
    if not request.htmx:
        return redirect(f"{reverse('runs:detail', args=[run.pk])}?step={step.pk}#step-panel")
    template = "orchestrator/partials/step_panel.html"
    if request.htmx.target and request.htmx.target.startswith("items-"):
        template = "orchestrator/partials/step_items.html"
    return render(request, template, {"open_step": _step_context(request, run, step)})


@login_required
@require_http_methods(["GET", "POST"])
def model_call(request, pk: int, call_pk: int):
    """A model call's prompt and response: opened on a confirmed POST, which is recorded."""
    run = _run(request, pk)
    try:
        call = get_for(request.user, _model_calls_of(run), call_pk)
    except NotVisible as refusal:  # the call's agent is hidden from the person: audited
        refusal.audit()
        raise
    context = {"run": run, "call": call, "title": f"Model call {call.pk}", "active": "runs"}
    if request.method == "POST":
        opened = agents.open_model_call(call.pk, actor=request.user)
        context["opened"] = opened
        context["prompt"] = [
            {**message, "pretty": inspector.pretty(message)}
            for message in (opened["body"] or {}).get("prompt", [])
        ]
        context["response"] = inspector.pretty((opened["body"] or {}).get("response"))
    return render(request, "orchestrator/model_call.html", context)


def _model_calls_of(run: WorkflowRun):
    """Return the model calls of a run (restricted by get_for to the viewer's)."""
    from agents.models import ModelCall

    return ModelCall.objects.filter(run_id=run.pk)


# --- actions ------------------------------------------------------------------------------------

RUN_ACTIONS = {
    "cancel": ("Cancel the run", CancelRunForm, "cancelled"),
    "pause": ("Pause the run", RunActionForm, "paused"),
    "resume": ("Resume the run", RunActionForm, "resumed"),
    "signal": ("Send a signal to the run", SignalRunForm, "sent a signal"),
}


def _perform(request, run: WorkflowRun, action: str, data: dict) -> str:
    """Take the action through the services and return what to tell the person."""
    if action == "cancel":
        services.cancel_run(run, actor=request.user, reason=data["reason"])
        return f"Run {run.pk} cancelled."
    if action == "pause":
        services.pause_run(run, actor=request.user)
        return f"Run {run.pk} paused."
    if action == "resume":
        services.resume_run(run, actor=request.user)
        return f"Run {run.pk} resumed."
    services.send_signal(run, data["name"], data["payload"], sent_by=request.user)
    return f"Signal {data['name']} sent to run {run.pk}."


@login_required
@require_http_methods(["GET", "POST"])
def run_action(request, pk: int, action: str):
    """Confirm, then take, an action on a run (cancel, pause, resume, send a signal)."""
    run = _run(request, pk)
    if action not in RUN_ACTIONS:
        raise Http404(f"No action {action!r}.")
    offered = inspector.actions(request.user, run)
    if not offered["change"]:
        # The service's own check refuses (403 forbidden, audited) who may not change the run.
        services.authorise(request.user, "change", run)
    title, form_class, done = RUN_ACTIONS[action]
    if not offered[action]:
        messages.error(request, f"Run {run.pk} is {run.status}: it cannot be {done} now.")
        return redirect("runs:detail", pk=run.pk)
    form = form_class(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            messages.success(request, _perform(request, run, action, form.cleaned_data))
        except EngineError as exc:
            messages.error(request, str(exc))
        return redirect("runs:detail", pk=run.pk)
    return render(
        request,
        "orchestrator/confirm.html",
        {"run": run, "form": form, "action": action, "heading": title, "active": "runs"},
    )


@login_required
@require_http_methods(["GET", "POST"])
def retry_step(request, pk: int, step_pk: int):
    """Confirm, then retry, a failed step of a run."""
    run = _run(request, pk)
    step = _step(request, run, step_pk)
    if not inspector.actions(request.user, run)["change"]:
        # The service's own check refuses (403 forbidden, audited) who may not change the run.
        services.authorise(request.user, "change", run)
    form = RunActionForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.retry_step(step, actor=request.user, run=run)
            messages.success(request, f"Step {step.step_id} of run {run.pk} retried.")
        except EngineError as exc:
            messages.error(request, str(exc))
        return redirect(f"{reverse('runs:detail', args=[run.pk])}?step={step.pk}#step-panel")
    return render(
        request,
        "orchestrator/confirm.html",
        {
            "run": run,
            "step": step,
            "form": form,
            "action": "retry",
            "heading": f"Retry step {step}",
            "active": "runs",
        },
    )
