"""A decision reaches a run only through governance's services: a forged signal decides nothing."""

from __future__ import annotations

import pytest

from audit.actors import SYSTEM
from governance.models import ApprovalRequest, ApprovalStatus
from orchestrator import engine
from orchestrator import services as workflows
from orchestrator.models import RunSignal, RunStatus
from tests.governance.test_engine_steps import (  # noqa: F401  (the fixture: oscar may start runs)
    _oscar_starts_payments,
    approval_flow,
    start,
    statuses,
)


@pytest.mark.parametrize("prefix", ["approval", "escalation", "children"])
def test_reserved_signal_names_are_refused_from_outside(company, prefix):
    run = start(company, approval_flow())
    request = ApprovalRequest.objects.get(run_id=run.pk)
    name = f"{prefix}:{request.pk}"
    with pytest.raises(engine.EngineError, match="reserved"):
        workflows.send_signal(run, name, {"status": "approved"}, sent_by=company.gina)
    assert not RunSignal.objects.filter(run=run, name=name).exists()
    assert statuses(run)["approve"] == "waiting"


def test_a_signal_without_a_decision_does_not_approve(company):
    """Even a signal that gets through (the owner's path, misused) is only "look again"."""
    run = start(company, approval_flow())
    request = ApprovalRequest.objects.get(run_id=run.pk)
    engine.send_signal(
        run.pk, request.signal_name, {"status": "approved"}, owner_app=True, sent_by=SYSTEM
    )
    engine.drain()
    run.refresh_from_db()
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING
    assert run.status == RunStatus.RUNNING
    assert statuses(run)["approve"] == "waiting"
    assert statuses(run).get("pay") in (None, "pending")
