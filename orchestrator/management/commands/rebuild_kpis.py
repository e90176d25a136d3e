"""Recompute every KPI rollup from the runs, steps, escalations and approvals (docs/kpis.md)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from governance.management.commands._common import actor_of, add_actor_options
from orchestrator import kpis


class Command(BaseCommand):
    help = "Recompute the KPI rollups from the recorded runs (after an upgrade or a repair)."

    def add_arguments(self, parser):
        add_actor_options(parser)

    def handle(self, *args, **options):
        actor = actor_of("rebuild_kpis", options.get("username"), options.get("system", False))
        counts = kpis.rebuild(actor=actor)
        self.stdout.write(
            f"KPI rollups rebuilt: {counts['ended_runs']} ended runs over {counts['days']} "
            f"workflow-days, {counts['escalation_days']} escalation rows."
        )
