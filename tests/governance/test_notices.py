"""Email notices of new requests: to those who may decide, after the commit, once each.

The company's approvers alice and bob have addresses (so does maya, a manager, the next hop).
A notice links to the request's page, which needs the person's own sign-in; it carries no
token. The journal (ApprovalNotice) keeps a redelivered task from sending anything twice.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from audit import clock
from audit.actors import SYSTEM
from governance import services, tasks
from governance.actions import notifications
from governance.models import ApprovalNotice


@pytest.fixture
def addressed(company, settings):
    """Alice, bob and maya with addresses; links start at the public address."""
    settings.STEWARD_BASE_URL = "https://steward.example.com"
    for user in (company.alice, company.bob, company.maya):
        get_user_model().objects.filter(pk=user.pk).update(email=f"{user.username}@example.com")
    return company


def _refund(company, django_capture_on_commit_callbacks, **extra):
    with django_capture_on_commit_callbacks(execute=True):
        return services.request_approval(
            action="tool.refund",
            approval_rule=company.rule,
            arguments={"amount": 900, "invoice": "INV-1"},
            target=company.payments,
            **{"requested_by": company.agent, **extra},
        )


def _recipients() -> list[str]:
    return sorted(address for message in mail.outbox for address in message.to)


def test_a_new_request_emails_each_person_who_may_decide_after_the_commit(
    addressed, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        request = services.request_approval(
            action="tool.refund",
            approval_rule=addressed.rule,
            arguments={"amount": 900},
            target=addressed.payments,
            requested_by=addressed.agent,
        )
    assert mail.outbox == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert _recipients() == ["alice@example.com", "bob@example.com"]
    message = mail.outbox[0]
    assert f"#{request.pk} waits for your decision" in message.subject
    link = f"https://steward.example.com/inbox/{request.pk}/"
    assert link in message.body and request.arguments_digest in message.body
    assert "Call the tool refund" in message.body
    # The link is the page itself: no token, no query, and it asks for a sign-in.
    assert re.findall(r"https://\S+", message.body) == [link]
    assert "stw_" not in message.body
    response = Client().get(f"/inbox/{request.pk}/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_asker_is_not_notified(addressed, django_capture_on_commit_callbacks):
    _refund(
        addressed,
        django_capture_on_commit_callbacks,
        requested_by=addressed.alice,
        run_initiator=addressed.alice,
    )
    assert _recipients() == ["bob@example.com"]


def test_a_redelivered_task_sends_nothing_twice(addressed, django_capture_on_commit_callbacks):
    request = _refund(addressed, django_capture_on_commit_callbacks)
    assert len(mail.outbox) == 2
    assert tasks.notify_deciders(request.pk) == 0  # the task again, as a redelivery runs it
    assert len(mail.outbox) == 2
    assert set(ApprovalNotice.objects.values_list("recipient_name", flat=True)) == {"alice", "bob"}


def test_a_failed_send_is_not_journaled_and_the_next_delivery_sends_it(
    addressed, django_capture_on_commit_callbacks, monkeypatch
):
    real = notifications.send_mail

    def refuse_bob(subject, body, sender, to):
        if to == ["bob@example.com"]:
            raise OSError("SMTP down")
        return real(subject, body, sender, to)

    monkeypatch.setattr(notifications, "dispatcher", lambda request_id: None)
    request = _refund(addressed, django_capture_on_commit_callbacks)
    monkeypatch.setattr(notifications, "send_mail", refuse_bob)
    with pytest.raises(OSError):
        tasks.notify_deciders(request.pk)
    assert _recipients() == ["alice@example.com"]
    assert list(ApprovalNotice.objects.values_list("recipient_name", flat=True)) == ["alice"]
    monkeypatch.setattr(notifications, "send_mail", real)
    assert tasks.notify_deciders(request.pk) == 1
    assert _recipients() == ["alice@example.com", "bob@example.com"]


def test_an_escalation_to_the_next_role_notifies_its_people(
    addressed, django_capture_on_commit_callbacks
):
    request = _refund(
        addressed,
        django_capture_on_commit_callbacks,
        requested_by=addressed.alice,
        run_initiator=addressed.alice,
    )
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.escalate_overdue(
            request.pk, actor=SYSTEM, now=request.due_at + dt.timedelta(seconds=1)
        )
    request.refresh_from_db()
    assert request.level == 1
    assert "maya@example.com" in _recipients()
    assert "bob@example.com" not in _recipients()  # told once already


def test_a_decided_request_notifies_nobody(addressed, django_capture_on_commit_callbacks):
    request = _refund(addressed, django_capture_on_commit_callbacks)
    services.decide_approval(request, user=addressed.bob, decision="approve")
    ApprovalNotice.objects.all().delete()
    mail.outbox.clear()
    assert tasks.notify_deciders(request.pk) == 0 and mail.outbox == []


def test_the_sweep_sends_what_a_lost_task_message_did_not_and_only_once(
    addressed, django_capture_on_commit_callbacks, monkeypatch
):
    """The broker was down at the commit: the beat sweep sends the notices, the next one none."""
    monkeypatch.setattr(notifications, "dispatcher", lambda request_id: None)  # the lost message
    with clock.frozen() as frozen:
        request = _refund(addressed, django_capture_on_commit_callbacks)
        assert mail.outbox == []
        assert tasks.send_missing_notices() == 0  # within the grace: the task has its turn first
        frozen.advance(61)
        assert tasks.send_missing_notices() == 2
        assert _recipients() == ["alice@example.com", "bob@example.com"]
        assert tasks.send_missing_notices() == 0 and len(mail.outbox) == 2
        assert ApprovalNotice.objects.filter(request=request).count() == 2


def test_the_sweep_leaves_requests_whose_level_began_before_its_window(
    addressed, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(notifications, "dispatcher", lambda request_id: None)
    with clock.frozen() as frozen:
        request = _refund(addressed, django_capture_on_commit_callbacks)
        frozen.advance(61)
        assert notifications.send_missing_notices(actor=SYSTEM, window_seconds=30) == 0
        assert notifications.send_missing_notices(actor=SYSTEM, window_seconds=120) == 2
        assert request.status == "pending"
