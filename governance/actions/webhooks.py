"""Outbound webhooks: subscriptions, the outbox, signed delivery with retries, and SSRF checks.

An event is written to the outbox (one WebhookDelivery per matching subscription) inside the
transaction that made the change, so it commits or rolls back with it; a worker is asked to
deliver it once that transaction commits, and a beat task (`governance.deliver_webhooks`) sends
whatever is due, so a lost message only delays a delivery. Each attempt is claimed by a
conditional update, signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`,
`webhook-signature`: HMAC-SHA256 over `id.timestamp.body`), POSTed to the address that was
checked (no DNS rebinding between the check and the connection), and audited. Failures are
retried with exponential backoff on the injectable clock; a 410 or too many failures in a row
disable the subscription.

The same signing, destination checks and backoff serve the notifications' webhook channel
(agents.actions.work): `post_signed` and `backoff_seconds` are the one copy.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import logging
import secrets
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F
from standardwebhooks.webhooks import Webhook

from audit import clock
from audit import secrets as cipher
from audit import services as audit
from audit.actors import SYSTEM, requires_actor
from governance.actions.common import GovernanceError, audited_refusals, name_of
from governance.actions.principals import kind_of, principal_of
from governance.models import (
    PrincipalKind,
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEventType,
    WebhookSubscription,
)
from governance.permissions import AccessDenied, can, require, require_model

log = logging.getLogger(__name__)

EVENT_TYPES = tuple(WebhookEventType.values)
SECRET_PREFIX = "whsec_"
USER_AGENT = "Steward-Webhooks/1"

DEFAULTS = {
    "TIMEOUT_SECONDS": 10.0,  # one attempt's connect + read budget
    "LEASE_SECONDS": 60,  # a claimed attempt that never reports back is retried after this
    "BACKOFF_SECONDS": 30,  # the first retry's delay; doubled after each failure
    "MAX_BACKOFF_SECONDS": 6 * 3600,
    "MAX_ATTEMPTS": 8,  # then the delivery is dead
    "DISABLE_AFTER_FAILURES": 20,  # failed attempts in a row that disable a subscription
}


def setting(name: str) -> float:
    """Return a webhook setting (STEWARD_WEBHOOK_<name>) or its default."""
    return getattr(settings, f"STEWARD_WEBHOOK_{name}", DEFAULTS[name])


def new_secret() -> str:
    """Return a fresh Standard Webhooks secret: `whsec_` and base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Return the delay before the next attempt after `attempts` failures (exponential, capped)."""
    return min(base * 2 ** max(attempts - 1, 0), cap)


# --- destinations: no SSRF -----------------------------------------------------------------------


class DestinationRefused(GovernanceError):
    """A webhook URL that Steward will not call (a private address, a bad scheme...)."""

    code = "destination"


@dataclass(frozen=True)
class Destination:
    """A checked URL: where to connect (the checked address) and what to call it."""

    scheme: str
    host: str
    port: int
    target: str  # path and query
    address: str

    @property
    def pinned_url(self) -> str:
        """The URL with the checked address in place of the name (so DNS is not asked again)."""
        ip = ipaddress.ip_address(self.address)
        literal = f"[{ip}]" if ip.version == 6 else str(ip)
        return f"{self.scheme}://{literal}:{self.port}{self.target}"

    @property
    def host_header(self) -> str:
        """The Host header the receiver expects."""
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


def resolve_host(host: str, port: int) -> list[str]:
    """Return the addresses a host name resolves to (tests replace this to fake DNS)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _allow_list() -> tuple[set[str], list]:
    """Return the admin's allowed host names and networks (STEWARD_WEBHOOK_ALLOWED_HOSTS)."""
    names, networks = set(), []
    for entry in getattr(settings, "STEWARD_WEBHOOK_ALLOWED_HOSTS", []) or []:
        entry = str(entry).strip().lower()
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            if entry:
                names.add(entry)
    return names, networks


def _forbidden(ip) -> str:
    """Say why an address is not a public one ('' when it is)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for flag, why in (
        ("is_loopback", "a loopback"),
        ("is_link_local", "a link-local"),
        ("is_private", "a private"),
        ("is_multicast", "a multicast"),
        ("is_reserved", "a reserved"),
        ("is_unspecified", "an unspecified"),
    ):
        if getattr(ip, flag):
            return f"{ip} is {why} address"
    return ""


def check_destination(url: str) -> Destination:
    """Check a webhook URL and resolve it once; refuse non-public addresses not allowed by name."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused("A webhook URL is http or https, with a host.")
    if parts.username or parts.password:
        raise DestinationRefused("A webhook URL may not carry credentials.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise DestinationRefused("The webhook URL's port is not a number.") from None
    host = parts.hostname.lower()
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve_host(host, port)]
        except OSError as exc:
            raise DestinationRefused(f"{host} does not resolve ({exc}).") from None
    if not addresses:
        raise DestinationRefused(f"{host} does not resolve.")
    names, networks = _allow_list()
    for ip in addresses:
        why = _forbidden(ip)
        if why and host not in names and not any(ip in network for network in networks):
            raise DestinationRefused(
                f"{host}: {why}; an admin may allow it in STEWARD_WEBHOOK_ALLOWED_HOSTS.",
                address=str(ip),
            )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Destination(parts.scheme, host, port, target, str(addresses[0]))


# --- signing and sending -------------------------------------------------------------------------


def sign(secret: str, webhook_id: str, timestamp: dt.datetime, body: str) -> str:
    """Return the `webhook-signature` header of a body (Standard Webhooks v1)."""
    return Webhook(secret).sign(msg_id=webhook_id, timestamp=timestamp, data=body)


def encode(payload: Any) -> str:
    """Return the exact body text that is signed and sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


@dataclass
class Attempt:
    """What one POST did: the receiver's status code, or the error that stopped it."""

    status_code: int | None = None
    error: str = ""

    @property
    def succeeded(self) -> bool:
        """Tell whether the receiver accepted the delivery (2xx)."""
        return self.status_code is not None and 200 <= self.status_code < 300


def post_signed(
    url: str,
    body: str,
    *,
    webhook_id: str,
    secret: str | None,
    timestamp: dt.datetime,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> Attempt:
    """POST a body to a checked destination, signed when a secret is given; never follow redirects.

    Raises DestinationRefused before any connection when the URL is not allowed. The
    connection goes to the address that was checked, with the name in the Host header (and as
    the TLS server name), so a DNS answer that changes after the check is never used.
    """
    destination = check_destination(url)
    send = {
        "Host": destination.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        **(headers or {}),
    }
    if secret:
        send["webhook-signature"] = sign(secret, webhook_id, timestamp, body)
    extensions = {"sni_hostname": destination.host} if destination.scheme == "https" else None
    try:
        with (
            httpx.Client(
                timeout=timeout or setting("TIMEOUT_SECONDS"), follow_redirects=False
            ) as client,
            client.stream(
                "POST",
                destination.pinned_url,
                content=body.encode(),
                headers=send,
                extensions=extensions,
            ) as reply,
        ):
            return Attempt(status_code=reply.status_code)
    except httpx.HTTPError as exc:
        return Attempt(error=f"{type(exc).__name__}: {exc}"[:500])


# --- subscriptions -------------------------------------------------------------------------------


def _event_types(event_types) -> list[str]:
    """Validate a list of event types."""
    chosen = list(dict.fromkeys(event_types or []))
    unknown = [name for name in chosen if name not in EVENT_TYPES]
    if not chosen or unknown:
        raise GovernanceError(
            f"Choose event types among {', '.join(EVENT_TYPES)}"
            + (f"; unknown: {', '.join(map(str, unknown))}." if unknown else "."),
            code="event_types",
        )
    return chosen


@requires_actor
@audited_refusals
def create_subscription(
    *, owner, url: str, event_types: list[str], description: str = "", actor
) -> tuple[WebhookSubscription, str]:
    """Subscribe an integration to events; return it and its secret, which is shown only now."""
    if actor is not SYSTEM:
        require_model(actor, "add", WebhookSubscription)
        if owner.pk != actor.pk:
            principal = principal_of(owner)
            if principal is None:
                raise AccessDenied(actor, "change", owner, detail="Not an integration of yours.")
            require(actor, "change", principal)
    if kind_of(owner) != PrincipalKind.INTEGRATION:
        raise GovernanceError("Webhooks are subscribed by integrations.", code="owner")
    check_destination(url)
    secret = new_secret()
    now = clock.now()
    subscription = WebhookSubscription.objects.create(
        owner=owner,
        url=url,
        description=description,
        event_types=_event_types(event_types),
        secret_encrypted=cipher.encrypt(secret),
        created_by_name=name_of(actor) if actor is not SYSTEM else "system",
        created_at=now,
        updated_at=now,
    )
    audit.record(
        action="governance.webhook_subscription.created",
        actor=actor,
        target=subscription,
        body={"owner": name_of(owner), "url": url, "event_types": subscription.event_types},
    )
    return subscription, secret


SUBSCRIPTION_FIELDS = {"url", "event_types", "description", "active"}


@requires_actor
@audited_refusals
def update_subscription(subscription: WebhookSubscription, *, actor, **fields):
    """Change a subscription; re-activating one clears why it was disabled and its failures."""
    if actor is not SYSTEM:
        require(actor, "change", subscription)
    refused = sorted(set(fields) - SUBSCRIPTION_FIELDS)
    if refused:
        raise GovernanceError(f"{', '.join(refused)} cannot be changed.", code="field")
    locked = WebhookSubscription.objects.select_for_update().get(pk=subscription.pk)
    if "url" in fields:
        check_destination(fields["url"])
    if "event_types" in fields:
        fields["event_types"] = _event_types(fields["event_types"])
    if fields.get("active") and not locked.active:
        locked.disabled_reason, locked.consecutive_failures = "", 0
    elif fields.get("active") is False and locked.active:
        locked.disabled_reason = f"disabled by {name_of(actor) or 'system'}"
    for name, value in fields.items():
        setattr(locked, name, value)
    locked.updated_at = clock.now()
    locked.save()
    audit.record(
        action="governance.webhook_subscription.changed",
        actor=actor,
        target=locked,
        body={name: value for name, value in fields.items()},
    )
    return locked


@requires_actor
@audited_refusals
def delete_subscription(subscription: WebhookSubscription, *, actor) -> None:
    """Delete a subscription and its outbox rows (the audit log keeps what was sent)."""
    if actor is not SYSTEM:
        require(actor, "delete", subscription)
    audit.record(
        action="governance.webhook_subscription.deleted",
        actor=actor,
        target=subscription,
        body={"owner": name_of(subscription.owner), "url": subscription.url},
    )
    subscription.delete()


# --- the outbox ----------------------------------------------------------------------------------


def _send_delivery_tasks(delivery_ids: list[int]) -> None:
    """Ask a worker to make each first attempt; a lost message waits for the beat sweep."""
    from governance.tasks import deliver_webhook

    for delivery_id in delivery_ids:
        try:
            deliver_webhook.apply_async(args=[delivery_id])
        except Exception:  # broker down: next_attempt_at brings the sweep to it
            log.warning("could not queue webhook delivery %s; the sweep will", delivery_id)


dispatcher: Callable[[list[int]], None] = _send_delivery_tasks


@requires_actor
def enqueue_event(
    event_type: str, payload: dict[str, Any] | Callable[[], dict[str, Any]], *, actor, target=None
) -> list[WebhookDelivery]:
    """Write an event to the outbox for each active subscription that wants it, in this transaction.

    `target` is the object the event is about: a subscription only receives it if its owner may
    view that object. `payload` may be a function, called only when someone subscribes.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}")
    subscriptions = [
        subscription
        for subscription in WebhookSubscription.objects.filter(
            active=True, owner__is_active=True
        ).select_related("owner")
        if event_type in subscription.event_types
        and (target is None or can(subscription.owner, "view", target))
    ]
    if not subscriptions:
        return []
    now = clock.now()
    data = payload() if callable(payload) else payload
    deliveries = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                subscription=subscription,
                event_type=event_type,
                webhook_id=f"msg_{uuid.uuid4().hex}",
                payload={"type": event_type, "timestamp": now.isoformat(), "data": data},
                created_at=now,
                # The grace of the first attempt: if the message after the commit is lost, the
                # sweep finds the row once it has passed.
                next_attempt_at=now + dt.timedelta(seconds=setting("LEASE_SECONDS")),
            )
            for subscription in subscriptions
        ]
    )
    ids = [delivery.pk for delivery in deliveries]
    transaction.on_commit(lambda: dispatcher(ids))
    return deliveries


def _claim(delivery_id: int, now: dt.datetime, due_only: bool) -> WebhookDelivery | None:
    """Take one attempt of a pending delivery by a conditional update (one worker wins)."""
    pending = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDeliveryStatus.PENDING)
    # A first attempt (from the task) takes an untried row; the sweep takes what is due.
    pending = pending.filter(next_attempt_at__lte=now) if due_only else pending.filter(attempts=0)
    lease = now + dt.timedelta(seconds=setting("LEASE_SECONDS"))
    if not pending.update(attempts=F("attempts") + 1, next_attempt_at=lease):
        return None
    return WebhookDelivery.objects.select_related("subscription").get(pk=delivery_id)


def _disable(subscription: WebhookSubscription, reason: str, *, actor) -> None:
    """Disable a subscription that its receiver refuses (410) or that keeps failing."""
    if WebhookSubscription.objects.filter(pk=subscription.pk, active=True).update(
        active=False, disabled_reason=reason[:300], updated_at=clock.now()
    ):
        audit.record(
            action="governance.webhook_subscription.disabled",
            actor=actor,
            target=subscription,
            body={"reason": reason},
        )


@requires_actor
def deliver(
    delivery_id: int, *, actor, now: dt.datetime | None = None, due_only: bool = True
) -> WebhookDelivery | None:
    """Make one attempt of a delivery; record and audit its outcome. Safe to run twice."""
    now = now or clock.now()
    delivery = _claim(delivery_id, now, due_only)
    if delivery is None:
        return None
    subscription = delivery.subscription
    outcome: dict[str, Any] = {"next_attempt_at": None}
    attempt = Attempt()
    if not subscription.active:
        attempt.error = f"subscription disabled: {subscription.disabled_reason}"[:500]
        outcome["status"] = WebhookDeliveryStatus.FAILED
    else:
        try:
            attempt = post_signed(
                subscription.url,
                encode(delivery.payload),
                webhook_id=delivery.webhook_id,
                secret=cipher.decrypt(subscription.secret_encrypted),
                timestamp=now,
            )
        except DestinationRefused as exc:
            attempt.error = f"refused: {exc}"[:500]
        if attempt.succeeded:
            outcome.update(status=WebhookDeliveryStatus.DELIVERED, delivered_at=now)
        elif attempt.status_code == 410:
            outcome["status"] = WebhookDeliveryStatus.FAILED
            _disable(subscription, "the receiver answered 410 Gone", actor=actor)
        elif attempt.error.startswith("refused:"):
            outcome["status"] = WebhookDeliveryStatus.FAILED
        elif delivery.attempts >= setting("MAX_ATTEMPTS"):
            outcome["status"] = WebhookDeliveryStatus.DEAD
        else:
            delay = backoff_seconds(
                delivery.attempts, setting("BACKOFF_SECONDS"), setting("MAX_BACKOFF_SECONDS")
            )
            outcome.update(
                status=WebhookDeliveryStatus.PENDING,
                next_attempt_at=now + dt.timedelta(seconds=delay),
            )
    with transaction.atomic():
        # Only the holder of this attempt writes its outcome (a lapsed lease lets another try).
        WebhookDelivery.objects.filter(pk=delivery.pk, attempts=delivery.attempts).update(
            last_status_code=attempt.status_code, last_error=attempt.error, **outcome
        )
        if subscription.active:
            _count(subscription, attempt.succeeded, actor=actor)
        audit.record(
            action="governance.webhook.attempted",
            actor=actor,
            target=delivery,
            body={
                "webhook_id": delivery.webhook_id,
                "event_type": delivery.event_type,
                "attempt": delivery.attempts,
                "status_code": attempt.status_code,
                "error": attempt.error,
                "outcome": str(outcome["status"]),
            },
        )
    delivery.refresh_from_db()
    return delivery


def _count(subscription: WebhookSubscription, succeeded: bool, *, actor) -> None:
    """Count failed attempts in a row; too many disable the subscription."""
    if succeeded:
        WebhookSubscription.objects.filter(pk=subscription.pk).update(consecutive_failures=0)
        return
    WebhookSubscription.objects.filter(pk=subscription.pk).update(
        consecutive_failures=F("consecutive_failures") + 1
    )
    failures = WebhookSubscription.objects.values_list("consecutive_failures", flat=True).get(
        pk=subscription.pk
    )
    if failures >= setting("DISABLE_AFTER_FAILURES"):
        _disable(subscription, f"{failures} failed deliveries in a row", actor=actor)


@requires_actor
def deliver_due(*, actor, now: dt.datetime | None = None, limit: int = 200) -> int:
    """Attempt every pending delivery that is due (a retry, or a first attempt that was lost)."""
    now = now or clock.now()
    due = WebhookDelivery.objects.filter(
        status=WebhookDeliveryStatus.PENDING, next_attempt_at__lte=now
    ).order_by("next_attempt_at")
    attempted = 0
    for delivery_id in list(due.values_list("pk", flat=True)[:limit]):
        if deliver(delivery_id, actor=actor, now=now) is not None:
            attempted += 1
    return attempted


@requires_actor
@audited_refusals
def replay_delivery(delivery: WebhookDelivery, *, actor) -> WebhookDelivery:
    """Send a delivery's payload again, as a new delivery with its own `webhook-id`."""
    subscription = delivery.subscription
    if actor is not SYSTEM:
        require(actor, "change", subscription)
    if not subscription.active:
        raise GovernanceError(
            "The subscription is disabled; re-activate it before replaying.", code="disabled"
        )
    now = clock.now()
    replay = WebhookDelivery.objects.create(
        subscription=subscription,
        event_type=delivery.event_type,
        webhook_id=f"msg_{uuid.uuid4().hex}",
        payload=delivery.payload,
        replay_of=delivery,
        created_at=now,
        next_attempt_at=now + dt.timedelta(seconds=setting("LEASE_SECONDS")),
    )
    audit.record(
        action="governance.webhook.replayed",
        actor=actor,
        target=replay,
        body={"replay_of": delivery.webhook_id, "webhook_id": replay.webhook_id},
    )
    transaction.on_commit(lambda: dispatcher([replay.pk]))
    return replay
