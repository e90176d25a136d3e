"""What the KPI page shows: figures for a period and the one before, read from the rollups.

Counts come from the daily rollups. Run duration percentiles are exact: on PostgreSQL the
duration histogram (`KpiDurationDay`) says which bucket holds each rank a percentile needs,
and only that bucket's durations are read (`KpiRunEnd`, in index order), so what the page reads
does not grow with the runs of its period; on SQLite the period's rows are read and
interpolated in Python. Approval and acknowledgement percentiles are computed over their
narrow rows (`KpiApproval`, `KpiAck`): PostgreSQL's percentile_cont in one grouped query, the
same interpolation in Python on SQLite. A page costs a fixed number of queries whatever the
number of workflows or days.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection
from django.db.models import Q, Sum

from orchestrator.models import (
    KpiAck,
    KpiAgentDay,
    KpiApproval,
    KpiDay,
    KpiDurationDay,
    KpiEscalationDay,
    KpiRunEnd,
    KpiStepDay,
    KpiStepErrorDay,
    ManualBaseline,
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
    escalated: int = 0
    by_human: int = 0
    p50: float | None = None
    p95: float | None = None

    @property
    def without_human(self) -> int:
        """Return how many runs ended with no person acting (no escalation, no approval)."""
        return self.ended - self.by_human

    @property
    def escalated_share(self) -> float | None:
        """Return the share of ended runs that were escalated to a person."""
        return self.escalated / self.ended if self.ended else None

    @property
    def human_share(self) -> float | None:
        """Return the share of ended runs a person handled."""
        return self.by_human / self.ended if self.ended else None

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
    escalations: list = field(default_factory=list)  # dicts: reason, count, runs, before...
    approvals: dict = field(default_factory=dict)  # role or ALL -> [current, previous] dicts
    approvers: dict = field(default_factory=dict)  # approver -> [current, previous] dicts
    latency_buckets: list = field(default_factory=list)  # (label, upper seconds, count)
    acks: dict = field(default_factory=dict)  # workflow id or ALL -> [current, previous] dicts
    daily_acks: list = field(default_factory=list)  # (day, acknowledged, p50, p95)
    baselines: dict = field(default_factory=dict)  # workflow id -> ManualBaseline
    agents: list = field(default_factory=list)  # dicts: agent, now, before (AgentFigures)
    tool_calls: list = field(default_factory=list)  # [current, previous] AgentFigures, all agents


@dataclass
class AgentFigures:
    """What one agent (or every agent) did in a period."""

    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    tool_calls: int = 0
    denied: int = 0
    approvals: int = 0
    escalated: int = 0

    @property
    def tokens(self) -> int:
        """Return input and output tokens together."""
        return self.input_tokens + self.output_tokens

    @property
    def to_people(self) -> int:
        """Return the tool calls that went to a person: an approval or an escalation."""
        return self.approvals + self.escalated

    @property
    def to_people_share(self) -> float | None:
        """Return the share of tool calls that went to a person."""
        return self.to_people / self.tool_calls if self.tool_calls else None

    @property
    def denied_share(self) -> float | None:
        """Return the share of tool calls denied by policy."""
        return self.denied / self.tool_calls if self.tool_calls else None


AGENT_COUNTERS = (
    "model_calls",
    "input_tokens",
    "output_tokens",
    "cost",
    "tool_calls",
    "denied",
    "approvals",
    "escalated",
)


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Return percentile_cont(fraction) of sorted values (PostgreSQL's linear interpolation)."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _spreads(table: str, values: list[str], time: str, group: str, ids, periods) -> dict:
    """Return {(period index, group or ALL): {value: (p50, p95)}} over a narrow table's rows.

    NULL values are left out of a column's percentiles (percentile_cont ignores them).
    """
    found: dict = {}
    if not ids:
        return found
    start, end = min(p.start for p in periods), max(p.end for p in periods)
    if connection.vendor == "postgresql":
        cases = " ".join(
            f"WHEN {time} >= %s AND {time} < %s THEN {index}" for index in range(len(periods))
        )
        spreads = ", ".join(
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {value}),"
            f" percentile_cont(0.95) WITHIN GROUP (ORDER BY {value})"
            for value in values
        )
        sql = f"""
            SELECT period, {group}, GROUPING({group}), {spreads}
            FROM (SELECT CASE {cases} END AS period, {group}, {", ".join(values)} FROM {table}
                  WHERE workflow_id = ANY(%s) AND {time} >= %s AND {time} < %s) AS rows
            WHERE period IS NOT NULL
            GROUP BY GROUPING SETS ((period, {group}), (period))
        """
        params = [moment for p in periods for moment in (p.start, p.end)]
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, list(ids), start, end])
            for period, key, rolled, *numbers in cursor.fetchall():
                found[(period, ALL if rolled else key)] = {
                    value: (numbers[2 * n], numbers[2 * n + 1]) for n, value in enumerate(values)
                }
        return found
    collected: dict = defaultdict(lambda: defaultdict(list))
    with connection.cursor() as cursor:
        marks = ", ".join("%s" for _ in ids)
        cursor.execute(
            f"SELECT {group}, {time}, {', '.join(values)} FROM {table}"
            f" WHERE workflow_id IN ({marks}) AND {time} >= %s AND {time} < %s",
            [*ids, start, end],
        )
        for key, moment, *numbers in cursor.fetchall():
            if isinstance(moment, str):
                moment = dt.datetime.fromisoformat(moment)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
            for index, p in enumerate(periods):
                if p.start <= moment < p.end:
                    for target in (collected[(index, key)], collected[(index, ALL)]):
                        for value, number in zip(values, numbers, strict=True):
                            target[value].append(number)
    for key, columns in collected.items():
        found[key] = {}
        for value in values:
            numbers = sorted(n for n in columns[value] if n is not None)
            found[key][value] = (percentile(numbers, 0.5), percentile(numbers, 0.95))
    return found


def _percentiles(table: str, value: str, time: str, group: str, ids, periods) -> dict:
    """Return {(period index, group or ALL): (p50, p95)} of one column of a narrow table."""
    return {
        key: columns[value]
        for key, columns in _spreads(table, [value], time, group, ids, periods).items()
    }


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
            "workflow_id",
            "day",
            "started",
            "succeeded",
            "failed",
            "cancelled",
            "duration_seconds",
            "escalated",
            "by_human",
        )
        .order_by()
    )
    by_day: dict = defaultdict(lambda: [0, 0, 0, 0])
    for workflow_id, day, started, succeeded, failed, cancelled, seconds, up, human in rows:
        target = report.current if day >= period.first else report.previous
        for key in (workflow_id, ALL):
            figures = target.setdefault(key, Figures())
            figures.started += started
            figures.succeeded += succeeded
            figures.failed += failed
            figures.cancelled += cancelled
            figures.duration_seconds += seconds
            figures.escalated += up
            figures.by_human += human
        if day >= period.first:
            totals = by_day[day]
            totals[0] += succeeded
            totals[1] += failed
            totals[2] += cancelled
            totals[3] += started
    report.daily = [(day, *by_day[day]) for day in period.each_day()]
    if connection.vendor == "postgresql":
        spreads, report.daily_durations = _duration_percentiles(period, previous, ids)
    else:
        spreads = _percentiles(
            KpiRunEnd._meta.db_table,
            "duration_seconds",
            "finished_at",
            "workflow_id",
            ids,
            [period, previous],
        )
        report.daily_durations = _daily_durations(period, ids)
    for (index, key), (p50, p95) in spreads.items():
        target = (report.current, report.previous)[index]
        figures = target.setdefault(key, Figures())
        figures.p50, figures.p95 = p50, p95
    report.steps = _steps(period, ids, workflows)
    report.escalations = _escalations(period, previous, ids)
    report.approvals, report.approvers, report.latency_buckets = _approvals(period, previous, ids)
    report.acks = _acks(period, previous, ids)
    report.daily_acks = _daily_spread(KpiAck, "seconds", "acknowledged_at", period, ids)
    report.baselines = {
        baseline.workflow_id: baseline
        for baseline in ManualBaseline.objects.filter(workflow_id__in=ids)
    }
    report.agents, report.tool_calls = _agents(period, previous, ids)
    return report


def _duration_percentiles(period: Period, previous: Period, ids) -> tuple[dict, list]:
    """Return exact run duration percentiles from the histogram (PostgreSQL).

    Returns {(period index, workflow id or ALL): (p50, p95)} for both periods, and (day, runs
    ended, p50, p95) across the workflows for each day of the period. One query sums the
    histogram per group and bucket; a percentile's ranks then fall in known buckets at known
    offsets, and one more query reads, per group and bucket needed, only those durations
    (in the order of KpiRunEnd's (day, duration, workflow) index). percentile_cont's
    interpolation is then done here, on the same values it would have used.
    """
    groups: dict = defaultdict(list)  # ("period", index, key) or ("day", day) -> [(bucket, n)]
    if ids:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT period, workflow_id, shown_day, bucket,
                       GROUPING(workflow_id, shown_day), SUM(count)
                FROM (SELECT CASE WHEN day >= %s THEN 0 ELSE 1 END AS period, workflow_id,
                             CASE WHEN day >= %s THEN day END AS shown_day, bucket, count
                      FROM {KpiDurationDay._meta.db_table}
                      WHERE workflow_id = ANY(%s) AND day >= %s AND day <= %s
                        AND count <> 0) AS rows
                GROUP BY GROUPING SETS ((period, workflow_id, bucket), (period, bucket),
                                       (shown_day, bucket))
                ORDER BY bucket
                """,
                [period.first, period.first, list(ids), previous.first, period.last],
            )
            for index, workflow_id, day, bucket, grouping, count in cursor.fetchall():
                if grouping == 1:
                    groups[("period", index, workflow_id)].append((bucket, count))
                elif grouping == 3:
                    groups[("period", index, ALL)].append((bucket, count))
                elif day is not None:
                    groups[("day", day)].append((bucket, count))
    wanted = {}  # group -> {fraction: (low rank, high rank, share of the way)}
    reads: dict = {}  # (group, bucket) -> [first offset, last offset]
    for group, buckets in groups.items():
        total = sum(count for _, count in buckets)
        wanted[group] = (total, {})
        for fraction in (0.5, 0.95):
            position = fraction * (total - 1)
            ranks = (math.floor(position), math.ceil(position))
            wanted[group][1][fraction] = (*ranks, position - ranks[0])
            for rank in ranks:
                bucket, offset = _locate(buckets, rank)
                span = reads.setdefault((group, bucket), [offset, offset])
                span[0], span[1] = min(span[0], offset), max(span[1], offset)
    values = _bucket_values(reads, period, previous, ids)
    found: dict = {}
    daily: dict = {}
    for group, (total, fractions) in wanted.items():
        buckets = groups[group]
        spread = []
        for fraction in (0.5, 0.95):
            low, high, share = fractions[fraction]
            first = values[(group, *_locate(buckets, low))]
            second = values[(group, *_locate(buckets, high))]
            spread.append(first + (second - first) * share)
        if group[0] == "period":
            found[(group[1], group[2])] = tuple(spread)
        else:
            daily[group[1]] = (total, *spread)
    return found, [(day, *daily.get(day, (0, None, None))) for day in period.each_day()]


def _locate(buckets: list[tuple[int, int]], rank: int) -> tuple[int, int]:
    """Return the bucket holding a 0-based rank of (bucket, count) rows in bucket order, and
    the rank's offset in it."""
    for bucket, count in buckets:
        if rank < count:
            return bucket, rank
        rank -= count
    raise ValueError("rank beyond the histogram's count")


def _bucket_values(reads: dict, period: Period, previous: Period, ids) -> dict:
    """Return {(group, bucket, offset): duration} for the offsets asked of each group's bucket.

    A day's bucket is read in index order from its first asked offset (LATERAL, one index
    range each); a period's from each of its days (`day = ANY(...)`), sorted.
    """
    from orchestrator.kpis import bucket_range

    found: dict = {}
    if not reads:
        return found
    table = KpiRunEnd._meta.db_table
    days = {0: period.each_day(), 1: previous.each_day()}
    parts, params, tags = [], [], []
    daily = [(group, bucket, span) for (group, bucket), span in reads.items() if group[0] == "day"]
    if daily:
        low_high = [bucket_range(bucket) for _, bucket, _ in daily]
        parts.append(
            f"""
            SELECT r.n, v.offset_in_bucket, v.duration_seconds
            FROM unnest(%s::int[], %s::date[], %s::float8[], %s::float8[], %s::int[],
                        %s::int[]) AS r(n, day, low, high, skip, take)
            CROSS JOIN LATERAL (
                SELECT r.skip - 1 + row_number() OVER (ORDER BY duration_seconds)
                       AS offset_in_bucket, duration_seconds
                FROM (SELECT duration_seconds FROM {table}
                      WHERE day = r.day AND duration_seconds >= r.low
                        AND duration_seconds < r.high AND workflow_id = ANY(%s)
                      ORDER BY duration_seconds OFFSET r.skip LIMIT r.take) AS picked
            ) AS v
            """
        )
        params += [
            list(range(len(daily))),
            [group[1] for group, _, _ in daily],
            [low for low, _ in low_high],
            [high for _, high in low_high],
            [span[0] for _, _, span in daily],
            [span[1] - span[0] + 1 for _, _, span in daily],
            list(ids),
        ]
        tags += [(group, bucket) for group, bucket, _ in daily]
    for (group, bucket), (first, last) in reads.items():
        if group[0] != "period":
            continue
        low, high = bucket_range(bucket)
        key = group[2]
        parts.append(
            f"""
            (SELECT {len(tags)}, %s - 1 + row_number() OVER (ORDER BY duration_seconds),
                    duration_seconds
             FROM (SELECT duration_seconds FROM {table}
                   WHERE day = ANY(%s) AND duration_seconds >= %s AND duration_seconds < %s
                     AND workflow_id = ANY(%s)
                   ORDER BY duration_seconds OFFSET %s LIMIT %s) AS picked)
            """
        )
        params += [first, days[group[1]], low, high, list(ids) if key == ALL else [key]]
        params += [first, last - first + 1]
        tags.append((group, bucket))
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        for n, offset, seconds in cursor.fetchall():
            group, bucket = tags[n]
            found[(group, bucket, offset)] = seconds
    return found


def _daily_durations(period: Period, ids) -> list[tuple]:
    """Return (day, runs ended, p50, p95) of run durations for each day of the period."""
    return _daily_spread(KpiRunEnd, "duration_seconds", "finished_at", period, ids)


def _daily_spread(model, value: str, time: str, period: Period, ids) -> list[tuple]:
    """Return (day, rows, p50, p95) of a narrow table's column for each day of the period."""
    found: dict = {}
    table = model._meta.db_table
    if ids and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                SELECT ({time} AT TIME ZONE 'UTC')::date AS day, count(*),
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY {value}),
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY {value})
                FROM {table}
                WHERE workflow_id = ANY(%s) AND {time} >= %s AND {time} < %s
                GROUP BY day
                """,
                [list(ids), period.start, period.end],
            )
            found = {day: (count, p50, p95) for day, count, p50, p95 in cursor.fetchall()}
    elif ids:
        values: dict = defaultdict(list)
        rows = (
            model.objects.filter(
                workflow_id__in=ids, **{f"{time}__gte": period.start, f"{time}__lt": period.end}
            )
            .order_by(value)
            .values_list(time, value)
        )
        for moment, seconds in rows:
            values[moment.astimezone(dt.UTC).date()].append(seconds)
        found = {
            day: (len(numbers), percentile(numbers, 0.5), percentile(numbers, 0.95))
            for day, numbers in values.items()
        }
    return [(day, *found.get(day, (0, None, None))) for day in period.each_day()]


def lines(points: list[tuple[str, list[float | None]]], *, width=640, height=180, marks=()) -> dict:
    """Return the geometry of a line chart: one polyline per series, and a horizontal line at
    each mark (a baseline), all on one scale (numbers only)."""
    values = [value for _, series in points for value in series if value is not None]
    top = max(values + list(marks) + [1e-9])
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
    levels = [
        {"value": mark, "y": round(height - height * mark / top, 2)} for mark in sorted(set(marks))
    ]
    return {
        "width": width,
        "height": height,
        "top": top,
        "polylines": polylines,
        "marks": levels,
    }


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


ESCALATION_REASONS = {
    "policy": "policy",
    "low_confidence": "low confidence",
    "invalid_result": "invalid result",
    "step_failed": "failure after retries",
}


def _escalations(period: Period, previous: Period, ids) -> list[dict]:
    """Return, per escalation reason, escalations opened and runs ended escalated, both periods."""
    found: dict = defaultdict(lambda: [0, 0, 0, 0])
    for day, reason, count, runs in KpiEscalationDay.objects.filter(
        workflow_id__in=ids, day__gte=previous.first, day__lte=period.last
    ).values_list("day", "reason", "count", "runs"):
        now = day >= period.first
        found[reason][0 if now else 1] += count
        found[reason][2 if now else 3] += runs
    rows = [
        {
            "reason": reason,
            "label": ESCALATION_REASONS.get(reason, reason.replace("_", " ")),
            "count": count,
            "before": before,
            "runs": runs,
            "runs_before": runs_before,
        }
        for reason, (count, before, runs, runs_before) in found.items()
        if count or before or runs or runs_before
    ]
    return sorted(rows, key=lambda row: (-row["runs"], -row["count"], row["reason"]))


# Where the approval latency distribution cuts (upper bounds in seconds; the last is open).
LATENCY_BUCKETS = (
    ("< 5 min", 300),
    ("5–15 min", 900),
    ("15–60 min", 3600),
    ("1–4 h", 4 * 3600),
    ("4–24 h", 24 * 3600),
    ("≥ 1 d", None),
)
_SPREAD_COLUMNS = ["latency_seconds", "wait_seconds", "decide_seconds"]


def _approval_entry() -> list[dict]:
    """Return an empty [current, previous] pair of approval figures."""
    return [{"count": 0, "breached": 0, "seen": 0} for _ in range(2)]


def _approvals(period: Period, previous: Period, ids) -> tuple[dict, dict, list]:
    """Return approval figures by role and by approver (count, breaches, latency, waiting to be
    seen and deciding, p50/p95) for both periods, and this period's latency distribution."""
    by_role: dict = {}
    by_approver: dict = {}
    buckets = [0] * len(LATENCY_BUCKETS)
    rows = (
        KpiApproval.objects.filter(
            workflow_id__in=ids, decided_at__gte=previous.start, decided_at__lt=period.end
        )
        .values_list(
            "role_name", "approver_name", "breached", "decided_at", "latency_seconds", "seen_at"
        )
        .order_by()
    )
    for role, approver, breached, decided_at, latency, seen_at in rows:
        index = 0 if decided_at >= period.start else 1
        keys = [(by_role, role or "-"), (by_role, ALL)]
        if approver:
            keys.append((by_approver, approver))
        for target, key in keys:
            entry = target.setdefault(key, _approval_entry())
            entry[index]["count"] += 1
            entry[index]["breached"] += int(breached)
            entry[index]["seen"] += int(seen_at is not None)
        if index == 0:
            for position, (_, upper) in enumerate(LATENCY_BUCKETS):
                if upper is None or latency < upper:
                    buckets[position] += 1
                    break
    table = KpiApproval._meta.db_table
    for target, group in ((by_role, "role_name"), (by_approver, "approver_name")):
        spreads = _spreads(table, _SPREAD_COLUMNS, "decided_at", group, ids, [period, previous])
        for (index, key), columns in spreads.items():
            if target is by_role:
                key = ALL if key == ALL else (key or "-")
            elif key == ALL or not key:
                continue
            if key in target:
                for column, (p50, p95) in columns.items():
                    name = column.removesuffix("_seconds").replace("latency", "")
                    prefix = f"{name}_" if name else ""
                    target[key][index].update({f"{prefix}p50": p50, f"{prefix}p95": p95})
    distribution = [
        (label, upper, count)
        for (label, upper), count in zip(LATENCY_BUCKETS, buckets, strict=True)
    ]
    return by_role, by_approver, distribution


def _acks(period: Period, previous: Period, ids) -> dict:
    """Return time to acknowledge (count, p50, p95) per workflow and across them, both periods."""
    found: dict = {}
    spreads = _spreads(
        KpiAck._meta.db_table,
        ["seconds"],
        "acknowledged_at",
        "workflow_id",
        ids,
        [period, previous],
    )
    counts = (
        KpiAck.objects.filter(
            workflow_id__in=ids, acknowledged_at__gte=previous.start, acknowledged_at__lt=period.end
        )
        .values_list("workflow_id", "acknowledged_at")
        .order_by()
    )
    for workflow_id, moment in counts:
        index = 0 if moment >= period.start else 1
        for key in (workflow_id, ALL):
            found.setdefault(key, [{"count": 0}, {"count": 0}])[index]["count"] += 1
    for (index, key), columns in spreads.items():
        if key in found:
            p50, p95 = columns["seconds"]
            found[key][index].update(p50=p50, p95=p95)
    return found


def _agents(period: Period, previous: Period, ids) -> tuple[list[dict], list[AgentFigures]]:
    """Return per agent, and for all, model calls, tokens, cost and tool calls by verdict."""
    found: dict = {}
    totals = [AgentFigures(), AgentFigures()]
    rows = (
        KpiAgentDay.objects.filter(
            workflow_id__in=ids, day__gte=previous.first, day__lte=period.last
        )
        .values("agent_slug")
        .annotate(
            **{
                f"now_{name}": Sum(name, filter=Q(day__gte=period.first)) for name in AGENT_COUNTERS
            },
            **{
                f"then_{name}": Sum(name, filter=Q(day__lt=period.first)) for name in AGENT_COUNTERS
            },
        )
        .order_by()
    )
    for row in rows:
        pair = [AgentFigures(), AgentFigures()]
        for index, prefix in enumerate(("now_", "then_")):
            for name in AGENT_COUNTERS:
                amount = row[prefix + name] or 0
                setattr(pair[index], name, amount)
                setattr(totals[index], name, getattr(totals[index], name) + amount)
        found[row["agent_slug"]] = pair
    agents = [
        {"agent": slug, "now": now, "before": before}
        for slug, (now, before) in sorted(found.items(), key=lambda item: (not item[0], item[0]))
    ]
    return agents, totals


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
