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
from orchestrator.templatetags.kpi_format import duration

EXPORTS = (
    "workflows",
    "daily",
    "durations",
    "steps",
    "escalations",
    "approvals",
    "acks",
    "daily_acks",
    "people",
    "approvers",
    "latency",
    "agents",
)


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


def runs_link(slug: str | None, status: str = "", step: str = "", **filters) -> str:
    """Return the run list filtered to the runs behind a number (the run inspector's page).

    `step` keeps the runs in which that step failed; `period` (a Period) with `by` ("ended",
    "started" or "acknowledged") keeps the runs that ended, started or were acknowledged in it;
    other keywords are RunFilter parameters (orchestrator/filters.py).
    """
    period = filters.pop("period", None)
    by = filters.pop("by", "ended")
    query = {"workflow": slug, "status": status, "failed_step": step}
    if period is not None:
        field = {"ended": "finished", "started": "created", "acknowledged": "acknowledged"}[by]
        query[f"{field}_after"] = period.start.strftime("%Y-%m-%dT%H:%M:%SZ")
        query[f"{field}_before"] = period.end.strftime("%Y-%m-%dT%H:%M:%SZ")
    query.update(filters)
    query = {key: value for key, value in query.items() if value}
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


def _card(label, now, then, kind, link, *, note="", better="") -> dict:
    """Return one figure of the page with its change against the previous period."""
    return {
        "label": label,
        "value": now,
        "before": then,
        "kind": kind,
        "link": link,
        "change": _change(now, then),
        "note": note,
        "better": better,
    }


def _context(request, report, period, chosen, visible) -> dict:
    """Return the template's context: figures with changes, charts' geometry, links."""
    current, previous = report.current, report.previous
    total, before = current[ALL], previous.get(ALL) or kpi_report.Figures()
    slug = chosen or None
    earlier = period.previous()

    def ended(**filters):
        return runs_link(slug, period=period, **filters)

    cards = [
        _card("Runs started", total.started, before.started, "count", ended(by="started")),
        _card("Succeeded", total.succeeded, before.succeeded, "count", ended(status="succeeded")),
        _card("Failed", total.failed, before.failed, "count", ended(status="failed")),
        _card("Cancelled", total.cancelled, before.cancelled, "count", ended(status="cancelled")),
        _card(
            "Failure rate", total.failure_rate, before.failure_rate, "share", ended(status="failed")
        ),
        _card("Duration p50", total.p50, before.p50, "seconds", ended()),
        _card("Duration p95", total.p95, before.p95, "seconds", ended()),
    ]
    ack_now, ack_then = report.acks.get(ALL) or [{}, {}]
    baselines = [report.baselines[pk] for pk in report.workflows if pk in report.baselines]
    only = baselines[0] if len(baselines) == 1 else None
    approvals_now, approvals_then = report.approvals.get(ALL) or [{}, {}]
    calls_now, calls_then = report.tool_calls
    people = [
        _card(
            "Time to acknowledge p50",
            ack_now.get("p50"),
            ack_then.get("p50"),
            "seconds",
            ended(by="acknowledged"),
            note=f"manual {duration(only.ack_seconds)}" if only else "",
            better="lower",
        ),
        _card(
            "Time to acknowledge p95",
            ack_now.get("p95"),
            ack_then.get("p95"),
            "seconds",
            ended(by="acknowledged"),
            note=f"target {duration(only.target_ack_seconds)}"
            if only and only.target_ack_seconds
            else "",
            better="lower",
        ),
        _card(
            "Runs escalated",
            total.escalated_share,
            before.escalated_share,
            "share",
            ended(escalated="any"),
            note=f"{total.escalated} of {total.ended}",
        ),
        _card(
            "Handled without a person",
            total.without_human,
            before.without_human,
            "count",
            ended(handled_by="nobody"),
            better="higher",
        ),
        _card(
            "Handled by a person",
            total.by_human,
            before.by_human,
            "count",
            ended(handled_by="person"),
            note=f"{total.human_share:.0%} of ended" if total.human_share is not None else "",
        ),
        _card(
            "Tool calls to people",
            calls_now.to_people_share,
            calls_then.to_people_share,
            "share",
            ended(handled_by="approval"),
            note=f"{calls_now.to_people} of {calls_now.tool_calls}",
        ),
        _card(
            "Approval wait to be seen p50",
            approvals_now.get("wait_p50"),
            approvals_then.get("wait_p50"),
            "seconds",
            ended(handled_by="approval"),
            better="lower",
        ),
        _card(
            "Approval deciding p50",
            approvals_now.get("decide_p50"),
            approvals_then.get("decide_p50"),
            "seconds",
            ended(handled_by="approval"),
            better="lower",
        ),
    ]
    per_workflow = []
    for pk, (wf_slug, name) in report.workflows.items():
        figures = current.get(pk) or kpi_report.Figures()
        prior = previous.get(pk) or kpi_report.Figures()
        per_workflow.append(
            {
                "slug": wf_slug,
                "name": name,
                "now": figures,
                "before": prior,
                "change": _change(figures.started, prior.started),
                "links": {
                    status: runs_link(wf_slug, status, period=period)
                    for status in ("", "succeeded", "failed", "cancelled")
                },
                "started_link": runs_link(wf_slug, period=period, by="started"),
                "human_link": runs_link(wf_slug, period=period, handled_by="person"),
                "nobody_link": runs_link(wf_slug, period=period, handled_by="nobody"),
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
    for step in report.steps:
        step["link"] = runs_link(step["slug"], "failed", step["step_id"], period=period)
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
    for row, step in zip(step_chart["rows"], failing, strict=True):
        row["link"] = step["link"]
    acks = _ack_rows(report, period, earlier)
    ack_chart = kpi_report.lines(
        [(day.isoformat(), [p50, p95]) for day, _, p50, p95 in report.daily_acks],
        marks=[row["baseline"].ack_seconds for row in acks if row["baseline"]],
    )
    for escalation in report.escalations:
        escalation["share"] = escalation["runs"] / total.ended if total.ended else None
        escalation["share_before"] = (
            escalation["runs_before"] / before.ended if before.ended else None
        )
        escalation["change"] = _change(escalation["share"], escalation["share_before"])
        escalation["link"] = ended(escalated=escalation["reason"])
    escalation_chart = kpi_report.hbars(
        [
            (row["label"], row["share"] or 0.0, f"{row['share'] or 0:.0%} ({row['runs']})")
            for row in report.escalations
        ]
    )
    for row, escalation in zip(escalation_chart["rows"], report.escalations, strict=True):
        row["link"] = escalation["link"]
    human_chart = kpi_report.bars(
        [(row["name"], [row["now"].without_human, row["now"].by_human]) for row in per_workflow],
        height=120,
    )
    latency_chart = kpi_report.bars(
        [(label, [count]) for label, _, count in report.latency_buckets], height=120
    )
    approver_link = ended(handled_by="approval")
    agents = [
        {**row, "link": runs_link(slug, period=period, agent=row["agent"]) if row["agent"] else ""}
        for row in report.agents
    ]
    query = request.GET.copy()
    query.pop("export", None)
    return {
        "title": "KPIs",
        "active": "kpis",
        "period": period,
        "previous": earlier,
        "periods": kpi_report.PERIODS,
        "days": period.days,
        "chosen": chosen,
        "choices": sorted(visible.values(), key=lambda item: item[1]),
        "cards": cards,
        "people": people,
        "per_workflow": per_workflow,
        "daily": daily,
        "chart": chart,
        "durations": durations,
        "duration_chart": duration_chart,
        "steps": report.steps,
        "step_chart": step_chart,
        "acks": acks,
        "daily_acks": report.daily_acks,
        "ack_chart": ack_chart,
        "escalations": report.escalations,
        "escalation_chart": escalation_chart,
        "human_chart": human_chart,
        "approvals": sorted(
            ((role, figures) for role, figures in report.approvals.items() if role != ALL),
            key=lambda item: item[0],
        ),
        "approvals_all": report.approvals.get(ALL),
        "approvers": sorted(report.approvers.items()),
        "approver_link": approver_link,
        "latency_buckets": report.latency_buckets,
        "latency_chart": latency_chart,
        "agents": agents,
        "agent_totals": report.tool_calls,
        "export_base": f"{reverse('kpis')}?{query.urlencode()}&"
        if query
        else f"{reverse('kpis')}?",
    }


def _ack_rows(report, period: Period, earlier: Period) -> list[dict]:
    """Return time to acknowledge per workflow that has one, against its manual baseline."""
    rows = []
    for pk, (slug, name) in report.workflows.items():
        now, then = report.acks.get(pk) or [{}, {}]
        baseline = report.baselines.get(pk)
        if not now and not then and baseline is None:
            continue
        p50 = now.get("p50")
        rows.append(
            {
                "slug": slug,
                "name": name,
                "now": now,
                "before": then,
                "change": _change(p50, then.get("p50")),
                "baseline": baseline,
                "against_baseline": _change(p50, baseline.ack_seconds if baseline else None),
                "link": runs_link(slug, period=period, by="acknowledged"),
            }
        )
    return rows


_EXPORT_HEADERS = {
    "acks": [
        "workflow",
        "acknowledged",
        "p50_seconds",
        "p95_seconds",
        "previous_p50_seconds",
        "manual_baseline_seconds",
        "target_seconds",
        "baseline_source",
    ],
    "daily_acks": ["day", "acknowledged", "p50_seconds", "p95_seconds"],
    "people": [
        "workflow",
        "ended",
        "handled_by_a_person",
        "without_a_person",
        "escalated",
        "previous_ended",
        "previous_handled_by_a_person",
        "previous_escalated",
    ],
    "approvers": [
        "approver",
        "count",
        "breached",
        "wait_p50_seconds",
        "wait_p95_seconds",
        "decide_p50_seconds",
        "decide_p95_seconds",
        "previous_count",
    ],
    "latency": ["bucket", "upper_seconds", "count"],
    "agents": [
        "agent",
        "model_calls",
        "input_tokens",
        "output_tokens",
        "cost",
        "tool_calls",
        "denied",
        "approvals_asked",
        "escalated",
        "previous_model_calls",
        "previous_tool_calls",
        "previous_denied",
    ],
}


def _csv(report, export: str, period: Period) -> HttpResponse:
    """Return one table of the page as CSV."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="kpis-{export}-{period.first}-{period.last}.csv"'
    )
    writer = csv.writer(response)
    if export in _EXPORT_HEADERS:
        writer.writerow(_EXPORT_HEADERS[export])
        writer.writerows(_export_rows(report, export))
    elif export == "workflows":
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
        writer.writerow(
            ["reason", "runs_escalated", "previous_runs_escalated", "opened", "previous_opened"]
        )
        for row in report.escalations:
            writer.writerow(
                [row["reason"], row["runs"], row["runs_before"], row["count"], row["before"]]
            )
    else:
        writer.writerow(
            [
                "role",
                "count",
                "breached",
                "p50_seconds",
                "p95_seconds",
                "wait_p50_seconds",
                "wait_p95_seconds",
                "decide_p50_seconds",
                "decide_p95_seconds",
                "previous_count",
            ]
        )
        for role, (now, then) in sorted(report.approvals.items()):
            writer.writerow(
                [
                    "(all)" if role == ALL else role,
                    now["count"],
                    now["breached"],
                    *(
                        _number(now.get(key))
                        for key in (
                            "p50",
                            "p95",
                            "wait_p50",
                            "wait_p95",
                            "decide_p50",
                            "decide_p95",
                        )
                    ),
                    then["count"],
                ]
            )
    return response


def _export_rows(report, export: str):
    """Yield the rows of the newer tables (time to acknowledge, people, approvers, agents)."""
    if export == "acks":
        for pk, (slug, _) in report.workflows.items():
            now, then = report.acks.get(pk) or [{}, {}]
            baseline = report.baselines.get(pk)
            if not now and baseline is None:
                continue
            yield [
                slug,
                now.get("count", 0),
                _number(now.get("p50")),
                _number(now.get("p95")),
                _number(then.get("p50")),
                baseline.ack_seconds if baseline else "",
                (baseline.target_ack_seconds or "") if baseline else "",
                baseline.source if baseline else "",
            ]
    elif export == "daily_acks":
        for day, count, p50, p95 in report.daily_acks:
            yield [day.isoformat(), count, _number(p50), _number(p95)]
    elif export == "people":
        for pk, (slug, _) in report.workflows.items():
            now = report.current.get(pk) or kpi_report.Figures()
            then = report.previous.get(pk) or kpi_report.Figures()
            yield [
                slug,
                now.ended,
                now.by_human,
                now.without_human,
                now.escalated,
                then.ended,
                then.by_human,
                then.escalated,
            ]
    elif export == "approvers":
        for approver, (now, then) in sorted(report.approvers.items()):
            yield [
                approver,
                now["count"],
                now["breached"],
                *(
                    _number(now.get(key))
                    for key in ("wait_p50", "wait_p95", "decide_p50", "decide_p95")
                ),
                then["count"],
            ]
    elif export == "latency":
        for label, upper, count in report.latency_buckets:
            yield [label, "" if upper is None else upper, count]
    else:
        for row in report.agents:
            now, then = row["now"], row["before"]
            yield [
                row["agent"] or "(tool steps)",
                now.model_calls,
                now.input_tokens,
                now.output_tokens,
                _number(float(now.cost)),
                now.tool_calls,
                now.denied,
                now.approvals,
                now.escalated,
                then.model_calls,
                then.tool_calls,
                then.denied,
            ]


def _number(value) -> str:
    """Write a figure for CSV: empty when unknown, else up to 6 decimals."""
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)
