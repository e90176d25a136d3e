"""What the built-in tools do: tickets, governed record updates, notifications, HTTP requests.

Each function is an ordinary service that people (admin, API) and agents (through their tools)
call alike: permissions are checked for the acting user, history is written with the actor and
reason set before the save, and side effects outside the database (email, webhooks) are sent
once the transaction commits. Writes keyed by an idempotency key happen once per key.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import smtplib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage
from django.db import IntegrityError, models, transaction
from guardian.shortcuts import assign_perm

from agents.models import Notification, Ticket, TicketComment
from audit import clock
from audit import services as audit
from audit.actors import SYSTEM, as_user, requires_actor
from governance.actions import webhooks
from governance.actions.common import GovernanceError, audited_refusals, name_of, save_governed
from governance.permissions import require, require_model

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024


# --- tickets -------------------------------------------------------------------------------------


def _once(model, idempotency_key: str | None, create: Callable[[], models.Model]):
    """Create a row once per idempotency key; return (row, created).

    A concurrent caller with the same key may insert between the look-up and the insert: the
    unique key refuses the second row, its savepoint undoes everything `create` wrote (history,
    permissions, audit), and the first caller's row is returned, as a redelivery would see it.
    """
    if idempotency_key:
        existing = model.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            return create(), True
    except IntegrityError:
        existing = (
            model.objects.filter(idempotency_key=idempotency_key).first()
            if idempotency_key
            else None
        )
        if existing is None:
            raise
        return existing, False


@requires_actor
@audited_refusals
def create_ticket(
    *,
    title: str,
    description: str = "",
    priority: str = "p3",
    service: str = "",
    classification: str = "internal",
    actor,
    run_id: int | None = None,
    idempotency_key: str | None = None,
) -> Ticket:
    """Open a ticket (once per idempotency key); its creator may view and change it."""
    if actor is not SYSTEM:
        require_model(actor, "add", Ticket)

    def create() -> Ticket:
        ticket = Ticket(
            title=title,
            description=description,
            priority=priority,
            service=service,
            classification=classification,
            created_by=as_user(actor),
            created_by_name=name_of(actor),
            run_id=run_id,
            idempotency_key=idempotency_key or None,
        )
        # Checked above; the creator is then given view and change on what they opened.
        save_governed(ticket, actor=actor, reason="ticket opened", check=False)
        if actor is not SYSTEM:
            assign_perm("agents.view_ticket", actor, ticket)
            assign_perm("agents.change_ticket", actor, ticket)
        return ticket

    return _once(Ticket, idempotency_key, create)[0]


TICKET_FIELDS = {"title", "description", "status", "priority", "service", "assignee"}


def _resolve_user(value):
    """Return the user a username names (None for empty); refuse an unknown name."""
    if value in (None, ""):
        return None
    if isinstance(value, models.Model):
        return value
    user = get_user_model().objects.filter(username=value).first()
    if user is None:
        raise GovernanceError(f"No user is called {value!r}.", code="unknown_user")
    return user


@requires_actor
@audited_refusals
def update_ticket(ticket: Ticket, *, actor, reason: str, **fields) -> Ticket:
    """Change a ticket's fields (status, priority, assignee...); needs change on the ticket."""
    for name, value in fields.items():
        if name not in TICKET_FIELDS:
            raise GovernanceError(f"A ticket's {name!r} cannot be changed.", code="field")
        setattr(ticket, name, _resolve_user(value) if name == "assignee" else value)
    return save_governed(ticket, actor=actor, reason=reason or "ticket updated")


@requires_actor
@audited_refusals
def comment_on_ticket(
    ticket: Ticket,
    body: str,
    *,
    actor,
    run_id: int | None = None,
    idempotency_key: str | None = None,
) -> TicketComment:
    """Add a comment (once per idempotency key); needs change on the ticket."""
    if actor is not SYSTEM:
        require(actor, "change", ticket)

    def create() -> TicketComment:
        comment = TicketComment.objects.create(
            ticket=ticket,
            body=body,
            author=as_user(actor),
            author_name=name_of(actor),
            run_id=run_id,
            idempotency_key=idempotency_key or None,
        )
        audit.record(
            action="agents.ticket.commented",
            actor=actor,
            target=ticket,
            run_id=run_id,
            body={"comment": comment.pk, "length": len(body)},
        )
        return comment

    return _once(TicketComment, idempotency_key, create)[0]


# --- any governed record -------------------------------------------------------------------------


def updatable_fields(model_label: str, config: dict | None = None) -> set[str]:
    """Return the fields of a model that the record tool may change (its allow-list)."""
    allowed = (config or {}).get("models") or settings.STEWARD_AGENT_UPDATABLE_RECORDS
    return set(allowed.get(model_label.lower(), []))


def record_model(model_label: str) -> type[models.Model]:
    """Return the model a label names, if the record tool may touch it."""
    try:
        model = apps.get_model(model_label)
    except (LookupError, ValueError):
        raise LookupError(f"no model {model_label!r}") from None
    if not hasattr(model, "history"):
        raise LookupError(f"{model_label} is not a governed model")
    return model


@requires_actor
@audited_refusals
def update_record(
    model_label: str,
    pk: Any,
    changes: dict[str, Any],
    *,
    actor,
    reason: str,
    allowed_fields: set[str],
) -> models.Model:
    """Change allow-listed fields of a governed record, with history and a permission check."""
    model = record_model(model_label)
    obj = model._default_manager.get(pk=pk)
    refused = sorted(set(changes) - allowed_fields)
    if refused:
        raise GovernanceError(
            f"{model_label} fields {', '.join(refused)} may not be changed this way.", code="field"
        )
    for name, value in changes.items():
        field = model._meta.get_field(name)
        if field.is_relation and field.related_model is get_user_model():
            value = _resolve_user(value)
        setattr(obj, name, value)
    return save_governed(obj, actor=actor, reason=reason)


# --- notifications -------------------------------------------------------------------------------


@requires_actor
@audited_refusals
def notify(
    recipient,
    subject: str,
    body: str = "",
    *,
    sent_by,
    channels: list[str] | None = None,
    run_id: int | None = None,
    idempotency_key: str | None = None,
    webhook_url: str = "",
) -> Notification:
    """Put a message in a person's inbox, and send it by email or webhook when configured."""
    recipient = _resolve_user(recipient)
    if recipient is None or not recipient.is_active:
        raise GovernanceError("A notification needs an active recipient.", code="recipient")
    channels = channels or ["inbox"]
    deliveries: dict[str, str] = {"inbox": "delivered"}
    if "email" in channels:
        deliveries["email"] = PENDING if recipient.email else "skipped: no address"
    if "webhook" in channels:
        deliveries["webhook"] = PENDING if webhook_url else "skipped: not configured"
    pending = PENDING in deliveries.values()

    def create() -> Notification:
        notification = Notification.objects.create(
            recipient=recipient,
            subject=subject,
            body=body,
            sent_by=as_user(sent_by),
            sent_by_name=name_of(sent_by),
            run_id=run_id,
            deliveries=deliveries,
            idempotency_key=idempotency_key or None,
            webhook_url=webhook_url if deliveries.get("webhook") == PENDING else "",
            # Saved before the first attempt: if the message below is lost, the sweep
            # (agents.deliver_notifications) finds the row once this grace has passed.
            next_delivery_at=clock.now() + dt.timedelta(seconds=_setting("LEASE_SECONDS"))
            if pending
            else None,
        )
        audit.record(
            action="agents.notification.sent",
            actor=sent_by,
            target=notification,
            run_id=run_id,
            body={"recipient": name_of(recipient), "subject": subject, "channels": deliveries},
        )
        return notification

    notification, created = _once(Notification, idempotency_key, create)
    if created and pending:
        # The delivery row is the durable part; the worker that takes this message makes the
        # email or webhook call, never the request or step that wrote the notification.
        notification_id = notification.pk
        transaction.on_commit(lambda: delivery_dispatcher(notification_id))
    return notification


def _send_delivery_task(notification_id: int) -> None:
    """Ask a worker to attempt a notification's deliveries; a lost message waits for the sweep."""
    from agents.tasks import deliver_notification

    try:
        deliver_notification.apply_async(args=[notification_id])
    except Exception:  # broker down: the row's next_delivery_at brings the sweep to it
        log.warning("could not queue notification %s; the sweep will", notification_id)


delivery_dispatcher = _send_delivery_task


@requires_actor
@transaction.atomic
def mark_read(notifications, *, user) -> int:
    """Mark a person's own unread notifications read; return how many changed."""
    unread = notifications.filter(recipient=user, read_at__isnull=True)
    return unread.update(read_at=clock.now())


PENDING = "pending"
DELIVERY_DEFAULTS = {
    "LEASE_SECONDS": 60,  # how long one attempt may take before the sweep tries again
    "BACKOFF_SECONDS": 30,  # the first retry's delay; doubled after each failure
    "MAX_BACKOFF_SECONDS": 3600,
    "MAX_ATTEMPTS": 6,
}


def _setting(name: str) -> int:
    """Return a delivery setting (STEWARD_NOTIFY_<name>) or its default."""
    return int(getattr(settings, f"STEWARD_NOTIFY_{name}", DELIVERY_DEFAULTS[name]))


def delivery_key(notification: Notification, channel: str) -> str:
    """Return the idempotency key of one delivery: the same on every attempt."""
    return f"notification-{notification.pk}-{channel}"


class _Retryable(Exception):
    """A delivery failed in a way another attempt may fix."""


def _claim(notification_id: int, now: dt.datetime, due_only: bool) -> Notification | None:
    """Take one attempt of a pending delivery (one worker at a time), leased for a while."""
    with transaction.atomic():
        pending = Notification.objects.select_for_update(skip_locked=True).filter(
            pk=notification_id, next_delivery_at__isnull=False
        )
        if due_only:
            pending = pending.filter(next_delivery_at__lte=now)
        notification = pending.select_related("recipient").first()
        if notification is None:
            return None
        notification.delivery_attempts += 1
        notification.next_delivery_at = now + dt.timedelta(seconds=_setting("LEASE_SECONDS"))
        notification.save(update_fields=["delivery_attempts", "next_delivery_at"])
    return notification


@requires_actor
def deliver_pending(
    notification_id: int, *, actor, now: dt.datetime | None = None, due_only: bool = True
) -> dict[str, str] | None:
    """Attempt a notification's pending email and webhook; retry later with backoff, or fail.

    Safe to run twice: an attempt is claimed first (a lease, so a killed attempt is retried
    once it lapses), and each delivery carries the same idempotency key on every attempt.
    """
    now = now or clock.now()
    notification = _claim(notification_id, now, due_only)
    if notification is None:
        return None
    deliveries = dict(notification.deliveries)
    retry = False
    for channel, send in (("email", _send_email), ("webhook", _send_webhook)):
        if deliveries.get(channel) != PENDING:
            continue
        try:
            deliveries[channel] = send(notification)
        except _Retryable as exc:
            if notification.delivery_attempts >= _setting("MAX_ATTEMPTS"):
                deliveries[channel] = f"failed: {exc} (after {notification.delivery_attempts})"
            else:
                retry = True
                deliveries[f"{channel}_last_error"] = str(exc)
        except Exception as exc:  # the inbox copy stands; say what happened
            deliveries[channel] = f"failed: {type(exc).__name__}: {exc}"[:300]
    next_at = None
    if retry:
        delay = webhooks.backoff_seconds(
            notification.delivery_attempts,
            _setting("BACKOFF_SECONDS"),
            _setting("MAX_BACKOFF_SECONDS"),
        )
        next_at = now + dt.timedelta(seconds=delay)
    Notification.objects.filter(pk=notification_id).update(
        deliveries=deliveries, next_delivery_at=next_at
    )
    finished = {k: v for k, v in deliveries.items() if k in ("email", "webhook") and v != PENDING}
    if finished and not retry:
        audit.record(
            action="agents.notification.delivered",
            actor=actor,
            target=notification,
            run_id=notification.run_id,
            body={"channels": finished, "attempts": notification.delivery_attempts},
        )
    return deliveries


@requires_actor
def deliver_due_notifications(*, actor, now: dt.datetime | None = None, limit: int = 200) -> int:
    """Attempt every pending delivery that is due (a retry, or a lost first attempt)."""
    now = now or clock.now()
    due = Notification.objects.filter(next_delivery_at__lte=now).order_by("next_delivery_at")
    count = 0
    for notification_id in list(due.values_list("pk", flat=True)[:limit]):
        if deliver_pending(notification_id, actor=actor, now=now) is not None:
            count += 1
    return count


def _send_email(notification: Notification) -> str:
    """Send the email (its Message-ID is the delivery's idempotency key)."""
    key = delivery_key(notification, "email")
    message = EmailMessage(
        notification.subject,
        notification.body,
        None,
        [notification.recipient.email],
        headers={"Message-ID": f"<{key}@steward>", "Idempotency-Key": key},
    )
    try:
        message.send()
    except (OSError, smtplib.SMTPException) as exc:
        raise _Retryable(type(exc).__name__) from None
    return "delivered"


def _send_webhook(notification: Notification) -> str:
    """POST the webhook through the outbound machinery (destination check, signing, timeout).

    A 2xx delivers it, a 408/429/5xx or a transport error is retried; a refused destination
    or another answer fails it. The `webhook-id` and Idempotency-Key are the same on every
    attempt; the body is signed when STEWARD_NOTIFY_WEBHOOK_SECRET is set.
    """
    key = delivery_key(notification, "webhook")
    body = webhooks.encode(
        {
            "recipient": notification.recipient.get_username(),
            "subject": notification.subject,
            "body": notification.body,
            "run_id": notification.run_id,
        }
    )
    try:
        attempt = webhooks.post_signed(
            notification.webhook_url,
            body,
            webhook_id=key,
            secret=getattr(settings, "STEWARD_NOTIFY_WEBHOOK_SECRET", "") or None,
            timestamp=clock.now(),
            headers={"Idempotency-Key": key},
            timeout=5.0,
        )
    except webhooks.DestinationRefused as exc:
        return f"failed: refused: {exc}"[:300]
    if attempt.status_code is None:
        raise _Retryable(attempt.error.split(":", 1)[0])
    if attempt.succeeded:
        return f"delivered: {attempt.status_code}"
    if attempt.status_code in (408, 429) or attempt.status_code >= 500:
        raise _Retryable(f"HTTP {attempt.status_code}")
    return f"failed: HTTP {attempt.status_code}"


# --- HTTP requests -------------------------------------------------------------------------------


def endpoint_allowed(url: str, method: str, allow: list[dict]) -> tuple[bool, str]:
    """Tell whether a URL and method are on an allow-list of {scheme, host, port, methods}."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False, "only http and https URLs with a host"
    if parts.username or parts.password:
        return False, "credentials in the URL are not allowed"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for entry in allow:
        if entry.get("host", "").lower() != parts.hostname.lower():
            continue
        if entry.get("scheme", "https") != parts.scheme:
            continue
        if "port" in entry and int(entry["port"]) != port:
            continue
        methods = [m.upper() for m in entry.get("methods", ["GET"])]
        if method.upper() in methods:
            return True, ""
        return False, f"{method.upper()} is not allowed on {parts.hostname}"
    return False, f"{parts.scheme}://{parts.hostname}:{port} is not on the allow-list"


def http_request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    idempotency_key: str = "",
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Make one HTTP request (no redirects), returning its status and a bounded body."""
    send_headers = {str(k): str(v) for k, v in (headers or {}).items()}
    if idempotency_key and method.upper() != "GET":
        send_headers.setdefault("Idempotency-Key", idempotency_key)
    with (
        httpx.Client(timeout=timeout, follow_redirects=False) as client,
        client.stream(method.upper(), url, headers=send_headers, json=json_body) as reply,
    ):
        raw = b""
        for chunk in reply.iter_bytes():
            raw += chunk
            if len(raw) > MAX_RESPONSE_BYTES:
                raw = raw[:MAX_RESPONSE_BYTES]
                break
    text = raw.decode(reply.encoding or "utf-8", errors="replace")
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    return {
        "status": reply.status_code,
        "content_type": reply.headers.get("content-type", ""),
        "body": body,
        "truncated": len(raw) >= MAX_RESPONSE_BYTES,
    }
