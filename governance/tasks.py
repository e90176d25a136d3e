"""Celery tasks of governance: thin, id-free, safe to run twice."""

import smtplib

from celery import shared_task

from audit.actors import SYSTEM
from governance import services
from governance.actions import webhooks


@shared_task(name="governance.sweep_overdue_approvals", acks_late=True, ignore_result=True)
def sweep_overdue_approvals() -> int:
    """Escalate or expire the pending approval requests whose SLA passed (a second run no-ops).

    The approval step's own timer escalates requests of runs; this is the safety net for those
    whose timer was lost and for requests opened outside a workflow (an agent's tool call).
    """
    return services.sweep_overdue(actor=SYSTEM)


@shared_task(name="governance.deliver_webhook", acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: int) -> None:
    """Make the first attempt of a new outbox delivery (a second run finds it claimed)."""
    webhooks.deliver(delivery_id, actor=SYSTEM, due_only=False)


@shared_task(name="governance.deliver_webhooks", acks_late=True, ignore_result=True)
def deliver_webhooks() -> int:
    """Attempt the outbox deliveries that are due: retries, and first attempts that were lost."""
    return webhooks.deliver_due(actor=SYSTEM)


@shared_task(name="governance.prune_live_events", acks_late=True, ignore_result=True)
def prune_live_events() -> int:
    """Delete the live events past their retention (a second run finds nothing to delete)."""
    return services.prune_live_events(actor=SYSTEM)


@shared_task(
    name="governance.notify_deciders",
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OSError, smtplib.SMTPException),
    retry_backoff=True,
    max_retries=8,
)
def notify_deciders(request_id: int) -> int:
    """Email the people who may decide a request (journaled: a second run sends nothing)."""
    from governance.actions import notifications

    return notifications.notify_deciders(request_id, actor=SYSTEM)


@shared_task(name="governance.send_missing_notices", acks_late=True, ignore_result=True)
def send_missing_notices() -> int:
    """Send the approval notices whose task message was lost (journaled: never twice)."""
    from governance.actions import notifications

    return notifications.send_missing_notices(actor=SYSTEM)
