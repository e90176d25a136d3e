"""The Celery application: workers execute ready steps; beat runs the sweeper."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")

app = Celery("steward")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _close_old_connections(**kwargs) -> None:
    """Around each task, drop database connections past CONN_MAX_AGE or left unusable.

    This is what Django does around each web request. Celery's own Django fixup would close
    every connection around every task instead (settings.CELERY_DB_REUSE_MAX turns that off),
    so that each step message paid for a new PostgreSQL connection.
    """
    from django.db import close_old_connections

    close_old_connections()
