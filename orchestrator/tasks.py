"""Celery tasks: thin wrappers that take ids and call the engine; each is safe to run twice."""

from celery import shared_task

from audit.actors import SYSTEM
from orchestrator import engine


@shared_task(name="orchestrator.execute_step", acks_late=True, reject_on_worker_lost=True)
def execute_step(step_run_id: int) -> int:
    """Claim and run a ready step (and those it readies); a duplicate message does nothing."""
    return engine.run_step(step_run_id)


@shared_task(name="orchestrator.sweep", acks_late=True, ignore_result=True)
def sweep() -> dict:
    """Repair lost messages, dead workers, due timers and retries."""
    return engine.sweep()


@shared_task(name="orchestrator.prune_inbound_hooks", acks_late=True, ignore_result=True)
def prune_inbound_hooks() -> int:
    """Forget old received webhook-ids (long past the signatures' 5-minute tolerance)."""
    from orchestrator import inbound

    return inbound.prune_hooks(actor=SYSTEM)


@shared_task(name="orchestrator.purge_idempotency_keys", acks_late=True, ignore_result=True)
def purge_idempotency_keys() -> int:
    """Delete expired API Idempotency-Key rows (a replay past its expiry runs afresh anyway)."""
    from orchestrator import services

    return services.purge_idempotency_keys(actor=SYSTEM)
