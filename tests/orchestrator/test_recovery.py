"""Recovery is quick: after a worker dies, its steps run again within the lease and a few seconds.

The broker is modelled by what the engine publishes (the `published` fixture) and by the queue
length the sweeper reads (`engine.queued_messages`); time moves on a frozen clock, one sweep
every STEWARD_SWEEP_SECONDS, as beat runs it. The defaults are the production settings.
"""

import datetime as dt

import pytest
from django.conf import settings as django_settings

from audit import clock
from orchestrator import engine, services
from orchestrator.models import EventKind, RunEvent, StepRun, StepStatus
from tests.orchestrator import testtools

pytestmark = pytest.mark.django_db

LEASE = django_settings.STEWARD_LEASE_SECONDS
SWEEP = django_settings.STEWARD_SWEEP_SECONDS
TARGET = LEASE + 10  # docs/benchmarks.md: p99 of kill -9 -> running again


class Queue:
    """The step queue: messages published and not yet taken by a worker."""

    def __init__(self, published: list[int]):
        self.published = published
        self.taken = 0

    def length(self) -> int:
        return len(self.published) - self.taken

    def take_all(self) -> list[int]:
        """A worker takes every waiting message (and may die holding them)."""
        taken = self.published[self.taken :]
        self.taken = len(self.published)
        return taken


@pytest.fixture
def queue(published, monkeypatch):
    model = Queue(published)
    monkeypatch.setattr(engine, "queued_messages", model.length)
    return model


def sweep_until(frozen, condition, longest: float) -> float:
    """Sweep every SWEEP seconds until the condition holds; return the seconds it took."""
    waited = 0.0
    while not condition():
        assert waited <= longest, f"not within {longest} s"
        frozen.advance(SWEEP)
        waited += SWEEP
        engine.sweep()
    return waited


def noop_workflow(make_workflow, **retry):
    return make_workflow({"steps": [{"id": "s", "type": "noop", **retry}]})


def test_a_message_held_by_a_dead_worker_is_sent_again_within_the_target(
    make_workflow, queue, published
):
    wf = noop_workflow(make_workflow)
    with clock.frozen() as frozen:
        services.start_run(wf)
        step = StepRun.objects.get(run__workflow=wf)
        # No worker for five minutes: the message waits in the queue and the sweeper, seeing a
        # message for every ready step, only sends a copy now and then.
        for _ in range(int(300 / SWEEP)):
            frozen.advance(SWEEP)
            engine.sweep()
        copies = published.count(step.pk)
        assert copies < 10
        # A worker takes every message, then dies before claiming: the messages sit unacked in
        # Redis for its visibility timeout (an hour). Before, the step waited half the time it
        # had been ready (150 s here) for its next copy.
        queue.take_all()
        waited = sweep_until(frozen, lambda: published.count(step.pk) > copies, TARGET)
    assert waited <= django_settings.STEWARD_REPUBLISH_AFTER_SECONDS + SWEEP
    assert engine.run_step(step.pk) == 1


def test_a_short_queue_does_not_flood_the_broker_while_no_worker_runs(
    make_workflow, queue, published
):
    wf = make_workflow({"steps": [{"id": f"s{n}", "type": "noop"} for n in range(5)]})
    with clock.frozen() as frozen:
        services.start_run(wf)
        queue.take_all()  # the five messages die with their worker
        for _ in range(int(1200 / SWEEP)):  # and no worker runs for twenty minutes
            frozen.advance(SWEEP)
            engine.sweep()
    # The first pass after the loss sends one copy each; after that the queue holds a message
    # for every ready step and the interval grows: a few copies per step, not 600.
    assert queue.length() <= 5 * 15
    assert engine.drain() == 5


def test_the_step_a_killed_worker_ran_runs_again_within_the_target(make_workflow, queue):
    wf = noop_workflow(make_workflow)
    with clock.frozen(seed=3) as frozen:
        services.start_run(wf)
        step = StepRun.objects.get(run__workflow=wf)
        queue.take_all()
        assert engine.claim(step.pk) is not None  # the worker claims it, then is killed -9
        waited = sweep_until(
            frozen, lambda: engine.claim(step.pk) is not None, TARGET
        )  # another worker takes it as soon as the engine lets it
    assert waited > LEASE - SWEEP  # not before the lease ran out
    assert RunEvent.objects.filter(step_id="s", kind=EventKind.LEASE_EXPIRED).count() == 1


def test_a_held_message_returning_after_an_hour_runs_nothing_twice(make_workflow, queue):
    wf = make_workflow(
        {"steps": [{"id": "s", "type": "tool", "tool": "test.add", "args": {"a": 1, "b": 2}}]}
    )
    with clock.frozen(seed=3) as frozen:
        run = services.start_run(wf)
        step = StepRun.objects.get(run=run)
        held = queue.take_all()
        assert engine.claim(step.pk) is not None  # claimed by a worker that is then killed
        sweep_until(frozen, lambda: StepRun.objects.get(pk=step.pk).status == "ready", TARGET)
        # A retry is scheduled; the held message comes back before it is due: it is refused.
        step.refresh_from_db()
        if step.ready_at > frozen.current:
            assert engine.run_step(held[0]) == 0
            frozen.advance((step.ready_at - frozen.current).total_seconds())
        assert engine.run_step(step.pk) == 1  # another worker runs the copy
        frozen.advance(3600)  # Redis's visibility timeout passes: the held message returns
        assert engine.run_step(held[0]) == 0
    step.refresh_from_db()
    assert (step.status, step.attempt) == (StepStatus.SUCCEEDED, 2)
    assert [key for key, _ in testtools.CALLS] == [step.idempotency_key]


def test_only_as_many_copies_as_messages_are_missing_are_sent(make_workflow, queue, published):
    wf = make_workflow({"steps": [{"id": f"s{n}", "type": "noop"} for n in range(5)]})
    with clock.frozen() as frozen:
        run = services.start_run(wf)
        steps = list(StepRun.objects.filter(run=run).order_by("id"))
        # Ready for 250 s, last sent 100 s ago: the growing interval (125 s) is not up. Two of
        # the messages, the oldest in the queue, went to a worker that died.
        now = frozen.current
        StepRun.objects.filter(run=run).update(
            ready_at=now - dt.timedelta(seconds=250), dispatched_at=now - dt.timedelta(seconds=100)
        )
        held = [step.pk for step in steps[:2]]
        StepRun.objects.filter(pk__in=held).update(dispatched_at=now - dt.timedelta(seconds=101))
        queue.taken = 2
        assert engine.sweep()["republished"] == 2
    # The copies are for the steps whose messages died with the worker, not the others.
    assert sorted(published[5:]) == sorted(held)
