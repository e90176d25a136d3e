"""The run inspector, live: the engine announces each batch of a run's events as one live event
(ids only) in the batch's transaction, the live channel delivers it to whoever may see the run
(restrict(), as for approvals), narrowed to one run for a run's page, and the pages say what
they follow and from which cursor."""

from __future__ import annotations

import json
import re

import pytest
from asgiref.sync import async_to_sync
from django.dispatch import receiver
from django.urls import reverse

from audit.actors import SYSTEM
from governance import live
from governance import services as governance
from governance.models import LiveEvent
from orchestrator import engine
from orchestrator import services as workflows
from orchestrator.models import WorkflowRun
from orchestrator.signals import run_events_recorded
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for
from tests.governance.test_live import _cursor, _hello, _signed_in, _socket

RUN = WorkflowRun._meta.label_lower
TWO_STEPS = {
    "steps": [
        {"id": "a", "type": "noop"},
        {"id": "b", "type": "noop", "depends_on": ["a"]},
    ]
}


@pytest.fixture
def in_memory_layer(settings):
    """The embedded layer (what runs without Redis) and a short poll."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.STEWARD_LIVE_POLL_SECONDS = 0.2


def _run_events(run) -> list[str]:
    """Return the live event types announced about a run, in order."""
    return list(
        LiveEvent.objects.filter(target_type=RUN, target_id=str(run.pk))
        .order_by("id")
        .values_list("event_type", flat=True)
    )


def test_each_batch_of_a_runs_events_is_one_live_event(company):
    engine.drain()  # the company's own run
    batches = []

    @receiver(run_events_recorded, weak=False)
    def count(sender, events, run, **kwargs):
        batches.append([event.kind for event in events])

    try:
        flow = workflows.create_workflow(slug="two", name="Two", definition=TWO_STEPS, actor=SYSTEM)
        run = workflows.start_run(flow, {}, started_by=company.gina)
        engine.drain()
    finally:
        run_events_recorded.disconnect(count)
    announced = _run_events(run)
    assert len(announced) == len(batches) > 3  # one per batch, however many events it holds
    assert announced[0] == "run.started" and announced[-1] == "run.succeeded"
    assert set(announced[1:-1]) == {"run.progressed"}
    assert any(len(kinds) > 1 for kinds in batches)  # e.g. a step's end and the next one's start

    held = workflows.create_workflow(
        slug="held",
        name="Held",
        definition={"steps": [{"id": "hold", "type": "wait", "signal": "go"}]},
        actor=SYSTEM,
    )
    waiting = workflows.start_run(held, {}, started_by=company.gina)
    engine.drain()
    before = len(_run_events(waiting))
    workflows.pause_run(waiting, actor=company.gina)
    workflows.resume_run(waiting, actor=company.gina)
    assert _run_events(waiting)[before:] == ["run.changed", "run.changed"]  # status, not steps


def test_a_live_only_type_is_never_a_webhooks_and_must_be_registered(company):
    assert {"run.changed", "run.progressed"} <= set(live.event_types())
    assert live.is_live_only("run.progressed") and not live.is_live_only("run.started")
    with pytest.raises(ValueError):
        live.register_event_type("run.started", "a webhook's type")
    with pytest.raises(ValueError):
        governance.announce_live("approval.requested", target=company.run, actor=SYSTEM)


def test_run_events_reach_whoever_may_see_the_run_and_a_run_page_its_run_alone(
    transactional_db, company, in_memory_layer
):
    flow = workflows.create_workflow(slug="two", name="Two", definition=TWO_STEPS, actor=SYSTEM)
    engine.drain()  # the company's own run
    start = _cursor()
    run = workflows.start_run(flow, {}, started_by=company.gina)
    other = workflows.start_run(flow, {}, started_by=company.gina)
    engine.drain()

    def replay(name, topics=("run",), ids=None):
        session = _signed_in(getattr(company, name))

        async def scenario():
            socket = _socket(session)
            connected, _ = await socket.connect(timeout=5)
            assert connected
            hello = {"type": "hello", "cursor": start, "topics": list(topics)}
            if ids is not None:
                hello["ids"] = ids
            await socket.send_json_to(hello)
            found = []
            while True:
                raw = await socket.receive_from(timeout=5)
                message = json.loads(raw)
                assert set(message) <= {"type", "event", "kind", "id", "cursor"}, message
                if message["type"] == "ready":
                    await socket.disconnect()
                    return found
                if message["type"] == "event":
                    found.append((message["event"], message["id"]))

        return async_to_sync(scenario)()

    everything = replay("gina")
    assert {pk for _, pk in everything} == {run.pk, other.pk}
    assert len(everything) == len(_run_events(run)) + len(_run_events(other))
    assert replay("oscar") == []  # may not see the runs: hears nothing of them
    alone = replay("gina", ids={"run": [run.pk]})
    assert [pk for _, pk in alone] == [run.pk] * len(_run_events(run))
    # The list follows what changes a row: starts and ends, not each step.
    rows = replay("gina", topics=["run.started", "run.succeeded", "run.changed"])
    assert sorted(rows) == sorted(
        [("run.started", run.pk), ("run.succeeded", run.pk)]
        + [("run.started", other.pk), ("run.succeeded", other.pk)]
    )
    # An approval topic narrowed to nothing, and garbage ids, do not widen or break anything.
    assert replay("gina", topics=["approval"], ids={"approval": []}) == []
    assert len(replay("gina", ids={"run": ["x", {"a": 1}]})) == 0
    assert len(replay("gina", ids="run:1")) == len(everything)


def test_the_pages_say_what_they_follow_and_from_where(company):
    client = client_for(fresh(company.gina))
    page = client.get(reverse("runs:detail", args=[company.run.pk])).content.decode()
    topics = re.search(r'data-live-topics="([^"]*)"', page).group(1).split()
    assert topics[-1] == "run" and set(topics) <= {"approval", "escalation", "run"}
    assert f'data-live-ids="run:{company.run.pk}"' in page
    assert 'data-live-cursor="' in page and "steward/live.js" in page
    listing = client.get(reverse("runs:list")).content.decode()
    assert "run.started run.succeeded run.failed run.changed" in listing
    assert "data-live-ids" not in listing
    graph = client.get(reverse("runs:graph", args=[company.run.pk]))
    assert graph.status_code == 200 and "svg" in graph.content.decode()
    hidden = client_for(fresh(company.oscar)).get(reverse("runs:graph", args=[company.run.pk]))
    assert hidden.status_code == 404


def test_the_inbox_topics_hear_nothing_of_run_events(transactional_db, company, in_memory_layer):
    """The inbox's topics are untouched by the run events beside them."""
    flow = workflows.create_workflow(slug="two", name="Two", definition=TWO_STEPS, actor=SYSTEM)
    start = _cursor()
    workflows.start_run(flow, {}, started_by=company.gina)
    engine.drain()

    session = _signed_in(company.gina)

    async def scenario():
        socket = _socket(session)
        replayed, _ = await _hello(socket, start)
        await socket.disconnect()
        return replayed

    assert async_to_sync(scenario)() == []


def test_a_consumer_moves_past_the_events_it_does_not_follow(
    transactional_db, company, in_memory_layer
):
    """An inbox's socket reads past the run events in one statement and keeps the cursor there,
    rather than scanning them again on every read (they are the many)."""
    flow = workflows.create_workflow(slug="two", name="Two", definition=TWO_STEPS, actor=SYSTEM)
    engine.drain()
    start = _cursor()
    workflows.start_run(flow, {}, started_by=company.gina)
    engine.drain()
    head = _cursor()
    assert head != start
    session = _signed_in(company.bob)

    async def scenario():
        socket = _socket(session)
        replayed, ready = await _hello(socket, start)  # approvals and escalations only
        await socket.disconnect()
        return replayed, ready

    replayed, ready = async_to_sync(scenario)()
    assert replayed == [] and ready == head
