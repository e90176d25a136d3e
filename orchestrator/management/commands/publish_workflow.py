"""Publish a workflow definition file (JSON or YAML) as a new version, creating the workflow.

With `--as USER` the version is proposed by that person and goes live once a second person
approves it (unless the workflow is exempt); without it the system publishes it live at once.
"""

from pathlib import Path

from django.contrib.auth import get_user_model
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
        parser.add_argument(
            "--as", dest="username", help="Propose the version as this user (the author)."
        )

    def handle(self, *args, slug, file, name, note, username=None, **options):
        actor = None
        if username:
            actor = get_user_model().objects.filter(username=username, is_active=True).first()
            if actor is None:
                raise CommandError(f"no active user is called {username!r}")
        try:
            text = file.read_text()
        except OSError as exc:
            raise CommandError(f"cannot read {file}: {exc}") from exc
        try:
            with transaction.atomic():  # a new workflow is created only with a valid first version
                workflow = Workflow.objects.filter(slug=slug).first()
                if workflow is None:
                    workflow = services.create_workflow(slug=slug, name=name or slug, actor=actor)
                version = services.publish_version(workflow, text, note=note, actor=actor)
        except services.DefinitionError as exc:
            raise CommandError(
                "\n".join(["invalid definition:", *(f"  {p}" for p in exc.problems)])
            ) from exc
        except services.EngineError as exc:  # refused, or no rule says who approves
            if isinstance(exc, services.OperationDenied | services.OperationNotVisible):
                exc.audit()  # its first entry went with the rolled-back transaction
            raise CommandError(str(exc)) from exc
        if version.approval_request_id is not None:
            self.stdout.write(
                f"proposed {version}: it goes live once a second person approves "
                f"request #{version.approval_request_id}"
            )
        else:
            self.stdout.write(f"published {version} (live)")
