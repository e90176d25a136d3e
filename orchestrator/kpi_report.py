"""What the KPI page shows: figures for a period and the one before, read from the rollups.

Counts come from the daily rollups; duration and approval latency percentiles are computed
exactly over the period's narrow rows (`KpiRunEnd`, `KpiApproval`): PostgreSQL's
percentile_cont in one grouped query, the same interpolation in Python on SQLite. A page costs a
fixed number of queries whatever the number of workflows or days.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Sum

from orchestrator.models import (
    KpiApproval,
    KpiDay,
    KpiEscalationDay,
    KpiRunEnd,
    KpiStepDay,
    KpiStepErrorDay,
)

PERIODS = (7, 30, 90)
ALL = "__all__"


@dataclass(frozen=True)
class Period:
    """A range of UTC days, both ends included."""

    first: dt.date
    last: dt.date

    @property
    def days(self) -> int:
        """Return how many days the period holds."""
        return (self.last - self.first).days + 1

    def previous(self) -> Period:
        """Return the period of the same length just before this one."""
        return Period(self.first - dt.timedelta(days=self.days), self.first - dt.timedelta(days=1))

    @property
    def start(self) -> dt.datetime:
        """Return the period's first instant (UTC)."""
        return dt.datetime.combine(self.first, dt.time(), dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """Return the instant just after the period (UTC)."""
        return dt.datetime.combine(self.last + dt.timedelta(days=1), dt.time(), dt.UTC)

    def each_day(self) -> list[dt.date]:
        """Return the period's days in order."""
        return [self.first + dt.timedelta(days=n) for n in range(self.days)]


@dataclass
class Figures:
    """Run figures of one workflow (or all) in one period."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    duration_seconds: float = 0.0
    p50: float | None = None
    p95: float | None = None

    @property
    def ended(self) -> int:
        """Return how many runs ended."""
        return self.succeeded + self.failed + self.cancelled

    @property
    def failure_rate(self) -> float | None:
        """Return the share of ended runs that failed."""
        return self.failed / self.ended if self.ended else None

    @property
    def mean(self) -> float | None:
        """Return the mean duration of the runs that ended."""
        return self.duration_seconds / self.ended if self.ended else None


@dataclass
class Report:
    """Everything the KPI page shows for a period, for the workflows the viewer may see."""

    period: Period
    workflows: dict[int, tuple[str, str]]  # id -> (slug, name)
    current: dict = field(default_factory=dict)  # workflow id or ALL -> Figures
    previous: dict = field(default_factory=dict)
    daily: list = field(default_factory=list)  # (day, succeeded, failed, cancelled, started)
    daily_durations: list = field(default_factory=list)  # (day, ended, p50, p95)
    steps: list = field(default_factory=list)  # dicts: workflow, step, finished, failed, errors
    escalations: list = field(default_factory=list)  # (reason, current, previous)
    approvals: dict = field(default_factory=dict)  # role or ALL -> dict of figures


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Return percentile_cont(fraction) of sorted values (PostgreSQL's linear interpolation)."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _percentiles(table: str, value: str, time: str, group: str, ids, periods) -> dict:
    """Return {(period index, group or ALL): (p50, p95)} over a narrow table's rows."""
    found: dict = {}
    if not ids:
        return found
    start, end = min(p.start for p in periods), max(p.end for p in periods)
    if connection.vendor == "postgresql":
        cases = " ".join(
            f"WHEN {time} >= %s AND {time} < %s THEN {index}" for index in range(len(periods))
        )
        sql = f"""
            SELECT period, {group}, GROUPING({group}),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY {value}),
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY {value})
            FROM (SELECT CASE {cases} END AS period, {group}, {value} FROM {table}
                  WHERE workflow_id = ANY(%s) AND {time} >= %s AND {time} < %s) AS rows
            WHERE period IS NOT NULL
            GROUP BY GROUPING SETS ((period, {group}), (period))
        """
        params = [moment for p in periods for moment in (p.start, p.end)]
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, list(ids), start, end])
            for period, key, rolled, p50, p95 in cursor.fetchall():
                found[(period, ALL if rolled else key)] = (p50, p95)
        return found
    values: dict = defaultdict(list)
    with connection.cursor() as cursor:
        marks = ", ".join("%s" for _ in ids)
        cursor.execute(
            f"SELECT {group}, {time}, {value} FROM {table} WHERE workflow_id IN ({marks})"
            f" AND {time} >= %s AND {time} < %s ORDER BY {value}",
            [*ids, start, end],
        )
        for key, moment, number in cursor.fetchall():
            if isinstance(moment, str):
                moment = dt.datetime.fromisoformat(moment)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            for index, p in enumerate(periods):
                if p.start <= moment < p.end:
                    values[(index, key)].append(number)
                    values[(index, ALL)].append(number)
    for key, numbers in values.items():
        found[key] = (percentile(numbers, 0.5), percentile(numbers, 0.95))
    return found


def build(period: Period, workflows: dict[int, tuple[str, str]]) -> Report:
    """Read every figure of the page for a period and the one before it."""
    report = Report(period, workflows)
    ids = list(workflows)
    previous = period.previous()
    for target in (report.current, report.previous):
        target[ALL] = Figures()
    rows = (
        KpiDay.objects.filter(workflow_id__in=ids, day__gte=previous.first, day__lte=period.last)
        .values_list(
            "workflow_id", "day", "started", "succeeded", "failed", "cancelled", "duration_seconds"
        )
        .order_by()
    )
    by_day: dict = defaultdict(lambda: [0, 0, 0, 0])
    for workflow_id, day, started, succeeded, failed, cancelled, seconds in rows:
        target = report.current if day >= period.first else report.previous
        for key in (workflow_id, ALL):
            figures = target.setdefault(key, Figures())
            figures.started += started
            figures.succeeded += succeeded
            figures.failed += failed
            figures.cancelled += cancelled
            figures.duration_seconds += seconds
        if day >= period.first:
            totals = by_day[day]
            totals[0] += succeeded
            totals[1] += failed
            totals[2] += cancelled
            totals[3] += started
    report.daily = [(day, *by_day[day]) for day in period.each_day()]
    spreads = _percentiles(
        KpiRunEnd._meta.db_table,
        "duration_seconds",
        "finished_at",
        "workflow_id",
        ids,
        [period, previous],
    )
    for (index, key), (p50, p95) in spreads.items():
        target = (report.current, report.previous)[index]
        figures = target.setdefault(key, Figures())
        figures.p50, figures.p95 = p50, p95
    report.daily_durations = _daily_durations(period, ids)
    report.steps = _steps(period, ids, workflows)
    report.escalations = _escalations(period, previous, ids)
    report.approvals = _approvals(period, previous, ids)
    return report


def _daily_durations(period: Period, ids) -> list[tuple]:
    """Return (day, runs ended, p50, p95) of run durations for each day of the period."""
    found: dict = {}
    if ids and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT (finished_at AT TIME ZONE 'UTC')::date AS day, count(*),
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds),
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds)
                FROM {KpiRunEnd._meta.db_table}
                WHERE workflow_id = ANY(%s) AND finished_at >= %s AND finished_at < %s
                GROUP BY day
                """,
                [list(ids), period.start, period.end],
            )
            found = {day: (count, p50, p95) for day, count, p50, p95 in cursor.fetchall()}
    elif ids:
        values: dict = defaultdict(list)
        rows = (
            KpiRunEnd.objects.filter(
                workflow_id__in=ids, finished_at__gte=period.start, finished_at__lt=period.end
            )
            .order_by("duration_seconds")
            .values_list("finished_at", "duration_seconds")
        )
        for moment, seconds in rows:
            values[moment.astimezone(dt.UTC).date()].append(seconds)
        found = {
            day: (len(numbers), percentile(numbers, 0.5), percentile(numbers, 0.95))
            for day, numbers in values.items()
        }
    return [(day, *found.get(day, (0, None, None))) for day in period.each_day()]


def lines(points: list[tuple[str, list[float | None]]], *, width=640, height=180) -> dict:
    """Return the geometry of a line chart: one polyline per series (numbers only)."""
    values = [value for _, series in points for value in series if value is not None]
    top = max(values + [1e-9])
    step = width / max(len(points) - 1, 1)
    series_count = max((len(series) for _, series in points), default=0)
    polylines = []
    for series in range(series_count):
        coordinates = [
            f"{round(index * step, 2)},{round(height - height * row[series] / top, 2)}"
            for index, (_, row) in enumerate(points)
            if row[series] is not None
        ]
        polylines.append({"series": series, "points": " ".join(coordinates)})
    return {"width": width, "height": height, "top": top, "polylines": polylines}


def _steps(period: Period, ids, workflows) -> list[dict]:
    """Return the steps of the period's ended runs with failures first, and their top errors."""
    counts = (
        KpiStepDay.objects.filter(workflow_id__in=ids, day__gte=period.first, day__lte=period.last)
        .values("workflow_id", "step_id")
        .annotate(finished=Sum("finished"), failed=Sum("failed"))
        .order_by()
    )
    errors: dict = defaultdict(list)
    for row in (
        KpiStepErrorDay.objects.filter(
            workflow_id__in=ids, day__gte=period.first, day__lte=period.last
        )
        .values("workflow_id", "step_id", "error_type")
        .annotate(count=Sum("count"))
        .order_by("-count", "error_type")
    ):
        if row["count"]:
            errors[(row["workflow_id"], row["step_id"])].append((row["error_type"], row["count"]))
    steps = [
        {
            "workflow_id": row["workflow_id"],
            "slug": workflows[row["workflow_id"]][0],
            "step_id": row["step_id"],
            "finished": row["finished"],
            "failed": row["failed"],
            "rate": row["failed"] / row["finished"] if row["finished"] else 0.0,
            "errors": errors[(row["workflow_id"], row["step_id"])][:3],
        }
        for row in counts
        if row["finished"]
    ]
    steps.sort(key=lambda s: (-s["failed"], -s["rate"], s["slug"], s["step_id"]))
    return steps


def _escalations(period: Period, previous: Period, ids) -> list[tuple[str, int, int]]:
    """Return (reason, this period, the one before) for every escalation reason seen."""
    found: dict = defaultdict(lambda: [0, 0])
    for day, reason, count in KpiEscalationDay.objects.filter(
        workflow_id__in=ids, day__gte=previous.first, day__lte=period.last
    ).values_list("day", "reason", "count"):
        found[reason][0 if day >= period.first else 1] += count
    return sorted(((r, c, p) for r, (c, p) in found.items()), key=lambda row: (-row[1], row[0]))


def _approvals(period: Period, previous: Period, ids) -> dict:
    """Return approval figures by role (and ALL): count, breaches, latency p50/p95, both periods."""
    found: dict = {}
    rows = (
        KpiApproval.objects.filter(
            workflow_id__in=ids, decided_at__gte=previous.start, decided_at__lt=period.end
        )
        .values_list("role_name", "breached", "decided_at")
        .order_by()
    )
    for role, breached, decided_at in rows:
        index = 0 if decided_at >= period.start else 1
        for key in (role or "-", ALL):
            entry = found.setdefault(key, [{"count": 0, "breached": 0} for _ in range(2)])
            entry[index]["count"] += 1
            entry[index]["breached"] += int(breached)
    spreads = _percentiles(
        KpiApproval._meta.db_table,
        "latency_seconds",
        "decided_at",
        "role_name",
        ids,
        [period, previous],
    )
    for (index, key), (p50, p95) in spreads.items():
        key = ALL if key == ALL else (key or "-")
        if key in found:
            found[key][index].update(p50=p50, p95=p95)
    return found


def visible_workflows(user) -> dict[int, tuple[str, str]]:
    """Return the workflows whose KPIs the user may read; refuse anyone who is not a manager.

    Managers (who may see every run: `orchestrator.view_workflowrun`) read the KPIs of the
    workflows their roles let them see.
    """
    from django.core.exceptions import PermissionDenied

    from governance.permissions import has_model_permission
    from orchestrator.models import Workflow, WorkflowRun

    if not has_model_permission(user, "view", WorkflowRun):
        raise PermissionDenied("KPI pages are for managers.")
    rows = Workflow.objects.restrict(user, "view").order_by("name", "slug")
    return {pk: (slug, name) for pk, slug, name in rows.values_list("pk", "slug", "name")}


def bars(values: list[tuple[str, list[int]]], *, width: int = 640, height: int = 180) -> dict:
    """Return the geometry of a stacked bar chart (numbers only; the template draws it)."""
    top = max([sum(parts) for _, parts in values] + [1])
    slot = width / max(len(values), 1)
    columns = []
    for index, (label, parts) in enumerate(values):
        y = height
        stack = []
        for series, amount in enumerate(parts):
            size = height * amount / top
            y -= size
            stack.append(
                {"series": series, "y": round(y, 2), "height": round(size, 2), "value": amount}
            )
        columns.append(
            {
                "x": round(index * slot + slot * 0.1, 2),
                "width": round(slot * 0.8, 2),
                "label": label,
                "stack": stack,
                "total": sum(parts),
            }
        )
    return {"width": width, "height": height, "top": top, "columns": columns}


def hbars(values: list[tuple[str, float, str]], *, width: int = 420, row: int = 22) -> dict:
    """Return the geometry of a horizontal bar chart of (label, value, shown text) rows."""
    top = max([value for _, value, _ in values] + [1e-9])
    label_width = 170
    rows = [
        {
            "y": index * row,
            "label": label,
            "text": text,
            "width": round((width - label_width - 60) * value / top, 2),
        }
        for index, (label, value, text) in enumerate(values)
    ]
    return {
        "width": width,
        "height": max(len(rows), 1) * row,
        "label_width": label_width,
        "rows": rows,
    }
