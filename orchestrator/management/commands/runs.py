"""Operate on runs from the command line: start, signal, cancel, pause, resume, retry, sweep.

Every operation names who acts: `--as USER` (checked and recorded as them) or `--system`
(Steward itself: the sweeper, an operator's housekeeping). Neither is refused.
"""

from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError

from governance.management.commands._common import actor_of, add_actor_options
from orchestrator import engine, services
from orchestrator.models import StepRun, WorkflowRun


def _json_object(text: str) -> dict:
    """Parse a JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise CommandError("expected a JSON object")
    return value


class Command(BaseCommand):
    help = "Start and operate workflow runs through the service layer."

    def add_arguments(self, parser):
        add_actor_options(parser)
        sub = parser.add_subparsers(dest="operation", required=True)
        start = sub.add_parser("start", help="Start a run of a workflow.")
        start.add_argument("workflow", help="Workflow slug.")
        start.add_argument("--input", default="{}", help="Run input as a JSON object.")
        start.add_argument("--business-key", default="")
        start.add_argument("--idempotency-key")
        signal = sub.add_parser("signal", help="Send a named signal to a run.")
        signal.add_argument("run", type=int)
        signal.add_argument("name")
        signal.add_argument("--payload", default="{}", help="Signal payload as a JSON object.")
        for name, text in [
            ("cancel", "Cancel a run."),
            ("pause", "Pause a run."),
            ("resume", "Resume a run."),
        ]:
            sub.add_parser(name, help=text).add_argument("run", type=int)
        sub.add_parser("retry", help="Retry a failed step.").add_argument(
            "step", type=int, help="Step run id."
        )
        sweep = sub.add_parser("sweep", help="Run the sweeper once, or in a loop.")
        sweep.add_argument("--loop", action="store_true")
        sweep.add_argument("--interval", type=float, default=2.0)
        sub.add_parser("show", help="Show a run and its steps.").add_argument("run", type=int)

    def handle(self, *args, operation, username=None, system=False, **options):
        actor = actor_of("runs", username, system)
        try:
            getattr(self, f"do_{operation}")(actor, **options)
        except (services.EngineError, services.DefinitionError) as exc:
            raise CommandError(str(exc)) from exc
        except (WorkflowRun.DoesNotExist, StepRun.DoesNotExist) as exc:
            raise CommandError(str(exc)) from exc

    def do_start(self, actor, workflow, input, business_key, idempotency_key, **_):
        run = services.start_run(
            workflow,
            _json_object(input),
            started_by=actor,
            trigger="command",
            business_key=business_key,
            business_key_policy="fail",
            idempotency_key=idempotency_key,
        )
        self.stdout.write(f"run {run.pk} ({run.status})")

    def do_signal(self, actor, run, name, payload, **_):
        services.send_signal(run, name, _json_object(payload), sent_by=actor)
        self.stdout.write(f"signal {name!r} sent to run {run}")

    def do_cancel(self, actor, run, **_):
        self.stdout.write(f"run {services.cancel_run(run, actor=actor).pk} cancelled")

    def do_pause(self, actor, run, **_):
        self.stdout.write(f"run {services.pause_run(run, actor=actor).pk} paused")

    def do_resume(self, actor, run, **_):
        self.stdout.write(f"run {services.resume_run(run, actor=actor).pk} resumed")

    def do_retry(self, actor, step, **_):
        self.stdout.write(f"retrying {services.retry_step(step, actor=actor)}")

    def do_sweep(self, actor, loop, interval, **_):
        while True:
            counts = engine.sweep()
            self.stdout.write(json.dumps(counts))
            if not loop:
                return
            time.sleep(interval)

    def do_show(self, actor, run, **_):
        run = WorkflowRun.objects.select_related("workflow", "version").get(pk=run)
        self.stdout.write(
            f"run {run.pk} of {run.workflow.slug} v{run.version.number}: {run.status}"
        )
        for step in run.steps.order_by("id"):
            self.stdout.write(f"  {step}: {step.status} (attempt {step.attempt})")
        if run.output is not None:
            self.stdout.write(f"output: {json.dumps(run.output)}")
        if run.error:
            self.stdout.write(f"error: {json.dumps(run.error)}")
