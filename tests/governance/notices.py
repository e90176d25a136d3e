"""The approval notices' dispatcher of tests that run no worker: the task's body, in process."""

from audit.actors import SYSTEM


def send_in_process(request_id: int) -> None:
    """Send a request's notices now, as the Celery task would."""
    from governance.actions import notifications

    notifications.notify_deciders(request_id, actor=SYSTEM)
