"""KPI rollups: exact figures from runs on an injected clock; equal to a full recomputation."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from audit import clock
from audit.actors import SYSTEM
from governance import services as governance
from orchestrator import engine, kpis, services
from orchestrator.models import (
    KpiApproval,
    KpiDay,
    KpiEscalationDay,
    KpiRunEnd,
    KpiStepDay,
    KpiStepErrorDay,
    StepRun,
    WorkflowRun,
)

pytestmark = pytest.mark.django_db
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


def flaky_flow(on_failure: str = "fail") -> dict:
    """prepare (noop) -> call (test.flaky, failing `input.fail` times) -> done (noop)."""
    return {
        "steps": [
            {"id": "prepare", "type": "noop"},
            {
                "id": "call",
                "type": "tool",
                "tool": "test.flaky",
                "depends_on": ["prepare"],
                "args": {"fail_times": "{{ input.fail }}", "error": "FatalToolError"},
                "on_failure": on_failure,
            },
            {"id": "done", "type": "noop", "depends_on": ["call"]},
        ]
    }


def snapshot() -> dict:
    """Every rollup row as comparable tuples (rows whose counters are all zero left out)."""

    def rows(model, keys, values):
        found = set()
        for row in model.objects.values(*keys, *values):
            numbers = tuple(round(row[name], 6) for name in values)
            if any(numbers):
                found.add((*(row[key] for key in keys), *numbers))
        return found

    return {
        "days": rows(
            KpiDay,
            ["workflow_id", "day"],
            ["started", "succeeded", "failed", "cancelled", "duration_seconds"],
        ),
        "ends": {
            (e.run_id, e.workflow_id, e.status, e.finished_at, round(e.duration_seconds, 6))
            for e in KpiRunEnd.objects.all()
        }
        | {("steps", e.run_id, repr(sorted(e.steps.items()))) for e in KpiRunEnd.objects.all()},
        "steps": rows(KpiStepDay, ["workflow_id", "day", "step_id"], ["finished", "failed"]),
        "errors": rows(KpiStepErrorDay, ["workflow_id", "day", "step_id", "error_type"], ["count"]),
        "escalations": rows(KpiEscalationDay, ["workflow_id", "day", "reason"], ["count"]),
        "approvals": set(
            KpiApproval.objects.values_list(
                "request_id", "workflow_id", "status", "decided_at", "latency_seconds", "breached"
            )
        ),
    }


def test_runs_count_with_exact_durations_outcomes_and_step_failures(make_workflow):
    wf = make_workflow(flaky_flow())
    with clock.frozen(T0) as frozen:
        ok = services.start_run(wf, {"fail": 0}, started_by=SYSTEM)
        frozen.advance(30)
        engine.drain()  # ok: 30 s
        bad = services.start_run(wf, {"fail": 1}, started_by=SYSTEM)
        frozen.advance(90)
        engine.drain()  # bad: fails in `call` after 90 s
        stopped = services.start_run(wf, {"fail": 0}, started_by=SYSTEM)
        frozen.advance(10)
        services.cancel_run(stopped, actor=SYSTEM, reason="not needed")
    statuses = dict(WorkflowRun.objects.values_list("pk", "status"))
    assert [statuses[r.pk] for r in (ok, bad, stopped)] == ["succeeded", "failed", "cancelled"]
    day = KpiDay.objects.get(workflow=wf, day=T0.date())
    assert (day.started, day.succeeded, day.failed, day.cancelled) == (3, 1, 1, 1)
    assert day.duration_seconds == 130
    durations = dict(KpiRunEnd.objects.values_list("run_id", "duration_seconds"))
    assert durations == {ok.pk: 30, bad.pk: 90, stopped.pk: 10}
    steps = {s.step_id: (s.finished, s.failed) for s in KpiStepDay.objects.filter(workflow=wf)}
    assert steps == {"prepare": (2, 0), "call": (2, 1), "done": (1, 0)}  # cancelled: none ran
    error = KpiStepErrorDay.objects.get(workflow=wf)
    assert (error.step_id, error.error_type, error.count) == ("call", "FatalToolError", 1)
    live = snapshot()
    kpis.rebuild(actor=SYSTEM)
    assert snapshot() == live


def test_a_retried_failed_run_counts_once_at_its_last_end(make_workflow):
    wf = make_workflow(flaky_flow())
    with clock.frozen(T0) as frozen:
        run = services.start_run(wf, {"fail": 1}, started_by=SYSTEM)
        frozen.advance(20)
        engine.drain()
        run.refresh_from_db()
        assert run.status == "failed"
        frozen.advance(dt.timedelta(days=1).total_seconds())
        services.retry_step(StepRun.objects.get(run=run, step_id="call"), actor=SYSTEM)
        assert not KpiRunEnd.objects.filter(run=run).exists()  # running again: not ended
        engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    first, second = (
        KpiDay.objects.get(workflow=wf, day=T0.date() + dt.timedelta(days=n)) for n in (0, 1)
    )
    assert (first.started, first.failed, first.succeeded) == (1, 0, 0)
    assert (second.started, second.failed, second.succeeded) == (0, 0, 1)
    assert KpiRunEnd.objects.get(run=run).duration_seconds == 20 + 86400
    assert not KpiStepErrorDay.objects.exclude(count=0).exists()
    live = snapshot()
    kpis.rebuild(actor=SYSTEM)
    assert snapshot() == live


def test_escalations_and_approvals_are_counted(company):
    governance_flow = {
        "steps": [
            {
                "id": "approve",
                "type": "approval",
                "rule": company.rule.slug,
                "summary": "Pay",
                "arguments": {"amount": 10},
            },
            {
                "id": "call",
                "type": "tool",
                "tool": "test.flaky",
                "depends_on": ["approve"],
                "args": {"fail_times": 1, "error": "FatalToolError"},
                "on_failure": "escalate",
            },
        ]
    }
    wf = company.payments
    services.publish_version(wf, governance_flow, actor=SYSTEM)
    with clock.frozen(T0) as frozen:
        run = services.start_run(wf, {}, started_by=company.gina)
        engine.drain()
        from governance.models import ApprovalRequest
        from tests.governance.conftest import fresh

        request = ApprovalRequest.objects.get(run_id=run.pk)
        frozen.advance(300)
        governance.decide_approval(request, user=fresh(company.alice), decision="approve")
        engine.drain()
    approval = KpiApproval.objects.get(request_id=request.pk)
    assert approval.latency_seconds == 300 and approval.status == "approved"
    assert approval.breached is (company.rule.sla_seconds < 300)
    escalation = KpiEscalationDay.objects.get(workflow=wf)
    assert (escalation.reason, escalation.count) == ("step_failed", 1)
    from orchestrator import kpi_report

    report = kpi_report.build(kpi_report.Period(T0.date(), T0.date()), {wf.pk: (wf.slug, wf.name)})
    [escalated] = report.escalations  # opened, and the run has not ended: no run counted yet
    assert (escalated["reason"], escalated["count"], escalated["runs"]) == ("step_failed", 1, 0)
    overall = report.approvals[kpi_report.ALL][0]
    assert (overall["count"], overall["p50"], overall["p95"]) == (1, 300, 300)
    assert overall["breached"] == int(approval.breached)
    live = snapshot()
    kpis.rebuild(actor=SYSTEM)
    assert snapshot() == live


def test_rollups_equal_a_full_recomputation_after_random_runs(make_workflow):
    rng = random.Random(15)
    flows = [make_workflow(flaky_flow()), make_workflow(flaky_flow("continue"))]
    with clock.frozen(T0) as frozen:
        for _ in range(40):
            wf = rng.choice(flows)
            run = services.start_run(wf, {"fail": rng.choice([0, 0, 1, 2])}, started_by=SYSTEM)
            frozen.advance(rng.randint(1, 4000))
            action = rng.random()
            if action < 0.15:
                services.cancel_run(run, actor=SYSTEM, reason="random")
                continue
            if action < 0.25:
                # a worker claims the first step and dies: the sweeper takes it back later
                step = StepRun.objects.get(run=run, step_id="prepare")
                engine.claim(step.pk)
                frozen.advance(3600)
                engine.sweep()
            engine.drain()
            run.refresh_from_db()
            while run.status == "failed" and rng.random() < 0.7:
                frozen.advance(rng.randint(60, 90_000))
                services.retry_step(StepRun.objects.get(run=run, step_id="call"), actor=SYSTEM)
                engine.drain()
                run.refresh_from_db()
    assert (
        KpiRunEnd.objects.count()
        == WorkflowRun.objects.filter(status__in=["succeeded", "failed", "cancelled"]).count()
    )
    live = snapshot()
    assert live["days"] and live["errors"]
    kpis.rebuild(actor=SYSTEM)
    assert snapshot() == live


def test_the_rebuild_command_recomputes_and_is_audited(make_workflow):
    from io import StringIO

    from django.core.management import call_command

    from audit.models import AuditEntry

    wf = make_workflow(flaky_flow())
    with clock.frozen(T0) as frozen:
        services.start_run(wf, {"fail": 1}, started_by=SYSTEM)
        frozen.advance(5)
        engine.drain()
    live = snapshot()
    KpiDay.objects.all().delete()  # a lost rollup, as after a restore of part of the tables
    out = StringIO()
    call_command("rebuild_kpis", "--system", stdout=out)
    assert "1 ended runs over 1 workflow-days" in out.getvalue()
    assert snapshot() == live
    assert AuditEntry.objects.filter(action="orchestrator.kpis.rebuilt").count() == 1
