"""Erase the body of an audit entry (its personal data), recorded as an entry of its own."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from audit import services
from audit.actors import SYSTEM
from audit.models import AuditEntry


class Command(BaseCommand):
    help = (
        "Erase an audit entry's body, giving the reason; the erasure is recorded as its own entry. "
        "The leaf keeps the body's digest, so every proof stays valid."
    )

    def add_arguments(self, parser):
        parser.add_argument("--entry", type=int, required=True, help="Id of the audit entry.")
        parser.add_argument("--reason", required=True, help="Why (recorded in the erasure entry).")
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--by", default="", metavar="USERNAME", help="Who asked for it.")
        who.add_argument(
            "--system", action="store_true", help="Erase as Steward itself (recorded as 'system')."
        )

    def handle(self, *args, entry, reason, by, system=False, **options):
        if system:
            actor = SYSTEM
        elif by:
            try:
                actor = get_user_model().objects.get_by_natural_key(by)
            except get_user_model().DoesNotExist as exc:
                raise CommandError(f"no user {by!r}") from exc
        else:
            raise CommandError(
                "audit_erase_body needs to know who acts: pass --by USERNAME (who asked for the "
                "erasure), or --system to act as Steward itself."
            )
        target = AuditEntry.objects.filter(pk=entry).first()
        if target is None:
            raise CommandError(f"no audit entry #{entry}")
        try:
            erasure = services.erase_body(target, actor=actor, reason=reason)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"erased the body of audit entry #{target.pk}; the erasure is entry #{erasure.pk}"
        )
