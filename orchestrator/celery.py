"""The Celery application: workers execute ready steps; beat runs the sweeper."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

app = Celery("steward")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_connections(sender=None, **kwargs) -> None:
    """Around each task, drop database connections past CONN_MAX_AGE or left unusable.

    This is what Django does around each web request. Celery's own Django fixup would close
    every connection around every task instead (settings.CELERY_DB_REUSE_MAX turns that off),
    so that each step message paid for a new PostgreSQL connection. A task run eagerly, inside
    its caller (apply(), tests), leaves the caller's connection alone, as Celery's fixup does.
    """
    from django.db import close_old_connections

    if getattr(getattr(sender, "request", None), "is_eager", False):
        return
    close_old_connections()
