"""Celery tasks of agents: thin, id-free, safe to run twice."""

import datetime as dt

from celery import shared_task

from agents import ratelimit, services
from agents.actions import dryrun, work
from audit import clock
from audit.actors import SYSTEM


@shared_task(name="agents.purge_memory", acks_late=True, ignore_result=True)
def purge_memory() -> dict:
    """Purge expired shared-memory entries (legal holds excepted) and old rate counters."""
    result = services.purge_expired(actor=SYSTEM)
    result["rate_counters"] = ratelimit.purge_old(clock.now() - dt.timedelta(days=1))
    return result


@shared_task(name="agents.deliver_notifications", acks_late=True, ignore_result=True)
def deliver_notifications() -> int:
    """Retry pending notification deliveries that are due (lost first attempts, backoffs)."""
    return work.deliver_due_notifications(actor=SYSTEM)


@shared_task(name="agents.deliver_notification", acks_late=True, ignore_result=True)
def deliver_notification(notification_id: int) -> None:
    """Make the first attempt of a new notification's email and webhook deliveries."""
    work.deliver_pending(notification_id, actor=SYSTEM, due_only=False)


@shared_task(name="agents.run_policy_dry_run", acks_late=True, ignore_result=True)
def run_policy_dry_run(dry_run_id: int) -> None:
    """Replay a policy dry run (a redelivery finds it claimed or resumes it past the lease)."""
    dryrun.run_dry_run(dry_run_id)


@shared_task(name="agents.resume_policy_dry_runs", acks_late=True, ignore_result=True)
def resume_policy_dry_runs() -> int:
    """Queue again the dry runs whose message was lost or whose worker died."""
    return dryrun.resume_dry_runs()
