"""Celery tasks of the audit trail: thin, safe to run twice, one sequencer at a time."""

from celery import shared_task

from audit import services


@shared_task(name="audit.sequence", ignore_result=True)
def sequence() -> int:
    """Sequence committed entries and sign a checkpoint when one is due."""
    count = services.sequence_pending()
    services.sign_checkpoint()
    return count
