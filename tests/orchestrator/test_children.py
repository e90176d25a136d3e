"""Child steps added by a running step (what an agent's delegations run as), and Resume."""

import datetime as dt

import pytest

from audit import clock
from audit.actors import SYSTEM
from orchestrator import engine, services
from orchestrator.models import EventKind, RunEvent, RunSignal, StepRun
from orchestrator.steptypes import register_step_type

pytestmark = pytest.mark.django_db

# Child behaviour by item: {"value": n, "fail_times": k, "fatal": bool, "stall": bool}
CHILD_FAILURES: dict[str, int] = {}
EXECUTIONS: list[tuple[str, int]] = []


class Spawner:
    """A test step type: spawns its `items` as children, waits, then sums their outputs."""

    name = "test_spawner"
    fields = {"items": {"type": "array"}, "group": {"type": "string"}}
    required = ("items",)
    transactional = False

    def check(self, step):
        return []

    def execute(self, ctx):
        EXECUTIONS.append((ctx.step.step_id, ctx.attempt))
        if ctx.is_child:
            return self._child(ctx)
        group = ctx.spec.get("group", "g1")
        signal = ctx.spawn_children(group, ctx.spec["items"])
        ctx.spawn_children(group, ctx.spec["items"])  # again: adds nothing
        results = ctx.child_results(group)
        if results is None:
            return ctx.wait(signal=signal)
        return ctx.complete(
            {
                "statuses": [r["status"] for r in results],
                "outputs": [r["output"] for r in results],
                "attempts": [r["attempt"] for r in results],
            }
        )

    def _child(self, ctx):
        item = ctx.step.item
        key = f"{ctx.step.step_id}[{ctx.step.item_index}]"
        remaining = CHILD_FAILURES.setdefault(key, item.get("fail_times", 0))
        if item.get("fatal"):
            return ctx.fail("ChildBroken", "this child always fails", retryable=False)
        if remaining > 0:
            CHILD_FAILURES[key] = remaining - 1
            return ctx.fail("Flaky", "try again")
        return ctx.complete(item["value"] * 2)

    def on_wake(self, ctx, reason, payload):
        return ctx.resume()


register_step_type(Spawner())


@pytest.fixture(autouse=True)
def _reset():
    CHILD_FAILURES.clear()
    EXECUTIONS.clear()


def definition(items, **extra):
    step = {
        "id": "coordinate",
        "type": "test_spawner",
        "items": items,
        "retry": {"max_attempts": 3, "initial_interval": 0},
        **extra,
    }
    return {"steps": [step, {"id": "after", "type": "noop", "depends_on": ["coordinate"]}]}


def children(run):
    return list(StepRun.objects.filter(run=run, step_id__contains="/").order_by("item_index"))


def test_children_run_in_parallel_and_the_parent_resumes_with_their_results(
    make_workflow, published
):
    wf = make_workflow(definition([{"value": 1}, {"value": 2}, {"value": 3}]))
    run = services.start_run(wf, started_by=SYSTEM)
    engine.drain(max_steps=1)  # only the parent
    parent = StepRun.objects.get(run=run, step_id="coordinate")
    kids = children(run)
    assert parent.status == "waiting" and len(kids) == 3
    assert all(kid.status == "ready" and kid.parent_id == parent.pk for kid in kids)
    assert {kid.pk for kid in kids} <= set(published)  # dispatched together, in parallel
    assert kids[0].step_id == f"coordinate/{parent.pk}.g1"

    engine.drain()
    run.refresh_from_db()
    parent.refresh_from_db()
    assert run.status == "succeeded"
    assert parent.output == {
        "statuses": ["succeeded"] * 3,
        "outputs": [2, 4, 6],
        "attempts": [1, 1, 1],
    }
    assert parent.attempt == 1  # resuming is not a new attempt
    assert StepRun.objects.get(run=run, step_id="after").status == "succeeded"
    signal = RunSignal.objects.get(run=run)
    assert signal.name == f"children:{parent.pk}:g1" and signal.consumed_by_id == parent.pk
    resumed = RunEvent.objects.filter(run=run, step_id="coordinate", kind=EventKind.STEP_SCHEDULED)
    assert [event.data for event in resumed] == [{}, {"resumed": True}]  # scheduled, resumed


def test_a_failing_child_is_retried_under_the_step_retry_policy(make_workflow):
    wf = make_workflow(definition([{"value": 1}, {"value": 5, "fail_times": 2}, {"value": 3}]))
    run = services.start_run(wf, started_by=SYSTEM)
    engine.drain()
    parent = StepRun.objects.get(run=run, step_id="coordinate")
    assert parent.output["statuses"] == ["succeeded"] * 3
    assert parent.output["attempts"] == [1, 3, 1]
    assert parent.output["outputs"] == [2, 10, 6]


def test_a_child_that_fails_for_good_is_reported_to_the_parent_not_escalated(make_workflow):
    wf = make_workflow(
        definition([{"value": 1}, {"value": 2, "fatal": True}], on_failure="continue")
    )
    run = services.start_run(wf, started_by=SYSTEM)
    engine.drain()
    parent = StepRun.objects.get(run=run, step_id="coordinate")
    assert parent.status == "succeeded"
    assert parent.output["statuses"] == ["succeeded", "failed"]
    run.refresh_from_db()
    assert run.status == "succeeded"
    failed = children(run)[1]
    with pytest.raises(engine.EngineError, match="retry that step instead"):
        services.retry_step(failed, actor=SYSTEM)


def test_no_children_wakes_the_parent_at_once(make_workflow):
    run = services.start_run(make_workflow(definition([])), started_by=SYSTEM)
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert StepRun.objects.get(run=run, step_id="coordinate").output["outputs"] == []


def test_children_obey_the_step_timeout(make_workflow):
    wf = make_workflow(definition([{"value": 4}], timeout=30))
    with clock.frozen() as frozen:
        run = services.start_run(wf, started_by=SYSTEM)
        engine.drain(max_steps=1)
        kid = children(run)[0]
        claimed = engine.claim(kid.pk)  # a worker takes the child, then stalls
        assert claimed.deadline_at == frozen.current + dt.timedelta(seconds=30)
        frozen.advance(31)
        assert engine.sweep()["reclaimed"] == 1
        kid.refresh_from_db()
        assert kid.status == "ready" and kid.error["type"] == "StepTimeout"
        engine.drain()
    parent = StepRun.objects.get(run=run, step_id="coordinate")
    assert parent.output == {"statuses": ["succeeded"], "outputs": [8], "attempts": [2]}


def test_cancelling_the_run_cancels_the_children(make_workflow):
    run = services.start_run(
        make_workflow(definition([{"value": 1}, {"value": 2}])), started_by=SYSTEM
    )
    engine.drain(max_steps=1)
    services.cancel_run(run, actor=SYSTEM)
    assert {kid.status for kid in children(run)} == {"cancelled"}


def test_a_paused_run_keeps_resumed_steps_ready_until_resumed(make_workflow, published):
    run = services.start_run(make_workflow(definition([{"value": 1}])), started_by=SYSTEM)
    engine.drain(max_steps=1)
    kid = children(run)[0]
    services.pause_run(run, actor=SYSTEM)
    engine.execute_claimed(engine.claim(kid.pk, now=clock.now()) or _force_claim(kid))
    parent = StepRun.objects.get(run=run, step_id="coordinate")
    assert parent.status == "ready"
    published.clear()
    services.resume_run(run, actor=SYSTEM)
    assert parent.pk in published
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"


def _force_claim(step):
    """Claim a ready step of a paused run (a worker that took it just before the pause)."""
    StepRun.objects.filter(pk=step.pk).update(status="running", attempt=1, lease_token="t")
    return StepRun.objects.select_related("run").get(pk=step.pk)


class Journaling:
    """A non-transactional step type: one journaled effect, then a failure on attempt 1."""

    name = "test_journaling"
    fields: dict = {}
    required: tuple = ()
    transactional = False

    def check(self, step):
        return []

    def execute(self, ctx):
        ctx.effect("count", {}, lambda context: EXECUTIONS.append(("effect", ctx.attempt)) or 1)
        if ctx.attempt == 1:
            raise RuntimeError("crash after the effect")
        return ctx.complete("done")

    def on_wake(self, ctx, reason, payload):
        return ctx.fail("UnexpectedWake", reason)


register_step_type(Journaling())


@pytest.mark.django_db(transaction=True)
def test_a_non_transactional_step_keeps_its_journaled_effects_when_it_fails(make_workflow):
    from orchestrator.models import EffectJournal

    step = {
        "id": "j",
        "type": "test_journaling",
        "retry": {"max_attempts": 2, "initial_interval": 0},
    }
    run = services.start_run(make_workflow({"steps": [step]}), started_by=SYSTEM)
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert [e for e in EXECUTIONS if e[0] == "effect"] == [("effect", 1)]  # not repeated
    assert EffectJournal.objects.filter(run=run).count() == 1
