"""Celery app for the Steward workers of bench/engine.py: the real app plus two benchmark hooks.

    celery -A steward_worker worker -Q steward-bench -c 2   (bench/engine.py starts it)

The app is orchestrator's own (`orchestrator.celery.app`, the one the Procfile runs): the same
tasks, settings and engine path (`execute_step` -> `engine.run_step`, which runs each step that
becomes ready in-process). Importing this module adds, in this process only:

1. an audit toggle: the engine's audit receiver is swapped for a wrapper that skips it for runs
   whose business key is AUDIT_OFF_KEY, so one worker measures steps with and without their audit
   entries, interleaved. Every other run is audited exactly as in production.
2. a KPI toggle: the engine's KPI receiver (`receivers.keep_kpis`) is swapped for a wrapper that
   skips it for runs whose business key is KPI_OFF_KEY (as STEWARD_KPI_ROLLUPS=0 does for all),
   so one worker measures runs with and without their rollups, interleaved (--kpi-ab).
3. a completion notice: when a run ends, its id and status are published on a Redis channel
   after the commit, so the benchmark waits without polling the database (as a Celery result
   backend notifies its waiters).
"""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
django.setup()

from django.conf import settings  # noqa: E402
from django.db import transaction  # noqa: E402

from orchestrator import receivers  # noqa: E402
from orchestrator.celery import app  # noqa: E402
from orchestrator.models import EventKind  # noqa: E402
from orchestrator.signals import run_events_recorded  # noqa: E402

__all__ = ["AUDIT_OFF_KEY", "DONE_CHANNEL", "KPI_OFF_KEY", "app", "install_hooks"]

AUDIT_OFF_KEY = "bench-audit-off"
KPI_OFF_KEY = "bench-kpi-off"
DONE_CHANNEL = "steward-bench-done"
_ENDED = {EventKind.RUN_SUCCEEDED: "succeeded", EventKind.RUN_FAILED: "failed"}
_ENDED[EventKind.RUN_CANCELLED] = "cancelled"
_redis: tuple[int, object] | None = None


def _client():
    """Return this process's Redis client (a forked worker child makes its own)."""
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        import redis

        _redis = (os.getpid(), redis.Redis.from_url(settings.REDIS_URL))
    return _redis[1]


def audit_unless_off(sender, events, run, **kwargs):
    """Write the events to the audit log as the engine's receiver does, unless the run opts out."""
    if run.business_key != AUDIT_OFF_KEY:
        receivers.audit_run_events(sender, events=events, run=run, **kwargs)


def kpis_unless_off(sender, events, run, **kwargs):
    """Keep the KPI rollups as the engine's receiver does, unless the run opts out."""
    if run.business_key != KPI_OFF_KEY:
        receivers.keep_kpis(sender, events=events, run=run, **kwargs)


def announce_end(sender, events, run, **kwargs):
    """Publish the run's id and final status once the transaction that ended it commits."""
    ended = [_ENDED[event.kind] for event in events if event.kind in _ENDED]
    if ended:
        message = f"{run.pk} {ended[-1]}"
        transaction.on_commit(lambda: _client().publish(DONE_CHANNEL, message))


def install_hooks() -> None:
    """Swap the audit and KPI receivers for toggles; connect the completion notice (idempotent)."""
    run_events_recorded.disconnect(dispatch_uid="orchestrator.audit_run_events")
    run_events_recorded.connect(audit_unless_off, weak=False, dispatch_uid="bench.audit_toggle")
    run_events_recorded.disconnect(dispatch_uid="orchestrator.keep_kpis")
    run_events_recorded.connect(kpis_unless_off, weak=False, dispatch_uid="bench.kpi_toggle")
    run_events_recorded.connect(announce_end, weak=False, dispatch_uid="bench.announce_end")


install_hooks()
