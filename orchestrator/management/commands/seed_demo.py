"""Seed the demo: people and roles, policies, scripted agents, workflows and runs. Idempotent."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orchestrator import demo


class Command(BaseCommand):
    help = (
        "Create the demo company (logins, roles, policies), its scripted agents, workflows and "
        "runs (idempotent; refused with DEBUG off)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DEBUG off (the demo passwords are public: never in production).",
        )
        parser.add_argument(
            "--history-days",
            type=int,
            default=42,
            help="Days of past incident runs to record once, for the KPI page (0: none).",
        )

    def handle(self, *args, force=False, history_days=42, **options):
        if not settings.DEBUG and not force:
            raise CommandError(
                "DEBUG is off: the demo logins have public passwords, so seed_demo refuses to "
                "create them. Pass --force only on a throw-away instance."
            )
        seeded = demo.seed(history_days=history_days)
        out = self.stdout
        out.write(self.style.SUCCESS("Demo seeded."))
        out.write("Workflows: " + ", ".join(sorted(seeded["workflows"])))
        out.write("Scripted agents (rules, no real model): " + ", ".join(seeded["agents"]))
        out.write("Policies: " + ", ".join(sorted(seeded["policies"])))
        if seeded["history"]:
            out.write(f"History: {seeded['history']} past incident-triage runs (the KPI page)")
        out.write("Runs:")
        for spec, run in zip(demo.DEMO_RUNS, seeded["runs"], strict=True):
            out.write(f"  #{run.pk:<4} {spec.workflow:<20} {spec.business_key:<9} {spec.story}")
        out.write("Demo logins (demo-only passwords):")
        for user in demo.DEMO_USERS:
            out.write(f"  {user.username:<6} / {user.password:<11} {user.role}")
