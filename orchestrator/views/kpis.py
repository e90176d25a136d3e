"""The KPI page: a period's figures against the period before, per workflow and across them."""

from __future__ import annotations

import csv
import datetime as dt
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from audit import clock
from orchestrator import kpi_report
from orchestrator.kpi_report import ALL, Period

EXPORTS = ("workflows", "daily", "durations", "steps", "escalations", "approvals")


def _period(request) -> Period:
    """Read the period from the query: `days` (7, 30, 90) ending on `end` (default today, UTC)."""
    try:
        days = int(request.GET.get("days", 30))
    except ValueError:
        days = 30
    if days not in kpi_report.PERIODS:
        days = 30
    today = clock.now().astimezone(dt.UTC).date()
    try:
        last = (
            dt.date.fromisoformat(request.GET.get("end", "")) if request.GET.get("end") else today
        )
    except ValueError:
        last = today
    return Period(last - dt.timedelta(days=days - 1), last)


def _change(now, before):
    """Return the relative change from the previous period (None when it cannot be said)."""
    if now is None or before in (None, 0):
        return None
    return (now - before) / before


def runs_link(slug: str | None, status: str = "", step: str = "") -> str:
    """Return the run list filtered to the runs behind a number (the run inspector's page)."""
    query = {
        key: value
        for key, value in (("workflow", slug), ("status", status), ("step", step))
        if value
    }
    return f"/runs/?{urlencode(query)}" if query else "/runs/"


@login_required
def kpis(request):
    """Show (or export as CSV) the KPIs of a period for the workflows the manager may see."""
    visible = kpi_report.visible_workflows(request.user)
    chosen = request.GET.get("workflow", "")
    by_slug = {slug: pk for pk, (slug, _) in visible.items()}
    if chosen and chosen not in by_slug:
        raise Http404("No such workflow among those you may see.")
    shown = {by_slug[chosen]: visible[by_slug[chosen]]} if chosen else visible
    period = _period(request)
    report = kpi_report.build(period, shown)
    export = request.GET.get("export")
    if export:
        if export not in EXPORTS:
            raise Http404("No such export.")
        return _csv(report, export, period)
    return render(
        request, "orchestrator/kpis.html", _context(request, report, period, chosen, visible)
    )


def _context(request, report, period, chosen, visible) -> dict:
    """Return the template's context: figures with changes, charts' geometry, links."""
    current, previous = report.current, report.previous
    total, before = current[ALL], previous.get(ALL)
    slug = chosen or None
    cards = [
        ("Runs started", total.started, before.started, "count", runs_link(slug)),
        ("Succeeded", total.succeeded, before.succeeded, "count", runs_link(slug, "succeeded")),
        ("Failed", total.failed, before.failed, "count", runs_link(slug, "failed")),
        ("Cancelled", total.cancelled, before.cancelled, "count", runs_link(slug, "cancelled")),
        (
            "Failure rate",
            total.failure_rate,
            before.failure_rate,
            "share",
            runs_link(slug, "failed"),
        ),
        ("Duration p50", total.p50, before.p50, "seconds", runs_link(slug, "succeeded")),
        ("Duration p95", total.p95, before.p95, "seconds", runs_link(slug, "succeeded")),
    ]
    cards = [
        {
            "label": label,
            "value": now,
            "before": then,
            "kind": kind,
            "link": link,
            "change": _change(now, then),
        }
        for label, now, then, kind, link in cards
    ]
    per_workflow = []
    for pk, (wf_slug, name) in report.workflows.items():
        figures = current.get(pk) or kpi_report.Figures()
        earlier = previous.get(pk) or kpi_report.Figures()
        per_workflow.append(
            {
                "slug": wf_slug,
                "name": name,
                "now": figures,
                "before": earlier,
                "change": _change(figures.started, earlier.started),
                "links": {
                    status: runs_link(wf_slug, status)
                    for status in ("", "succeeded", "failed", "cancelled")
                },
            }
        )
    daily = report.daily
    chart = kpi_report.bars(
        [
            (day.isoformat(), [succeeded, failed, cancelled])
            for day, succeeded, failed, cancelled, _ in daily
        ]
    )
    durations = report.daily_durations
    duration_chart = kpi_report.lines(
        [(day.isoformat(), [p50, p95]) for day, _, p50, p95 in durations]
    )
    failing = [step for step in report.steps if step["failed"]][:12]
    step_chart = kpi_report.hbars(
        [
            (
                f"{step['slug']} · {step['step_id']}",
                step["rate"],
                f"{step['rate']:.0%} ({step['failed']})",
            )
            for step in failing
        ]
    )
    for step in report.steps:
        step["link"] = runs_link(step["slug"], "failed", step["step_id"])
    query = request.GET.copy()
    query.pop("export", None)
    return {
        "title": "KPIs",
        "active": "kpis",
        "period": period,
        "previous": period.previous(),
        "periods": kpi_report.PERIODS,
        "days": period.days,
        "chosen": chosen,
        "choices": sorted(visible.values(), key=lambda item: item[1]),
        "cards": cards,
        "per_workflow": per_workflow,
        "daily": daily,
        "chart": chart,
        "durations": durations,
        "duration_chart": duration_chart,
        "steps": report.steps,
        "step_chart": step_chart,
        "escalations": report.escalations,
        "approvals": sorted(
            ((role, figures) for role, figures in report.approvals.items() if role != ALL),
            key=lambda item: item[0],
        ),
        "approvals_all": report.approvals.get(ALL),
        "export_base": f"{reverse('kpis')}?{query.urlencode()}&"
        if query
        else f"{reverse('kpis')}?",
    }


def _csv(report, export: str, period: Period) -> HttpResponse:
    """Return one table of the page as CSV."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="kpis-{export}-{period.first}-{period.last}.csv"'
    )
    writer = csv.writer(response)
    if export == "workflows":
        writer.writerow(
            [
                "workflow",
                "started",
                "succeeded",
                "failed",
                "cancelled",
                "failure_rate",
                "p50_seconds",
                "p95_seconds",
                "previous_started",
                "previous_failed",
            ]
        )
        for pk, (slug, _) in report.workflows.items():
            now = report.current.get(pk) or kpi_report.Figures()
            then = report.previous.get(pk) or kpi_report.Figures()
            writer.writerow(
                [
                    slug,
                    now.started,
                    now.succeeded,
                    now.failed,
                    now.cancelled,
                    _number(now.failure_rate),
                    _number(now.p50),
                    _number(now.p95),
                    then.started,
                    then.failed,
                ]
            )
    elif export == "daily":
        writer.writerow(["day", "succeeded", "failed", "cancelled", "started"])
        for day, succeeded, failed, cancelled, started in report.daily:
            writer.writerow([day.isoformat(), succeeded, failed, cancelled, started])
    elif export == "durations":
        writer.writerow(["day", "ended", "p50_seconds", "p95_seconds"])
        for day, ended, p50, p95 in report.daily_durations:
            writer.writerow([day.isoformat(), ended, _number(p50), _number(p95)])
    elif export == "steps":
        writer.writerow(["workflow", "step", "finished", "failed", "failure_rate", "top_errors"])
        for step in report.steps:
            errors = "; ".join(f"{kind}: {count}" for kind, count in step["errors"])
            writer.writerow(
                [
                    step["slug"],
                    step["step_id"],
                    step["finished"],
                    step["failed"],
                    _number(step["rate"]),
                    errors,
                ]
            )
    elif export == "escalations":
        writer.writerow(["reason", "count", "previous_count"])
        writer.writerows(report.escalations)
    else:
        writer.writerow(
            ["role", "count", "breached", "p50_seconds", "p95_seconds", "previous_count"]
        )
        for role, (now, then) in sorted(report.approvals.items()):
            writer.writerow(
                [
                    "(all)" if role == ALL else role,
                    now["count"],
                    now["breached"],
                    _number(now.get("p50")),
                    _number(now.get("p95")),
                    then["count"],
                ]
            )
    return response


def _number(value) -> str:
    """Write a figure for CSV: empty when unknown, else up to 6 decimals."""
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
