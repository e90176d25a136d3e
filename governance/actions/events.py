"""One fan-out for everything Steward announces: live pages and outbound webhooks alike.

A source (a governance service, agents.set_status, the orchestrator's run-event receiver) calls
`announce` inside the transaction of its change (`announce_live` for a type live pages follow
and no webhook carries, such as a run's steps moving). In that transaction it writes a
LiveEvent (the type and the object's ids, never data) and the webhook outbox rows
(webhooks.enqueue_event), so both commit or roll back with the change. Once the transaction
commits it nudges the live consumers through the Channels layer with the event's id only; a
lost nudge (the Redis layer drops messages under load, the in-memory layer reaches only its own
process) delays a page by at most the consumers' poll interval and loses nothing
(governance/live.py).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.db import models, transaction

from audit import clock
from audit.actors import requires_actor
from governance.actions import webhooks
from governance.models import LiveEvent

log = logging.getLogger(__name__)

GROUP = "steward.live"  # the Channels group every live consumer joins


@requires_actor
def announce(
    event_type: str,
    payload: dict[str, Any] | Callable[[], dict[str, Any]],
    *,
    target: models.Model,
    actor,
) -> LiveEvent:
    """Announce a change in the caller's transaction: a live event, the webhooks, a nudge after."""
    event = LiveEvent.objects.create(
        event_type=event_type,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        created_at=clock.now(),
    )
    webhooks.enqueue_event(event_type, payload, actor=actor, target=target)
    transaction.on_commit(lambda: _nudge(event.pk))
    return event


@requires_actor
def announce_live(event_type: str, *, target: models.Model, actor) -> LiveEvent:
    """Announce a change live pages follow and no webhook carries (a registered live-only type):
    one row in the caller's transaction, a nudge after its commit."""
    from governance.live import is_live_only

    if not is_live_only(event_type):
        raise ValueError(f"{event_type!r} is not a registered live-only event type")
    event = LiveEvent.objects.create(
        event_type=event_type,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        created_at=clock.now(),
    )
    transaction.on_commit(lambda: _nudge(event.pk))
    return event


@requires_actor
def prune_live_events(*, actor, now: dt.datetime | None = None) -> int:
    """Delete the live events older than STEWARD_LIVE_KEEP_HOURS; return how many went."""
    from governance.live import setting

    cutoff = (now or clock.now()) - dt.timedelta(hours=setting("KEEP_HOURS"))
    deleted, _ = LiveEvent.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def _nudge(event_id: int) -> None:
    """Wake the live consumers (ids only); a failure only leaves them to their next poll."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    if layer is None:
        return
    send = async_to_sync(layer.group_send)
    message = {"type": "live.nudge", "event": event_id}
    try:
        if _loop_running():
            # A thread running an event loop cannot wait on another coroutine: send from a
            # thread of its own (a sync caller inside async code, e.g. a browser-driven test).
            sender = threading.Thread(target=send, args=(GROUP, message))
            sender.start()
            sender.join(timeout=5)
        else:
            send(GROUP, message)
    except Exception:  # the layer is down: the consumers' poll finds the event
        log.warning("could not nudge the live consumers about event %s", event_id, exc_info=True)


def _loop_running() -> bool:
    """Tell whether this thread runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
