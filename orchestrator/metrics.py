"""The metrics operators scrape at /metrics (docs/metrics.md).

Two kinds:
* state read from the database at scrape time (a Collector): runs and steps by state, the ready
  queue's lag, approval backlog and SLA breaches, the audit sequencer's lag and checkpoint age,
  webhook deliveries by status, and the sweeper's repairs (totals the sweeper keeps in
  `EngineCounter` rows, so they survive restarts and every process sees them). Each is one
  indexed query: a scrape never scans the run history.
* events counted in the process where they happen (prometheus_client counters and histograms):
  step attempt latency, run starts and ends, model calls (agents/metrics.py). Workers and web
  processes share them through prometheus_client's multiprocess mode when
  PROMETHEUS_MULTIPROC_DIR is set; without it each process reports only its own.
"""

from __future__ import annotations

import os

from django.db import transaction
from django.db.models import Count, F, Min
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from audit import clock

STEP_SECONDS = Histogram(
    "steward_step_duration_seconds",
    "Wall time of one step attempt (execution and recording its outcome), by type and outcome.",
    ["step_type", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RUN_EVENTS = Counter(
    "steward_run_events",
    "Runs started and ended (succeeded, failed, cancelled), counted as the engine commits them.",
    ["kind"],
)
_RUN_KINDS = {"run_started", "run_succeeded", "run_failed", "run_cancelled"}
SWEEPER_KINDS = ("reclaimed", "timers", "republished", "repaired")


def observe_step(step_type: str, outcome: str, seconds: float) -> None:
    """Count one step attempt's wall time."""
    STEP_SECONDS.labels(step_type, outcome).observe(max(seconds, 0.0))


def count_run_events(events) -> None:
    """Count the run starts and ends among recorded events, once their transaction commits."""
    kinds = [event.kind for event in events if event.kind in _RUN_KINDS]
    if kinds:
        transaction.on_commit(lambda: [RUN_EVENTS.labels(kind).inc() for kind in kinds])


def add_sweeper_repairs(counts: dict[str, int]) -> None:
    """Add a sweep's repairs to the database totals (only what it repaired: most sweeps, none)."""
    from orchestrator.models import EngineCounter

    for kind in SWEEPER_KINDS:
        amount = counts.get(kind, 0)
        if not amount:
            continue
        name = f"sweeper.{kind}"
        if not EngineCounter.objects.filter(name=name).update(value=F("value") + amount):
            EngineCounter.objects.get_or_create(name=name)
            EngineCounter.objects.filter(name=name).update(value=F("value") + amount)


class StateCollector:
    """Read the current state from the database at scrape time."""

    def collect(self):
        """Yield the gauges and database-kept counters."""
        from audit import sequencer
        from audit.models import AuditCheckpoint, AuditTreeState
        from governance.models import ApprovalRequest, ApprovalStatus, WebhookDelivery
        from orchestrator.models import EngineCounter, RunStatus, StepRun, StepStatus, WorkflowRun

        now = clock.now()

        runs = GaugeMetricFamily("steward_runs", "Workflow runs by status.", labels=["status"])
        by_status = dict(
            WorkflowRun.objects.order_by().values_list("status").annotate(n=Count("id"))
        )
        for status in RunStatus.values:
            runs.add_metric([status], by_status.get(status, 0))
        yield runs

        steps = GaugeMetricFamily(
            "steward_steps", "Steps that are ready, running or waiting.", labels=["status"]
        )
        # One count per status: each uses that status's partial index.
        for status in (StepStatus.READY, StepStatus.RUNNING, StepStatus.WAITING):
            steps.add_metric([status], StepRun.objects.filter(status=status).count())
        yield steps

        oldest = StepRun.objects.filter(status=StepStatus.READY, ready_at__lte=now).aggregate(
            oldest=Min("ready_at")
        )["oldest"]
        yield GaugeMetricFamily(
            "steward_ready_queue_lag_seconds",
            "Age of the oldest step that is ready to run (0 when none waits for a worker).",
            value=(now - oldest).total_seconds() if oldest else 0.0,
        )

        pending = ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING)
        yield GaugeMetricFamily(
            "steward_approvals_pending",
            "Approval requests waiting for a decision.",
            value=pending.count(),
        )
        yield GaugeMetricFamily(
            "steward_approvals_overdue",
            "Pending approval requests past their current level's SLA (breaches).",
            value=pending.filter(due_at__lt=now).count(),
        )

        state = AuditTreeState.objects.filter(pk=1).first()
        written_at = sequencer.next_unsequenced_at()
        yield GaugeMetricFamily(
            "steward_audit_sequencer_lag_seconds",
            "Age of the next audit entry the sequencer will number (0 when it has caught up).",
            value=max((now - written_at).total_seconds(), 0.0) if written_at else 0.0,
        )
        yield GaugeMetricFamily(
            "steward_audit_tree_size",
            "Audit entries sequenced into the Merkle tree.",
            value=state.size if state else 0,
        )
        checkpoint = AuditCheckpoint.objects.order_by("-pk").values("created_at").first()
        if checkpoint:
            yield GaugeMetricFamily(
                "steward_audit_last_checkpoint_age_seconds",
                "Seconds since the last signed audit checkpoint.",
                value=(now - checkpoint["created_at"]).total_seconds(),
            )

        deliveries = GaugeMetricFamily(
            "steward_webhook_deliveries",
            "Outbound webhook deliveries by status (failed: refused or disabled; dead: retries "
            "exhausted).",
            labels=["status"],
        )
        counts = dict(
            WebhookDelivery.objects.order_by().values_list("status").annotate(n=Count("id"))
        )
        for status in ("pending", "delivered", "failed", "dead"):
            deliveries.add_metric([status], counts.get(status, 0))
        yield deliveries

        repairs = CounterMetricFamily(
            "steward_sweeper_repairs",
            "What the sweeper repaired: steps reclaimed from dead workers or timeouts, timers "
            "fired, ready steps republished, runs repaired.",
            labels=["kind"],
        )
        totals = dict(
            EngineCounter.objects.filter(name__startswith="sweeper.").values_list("name", "value")
        )
        for kind in SWEEPER_KINDS:
            repairs.add_metric([kind], totals.get(f"sweeper.{kind}", 0))
        yield repairs


class _ProcessCollector:
    """This process's own metrics (the default registry), when not in multiprocess mode."""

    def collect(self):
        """Yield what the default registry holds."""
        yield from REGISTRY.collect()


def registry() -> CollectorRegistry:
    """Return the registry one scrape reads: the database's state and the processes' counts."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(StateCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(scrape)
    else:
        scrape.register(_ProcessCollector())
    return scrape
