"""Email to the people who may decide a new request: a link to its page, never a credential.

A request asks (or escalates to the next role) in a transaction; once it commits, a Celery task
taking the request's id sends one email to each person who may decide it now (the eligibility
rule's own list) and who has an address. The link is the request's page in the inbox: it needs
the person's own sign-in, it carries no token. Each email is journaled (ApprovalNotice, one row
per request and recipient) in the transaction that sends it, so a redelivered or repeated task
sends nobody a second email; a send that fails rolls its row back and is tried again by the next
delivery.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse

from audit import clock
from audit.actors import requires_actor
from governance.actions.eligibility import eligible_deciders
from governance.models import ApprovalNotice, ApprovalRequest, ApprovalStatus

log = logging.getLogger(__name__)


def request_link(request: ApprovalRequest) -> str:
    """Return the absolute address of a request's page (STEWARD_BASE_URL + the inbox's path)."""
    base = getattr(settings, "STEWARD_BASE_URL", "").rstrip("/")
    return f"{base}{reverse('inbox:request', args=[request.pk])}"


def _send_notice_task(request_id: int) -> None:
    """Ask a worker to notify a request's deciders; a broker that is down loses only the email."""
    from governance.tasks import notify_deciders

    try:
        notify_deciders.apply_async(args=[request_id])
    except Exception:
        log.warning("could not queue the notices of approval request %s", request_id)


# Replaced in tests that run without a worker (they send in the process instead).
dispatcher: Callable[[int], None] = _send_notice_task


def notify_on_commit(request: ApprovalRequest) -> None:
    """Have the deciders of a request notified once the caller's transaction commits."""
    request_id = request.pk
    transaction.on_commit(lambda: dispatcher(request_id))


@requires_actor
def notify_deciders(request_id: int, *, actor) -> int:
    """Email each person who may decide a pending request now, once each; return how many."""
    from governance import inbox

    request = (
        ApprovalRequest.objects.select_related("role", "approval_rule")
        .filter(pk=request_id)
        .first()
    )
    if request is None or request.status != ApprovalStatus.PENDING:
        return 0
    link = request_link(request)
    context = {
        "request": request,
        "words": inbox.action_in_words(request),
        "asker": inbox.asker(request),
        "link": link,
    }
    subject = f"[Steward] #{request.pk} waits for your decision: {context['words']}"[:200]
    sent = 0
    for person in eligible_deciders(request):
        if not person.email:
            continue
        with transaction.atomic():
            _, created = ApprovalNotice.objects.get_or_create(
                request=request,
                recipient=person,
                defaults={
                    "recipient_name": person.get_username(),
                    "address": person.email,
                    "level": request.level,
                    "sent_at": clock.now(),
                },
            )
            if not created:
                continue  # sent by an earlier delivery (or one running now)
            body = render_to_string(
                "governance/email/approval_requested.txt", {**context, "person": person}
            )
            send_mail(subject, body, None, [person.email])
        sent += 1
    return sent


@requires_actor
def send_missing_notices(*, actor, window_seconds: int = 3600, grace_seconds: int = 60) -> int:
    """Send the notices a lost task message left unsent; return how many went out.

    The task is queued after the commit, and a broker that is down then loses its message: this
    sweep asks again for each pending request whose current level began within the window (its
    opening, or its escalation to the next role) and at least `grace_seconds` ago, so the task
    of a request just opened has its turn first. The journal keeps it from sending twice.
    """
    now = clock.now()
    since = now - dt.timedelta(seconds=window_seconds)
    settled = now - dt.timedelta(seconds=grace_seconds)
    # due_at - sla_seconds is when the current level began; due_at >= since narrows to a
    # superset in SQL (a level that began in the window ends after the window's start).
    candidates = ApprovalRequest.objects.filter(
        status=ApprovalStatus.PENDING, due_at__gte=since, created_at__lte=settled
    ).values_list("pk", "due_at", "sla_seconds")
    sent = 0
    for pk, due_at, sla_seconds in candidates.iterator():
        began = due_at - dt.timedelta(seconds=sla_seconds)
        if since <= began <= settled:
            sent += notify_deciders(pk, actor=actor)
    return sent
