"""What agents do when governance decides: a call that needed several approvals is settled.

A tool call whose policy and whose own tool row both ask for an approval opens one request per
rule (same call, same argument digest, same moment). Its step waits for them one at a time, so
when one is rejected (or expires) while the step waits for another, the others are cancelled
and announced: the step wakes at once and tells the model the call was refused.
"""

from __future__ import annotations

from django.dispatch import receiver

from governance.models import ApprovalRequest, ApprovalStatus
from governance.signals import approval_decided


def sibling_requests(request: ApprovalRequest):
    """Return the other pending requests opened for the same tool call as `request`."""
    if request.step_run_id is None or not request.action.startswith("tool."):
        return ApprovalRequest.objects.none()
    return ApprovalRequest.objects.filter(
        step_run_id=request.step_run_id,
        action=request.action,
        arguments_digest=request.arguments_digest,
        created_at=request.created_at,
        status=ApprovalStatus.PENDING,
    ).exclude(pk=request.pk)


@receiver(approval_decided, dispatch_uid="agents.settle_sibling_approvals")
def settle_sibling_approvals(sender, request, **kwargs):
    """Cancel, and announce, the other approvals of a call that one refusal already decided."""
    if request.status == ApprovalStatus.APPROVED:
        return
    # governance's public cancel_request does not announce to the run; the waiting step must
    # wake, so this finishes the request as governance does, with the announcement.
    from audit.actors import SYSTEM
    from governance.actions.approvals import _finish

    for sibling in sibling_requests(request).select_for_update():
        _finish(
            sibling,
            ApprovalStatus.CANCELLED,
            request.decided_at,
            actor=SYSTEM,
            reason=f"request #{request.pk} for the same call was {request.status}",
        )
