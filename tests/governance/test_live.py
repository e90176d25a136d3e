"""The live channel through the authorisation matrix: what a person may not see never reaches
them, a message carries ids only, a reconnect catches up from its cursor (nothing missed, also
when ids commit out of order), and without a reachable layer the consumer's poll delivers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import psycopg
import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings as django_settings
from django.test import Client

from audit.actors import SYSTEM
from governance import live, services
from governance.actions import events
from governance.models import ApprovalRequest, LiveEvent
from orchestrator.asgi import application
from tests.websocket import WebsocketCommunicator

pytestmark = pytest.mark.postgres
MESSAGE_KEYS = {"type", "event", "kind", "id", "cursor", "decidable"}
SECRET = "4242-secret-amount"


@pytest.fixture(autouse=True)
def _in_memory_layer(settings):
    """The embedded layer (what runs without Redis), a short poll, small batches."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.STEWARD_LIVE_POLL_SECONDS = 0.2


COOKIE = django_settings.SESSION_COOKIE_NAME


def _signed_in(user) -> Client:
    """A browser session of `user` (signed in through Django's own login)."""
    client = Client()
    client.force_login(user)
    return client


def _socket(client: Client | None = None, origin=b"http://testserver"):
    """A websocket to the live channel, with the session cookie of `client` when given."""
    headers = [(b"origin", origin), (b"host", b"testserver")]
    if client is not None:
        headers.append((b"cookie", f"{COOKIE}={client.cookies[COOKIE].value}".encode()))
    return WebsocketCommunicator(application, "/ws/live/", headers=headers)


def _refund(company, amount=100, requested_by=None):
    return services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": amount, "note": SECRET},
        target=company.payments,
        requested_by=requested_by or company.agent,
    )


async def _hello(socket, cursor, topics=("approval", "escalation")):
    """Connect, send the cursor; return the replayed events and the `ready` cursor."""
    connected, _ = await socket.connect(timeout=5)
    assert connected
    await socket.send_json_to({"type": "hello", "cursor": cursor, "topics": list(topics)})
    replayed = []
    while True:
        raw = await socket.receive_from(timeout=5)
        message = json.loads(raw)
        assert set(message) <= MESSAGE_KEYS, message
        assert SECRET not in raw and "refund" not in raw  # ids only, never data
        if message["type"] in ("ready", "cursor"):
            cursor = message["cursor"]
        if message["type"] == "ready":
            return replayed, cursor
        if message["type"] == "event":
            replayed.append(message)


def _cursor() -> str:
    return live.format_cursor(live.head())


def test_anonymous_and_foreign_origins_are_refused(transactional_db, company):
    bob = _signed_in(company.bob)

    async def scenario():
        anonymous = _socket()
        connected, _ = await anonymous.connect()
        assert not connected
        foreign = _socket(bob, origin=b"https://evil.example")
        connected, _ = await foreign.connect()
        assert not connected

    async_to_sync(scenario)()


# Who receives the approval.requested event of a payments refund asked by the agent, and
# whether it says they may decide (the six principal kinds: approvers, a governance admin, a
# manager, an outsider, an integration, an agent). What restrict() answers is the expectation;
# the table pins the cases that matter. Integrations and agents cannot hold a web session
# (the authentication backend refuses them), so their socket is refused at the handshake.
PEOPLE = ("bob", "alice", "gina", "maya", "oscar")
MACHINES = ("integration", "agent")


def test_the_matrix_each_person_receives_exactly_what_they_may_see(transactional_db, company):
    before = _cursor()
    request = _refund(company)
    expected = {
        name: (
            ApprovalRequest.objects.restrict(getattr(company, name), "view")
            .filter(pk=request.pk)
            .exists(),
            ApprovalRequest.objects.restrict(getattr(company, name), "decide")
            .filter(pk=request.pk)
            .exists(),
        )
        for name in PEOPLE
    }
    assert expected["oscar"] == (False, False)
    assert expected["bob"] == (True, True)

    async def scenario(session):
        socket = _socket(session)
        replayed, _ = await _hello(socket, before)
        await socket.disconnect()
        return replayed

    async def refused(session):
        connected, _ = await _socket(session).connect(timeout=5)
        return not connected

    for name in MACHINES:
        assert async_to_sync(refused)(_signed_in(getattr(company, name))), name

    for name, (sees, decides) in expected.items():
        replayed = async_to_sync(scenario)(_signed_in(getattr(company, name)))
        if not sees:
            assert replayed == [], name
            continue
        assert [(m["event"], m["id"], m["decidable"]) for m in replayed] == [
            ("approval.requested", request.pk, decides)
        ], name


def test_replay_starts_after_the_cursor_and_topics_narrow_it(transactional_db, company):
    first = _refund(company, 1)
    middle = _cursor()
    second = _refund(company, 2)
    bob = _signed_in(company.bob)

    async def scenario():
        socket = _socket(bob)
        replayed, ready = await _hello(socket, middle)
        await socket.disconnect()
        assert [m["id"] for m in replayed] == [second.pk]
        assert ready == replayed[-1]["cursor"]
        runs_only = _socket(bob)
        replayed, _ = await _hello(runs_only, middle, topics=["run"])
        await runs_only.disconnect()
        assert replayed == []

    async_to_sync(scenario)()
    assert first.pk != second.pk


def test_events_created_while_disconnected_arrive_on_reconnect(transactional_db, company):
    """The gap test: bob's socket drops; what happens meanwhile comes when he is back."""
    start = _cursor()
    bob = _signed_in(company.bob)

    async def scenario():
        socket = _socket(bob)
        _, cursor = await _hello(socket, start)
        first = await database_sync_to_async(_refund)(company, 1)
        live_message = json.loads(await socket.receive_from(timeout=5))
        assert (live_message["event"], live_message["id"]) == ("approval.requested", first.pk)
        cursor = live_message["cursor"]
        await socket.disconnect()

        second = await database_sync_to_async(_refund)(company, 2)
        await database_sync_to_async(services.decide_approval)(
            first, user=company.alice, decision="approve", expected_digest=first.arguments_digest
        )

        again = _socket(bob)
        replayed, _ = await _hello(again, cursor)
        await again.disconnect()
        return first, second, replayed

    first, second, replayed = async_to_sync(scenario)()
    assert [(m["event"], m["id"]) for m in replayed] == [
        ("approval.requested", second.pk),
        ("approval.decided", first.pk),
    ]
    assert replayed[-1]["decidable"] is False  # decided: nothing left for bob


def test_a_nudge_delivers_at_once_and_the_poll_delivers_without_one(
    transactional_db, company, settings, monkeypatch
):
    """Same process: the layer's nudge wakes the consumer (poll set to a minute). Without a
    layer that reaches the consumer (the worker is another process), the poll finds it."""
    bob = _signed_in(company.bob)

    async def scenario():
        socket = _socket(bob)
        _, _ = await _hello(socket, await database_sync_to_async(_cursor)())
        request = await database_sync_to_async(_refund)(company, 1)
        message = json.loads(await socket.receive_from(timeout=2))
        await socket.disconnect()
        return request, message

    settings.STEWARD_LIVE_POLL_SECONDS = 60
    request, message = async_to_sync(scenario)()
    assert message["id"] == request.pk

    settings.STEWARD_LIVE_POLL_SECONDS = 0.2
    nudged = []
    monkeypatch.setattr(events, "_nudge", nudged.append)  # as if from another process
    request, message = async_to_sync(scenario)()
    assert message["id"] == request.pk
    assert nudged  # the announcement asked, and nobody heard


def _other_connection():
    db = django_settings.DATABASES["default"]
    return psycopg.connect(
        dbname=db["NAME"],
        user=db.get("USER") or None,
        password=db.get("PASSWORD") or None,
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
    )


def test_an_event_whose_id_commits_late_is_not_skipped(transactional_db, company):
    """Transaction A takes id n and stays open; B takes n+1 and commits; B is delivered at once
    (early), A once it commits; a reconnect from the last cursor then misses nothing."""
    late = _refund(company, 1)
    soon = _refund(company, 2)
    LiveEvent.objects.all().delete()
    start = _cursor()
    other = _other_connection()
    insert = (
        "INSERT INTO governance_liveevent (event_type, target_type, target_id, created_at) "
        "VALUES ('approval.decided', 'governance.approvalrequest', %s, now()) RETURNING id"
    )
    a_id = other.execute(insert, [str(late.pk)]).fetchone()[0]  # A: open, not committed
    bob = _signed_in(company.bob)

    async def scenario():
        socket = _socket(bob)
        _, _ = await _hello(socket, start)
        b = await database_sync_to_async(LiveEvent.objects.create)(
            event_type="approval.decided",
            target_type="governance.approvalrequest",
            target_id=str(soon.pk),
            created_at=dt.datetime.now(dt.UTC),
        )
        early = json.loads(await socket.receive_from(timeout=3))
        assert early["id"] == soon.pk
        assert early["cursor"] == start  # B is early: the cursor waits for A
        await database_sync_to_async(other.commit)()
        after = json.loads(await socket.receive_from(timeout=3))
        assert after["id"] == late.pk  # A arrives once committed, B is not sent twice
        moved = json.loads(await socket.receive_from(timeout=3))
        assert moved["type"] == "cursor"  # and the cursor now passes both
        assert await socket.receive_nothing(timeout=0.5)
        await socket.disconnect()
        return b, moved["cursor"]

    try:
        b, cursor = async_to_sync(scenario)()
    finally:
        other.close()
    assert a_id < b.pk
    final = sorted(LiveEvent.objects.values_list("txid", "id"))[-1]
    assert live.parse_cursor(cursor) == final  # both final: the cursor passed them both


def test_a_signed_out_person_is_disconnected_and_a_pruned_cursor_resyncs(transactional_db, company):
    old = _refund(company, 1)
    cursor = _cursor()

    client = _signed_in(company.bob)

    async def signed_out():
        socket = _socket(client)
        await _hello(socket, cursor)
        await database_sync_to_async(client.logout)()
        await database_sync_to_async(_refund)(company, 2)
        output = await socket.receive_output(timeout=3)
        assert output == {"type": "websocket.close", "code": 4401}

    async_to_sync(signed_out)()

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert services.prune_live_events(actor=SYSTEM, now=later) >= 2
    assert not LiveEvent.objects.exists()

    bob = _signed_in(company.bob)

    async def pruned():
        socket = _socket(bob)
        await socket.connect()
        await socket.send_json_to({"type": "hello", "cursor": cursor})
        first = await socket.receive_json_from(timeout=3)
        assert first["type"] == "resync"
        assert (await socket.receive_json_from(timeout=3))["type"] == "ready"
        await socket.disconnect()

    async_to_sync(pruned)()
    assert old.pk


def test_prune_keeps_recent_events(transactional_db, company):
    _refund(company, 1)
    now = dt.datetime.now(dt.UTC)
    kept = LiveEvent.objects.count()
    assert kept >= 2  # the company's run started, the refund asked
    assert services.prune_live_events(actor=SYSTEM, now=now) == 0
    assert services.prune_live_events(actor=SYSTEM, now=now + dt.timedelta(hours=25)) == kept


def test_a_garbled_cursor_starts_from_now():
    assert live.parse_cursor("12.34") == (12, 34)
    for bad in (None, 12, "12", "a.b", "1.2.3", "-1.2", "9" * 50 + ".1"):
        assert live.parse_cursor(bad) is None
    assert asyncio  # the scenarios run on asgiref's loop
