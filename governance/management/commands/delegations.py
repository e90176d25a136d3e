"""Out-of-office delegations from the command line: set, list and revoke them.

A person delegates their own approvals (`--as alice --to bob`); delegating for someone else
(`--for`) needs the permission to add delegations, as in the admin.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from audit import clock
from governance import services
from governance.management.commands._common import moment, refusals_as_errors, user_named
from governance.models import Delegation, Role


class Command(BaseCommand):
    help = "Set, list and revoke out-of-office delegations of approvals."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="operation", required=True)
        setting = sub.add_parser("set", help="Hand approvals to a delegate for a period.")
        setting.add_argument("--as", dest="username", required=True, help="Who sets it.")
        setting.add_argument("--for", dest="delegator", help="Whose approvals (default: --as).")
        setting.add_argument("--to", dest="delegate", required=True, help="The delegate.")
        setting.add_argument("--from", dest="starts", help="ISO start (default: now).")
        setting.add_argument("--until", dest="ends", required=True, help="ISO end.")
        setting.add_argument("--role", help="Only this role's requests (default: all).")
        setting.add_argument("--note", default="", help="Why: holiday, sick leave...")
        listing = sub.add_parser("list", help="List the delegations a user may see.")
        listing.add_argument("--as", dest="username", required=True)
        revoke = sub.add_parser("revoke", help="End a delegation now.")
        revoke.add_argument("delegation", type=int)
        revoke.add_argument("--as", dest="username", required=True)
        revoke.add_argument("--reason", default="")

    def handle(self, *args, operation, **options):
        return getattr(self, f"do_{operation}")(**options)

    def do_set(self, username, delegator, delegate, starts, ends, role, note, **_):
        actor = user_named(username)
        delegator_user = user_named(delegator, "--for") if delegator else actor
        delegate_user = user_named(delegate, "--to")
        role_row = None
        if role:
            role_row = Role.objects.filter(name=role).first()
            if role_row is None:
                raise CommandError(f"No role is called {role!r}.")
        with refusals_as_errors():
            made = services.create_delegation(
                delegator=delegator_user,
                delegate=delegate_user,
                starts_at=moment(starts, "--from") if starts else clock.now(),
                ends_at=moment(ends, "--until"),
                role=role_row,
                note=note,
                actor=actor,
            )
        self.stdout.write(f"delegation #{made.pk}: {made}")

    def do_list(self, username, **_):
        user = user_named(username)
        rows = list(
            Delegation.objects.restrict(user, "view")
            .select_related("delegator", "delegate", "role")
            .order_by("starts_at", "pk")
        )
        if not rows:
            self.stdout.write(f"No delegation visible to {username}.")
        now = clock.now()
        for delegation in rows:
            state = (
                "revoked"
                if delegation.revoked_at
                else ("in force" if delegation.active_at(now) else "not in force")
            )
            self.stdout.write(
                f"#{delegation.pk}  {delegation.delegator} -> {delegation.delegate}  "
                f"role {delegation.role or 'all'}  {delegation.starts_at.isoformat()} .. "
                f"{delegation.ends_at.isoformat()}  {state}  {delegation.note}"
            )

    def do_revoke(self, username, delegation, reason, **_):
        user = user_named(username)
        with refusals_as_errors():
            found = services.get_for(user, Delegation, delegation, "change")
            services.revoke_delegation(found, actor=user, reason=reason)
        self.stdout.write(f"delegation #{delegation} revoked.")
