"""Publish a workflow definition file (JSON or YAML) as a new version, creating the workflow."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from orchestrator import services
from orchestrator.models import Workflow


class Command(BaseCommand):
    help = "Validate and publish a workflow definition file as the workflow's next version."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("file", type=Path)
        parser.add_argument("--name", help="Name for a new workflow (default: the slug).")
        parser.add_argument("--note", default="")

    def handle(self, *args, slug, file, name, note, **options):
        try:
            text = file.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc}") from exc
        try:
            with transaction.atomic():  # a new workflow is created only with a valid first version
                workflow = Workflow.objects.filter(slug=slug).first()
                if workflow is None:
                    workflow = services.create_workflow(slug=slug, name=name or slug)
                version = services.publish_version(workflow, text, note=note)
        except services.DefinitionError as exc:
            raise CommandError(
                "\n".join(["invalid definition:", *(f"  {p}" for p in exc.problems)])
            ) from exc
        self.stdout.write(f"published {version}")
