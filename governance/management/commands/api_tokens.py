"""API tokens from the command line: issue (shown once), list and revoke them.

manage.py api_tokens issue --as grace --for monitoring --name "Alertmanager" [--read-only]
    [--expires 2027-06-30]
manage.py api_tokens list --as grace
manage.py api_tokens revoke stw_abc123defg --as grace --reason "leaked in a log"
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from governance import services
from governance.management.commands._common import moment, refusals_as_errors, user_named
from governance.models import ApiToken


class Command(BaseCommand):
    help = "Issue, list and revoke API tokens (a token is shown once, when issued)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="operation", required=True)
        issue = sub.add_parser("issue", help="Issue a token acting as a principal.")
        issue.add_argument("--as", dest="username", required=True, help="Who issues it.")
        issue.add_argument("--for", dest="principal", required=True, help="Whom it acts as.")
        issue.add_argument("--name", required=True, help="What the token is for.")
        issue.add_argument("--read-only", action="store_true", help="Only reads are accepted.")
        issue.add_argument("--expires", help="ISO date or date-time it stops working.")
        listing = sub.add_parser("list", help="List the tokens a user may see.")
        listing.add_argument("--as", dest="username", required=True)
        revoke = sub.add_parser("revoke", help="Revoke a token now.")
        revoke.add_argument("prefix", help="The token's prefix, stw_...")
        revoke.add_argument("--as", dest="username", required=True)
        revoke.add_argument("--reason", required=True)

    def handle(self, *args, operation, **options):
        return getattr(self, f"do_{operation.replace('-', '_')}")(**options)

    def do_issue(self, username, principal, name, read_only, expires, **_):
        actor = user_named(username)
        user = user_named(principal, "--for")
        with refusals_as_errors():
            row, token = services.issue_token(
                user,
                actor=actor,
                name=name,
                read_only=read_only,
                expires_at=moment(expires, "--expires") if expires else None,
            )
        self.stderr.write(f"Token {row.prefix} issued for {user}; it is shown only now:")
        self.stdout.write(token)

    def do_list(self, username, **_):
        actor = user_named(username)
        for row in ApiToken.objects.restrict(actor, "view").select_related("user"):
            state = "revoked" if row.revoked_at else ("read-only" if row.read_only else "active")
            expiry = row.expires_at.isoformat() if row.expires_at else "never"
            self.stdout.write(f"{row.prefix}\t{row.user}\t{state}\texpires {expiry}\t{row.name}")

    def do_revoke(self, prefix, username, reason, **_):
        actor = user_named(username)
        row = ApiToken.objects.restrict(actor, "view").filter(prefix=prefix).first()
        if row is None:
            raise CommandError(f"No token {prefix!r} is visible to {actor}.")
        with refusals_as_errors():
            services.revoke_token(row, actor=actor, reason=reason)
        self.stdout.write(f"{prefix} revoked")
