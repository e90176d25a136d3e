"""The public write API of governance: what views, the admin, commands, tasks and other apps call.

The implementations live in governance/actions/ (one module per subject); import from here.
Services take the acting user as a required `actor` (or `user` for decisions); `SYSTEM`
(audit.actors) is the system and is not checked, and `None` is refused. Refusals raise
AccessDenied (403), NotVisible (404) or GovernanceError (with a `code`), roll back, and are
audited.
"""

from governance.actions.approvals import (
    AlreadyDecided,
    ApprovalMismatch,
    ApprovalRefused,
    ReasonRequired,
    approval_applies,
    cancel_request,
    create_approval_rule,
    decide_approval,
    delete_approval_rule,
    eligible_deciders,
    escalate_overdue,
    outcome_payload,
    pending_for,
    request_approval,
    require_approval_for,
    sweep_overdue,
    update_approval_rule,
)
from governance.actions.approvals import (
    cancel_for_run as cancel_approvals_for_run,
)
from governance.actions.common import GovernanceError, audited_refusals, digest
from governance.actions.delegations import (
    create_delegation,
    delete_delegation,
    revoke_delegation,
    update_delegation,
)
from governance.actions.escalations import (
    cancel_for_run as cancel_escalations_for_run,
)
from governance.actions.escalations import (
    escalate_failed_step,
    open_escalation,
    resolution_payload,
    resolve_escalation,
)
from governance.actions.events import announce, prune_live_events
from governance.actions.policies import (
    PolicyDecision,
    create_policy,
    decide,
    delete_policy,
    delete_rule,
    draft_rules,
    dry_run,
    policy_drafts,
    publish_draft,
    replay,
    rule_problems,
    rule_snapshot,
    rules_from_snapshot,
    save_rule,
    update_policy,
)
from governance.actions.principals import (
    accountable_owner,
    create_agent_principal,
    create_integration_principal,
    create_person,
    ensure_principal,
    is_person,
    kind_of,
    principal_of,
    set_owner,
)
from governance.actions.roles import (
    add_member,
    create_role,
    delete_role,
    grant,
    holds_role,
    remove_member,
    revoke,
    role_grants,
    roles_of,
    set_members,
    update_role,
)
from governance.actions.runs import close_for_ended_run, holds_open_for_run
from governance.actions.tokens import TokenRefused, authenticate_token, issue_token, revoke_token
from governance.actions.webhooks import (
    DestinationRefused,
    create_subscription,
    delete_subscription,
    enqueue_event,
    replay_delivery,
    update_subscription,
)
from governance.permissions import AccessDenied, NotVisible, can
from governance.permissions import get_for as _get_for

# The checked read every view and service of every app uses: 404 for what the user cannot see,
# 403 for what they see but may not do; each refusal is audited.
get_for = audited_refusals(_get_for)

__all__ = [
    "announce",
    "prune_live_events",
    "DestinationRefused",
    "create_subscription",
    "delete_subscription",
    "enqueue_event",
    "replay_delivery",
    "update_subscription",
    "AccessDenied",
    "TokenRefused",
    "authenticate_token",
    "issue_token",
    "revoke_token",
    "AlreadyDecided",
    "ApprovalMismatch",
    "ApprovalRefused",
    "ReasonRequired",
    "GovernanceError",
    "NotVisible",
    "PolicyDecision",
    "accountable_owner",
    "add_member",
    "approval_applies",
    "cancel_request",
    "can",
    "cancel_approvals_for_run",
    "cancel_escalations_for_run",
    "close_for_ended_run",
    "create_agent_principal",
    "create_approval_rule",
    "create_delegation",
    "create_integration_principal",
    "create_person",
    "create_policy",
    "create_role",
    "decide",
    "decide_approval",
    "delete_approval_rule",
    "delete_delegation",
    "delete_policy",
    "delete_role",
    "delete_rule",
    "digest",
    "draft_rules",
    "dry_run",
    "policy_drafts",
    "publish_draft",
    "replay",
    "rule_snapshot",
    "rules_from_snapshot",
    "eligible_deciders",
    "ensure_principal",
    "escalate_failed_step",
    "escalate_overdue",
    "get_for",
    "grant",
    "holds_open_for_run",
    "holds_role",
    "is_person",
    "kind_of",
    "open_escalation",
    "outcome_payload",
    "pending_for",
    "principal_of",
    "remove_member",
    "request_approval",
    "require_approval_for",
    "resolution_payload",
    "resolve_escalation",
    "revoke",
    "revoke_delegation",
    "role_grants",
    "roles_of",
    "rule_problems",
    "save_rule",
    "set_members",
    "set_owner",
    "sweep_overdue",
    "update_approval_rule",
    "update_delegation",
    "update_policy",
    "update_role",
]
