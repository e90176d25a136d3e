"""The plain-Celery peer of bench/engine.py: one no-op task, chained ten times per "workflow".

    celery -A celery_peer worker -Q bench-celery-peer -c 2   (bench/engine.py starts it)

No Django, no database: Redis (BENCH_REDIS_URL) is both the broker and the result backend. The
worker options match Steward's (orchestrator/settings.py): JSON, acks_late, reject on worker lost,
prefetch 1, so the two differ only in what a step does with PostgreSQL.
"""

from __future__ import annotations

import os

from celery import Celery, chain

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
QUEUE = "bench-celery-peer"

# Not the current app: in bench/engine.py, Steward's own app stays the one its tasks resolve to.
app = Celery("celery_peer", broker=REDIS_URL, backend=REDIS_URL, set_as_current=False)
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)


@app.task(name="bench.noop")
def noop(index: int) -> None:
    """Do nothing: one step of the chain."""
    return None


def ten_steps(steps: int = 10):
    """Return the chain of `steps` immutable no-op tasks that stands for a sequential workflow."""
    return chain(*(noop.si(index) for index in range(steps)))
