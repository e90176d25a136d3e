"""The live channel: a websocket that tells a signed-in person which objects changed, by id.

Protocol (docs/web.md). The page connects to /ws/live/ with its session cookie; anonymous
visitors are refused at the handshake. The client's first message is
`{"type": "hello", "cursor": "<txid>.<id>" | null, "topics": ["approval", "run.started", ...],
"ids": {"run": [42]}}`: a topic names every event type before its dot, or one event type;
`ids`, when given, narrows a topic to some objects (a run's page follows its run alone). The
consumer replays from the database every event after the cursor whose object the person may
view, then streams new ones: `{"type": "event", "event": "approval.requested", "kind":
"approval", "id": 42, "cursor": "...", "decidable": true}`. A message carries the event type,
the object's id and the small facts its app registered (live.register_extra: whether the
person may decide an approval now), never the object's data: the page re-reads it through
restrict(). Event types are the webhooks' and those a higher app registered
(live.register_event_type: the engine's run.changed and run.progressed), checked alike through
restrict(). `{"type": "ready", "cursor": ...}` ends the replay; `{"type": "resync"}` says the
cursor is older than what is kept (the page reloads what it shows).

Each batch is read for the person as they are now: the user is re-read (inactive: closed), the
session must still be theirs (signed out, or the password changed elsewhere: closed), and
each event's object passes restrict() at that moment. Nudges through the Channels layer (ids
only, governance.actions.events) make delivery prompt; the consumer also re-reads the table
every STEWARD_LIVE_POLL_SECONDS, so a nudge lost by Redis, or never sent across processes by
the in-memory layer, only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib import import_module

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

from governance import live
from governance.actions.events import GROUP

CLOSE_SIGNED_OUT = 4401  # the session ended or the person was deactivated
MAX_EARLY = 10_000  # early events remembered before the cursor passes them
MAX_IDS = 100  # objects one socket may narrow its events to


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """One page's live channel: replay after its cursor, then stream, each event re-checked."""

    async def connect(self):
        """Accept a signed-in person's socket; refuse anyone else at the handshake."""
        user = self.scope.get("user")
        session = self.scope.get("session")
        if user is None or not user.is_authenticated or session is None:
            await self.close()
            return
        self.user_id = user.pk
        self.session_key = session.session_key
        self.cursor = None
        self.early: set[int] = set()
        self.wake = asyncio.Event()
        self.loop_task = None
        self.greeted = False
        await self.accept()
        if self.channel_layer is not None:
            await self.channel_layer.group_add(GROUP, self.channel_name)

    async def disconnect(self, code):
        """Leave the group and stop reading."""
        if self.loop_task is not None:
            self.loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.loop_task
        if self.channel_layer is not None and hasattr(self, "user_id"):
            await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """Take the client's hello (its cursor and topics); anything else is ignored."""
        if not isinstance(content, dict) or content.get("type") != "hello" or self.greeted:
            return
        self.greeted = True
        topics = content.get("topics")
        if not isinstance(topics, list) or not topics:
            topics = live.topics()
        self.event_types = [
            name
            for name in live.event_types()
            if name in topics or name.partition(".")[0] in topics
        ]
        self.only = _narrowing(content.get("ids"))
        cursor = live.parse_cursor(content.get("cursor"))
        resync = False
        if cursor is None:
            cursor = await database_sync_to_async(live.head)()
        elif not await database_sync_to_async(live.still_known)(cursor):
            cursor, resync = await database_sync_to_async(live.head)(), True
        self.cursor = cursor
        if resync:
            await self.send_json({"type": "resync", "cursor": live.format_cursor(cursor)})
        if not await self.catch_up():
            return
        await self.send_json({"type": "ready", "cursor": live.format_cursor(self.cursor)})
        self.loop_task = asyncio.ensure_future(self.follow())

    async def live_nudge(self, message):
        """A new event committed somewhere: read now (the message's id is not trusted)."""
        self.wake.set()

    async def follow(self):
        """Read after the cursor whenever nudged, and at least every poll interval."""
        interval = float(live.setting("POLL_SECONDS"))
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=interval)
            self.wake.clear()
            if not await self.catch_up():
                return

    async def catch_up(self) -> bool:
        """Send every event after the cursor the person may see; False when the socket closed."""
        self.scan, self.held = self.cursor, False
        while True:
            messages, more = await database_sync_to_async(self.read)()
            if messages is None:
                await self.close(code=CLOSE_SIGNED_OUT)
                return False
            for message in messages:
                await self.send_json(message)
            if not more:
                return True

    def read(self) -> tuple[list[dict] | None, bool]:
        """Read one batch for the person as they are now: (messages, whether more wait)."""
        user = self.current_user()
        if user is None:
            return None, False
        batch = live.read_after(self.scan, self.event_types, only=self.only)
        rows = batch.rows
        fresh = [row for row in rows if row.pk not in self.early]
        fresh_ids = {row.pk for row in fresh}
        visible = live.visible_targets(user, fresh)
        extras = live.extras(
            user, [row for row in fresh if (row.target_type, row.target_id) in visible]
        )
        messages = []
        for row in rows:
            # The cursor passes only the unbroken run of final events: behind an early one, a
            # later batch's final event may follow an event this read could not see yet.
            self.held = self.held or not row.final
            if not self.held:
                self.cursor = row.cursor
                self.early.discard(row.pk)
            if row.pk not in fresh_ids or (row.target_type, row.target_id) not in visible:
                continue
            if self.held:
                self.early.add(row.pk)
            messages.append(self.message(row, extras))
        if messages and messages[-1]["cursor"] != live.format_cursor(self.cursor):
            # The batch's last event let the cursor pass more: say so, or a reconnect would
            # replay those again.
            messages.append({"type": "cursor", "cursor": live.format_cursor(self.cursor)})
        if len(self.early) > MAX_EARLY:
            self.early.clear()  # at worst some early events come a second time
        if rows:
            self.scan = rows[-1].cursor
        more = len(rows) == int(live.setting("BATCH"))
        if not more and batch.head is not None and batch.head > self.scan:
            # Every final event up to the head was looked at: move past those not followed
            # (the scan, and the cursor unless an early event holds it), so the next read does
            # not scan them again. Non-final events all sort after the head (txid order).
            self.scan = batch.head
            if not self.held:
                self.cursor = batch.head
        return messages, more

    def message(self, row: live.Row, extras: dict[tuple[str, str], dict]) -> dict:
        """Describe one event by ids: what happened to which object, and the cursor to keep."""
        return {
            "type": "event",
            "event": row.event_type,
            "kind": row.event_type.partition(".")[0],
            "id": int(row.target_id) if row.target_id.isdigit() else row.target_id,
            "cursor": live.format_cursor(self.cursor),
            **extras.get((row.target_type, row.target_id), {}),
        }

    def current_user(self):
        """Return the person as they are now, or None when signed out or deactivated."""
        store = import_module(settings.SESSION_ENGINE).SessionStore(self.session_key)
        if str(store.get(SESSION_KEY)) != str(self.user_id):
            return None
        user = get_user_model().objects.filter(pk=self.user_id, is_active=True).first()
        # As Django's own check: a password changed elsewhere ends the other sessions.
        if user is None or not constant_time_compare(
            store.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
        ):
            return None
        return user


def _narrowing(ids) -> dict[str, list[str]] | None:
    """Read a hello's `ids` ({topic: [id, ...]}); anything malformed narrows nothing."""
    if not isinstance(ids, dict):
        return None
    only = {}
    for topic, values in list(ids.items())[:10]:
        if not isinstance(topic, str) or not isinstance(values, list):
            continue
        kept = [str(pk) for pk in values[:MAX_IDS] if isinstance(pk, int | str)]
        only[topic] = [pk for pk in kept if pk.isdigit() and len(pk) < 20]
    return only or None
