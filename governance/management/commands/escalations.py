"""Human escalations from the command line: list them, take over, send back, or stop the run.

Resolutions go through the escalation service: only a person the eligibility rule allows (the
escalation's role, not the run's initiator nor whoever raised it) may resolve it, once; the
engine then supplies the result, retries the step, or cancels the run.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from governance import services
from governance.management.commands._common import json_value, refusals_as_errors, user_named
from governance.models import Escalation, Resolution

RESOLUTIONS = {
    "take-over": Resolution.TAKE_OVER,
    "send-back": Resolution.RETRY,
    "stop": Resolution.STOP,
}


class Command(BaseCommand):
    help = "List human escalations and resolve them as a named person."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="operation", required=True)
        listing = sub.add_parser("list", help="List the escalations a user may resolve now.")
        listing.add_argument("--as", dest="username", required=True)
        listing.add_argument(
            "--all", action="store_true", help="Every one the user may see, resolved ones too."
        )
        for name, text in [
            ("take-over", "Take over and supply the step's result (--result JSON)."),
            ("send-back", "Send the step back for a retry."),
            ("stop", "Stop the run."),
        ]:
            resolve = sub.add_parser(name, help=text)
            resolve.add_argument("escalation", type=int)
            resolve.add_argument("--as", dest="username", required=True, help="Who resolves.")
            resolve.add_argument("--comment", default="")
            if name == "take-over":
                resolve.add_argument("--result", required=True, help="The result, as JSON.")

    def handle(self, *args, operation, **options):
        if operation == "list":
            return self.do_list(**options)
        return self.resolve(RESOLUTIONS[operation], **options)

    def do_list(self, username, all, **_):
        user = user_named(username)
        action = "view" if all else "resolve"  # the inbox: what the eligibility rule allows
        escalations = Escalation.objects.restrict(user, action).select_related("role")
        rows = list(escalations.order_by("created_at", "pk"))
        if not rows:
            self.stdout.write(f"No escalation for {username}.")
            return
        for escalation in rows:
            done = (
                f" -> {escalation.resolution} by {escalation.resolved_by_name}"
                if escalation.resolution
                else ""
            )
            self.stdout.write(
                f"#{escalation.pk}  {escalation.status}{done}  {escalation.reason}  "
                f"role {escalation.role or '-'}  run {escalation.run_id or '-'} "
                f"step {escalation.step_id or '-'}  {escalation.summary}"
            )

    def resolve(self, resolution, username, escalation, comment, result=None, **_):
        user = user_named(username)
        supplied = json_value(result, "--result")
        if resolution == Resolution.TAKE_OVER and supplied is None:
            raise CommandError("Taking over needs --result (JSON; null is not a result).")
        with refusals_as_errors():
            resolved = services.resolve_escalation(
                escalation, user=user, resolution=resolution, result=supplied, comment=comment
            )
        outcome = ""
        if resolved.result is not None:
            outcome = f" with result {json.dumps(resolved.result)}"
        self.stdout.write(
            f"escalation #{resolved.pk}: {resolved.get_resolution_display().lower()} "
            f"by {username}{outcome}."
        )
