"""Approval requests from the command line: list what waits for a person, and decide it.

Decisions go through the decision service, which applies every rule (separation of duties,
N distinct approvers, the arguments' digest, the deadline, delegations); a refused decision
makes the command fail with the reason, and the refusal is in the audit log.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from governance import services
from governance.management.commands._common import (
    actor_of,
    add_actor_options,
    refusals_as_errors,
    user_named,
)
from governance.models import ApprovalRequest, DecisionKind

DECISIONS = {
    "approve": DecisionKind.APPROVE,
    "reject": DecisionKind.REJECT,
    "request-changes": DecisionKind.REQUEST_CHANGES,
}


class Command(BaseCommand):
    help = "List pending approval requests and decide them as a named person."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="operation", required=True)
        pending = sub.add_parser("pending", help="List the requests a user may decide now.")
        pending.add_argument("--as", dest="username", required=True, help="Whose inbox.")
        show = sub.add_parser("show", help="Show one request as a user sees it.")
        show.add_argument("request", type=int)
        show.add_argument("--as", dest="username", required=True)
        for name in DECISIONS:
            decide = sub.add_parser(name, help=f"{name.replace('-', ' ').capitalize()} a request.")
            decide.add_argument("request", type=int)
            decide.add_argument("--as", dest="username", required=True, help="Who decides.")
            decide.add_argument(
                "--reason",
                "--comment",
                dest="comment",
                default="",
                help="Why; kept with the decision (required to reject or request changes).",
            )
            decide.add_argument(
                "--digest",
                help="The arguments' SHA-256 you reviewed (from `show`); refused if they changed.",
            )
        sweep = sub.add_parser("sweep", help="Escalate or expire every request past its SLA, once.")
        add_actor_options(sweep)

    def handle(self, *args, operation, **options):
        if operation in DECISIONS:
            return self.decide(DECISIONS[operation], **options)
        return getattr(self, f"do_{operation}")(**options)

    def do_pending(self, username, **_):
        user = user_named(username)
        requests = list(services.pending_for(user).select_related("role").order_by("due_at", "pk"))
        if not requests:
            self.stdout.write(f"No request waits for {username}.")
            return
        for request in requests:
            given = request.decisions.filter(decision=DecisionKind.APPROVE).count()
            self.stdout.write(
                f"#{request.pk}  {request.action}  on {request.target_repr or '-'}  "
                f"risk {request.risk}  role {request.role or '-'}  "
                f"{given} of {request.approvals_required} approvals  "
                f"due {request.due_at:%Y-%m-%d %H:%M} UTC  "
                f"deadline {request.expires_at:%Y-%m-%d %H:%M} UTC  "
                f"digest {request.arguments_digest[:12]}"
            )

    def do_show(self, username, request, **_):
        user = user_named(username)
        with refusals_as_errors():
            found = services.get_for(user, ApprovalRequest, request)
        lines = [
            f"request #{found.pk}: {found.action} ({found.get_status_display().lower()})",
            f"summary: {found.summary or '-'}",
            f"target: {found.target_repr or '-'} ({found.target_type}:{found.target_id})",
            f"arguments: {json.dumps(found.arguments, sort_keys=True)}",
            f"digest: {found.arguments_digest}",
            f"risk: {found.risk}; approvals required: {found.approvals_required}",
            f"requested by: {found.requested_by_name or '-'}; "
            f"run initiator: {found.run_initiator_name or '-'}; "
            f"accountable owner: {found.accountable_owner_name or '-'}",
            f"run: {found.run_id or '-'} step {found.step_id or '-'}",
            f"role now: {found.role or '-'} (level {found.level}); due {found.due_at.isoformat()};"
            f" deadline {found.expires_at.isoformat()}",
        ]
        for decision in found.decisions.order_by("decided_at", "pk"):
            behalf = f" for {decision.on_behalf_of_name}" if decision.on_behalf_of_name else ""
            lines.append(
                f"  {decision.decided_at.isoformat()} {decision.decided_by_name}{behalf}: "
                f"{decision.decision} {decision.comment!r}"
            )
        self.stdout.write("\n".join(lines))

    def decide(self, decision, username, request, comment, digest, **_):
        user = user_named(username)
        with refusals_as_errors():
            made = services.decide_approval(
                request, user=user, decision=decision, comment=comment, expected_digest=digest
            )
        decided = ApprovalRequest.objects.get(pk=request)
        behalf = f" on behalf of {made.on_behalf_of_name}" if made.on_behalf_of_name else ""
        self.stdout.write(
            f"request #{decided.pk}: {username}{behalf} decided {decision} as {made.role_name}; "
            f"the request is {decided.get_status_display().lower()}."
        )

    def do_sweep(self, username=None, system=False, **_):
        actor = actor_of("approvals sweep", username, system)
        looked_at = services.sweep_overdue(actor=actor)
        self.stdout.write(f"{looked_at} overdue request(s) escalated or expired.")
