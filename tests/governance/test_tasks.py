"""Governance's beat task: the overdue-approval sweep, scheduled, thin and safe to run twice."""

from __future__ import annotations

from django.conf import settings

from audit import clock
from audit.models import AuditEntry
from governance import services, tasks
from governance.models import ApprovalStatus
from orchestrator.celery import app


def ask(company):
    """Open a request (asked for by oscar, so the managers at level 1 may decide it)."""
    return services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 10},
        target=company.payments,
        requested_by=company.oscar,
    )


def test_beat_runs_the_sweep_and_the_worker_knows_the_task():
    entry = settings.CELERY_BEAT_SCHEDULE["governance-overdue-approvals"]
    assert entry["task"] == tasks.sweep_overdue_approvals.name
    assert entry["schedule"] > 0
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    assert app.tasks[entry["task"]].name == tasks.sweep_overdue_approvals.name


def test_the_task_escalates_what_is_overdue_and_running_it_twice_changes_nothing(company):
    with clock.frozen() as frozen:
        overdue, on_time = ask(company), None
        frozen.advance(company.rule.sla_seconds + 1)
        on_time = ask(company)
        assert tasks.sweep_overdue_approvals.apply().get() == 1
        assert tasks.sweep_overdue_approvals.apply().get() == 0  # nothing is overdue any more
    overdue.refresh_from_db()
    on_time.refresh_from_db()
    assert (overdue.level, overdue.role, overdue.status) == (
        1,
        company.managers,
        ApprovalStatus.PENDING,
    )
    assert on_time.level == 0
    assert AuditEntry.objects.filter(action="governance.approval.escalated").count() == 1


def test_after_the_last_level_the_task_expires_the_request_once(company):
    with clock.frozen() as frozen:
        request = ask(company)
        frozen.advance(company.rule.sla_seconds * 2 + 1)
        tasks.sweep_overdue_approvals.apply()
        tasks.sweep_overdue_approvals.apply()
    request.refresh_from_db()
    assert request.status == ApprovalStatus.EXPIRED
    assert AuditEntry.objects.filter(action="governance.approval.expired").count() == 1
