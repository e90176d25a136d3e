"""What governance holds open for a workflow run: pending approvals and open escalations.

The engine (which governance never imports) tells governance when a run has ended, through its
receiver; the reads and writes on governance's own tables live here.
"""

from __future__ import annotations

from django.db import connection, transaction

from audit.db import execute_prepared
from governance.actions.approvals import cancel_for_run as cancel_approvals_for_run
from governance.actions.escalations import cancel_for_run as cancel_escalations_for_run
from governance.models import ApprovalRequest, ApprovalStatus, Escalation, EscalationStatus

_HOLDS_OPEN_SQL = (
    f"SELECT EXISTS (SELECT 1 FROM {ApprovalRequest._meta.db_table} "
    "WHERE run_id = %s AND status = %s) "
    f"OR EXISTS (SELECT 1 FROM {Escalation._meta.db_table} WHERE run_id = %s AND status = %s)"
)


def holds_open_for_run(run_id: int) -> bool:
    """Tell, in one query, whether a run has a pending approval request or an open escalation."""
    if connection.vendor == "postgresql":  # every run ends here: a prepared statement
        params = [run_id, ApprovalStatus.PENDING, run_id, EscalationStatus.OPEN]
        return execute_prepared(connection, _HOLDS_OPEN_SQL, params)[0][0]
    pending = ApprovalRequest.objects.filter(run_id=run_id, status=ApprovalStatus.PENDING)
    open_ = Escalation.objects.filter(run_id=run_id, status=EscalationStatus.OPEN)
    return pending.exists() or open_.exists()


def close_for_ended_run(run_id: int, *, reason: str) -> dict[str, int]:
    """Cancel what governance still holds open for a run that has ended; say how many of each."""
    # Most runs end holding nothing open: one read, outside any transaction, spares them the
    # two transactions (and their locking reads) of the cancellations.
    if not holds_open_for_run(run_id):
        return {"approvals": 0, "escalations": 0}
    approvals = cancel_approvals_for_run(run_id, reason=reason)
    with transaction.atomic():
        escalations = cancel_escalations_for_run(run_id, reason=reason)
    return {"approvals": approvals, "escalations": escalations}
