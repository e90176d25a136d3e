"""What governance holds open for a run: its own query, and atomic escalation writes."""

import re
from pathlib import Path

import pytest
from django.db import transaction

from audit import services as audit
from governance import services
from governance.actions import escalations
from governance.models import ApprovalStatus, Escalation, EscalationStatus

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def _open(company, run_id):
    return services.open_escalation(
        reason="failure", summary="step failed", role=company.managers, run_id=run_id
    )


def test_a_run_holds_governance_open_while_an_escalation_or_approval_waits(company):
    run_id = company.run.pk
    assert services.holds_open_for_run(run_id) is False
    escalation = _open(company, run_id)
    assert services.holds_open_for_run(run_id) is True
    request = services.request_approval(
        action="tool.pay", approval_rule=company.rule, arguments={"amount": 5}, run_id=run_id
    )
    closed = services.close_for_ended_run(run_id, reason="run ended")
    assert closed == {"approvals": 1, "escalations": 1}
    assert services.holds_open_for_run(run_id) is False
    escalation.refresh_from_db()
    request.refresh_from_db()
    assert escalation.status == EscalationStatus.CANCELLED
    assert request.status == ApprovalStatus.CANCELLED
    assert services.close_for_ended_run(run_id, reason="again") == {
        "approvals": 0,
        "escalations": 0,
    }


def test_no_app_but_governance_queries_governance_tables_in_sql():
    from django.apps import apps

    governance_tables = [m._meta.db_table for m in apps.get_app_config("governance").get_models()]
    mentions = re.compile(
        "|".join(
            [rf"\b{re.escape(table)}\b" for table in governance_tables]
            + [
                rf"\b{m.__name__}\._meta\.db_table"
                for m in apps.get_app_config("governance").get_models()
            ]
        )
    )
    offenders = [
        str(path.relative_to(ROOT))
        for app in ("orchestrator", "agents", "audit")
        for path in (ROOT / app).rglob("*.py")
        if "migrations" not in path.parts and mentions.search(path.read_text())
    ]
    assert offenders == []


@pytest.mark.django_db(transaction=True)
def test_cancelling_a_runs_escalations_needs_no_transaction_of_the_caller(company):
    escalation = _open(company, company.run.pk)
    # Called in autocommit mode: its locking read must bring its own transaction.
    assert escalations.cancel_for_run(company.run.pk, reason="run ended") == 1
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_an_escalation_whose_audit_entry_fails_is_not_left_half_written(company, monkeypatch):
    before = Escalation.objects.count()

    def broken(**entry):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(audit, "record", broken)
    with pytest.raises(RuntimeError):
        _open(company, company.run.pk)
    assert Escalation.objects.count() == before
    assert not transaction.get_connection().in_atomic_block
