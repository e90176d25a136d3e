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
    KpiAck,
    KpiAgentDay,
    KpiApproval,
    KpiDay,
    KpiDurationDay,
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
        "durations": rows(KpiDurationDay, ["workflow_id", "day", "bucket"], ["count"])
        | {("end day", e.run_id, e.day) for e in KpiRunEnd.objects.all()},
        "steps": rows(KpiStepDay, ["workflow_id", "day", "step_id"], ["finished", "failed"]),
        "errors": rows(KpiStepErrorDay, ["workflow_id", "day", "step_id", "error_type"], ["count"]),
        "escalations": rows(KpiEscalationDay, ["workflow_id", "day", "reason"], ["count"]),
        "approvals": set(
            KpiApproval.objects.values_list(
                "request_id",
                "workflow_id",
                "status",
                "decided_at",
                "latency_seconds",
                "breached",
                "role_name",
                "approver_name",
                "seen_at",
                "wait_seconds",
                "decide_seconds",
            )
        ),
        "people": rows(KpiDay, ["workflow_id", "day"], ["escalated", "by_human"])
        | rows(KpiEscalationDay, ["workflow_id", "day", "reason"], ["runs"])
        | {(e.run_id, tuple(e.escalation_reasons), e.approvals) for e in KpiRunEnd.objects.all()},
        "acks": set(
            KpiAck.objects.values_list("run_id", "workflow_id", "acknowledged_at", "seconds")
        ),
        "agents": rows(
            KpiAgentDay,
            ["workflow_id", "day", "agent_slug"],
            [
                "model_calls",
                "input_tokens",
                "output_tokens",
                "cost",
                "tool_calls",
                "denied",
                "approvals",
                "escalated",
            ],
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


def people_flow(company, ack: dict) -> dict:
    """prepare -> approve (the company's rule) -> call (flaky, escalated when it fails)."""
    return {
        "acknowledgement": ack,
        "steps": [
            {"id": "prepare", "type": "noop"},
            {
                "id": "approve",
                "type": "approval",
                "depends_on": ["prepare"],
                "rule": company.rule.slug,
                "summary": "Pay",
                "arguments": {"amount": 10},
            },
            {
                "id": "call",
                "type": "tool",
                "tool": "test.flaky",
                "depends_on": ["approve"],
                "args": {"fail_times": "{{ input.fail }}", "error": "FatalToolError"},
                "on_failure": "escalate",
            },
        ],
    }


def test_time_to_acknowledge_waiting_to_be_seen_and_deciding_are_exact(company):
    from governance.models import ApprovalRequest, ApprovalSeen
    from orchestrator import kpi_report
    from tests.governance.conftest import fresh

    wf = company.payments
    services.publish_version(wf, people_flow(company, {"step": "prepare"}), actor=SYSTEM)
    services.declare_manual_baseline(
        wf, ack_seconds=900, target_ack_seconds=300, source="ITSM export", actor=SYSTEM
    )
    with clock.frozen(T0) as frozen:
        run = services.start_run(wf, {"fail": 0}, started_by=company.gina)
        frozen.advance(40)
        engine.drain()  # prepare succeeds at +40 s: acknowledged
        request = ApprovalRequest.objects.get(run_id=run.pk)
        frozen.advance(120)
        governance.record_approval_seen(request, user=fresh(company.gina))  # not an approver
        assert not ApprovalSeen.objects.exists()
        governance.record_approval_seen(request, user=fresh(company.alice))
        frozen.advance(60)
        governance.record_approval_seen(request, user=fresh(company.alice))  # once only
        frozen.advance(120)
        governance.decide_approval(request, user=fresh(company.alice), decision="approve")
        engine.drain()
        # A second run decided unseen (through the API): seen at its decision.
        unseen = services.start_run(wf, {"fail": 0}, started_by=company.gina)
        frozen.advance(10)
        engine.drain()
        other = ApprovalRequest.objects.get(run_id=unseen.pk)
        frozen.advance(500)
        governance.decide_approval(other, user=fresh(company.alice), decision="approve")
        engine.drain()
    assert ApprovalSeen.objects.get().seen_by_name == "alice"
    from audit.models import AuditEntry

    assert AuditEntry.objects.filter(action="governance.approval.seen").count() == 1
    assert dict(KpiAck.objects.values_list("run_id", "seconds")) == {run.pk: 40, unseen.pk: 10}
    rows = {row.request_id: row for row in KpiApproval.objects.all()}
    seen_row, unseen_row = rows[request.pk], rows[other.pk]
    assert (seen_row.wait_seconds, seen_row.decide_seconds, seen_row.latency_seconds) == (
        120,
        180,
        300,
    )
    assert seen_row.approver_name == "alice"
    assert (unseen_row.wait_seconds, unseen_row.decide_seconds) == (500, 0)
    day = KpiDay.objects.get(workflow=wf, day=T0.date())
    assert (day.succeeded, day.by_human, day.escalated) == (2, 2, 0)
    report = kpi_report.build(kpi_report.Period(T0.date(), T0.date()), {wf.pk: (wf.slug, wf.name)})
    ack = report.acks[kpi_report.ALL][0]
    assert (ack["count"], ack["p50"]) == (2, 25) and ack["p95"] == pytest.approx(38.5)
    assert report.baselines[wf.pk].ack_seconds == 900
    by_alice = report.approvers["alice"][0]
    assert (by_alice["count"], by_alice["wait_p50"], by_alice["decide_p50"]) == (2, 310, 90)
    assert report.current[kpi_report.ALL].without_human == 0
    assert report.tool_calls[0].tool_calls == 2  # the tool steps' calls, allowed
    live = snapshot()
    kpis.rebuild(actor=SYSTEM)
    assert snapshot() == live


def test_a_signal_can_be_the_acknowledgement(make_workflow):
    wf = make_workflow(
        {
            "acknowledgement": {"signal": "acked"},
            "steps": [
                {"id": "wait", "type": "wait", "signal": "acked"},
                {"id": "more", "type": "wait", "signal": "done", "depends_on": ["wait"]},
            ],
        }
    )
    with clock.frozen(T0) as frozen:
        run = services.start_run(wf, {}, started_by=SYSTEM)
        engine.drain()
        frozen.advance(75)
        services.send_signal(run, "acked", {}, sent_by=SYSTEM)
        frozen.advance(30)
        services.send_signal(run, "acked", {}, sent_by=SYSTEM)  # a second one changes nothing
        engine.drain()
        services.send_signal(run, "done", {}, sent_by=SYSTEM)
        engine.drain()
    assert KpiAck.objects.get(run=run).seconds == 75
    live = snapshot()
    kpis.rebuild(actor=SYSTEM)
    assert snapshot() == live


def test_an_unknown_acknowledgement_step_is_refused(make_workflow):
    from orchestrator.definitions import validate_definition

    problems = validate_definition(
        {"acknowledgement": {"step": "nope"}, "steps": [{"id": "a", "type": "noop"}]}
    )
    assert [p.field for p in problems] == ["acknowledgement"]


def test_model_calls_count_per_agent_with_tokens_and_cost(make_workflow):
    from decimal import Decimal

    from agents.models import ModelCall

    wf = make_workflow(flaky_flow())
    with clock.frozen(T0):
        run = services.start_run(wf, {"fail": 0}, started_by=SYSTEM)
        engine.drain()
    for n in range(3):
        ModelCall.objects.create(
            agent_slug="triage",
            provider="fake",
            model="m",
            key=f"call-{n}",
            run_id=run.pk,
            input_tokens=100 + n,
            output_tokens=10,
            cost=Decimal("0.0015"),
            created_at=T0,
        )
    row = KpiAgentDay.objects.get(workflow=wf, agent_slug="triage")
    assert (row.model_calls, row.input_tokens, row.output_tokens) == (3, 303, 30)
    assert row.cost == Decimal("0.0045")
    live = snapshot()
    kpis.rebuild(actor=SYSTEM)
    assert snapshot() == live


def test_rollups_equal_a_full_recomputation_after_random_people_and_signals(company):
    """Random runs with approvals (seen or not, approved or refused), escalations, cancels,
    retries and acknowledgements, on an injected clock: the live rollups equal a rebuild."""
    from governance.models import ApprovalRequest, Escalation
    from tests.governance.conftest import fresh

    rng = random.Random(1515)
    wf = company.payments
    services.publish_version(wf, people_flow(company, {"signal": "ack"}), actor=SYSTEM)
    with clock.frozen(T0) as frozen:
        for _ in range(25):
            run = services.start_run(wf, {"fail": rng.choice([0, 0, 1])}, started_by=company.gina)
            frozen.advance(rng.randint(1, 600))
            if rng.random() < 0.6:
                services.send_signal(run, "ack", {}, sent_by=SYSTEM)
            engine.drain()
            request = ApprovalRequest.objects.filter(run_id=run.pk).first()
            frozen.advance(rng.randint(1, 1200))  # within the request's deadline
            if request is not None and rng.random() < 0.6:
                governance.record_approval_seen(request, user=fresh(company.alice))
                frozen.advance(rng.randint(1, 1200))
            action = rng.random()
            if request is None or action < 0.15:
                services.cancel_run(run, actor=SYSTEM, reason="random")
                continue
            decision = "approve" if action < 0.85 else "reject"
            governance.decide_approval(
                request, user=fresh(company.alice), decision=decision, comment="random"
            )
            engine.drain()
            frozen.advance(rng.randint(1, 90_000))
            run.refresh_from_db()
            if run.status == "running" and Escalation.objects.filter(run_id=run.pk).exists():
                services.cancel_run(run, actor=SYSTEM, reason="escalated, stopped")
    assert KpiAck.objects.exists() and KpiApproval.objects.filter(seen_at__isnull=False).exists()
    assert KpiDay.objects.filter(escalated__gt=0).exists()
    live = snapshot()
    kpis.rebuild(actor=SYSTEM)
    assert snapshot() == live


TEN_NOOPS = {
    "steps": [
        {"id": f"s{i}", "type": "noop", **({"depends_on": [f"s{i - 1}"]} if i else {})}
        for i in range(10)
    ]
}
_ALL_ROLLUPS = (
    KpiDay,
    KpiRunEnd,
    KpiDurationDay,
    KpiStepDay,
    KpiStepErrorDay,
    KpiEscalationDay,
    KpiApproval,
    KpiAck,
    KpiAgentDay,
)


@pytest.mark.parametrize("on", [True, False])
def test_the_rollups_can_be_switched_off(settings, company, on):
    """STEWARD_KPI_ROLLUPS=0 (bench/engine.py --kpi-ab): no rollup row is written at all."""
    settings.STEWARD_KPI_ROLLUPS = on
    governed = {
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
    services.publish_version(wf, governed, actor=SYSTEM)
    for model in _ALL_ROLLUPS:  # what the fixtures' own runs counted
        model.objects.all().delete()
    with clock.frozen(T0) as frozen:
        run = services.start_run(wf, {}, started_by=company.gina)
        engine.drain()
        from governance.models import ApprovalRequest
        from tests.governance.conftest import fresh

        request = ApprovalRequest.objects.get(run_id=run.pk)
        frozen.advance(300)
        governance.decide_approval(request, user=fresh(company.alice), decision="approve")
        engine.drain()
        services.cancel_run(WorkflowRun.objects.get(pk=run.pk), actor=SYSTEM, reason="done")
    written = {model.__name__ for model in _ALL_ROLLUPS if model.objects.exists()}
    if on:
        assert written >= {
            "KpiDay",
            "KpiRunEnd",
            "KpiDurationDay",
            "KpiStepDay",
            "KpiEscalationDay",
            "KpiApproval",
        }
    else:
        assert written == set()
