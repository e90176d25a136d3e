"""Email and webhook deliveries survive failures and lost workers: retried, then failed."""

import pytest

from agents.actions import work
from agents.models import Notification
from agents.tasks import deliver_notification, deliver_notifications
from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from tests.agents.fake_servers import FakeModelServer, Reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def hook(settings):
    """A receiver on 127.0.0.1, which webhooks may call only because this allows loopback."""
    settings.STEWARD_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    server = FakeModelServer().start()
    yield server
    server.stop()


@pytest.fixture
def quick_retries(settings):
    settings.STEWARD_NOTIFY_LEASE_SECONDS = 60
    settings.STEWARD_NOTIFY_BACKOFF_SECONDS = 30
    settings.STEWARD_NOTIFY_MAX_ATTEMPTS = 3


def _notify(world, hook, **extra):
    return work.notify(
        world.alice,
        "Disk full",
        "db-1 is at 99%",
        channels=["inbox", "webhook"],
        webhook_url=f"{hook.url}/hooks/steward",
        sent_by=extra.pop("sent_by", SYSTEM),
        **extra,
    )


def _run_queued(queued):
    """Do what the worker does with each queued notification, once."""
    while queued:
        deliver_notification(queued.pop(0))


def test_the_first_attempt_is_a_workers_not_the_writers(
    world, hook, quick_retries, django_capture_on_commit_callbacks, queued_deliveries
):
    hook.push(Reply({"ok": True}, status=200))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        notification = _notify(world, hook)
    assert queued_deliveries == []  # nothing is queued before the commit
    for callback in callbacks:
        callback()
    assert queued_deliveries == [notification.pk]
    assert hook.requests == []  # notify() itself made no HTTP call
    _run_queued(queued_deliveries)
    notification.refresh_from_db()
    assert notification.deliveries["webhook"] == "delivered: 200"
    assert len(hook.requests) == 1


def test_a_failed_webhook_is_retried_after_its_backoff_with_the_same_key(
    world, hook, quick_retries, django_capture_on_commit_callbacks, queued_deliveries
):
    hook.push(Reply({"error": "busy"}, status=503), Reply({"ok": True}, status=200))
    with clock.frozen() as frozen:
        with django_capture_on_commit_callbacks(execute=True):
            notification = _notify(world, hook)
        _run_queued(queued_deliveries)
        notification.refresh_from_db()
        assert notification.deliveries["webhook"] == "pending"  # the first attempt failed
        assert notification.delivery_attempts == 1
        frozen.advance(29)
        assert deliver_notifications() == 0  # the backoff has not passed
        assert len(hook.requests) == 1
        frozen.advance(2)
        assert deliver_notifications() == 1
    notification.refresh_from_db()
    assert notification.deliveries["webhook"] == "delivered: 200"
    assert notification.next_delivery_at is None and notification.delivery_attempts == 2
    keys = [request.headers["Idempotency-Key"] for request in hook.requests]
    assert keys == [f"notification-{notification.pk}-webhook"] * 2
    assert hook.requests[1].body["subject"] == "Disk full"
    delivered = AuditEntry.objects.get(action="agents.notification.delivered")
    assert "delivered: 200" in delivered.body_row.content
    with clock.frozen() as frozen:
        frozen.advance(3600)
        assert deliver_notifications() == 0  # nothing is sent twice
    assert len(hook.requests) == 2


def test_a_delivery_lost_after_the_commit_is_sent_by_the_sweep(world, hook, quick_retries):
    hook.push(Reply({"ok": True}, status=202))
    with clock.frozen() as frozen:
        notification = _notify(world, hook)  # the on-commit attempt never runs: a killed worker
        assert Notification.objects.get(pk=notification.pk).deliveries["webhook"] == "pending"
        assert deliver_notifications() == 0  # the first attempt's grace
        frozen.advance(61)
        assert deliver_notifications() == 1
    notification.refresh_from_db()
    assert notification.deliveries["webhook"] == "delivered: 202"
    assert len(hook.requests) == 1


def test_a_webhook_that_keeps_failing_ends_failed(
    world, hook, quick_retries, django_capture_on_commit_callbacks, queued_deliveries
):
    hook.answer = lambda received: Reply({"error": "down"}, status=500)
    with clock.frozen() as frozen:
        with django_capture_on_commit_callbacks(execute=True):
            notification = _notify(world, hook)
        _run_queued(queued_deliveries)
        for _ in range(5):
            frozen.advance(3600)
            deliver_notifications()
    notification.refresh_from_db()
    assert notification.deliveries["webhook"].startswith("failed: HTTP 500 (after 3)")
    assert notification.next_delivery_at is None
    assert len(hook.requests) == 3
