"""Signals governance sends, so higher apps (the engine, agents, the inbox) follow without being
imported. Each is sent inside the transaction that made the change: a receiver that writes
commits or rolls back together with it.
"""

from django.dispatch import Signal

# A request reached its final state (approved, rejected, changes requested, expired, cancelled).
# kwargs: request (ApprovalRequest), payload (dict: what the waiting step receives),
# actor (who decided or ended it: a user, or SYSTEM), announce_to_run (False when the waiting
# step itself observed the outcome and must not be signalled).
approval_decided = Signal()

# A request moved one level up its escalation chain. kwargs: request, from_role, to_role.
approval_escalated = Signal()

# A new request waits for a decision. kwargs: request.
approval_requested = Signal()

# A person resolved an escalation. kwargs: escalation (Escalation), actor (the user).
escalation_resolved = Signal()
