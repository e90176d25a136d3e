"""Inbound webhooks: a monitoring alert starts a run, an ITSM update signals one.

A request to /api/v1/hooks/<slug>/ is verified per Standard Webhooks (`webhook-id`,
`webhook-timestamp`, `webhook-signature`: HMAC-SHA256 over `id.timestamp.body`, compared in
constant time by the `standardwebhooks` library, a 5-minute tolerance read from the injectable
clock). It then acts as the endpoint's integration principal, in ONE transaction: it records the
webhook-id (accepted once per endpoint: a replay answers 200 and does nothing again) and calls
the engine's services, start_run (under the business key's lock, with the endpoint's
`business_key_policy`) or send_signal. Both only write rows and queue their steps on
commit, so the sender gets its answer within milliseconds and nothing is lost: the run's steps
run on the workers, and a failure rolls back the record too, so the sender's retry is processed.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from audit import clock
from audit import secrets as cipher
from audit import services as audit
from audit.actors import SYSTEM, requires_actor
from governance.actions.common import GovernanceError, audited_refusals
from governance.actions.webhooks import new_secret
from governance.permissions import require_model
from orchestrator import services
from orchestrator.models import (
    RUN_FINISHED,
    InboundAction,
    InboundEndpoint,
    InboundHook,
    WorkflowRun,
)

log = logging.getLogger(__name__)

TOLERANCE = dt.timedelta(minutes=5)
_MISSING = object()


class HookRefused(Exception):
    """A webhook whose signature does not verify (missing, wrong, stale or from the future)."""


class MappingError(GovernanceError):
    """A payload that the endpoint's declared mapping cannot read."""

    code = "mapping"


class _ClockedWebhook(Webhook):
    """The library's verifier, with its timestamp check on Steward's injectable clock."""

    def _Webhook__verify_timestamp(self, timestamp_header: str) -> dt.datetime:
        """Refuse a timestamp more than the tolerance away from now (as the library does)."""
        try:
            timestamp = dt.datetime.fromtimestamp(float(timestamp_header), tz=dt.UTC)
        except (TypeError, ValueError, OverflowError, OSError):
            raise WebhookVerificationError("Invalid Signature Headers") from None
        now = clock.now()
        if timestamp < now - TOLERANCE:
            raise WebhookVerificationError("Message timestamp too old")
        if timestamp > now + TOLERANCE:
            raise WebhookVerificationError("Message timestamp too new")
        return timestamp


def verify(endpoint: InboundEndpoint, body: bytes, headers: dict[str, str]) -> Any:
    """Return the verified JSON payload, or raise HookRefused saying why."""
    try:
        verifier = _ClockedWebhook(cipher.decrypt(endpoint.secret_encrypted))
        return verifier.verify(body, headers)
    except WebhookVerificationError as exc:
        raise HookRefused(str(exc)) from None
    except (ValueError, TypeError, UnicodeDecodeError) as exc:  # malformed header or body
        raise HookRefused(f"unreadable signature or body ({type(exc).__name__})") from None


def pointer(document: Any, path: str, default: Any = _MISSING) -> Any:
    """Resolve a JSON pointer (RFC 6901) in a document; '' is the whole document."""
    if path == "":
        return document
    if not path.startswith("/"):
        raise MappingError(f"{path!r} is not a JSON pointer (it starts with '/').")
    current = document
    for raw in path[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list) and token.isdigit() and int(token) < len(current):
            current = current[int(token)]
        elif default is not _MISSING:
            return default
        else:
            raise MappingError(f"The payload has nothing at {path}.", pointer=path)
    return current


def _business_key(endpoint: InboundEndpoint, payload: Any) -> str:
    """Read the business key the endpoint declares ('' when it declares none)."""
    if not endpoint.business_key_pointer:
        return ""
    value = pointer(payload, endpoint.business_key_pointer)
    if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
        raise MappingError(f"The business key at {endpoint.business_key_pointer} is not a value.")
    return str(value)


def _record_refusal(endpoint: InboundEndpoint, why: str, headers: dict[str, str]) -> None:
    """Audit a refused webhook (its own transaction: the request fails)."""
    with transaction.atomic():
        audit.record(
            action="orchestrator.inbound_hook.refused",
            actor=SYSTEM,  # nobody is authenticated: Steward refused what was presented
            target=endpoint,
            body={"reason": why, "webhook_id": str(headers.get("webhook-id", ""))[:200]},
        )


def receive(slug: str, body: bytes, headers: dict[str, str]) -> tuple[InboundHook, bool]:
    """Verify and act on one webhook; return its record and whether it was new (False: replay).

    The actor is the endpoint's integration principal, found from the endpoint the signature
    proves the sender holds the secret of. Raises InboundEndpoint.DoesNotExist for an unknown or
    inactive endpoint and HookRefused (audited) for a bad signature.
    """
    endpoint = InboundEndpoint.objects.select_related("principal", "workflow").get(
        slug=slug, active=True
    )
    headers = {name.lower(): value for name, value in headers.items()}
    try:
        payload = verify(endpoint, body, headers)
    except HookRefused as exc:
        _record_refusal(endpoint, str(exc), headers)
        raise
    webhook_id = headers["webhook-id"][:200]
    actor = endpoint.principal
    with transaction.atomic():
        try:
            with transaction.atomic():
                hook = InboundHook.objects.create(
                    endpoint=endpoint, webhook_id=webhook_id, received_at=clock.now()
                )
        except IntegrityError:
            # Seen already (or a concurrent copy just committed): accepted once, done once.
            return InboundHook.objects.get(endpoint=endpoint, webhook_id=webhook_id), False
        hook.business_key = _business_key(endpoint, payload)
        if endpoint.action == InboundAction.START_RUN:
            run_input = {
                field: pointer(payload, path) for field, path in endpoint.input_mapping.items()
            }
            run = services.start_run(
                endpoint.workflow,
                run_input,
                started_by=actor,
                trigger=f"webhook:{endpoint.slug}",
                business_key=hook.business_key,
                business_key_policy=endpoint.business_key_policy,
                idempotency_key=f"hook:{endpoint.pk}:{webhook_id}",
            )
            hook.run_id = run.pk
        else:
            run = _run_for(endpoint, hook.business_key, actor)
            signal_payload = pointer(payload, endpoint.signal_payload_pointer or "")
            signal = services.send_signal(run, endpoint.signal_name, signal_payload, sent_by=actor)
            hook.run_id, hook.signal_id = run.pk, signal.pk
        hook.save(update_fields=["business_key", "run_id", "signal_id"])
        audit.record(
            action="orchestrator.inbound_hook.received",
            actor=actor,
            target=endpoint,
            run_id=hook.run_id,
            body={
                "webhook_id": webhook_id,
                "action": endpoint.action,
                "business_key": hook.business_key,
                "signal_id": hook.signal_id,
            },
        )
    return hook, True


def _run_for(endpoint: InboundEndpoint, business_key: str, actor) -> WorkflowRun:
    """Find the open run of the endpoint's workflow with this business key (the newest)."""
    if not business_key:
        raise MappingError("A signal needs the business key of the run it is for.")
    run = (
        WorkflowRun.objects.filter(workflow=endpoint.workflow, business_key=business_key)
        .exclude(status__in=RUN_FINISHED)
        .order_by("-created_at", "-id")
        .first()
    )
    if run is None:
        raise MappingError(
            f"No open {endpoint.workflow.slug} run has the business key {business_key!r}.",
            code="no_run",
        )
    return run


@requires_actor
@audited_refusals
def create_endpoint(
    *,
    slug: str,
    name: str,
    principal,
    action: str,
    workflow,
    input_mapping: dict[str, str] | None = None,
    business_key_pointer: str = "",
    business_key_policy: str = "use_existing",
    signal_name: str = "",
    signal_payload_pointer: str = "",
    actor,
) -> tuple[InboundEndpoint, str]:
    """Configure an inbound endpoint; return it and its secret, which is shown only now."""
    if actor is not SYSTEM:
        require_model(actor, "add", InboundEndpoint)
    if action == InboundAction.SEND_SIGNAL and not (signal_name and business_key_pointer):
        raise GovernanceError(
            "A signalling endpoint names its signal and where the business key is.", code="mapping"
        )
    for path in [*(input_mapping or {}).values(), business_key_pointer, signal_payload_pointer]:
        if path and not path.startswith("/"):
            raise GovernanceError(f"{path!r} is not a JSON pointer.", code="mapping")
    secret = new_secret()
    endpoint = InboundEndpoint(
        slug=slug,
        name=name,
        secret_encrypted=cipher.encrypt(secret),
        principal=principal,
        action=action,
        workflow=workflow,
        input_mapping=input_mapping or {},
        business_key_pointer=business_key_pointer,
        business_key_policy=business_key_policy,
        signal_name=signal_name,
        signal_payload_pointer=signal_payload_pointer,
    )
    endpoint._change_reason = "inbound endpoint configured"
    if actor is not SYSTEM:
        endpoint._history_user = actor
    endpoint.full_clean()
    endpoint.save()
    audit.record(
        action="orchestrator.inbound_endpoint.created",
        actor=actor,
        target=endpoint,
        body={"slug": slug, "action": action, "workflow": workflow.slug},
    )
    return endpoint, secret


@requires_actor
def prune_hooks(*, actor, now: dt.datetime | None = None) -> int:
    """Forget received webhook-ids older than STEWARD_INBOUND_HOOK_KEEP_DAYS (far past the
    5-minute tolerance, so a forgotten id can no longer be replayed with a valid signature)."""
    keep = dt.timedelta(days=getattr(settings, "STEWARD_INBOUND_HOOK_KEEP_DAYS", 7))
    deleted, _ = InboundHook.objects.filter(received_at__lt=(now or clock.now()) - keep).delete()
    if deleted:
        log.info("pruned %s inbound webhook records", deleted)
    return deleted
