"""Two creators with one idempotency key: the second gets the first's row, never an error.

The look-up before an insert cannot see a row another transaction has written and not yet
committed, so both callers insert; the unique key makes the second wait, then refuse. Each test
holds the first insert open until PostgreSQL shows the second caller waiting on it.
"""

import threading
import time

import pytest
from django.db import connection, connections, transaction

from agents.actions import work
from agents.models import Notification, Ticket, TicketComment
from governance import services as governance

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def writer(world):
    """alice, in the role that may open tickets."""
    governance.add_member(world.ticket_writers, world.alice, actor=None)
    return world.alice


def _waiting_on_a_lock() -> bool:
    """Tell whether some other session of this database waits for a row lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0] > 0


def _race(first, second):
    """Run `first` in a thread's open transaction, `second` here while it holds; both results."""
    results, errors = {}, []
    inserted = threading.Event()

    def hold():
        try:
            with transaction.atomic():
                results["first"] = first()
                inserted.set()
                deadline = time.monotonic() + 10
                while not _waiting_on_a_lock() and time.monotonic() < deadline:
                    time.sleep(0.01)  # poll for the second caller to block; not a backoff
        except Exception as exc:
            errors.append(exc)
            inserted.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    assert inserted.wait(10)
    try:
        results["second"] = second()
    finally:
        thread.join(15)
    assert errors == []
    return results["first"], results["second"]


def test_two_tickets_with_one_key_are_one_ticket(writer):
    def create():
        return work.create_ticket(title="Disk full", actor=writer, idempotency_key="t-1")

    first, second = _race(create, create)
    assert first.pk == second.pk
    assert Ticket.objects.filter(idempotency_key="t-1").count() == 1


def test_two_comments_with_one_key_are_one_comment(writer):
    ticket = work.create_ticket(title="Disk full", actor=writer)

    def comment():
        return work.comment_on_ticket(ticket, "on it", actor=writer, idempotency_key="c-1")

    first, second = _race(comment, comment)
    assert first.pk == second.pk
    assert TicketComment.objects.filter(idempotency_key="c-1").count() == 1


def test_two_notifications_with_one_key_are_one_notification(world, queued_deliveries):
    def send():
        return work.notify(
            world.bob,
            "Approve",
            "",
            channels=["inbox", "webhook"],
            webhook_url="http://127.0.0.1:9/hook",
            idempotency_key="n-1",
        )

    first, second = _race(send, send)
    assert first.pk == second.pk
    assert Notification.objects.filter(idempotency_key="n-1").count() == 1
    assert queued_deliveries == [first.pk]  # the loser queues no second delivery
