"""Heartbeats: a worker thread renews the leases of the steps this process is running.

A step whose lease is no longer ours (cancelled, or taken back after a stall) is flagged on its
context, so long-running step types can stop at their next checkpoint.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connection

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews leases of long-running steps in the background of a worker process."""

    def __init__(self):
        self._held: dict[int, tuple[str, object, float]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def hold(self, step_id: int, token: str, ctx) -> None:
        """Start keeping a step's lease alive while this process runs it."""
        with self._lock:
            self._held[step_id] = (token, ctx, time.monotonic())
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)
                self._thread.start()

    def release(self, step_id: int) -> None:
        """Stop renewing a step's lease."""
        with self._lock:
            self._held.pop(step_id, None)

    def renew_due(self) -> int:
        """Renew the leases of steps held longer than a heartbeat; flag the ones we lost."""
        from audit import clock
        from orchestrator.models import StepRun, StepStatus

        interval = settings.STEWARD_HEARTBEAT_SECONDS
        with self._lock:
            due = [
                (step_id, token, ctx)
                for step_id, (token, ctx, since) in self._held.items()
                if time.monotonic() - since >= interval
            ]
        expires = clock.now() + dt.timedelta(seconds=settings.STEWARD_LEASE_SECONDS)
        for step_id, token, ctx in due:
            renewed = StepRun.objects.filter(
                pk=step_id, status=StepStatus.RUNNING, lease_token=token
            ).update(lease_expires_at=expires)
            if not renewed:
                ctx.lost = True
        return len(due)

    def _loop(self) -> None:
        """Renew leases every half heartbeat until the process ends."""
        while True:
            time.sleep(max(settings.STEWARD_HEARTBEAT_SECONDS / 2, 0.05))
            try:
                close_old_connections()
                self.renew_due()
            except Exception:
                log.warning("lease renewal failed; will try again", exc_info=True)
                connection.close()


keeper = LeaseKeeper()
