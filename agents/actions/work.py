"""What the built-in tools do: tickets, governed record updates, notifications, HTTP requests.

Each function is an ordinary service that people (admin, API) and agents (through their tools)
call alike: permissions are checked for the acting user, history is written with the actor and
reason set before the save, and side effects outside the database (email, webhooks) are sent
once the transaction commits. Writes keyed by an idempotency key happen once per key.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import models, transaction
from guardian.shortcuts import assign_perm

from agents.models import Notification, Ticket, TicketComment
from audit import clock
from audit import services as audit
from governance.actions.common import GovernanceError, audited_refusals, name_of, save_governed
from governance.permissions import require, require_model

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024


# --- tickets -------------------------------------------------------------------------------------


@audited_refusals
def create_ticket(
    *,
    title: str,
    description: str = "",
    priority: str = "p3",
    service: str = "",
    classification: str = "internal",
    actor=None,
    run_id: int | None = None,
    idempotency_key: str | None = None,
) -> Ticket:
    """Open a ticket (once per idempotency key); its creator may view and change it."""
    if actor is not None:
        require_model(actor, "add", Ticket)
    if idempotency_key:
        existing = Ticket.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    ticket = Ticket(
        title=title,
        description=description,
        priority=priority,
        service=service,
        classification=classification,
        created_by=actor,
        created_by_name=name_of(actor),
        run_id=run_id,
        idempotency_key=idempotency_key or None,
    )
    # Checked above; the creator is then given view and change on what they opened.
    save_governed(ticket, actor=actor, reason="ticket opened", check=False)
    if actor is not None:
        assign_perm("agents.view_ticket", actor, ticket)
        assign_perm("agents.change_ticket", actor, ticket)
    return ticket


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


@audited_refusals
def update_ticket(ticket: Ticket, *, actor, reason: str, **fields) -> Ticket:
    """Change a ticket's fields (status, priority, assignee...); needs change on the ticket."""
    for name, value in fields.items():
        if name not in TICKET_FIELDS:
            raise GovernanceError(f"A ticket's {name!r} cannot be changed.", code="field")
        setattr(ticket, name, _resolve_user(value) if name == "assignee" else value)
    return save_governed(ticket, actor=actor, reason=reason or "ticket updated")


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
    if actor is not None:
        require(actor, "change", ticket)
    if idempotency_key:
        existing = TicketComment.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    comment = TicketComment.objects.create(
        ticket=ticket,
        body=body,
        author=actor,
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


@audited_refusals
def notify(
    recipient,
    subject: str,
    body: str = "",
    *,
    sent_by=None,
    channels: list[str] | None = None,
    run_id: int | None = None,
    idempotency_key: str | None = None,
    webhook_url: str = "",
) -> Notification:
    """Put a message in a person's inbox, and send it by email or webhook when configured."""
    recipient = _resolve_user(recipient)
    if recipient is None or not recipient.is_active:
        raise GovernanceError("A notification needs an active recipient.", code="recipient")
    if idempotency_key:
        existing = Notification.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    channels = channels or ["inbox"]
    deliveries: dict[str, str] = {"inbox": "delivered"}
    if "email" in channels:
        deliveries["email"] = "pending" if recipient.email else "skipped: no address"
    if "webhook" in channels:
        deliveries["webhook"] = "pending" if webhook_url else "skipped: not configured"
    notification = Notification.objects.create(
        recipient=recipient,
        subject=subject,
        body=body,
        sent_by=sent_by,
        sent_by_name=name_of(sent_by),
        run_id=run_id,
        deliveries=deliveries,
        idempotency_key=idempotency_key or None,
    )
    audit.record(
        action="agents.notification.sent",
        actor=sent_by,
        target=notification,
        run_id=run_id,
        body={"recipient": name_of(recipient), "subject": subject, "channels": deliveries},
    )
    if deliveries.get("email") == "pending" or deliveries.get("webhook") == "pending":
        transaction.on_commit(lambda: _deliver(notification.pk, webhook_url))
    return notification


@transaction.atomic
def mark_read(notifications, *, user) -> int:
    """Mark a person's own unread notifications read; return how many changed."""
    unread = notifications.filter(recipient=user, read_at__isnull=True)
    return unread.update(read_at=clock.now())


def _deliver(notification_id: int, webhook_url: str) -> None:
    """Send a committed notification by email and webhook; record how each went."""
    notification = Notification.objects.select_related("recipient").get(pk=notification_id)
    deliveries = dict(notification.deliveries)
    if deliveries.get("email") == "pending":
        try:
            send_mail(
                notification.subject,
                notification.body,
                None,
                [notification.recipient.email],
            )
            deliveries["email"] = "delivered"
        except Exception as exc:  # the inbox copy stands; say what happened
            deliveries["email"] = f"failed: {type(exc).__name__}"
    if deliveries.get("webhook") == "pending":
        try:
            reply = httpx.post(
                webhook_url,
                json={
                    "recipient": notification.recipient.get_username(),
                    "subject": notification.subject,
                    "body": notification.body,
                    "run_id": notification.run_id,
                },
                headers={"Idempotency-Key": notification.idempotency_key or str(notification.pk)},
                timeout=5.0,
                follow_redirects=False,
            )
            deliveries["webhook"] = f"delivered: {reply.status_code}"
        except httpx.HTTPError as exc:
            deliveries["webhook"] = f"failed: {type(exc).__name__}"
    Notification.objects.filter(pk=notification_id).update(deliveries=deliveries)


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
