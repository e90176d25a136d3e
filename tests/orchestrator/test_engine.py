"""The engine in one process: graph semantics, retries, timers, signals and run operations."""

import datetime as dt
import json

import pytest

from audit import clock
from orchestrator import engine, services
from orchestrator.models import EventKind, RunEvent, RunSignal, StepRun, WorkflowRun

pytestmark = pytest.mark.django_db


def steps_of(run):
    """Return {step label: status} for a run."""
    return {
        (s.step_id if s.item_index == -1 else f"{s.step_id}[{s.item_index}]"): s.status
        for s in StepRun.objects.filter(run=run)
    }


def refreshed(run):
    run.refresh_from_db()
    return run


def event_kinds(run, step_id=None):
    events = RunEvent.objects.filter(run=run).order_by("id")
    if step_id:
        events = events.filter(step_id=step_id)
    return [e.kind for e in events]


def test_sequence_passes_outputs_along(make_workflow):
    wf = make_workflow(
        {
            "input_schema": {
                "type": "object",
                "properties": {"a": {"type": "number"}},
                "required": ["a"],
            },
            "steps": [
                {
                    "id": "first",
                    "type": "tool",
                    "tool": "test.add",
                    "args": {"a": "{{ input.a }}", "b": 1},
                },
                {
                    "id": "second",
                    "type": "tool",
                    "tool": "test.add",
                    "depends_on": ["first"],
                    "args": {"a": "{{ steps.first.sum }}", "b": 10},
                },
            ],
            "output": {"total": "{{ steps.second.sum }}"},
        }
    )
    run = services.start_run(wf, {"a": 5})
    assert engine.drain() == 2
    run = refreshed(run)
    assert run.status == "succeeded"
    assert run.output == {"total": 16}
    assert StepRun.objects.get(run=run, step_id="second").input == {"a": 6, "b": 10}
    assert event_kinds(run) == [
        EventKind.RUN_STARTED,
        EventKind.STEP_SCHEDULED,
        EventKind.STEP_STARTED,
        EventKind.STEP_SUCCEEDED,
        EventKind.STEP_STARTED,
        EventKind.STEP_SUCCEEDED,
        EventKind.RUN_SUCCEEDED,
    ]


def test_fan_out_and_join_waits_for_every_branch(make_workflow, published):
    wf = make_workflow(
        {
            "steps": [
                {"id": "start", "type": "noop"},
                {"id": "left", "type": "set", "depends_on": ["start"], "value": "L"},
                {"id": "right", "type": "set", "depends_on": ["start"], "value": "R"},
                {
                    "id": "join",
                    "type": "set",
                    "depends_on": ["left", "right"],
                    "value": "{{ steps.left ~ steps.right }}",
                },
            ]
        }
    )
    run = services.start_run(wf)
    engine.run_step(published[0])  # start, then one branch inline; the other is published
    run = refreshed(run)
    statuses = steps_of(run)
    assert statuses["join"] == "pending"
    assert sorted([statuses["left"], statuses["right"]]) == ["ready", "succeeded"]
    engine.drain()
    run = refreshed(run)
    assert run.status == "succeeded"
    assert run.output == {"join": "LR"}


def test_when_false_skips_and_children_still_run(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {"id": "big", "type": "set", "when": "input.amount > 100", "value": "big"},
                {"id": "small", "type": "set", "when": "input.amount <= 100", "value": "small"},
                {
                    "id": "after",
                    "type": "set",
                    "depends_on": ["big", "small"],
                    "value": "{{ steps.big or steps.small }}",
                },
            ]
        }
    )
    run = services.start_run(wf, {"amount": 50})
    engine.drain()
    run = refreshed(run)
    assert steps_of(run) == {"big": "skipped", "small": "succeeded", "after": "succeeded"}
    assert run.output == {"after": "small"}


def test_foreach_gathers_results_in_order(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {"id": "list", "type": "tool", "tool": "test.items", "args": {"n": 4}},
                {
                    "id": "double",
                    "type": "tool",
                    "tool": "test.add",
                    "depends_on": ["list"],
                    "foreach": "steps.list['items']",
                    "args": {"a": "{{ item }}", "b": "{{ item }}"},
                },
                {
                    "id": "total",
                    "type": "set",
                    "depends_on": ["double"],
                    "value": "{{ steps.double | map(attribute='sum') | list }}",
                },
            ]
        }
    )
    run = services.start_run(wf)
    engine.drain()
    run = refreshed(run)
    assert run.status == "succeeded", run.error
    assert run.output == {"total": [0, 2, 4, 6]}
    items = StepRun.objects.filter(run=run, step_id="double").exclude(item_index=-1)
    assert sorted(s.item_index for s in items) == [0, 1, 2, 3]
    keys = {s.idempotency_key for s in items}
    assert len(keys) == 4


def test_foreach_over_empty_list_succeeds_with_empty_output(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {"id": "each", "type": "set", "foreach": "input.things", "value": "{{ item }}"},
                {
                    "id": "after",
                    "type": "set",
                    "depends_on": ["each"],
                    "value": "{{ steps.each | length }}",
                },
            ]
        }
    )
    run = services.start_run(wf, {"things": []})
    engine.drain()
    assert refreshed(run).output == {"after": 0}


def test_template_error_fails_the_step_without_retry(make_workflow):
    wf = make_workflow(
        {"steps": [{"id": "s", "type": "set", "value": "{{ input.missing.deeper }}"}]}
    )
    run = services.start_run(wf, {})
    engine.drain()
    run = refreshed(run)
    step = StepRun.objects.get(run=run, step_id="s")
    assert run.status == "failed"
    assert step.attempt == 1
    assert step.error["type"] == "ExpressionError"
    assert run.error["step"] == "s"


def test_sandbox_refuses_attribute_escape(make_workflow):
    wf = make_workflow(
        {"steps": [{"id": "s", "type": "set", "value": "{{ input.__class__.__mro__ }}"}]}
    )
    run = services.start_run(wf, {})
    engine.drain()
    step = StepRun.objects.get(run=run, step_id="s")
    assert step.status == "failed"
    assert "unsafe" in step.error["message"]


# --- retries, with the clock moved by hand --------------------------------------------------------


def flaky_workflow(make_workflow, retry, fail_times, error="ToolError"):
    return make_workflow(
        {
            "steps": [
                {
                    "id": "call",
                    "type": "tool",
                    "tool": "test.flaky",
                    "args": {"fail_times": fail_times, "error": error},
                    "retry": retry,
                }
            ]
        }
    )


def test_retry_backoff_is_full_jitter_within_exponential_cap(make_workflow):
    wf = flaky_workflow(
        make_workflow,
        {"max_attempts": 5, "initial_interval": 2, "backoff_multiplier": 3, "max_interval": 10},
        fail_times=4,
    )
    with clock.frozen(seed=7) as frozen:
        run = services.start_run(wf)
        engine.drain()
        ceilings = [2, 6, 10, 10]
        for attempt, ceiling in enumerate(ceilings, start=1):
            step = StepRun.objects.get(run=run, step_id="call")
            assert step.status == "ready"
            assert step.attempt == attempt
            delay = (step.ready_at - frozen.current).total_seconds()
            assert 0 <= delay <= ceiling
            assert engine.drain() == 0  # not due yet, unless the jitter drew zero
            frozen.advance(delay + 0.001)
            assert engine.sweep()["republished"] == 1
            assert engine.drain() == 1
    run = refreshed(run)
    assert run.status == "succeeded"
    assert run.output == {"call": {"attempt": 5}}
    assert event_kinds(run).count(EventKind.RETRY_SCHEDULED) == 4


def test_retries_stop_at_max_attempts(make_workflow):
    wf = flaky_workflow(make_workflow, {"max_attempts": 2, "initial_interval": 1}, fail_times=5)
    with clock.frozen(seed=1) as frozen:
        run = services.start_run(wf)
        engine.drain()
        frozen.advance(5)
        engine.sweep()
        engine.drain()
    run = refreshed(run)
    step = StepRun.objects.get(run=run, step_id="call")
    assert (run.status, step.status, step.attempt) == ("failed", "failed", 2)
    assert step.error["type"] == "ToolError"


def test_fatal_error_is_never_retried(make_workflow):
    wf = flaky_workflow(make_workflow, {"max_attempts": 5}, fail_times=1, error="FatalToolError")
    run = services.start_run(wf)
    engine.drain()
    step = StepRun.objects.get(run=run, step_id="call")
    assert (step.status, step.attempt) == ("failed", 1)


def test_retry_on_lists_which_errors_retry(make_workflow):
    only_connection = {"max_attempts": 3, "retry_on": ["ConnectionError"], "initial_interval": 0}
    wf = flaky_workflow(make_workflow, only_connection, fail_times=1, error="ToolError")
    run = services.start_run(wf)
    engine.drain()
    assert StepRun.objects.get(run=run).attempt == 1
    assert refreshed(run).status == "failed"

    wf = flaky_workflow(make_workflow, only_connection, fail_times=1, error="ConnectionError")
    run = services.start_run(wf)
    engine.drain()
    engine.sweep()
    engine.drain()
    assert refreshed(run).status == "succeeded"


def test_no_retry_on_makes_an_error_final(make_workflow):
    retry = {"max_attempts": 3, "no_retry_on": ["OSError"], "initial_interval": 0}
    wf = flaky_workflow(make_workflow, retry, fail_times=1, error="ConnectionError")  # an OSError
    run = services.start_run(wf)
    engine.drain()
    assert refreshed(run).status == "failed"


def test_arguments_failing_their_schema_fail_without_a_call(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {
                    "id": "s",
                    "type": "tool",
                    "tool": "test.add",
                    "args": {"a": "{{ input.a }}", "b": 1},
                }
            ]
        }
    )
    from tests.orchestrator import testtools

    run = services.start_run(wf, {"a": "not a number"})
    engine.drain()
    step = StepRun.objects.get(run=run)
    assert step.status == "failed" and step.attempt == 1
    assert step.error["type"] == "ArgumentsInvalid"
    assert "a: 'not a number' is not of type 'number'" in step.error["message"]
    assert testtools.CALLS == []


def test_on_failure_continue_lets_the_run_go_on(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {
                    "id": "bad",
                    "type": "tool",
                    "tool": "test.flaky",
                    "args": {"fail_times": 9, "error": "FatalToolError"},
                    "on_failure": "continue",
                },
                {
                    "id": "after",
                    "type": "set",
                    "depends_on": ["bad"],
                    "value": "{{ steps.bad is none }}",
                },
            ]
        }
    )
    run = services.start_run(wf)
    engine.drain()
    run = refreshed(run)
    assert run.status == "succeeded"
    assert steps_of(run) == {"bad": "failed", "after": "succeeded"}
    assert run.output == {"after": True}


def test_attempt_timeout_is_reclaimed_as_a_failed_attempt(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {
                    "id": "slow",
                    "type": "noop",
                    "timeout": 30,
                    "retry": {"max_attempts": 2, "initial_interval": 0},
                }
            ]
        }
    )
    with clock.frozen() as frozen:
        run = services.start_run(wf)
        step = engine.claim(StepRun.objects.get(run=run).pk)  # a worker takes it, then stalls
        assert step.deadline_at == frozen.current + dt.timedelta(seconds=30)
        frozen.advance(31)
        assert engine.sweep()["reclaimed"] == 1
        step.refresh_from_db()
        assert step.status == "ready" and step.error["type"] == "StepTimeout"
        # The stalled worker finishing late is discarded: it no longer holds the lease.
        assert engine.execute_claimed(step) is None
        engine.sweep()
        engine.drain()
    assert refreshed(run).status == "succeeded"
    assert StepRun.objects.get(run=run).attempt == 2


def test_dead_worker_lease_is_taken_back(make_workflow, settings):
    settings.STEWARD_LEASE_SECONDS = 10
    wf = make_workflow(
        {
            "steps": [
                {"id": "s", "type": "noop", "retry": {"max_attempts": 3, "initial_interval": 0}}
            ]
        }
    )
    with clock.frozen() as frozen:
        run = services.start_run(wf)
        engine.claim(StepRun.objects.get(run=run).pk)
        assert engine.sweep()["reclaimed"] == 0
        frozen.advance(11)
        assert engine.sweep()["reclaimed"] == 1
        assert RunEvent.objects.filter(run=run, kind=EventKind.LEASE_EXPIRED).count() == 1
        engine.sweep()
        engine.drain()
    assert refreshed(run).status == "succeeded"


# --- timers and signals ---------------------------------------------------------------------------


def test_sleep_is_a_durable_timer(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {"id": "nap", "type": "sleep", "duration": "2d"},
                {"id": "after", "type": "noop", "depends_on": ["nap"]},
            ]
        }
    )
    with clock.frozen() as frozen:
        run = services.start_run(wf)
        engine.drain()
        nap = StepRun.objects.get(run=run, step_id="nap")
        assert nap.status == "waiting"
        assert nap.wake_at == frozen.current + dt.timedelta(days=2)
        frozen.advance(86400)
        assert engine.sweep()["timers"] == 0
        frozen.advance(86400)
        assert engine.sweep()["timers"] == 1
        engine.drain()
    assert refreshed(run).status == "succeeded"


def test_signal_wakes_the_waiting_step_with_its_payload(make_workflow):
    wf = make_workflow(
        {"steps": [{"id": "approval", "type": "wait", "signal": "approved", "timeout": "1h"}]}
    )
    run = services.start_run(wf)
    engine.drain()
    assert StepRun.objects.get(run=run).status == "waiting"
    services.send_signal(run, "approved", {"by": "alice"})
    run = refreshed(run)
    assert run.status == "succeeded"
    assert run.output == {"approval": {"by": "alice"}}


def test_signal_arriving_before_the_wait_is_kept_for_it(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {"id": "nap", "type": "sleep", "duration": 60},
                {"id": "w", "type": "wait", "signal": "go", "depends_on": ["nap"]},
            ]
        }
    )
    with clock.frozen() as frozen:
        run = services.start_run(wf)
        engine.drain()
        services.send_signal(run, "go", {"early": True})
        assert RunSignal.objects.get(run=run).consumed_at is None
        frozen.advance(61)
        engine.sweep()
        engine.drain()
    run = refreshed(run)
    assert run.status == "succeeded"
    assert run.output == {"w": {"early": True}}
    assert RunSignal.objects.get(run=run).consumed_by.step_id == "w"


def test_wait_timeout_fails_or_continues(make_workflow):
    fail = make_workflow({"steps": [{"id": "w", "type": "wait", "signal": "go", "timeout": 30}]})
    cont = make_workflow(
        {
            "steps": [
                {
                    "id": "w",
                    "type": "wait",
                    "signal": "go",
                    "timeout": 30,
                    "on_timeout": "continue",
                    "timeout_output": {"timed_out": True},
                }
            ]
        }
    )
    with clock.frozen() as frozen:
        failing, continuing = services.start_run(fail), services.start_run(cont)
        engine.drain()
        frozen.advance(31)
        assert engine.sweep()["timers"] == 2
    assert refreshed(failing).status == "failed"
    assert StepRun.objects.get(run=failing).error["type"] == "WaitTimedOut"
    assert refreshed(continuing).output == {"w": {"timed_out": True}}


def test_signal_to_a_finished_run_is_refused_and_not_stored(make_workflow):
    wf = make_workflow({"steps": [{"id": "s", "type": "noop"}]})
    run = services.start_run(wf)
    engine.drain()
    with pytest.raises(
        services.EngineError, match="succeeded; only unfinished runs accept signals"
    ):
        services.send_signal(run, "late")
    assert not RunSignal.objects.filter(run=run).exists()


# --- run operations -------------------------------------------------------------------------------


def test_cancel_stops_waiting_and_discards_running_work(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {"id": "w", "type": "wait", "signal": "x"},
                {"id": "r", "type": "tool", "tool": "test.add", "args": {"a": 1, "b": 2}},
            ]
        }
    )
    run = services.start_run(wf)
    r = StepRun.objects.get(run=run, step_id="r")
    claimed = engine.claim(r.pk)
    engine.drain()  # runs w into waiting
    services.cancel_run(run, reason="no longer needed")
    assert engine.execute_claimed(claimed) is None  # the running step's work is discarded
    run = refreshed(run)
    assert run.status == "cancelled"
    assert set(steps_of(run).values()) == {"cancelled"}
    with pytest.raises(services.EngineError):
        services.cancel_run(run)


def test_pause_holds_new_steps_until_resume(make_workflow, published):
    wf = make_workflow(
        {"steps": [{"id": "a", "type": "noop"}, {"id": "b", "type": "noop", "depends_on": ["a"]}]}
    )
    run = services.start_run(wf)
    services.pause_run(run)
    assert engine.drain() == 0
    services.resume_run(run)
    published.clear()
    engine.drain()
    assert refreshed(run).status == "succeeded"


def test_pause_lets_the_running_step_finish_but_starts_nothing_new(make_workflow, published):
    wf = make_workflow(
        {"steps": [{"id": "a", "type": "noop"}, {"id": "b", "type": "noop", "depends_on": ["a"]}]}
    )
    run = services.start_run(wf)
    a = engine.claim(StepRun.objects.get(run=run, step_id="a").pk)
    services.pause_run(run)
    published.clear()
    assert engine.execute_claimed(a) is None
    assert steps_of(run) == {"a": "succeeded", "b": "ready"}
    assert published == []
    services.resume_run(run)
    assert published == [StepRun.objects.get(run=run, step_id="b").pk]
    engine.drain()
    assert refreshed(run).status == "succeeded"


def test_retry_a_failed_step_resumes_the_failed_run(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {
                    "id": "call",
                    "type": "tool",
                    "tool": "test.flaky",
                    "args": {"fail_times": 1, "error": "FatalToolError"},
                },
                {"id": "after", "type": "noop", "depends_on": ["call"]},
                {"id": "side", "type": "wait", "signal": "s"},
            ]
        }
    )
    run = services.start_run(wf)
    engine.drain()
    run = refreshed(run)
    assert run.status == "failed"
    assert steps_of(run)["side"] == "cancelled"
    services.retry_step(StepRun.objects.get(run=run, step_id="call"))
    # The history says what the retry brought back: the run, and the step the failure cancelled.
    assert EventKind.RUN_RESUMED in event_kinds(run)
    assert EventKind.STEP_SCHEDULED in event_kinds(run, "side")
    engine.drain()
    services.send_signal(run, "s")
    run = refreshed(run)
    assert run.status == "succeeded", steps_of(run)
    assert EventKind.STEP_RETRIED in event_kinds(run)


def test_idempotent_start_returns_the_same_run(make_workflow):
    wf = make_workflow({"steps": [{"id": "s", "type": "noop"}]})
    first = services.start_run(wf, {"x": 1}, idempotency_key="order-42")
    again = services.start_run(wf, {"x": 2}, idempotency_key="order-42")
    assert first.pk == again.pk
    assert WorkflowRun.objects.filter(idempotency_key="order-42").count() == 1
    other = make_workflow({"steps": [{"id": "s", "type": "noop"}]})
    with pytest.raises(services.EngineError, match="already used"):
        services.start_run(other, idempotency_key="order-42")


def test_runs_stay_pinned_to_their_version(make_workflow):
    wf = make_workflow({"steps": [{"id": "s", "type": "set", "value": "v1"}]})
    run_v1 = services.start_run(wf)
    services.publish_version(wf, {"steps": [{"id": "s", "type": "set", "value": "v2"}]})
    run_v2 = services.start_run(wf)
    engine.drain()
    assert refreshed(run_v1).output == {"s": "v1"}
    assert refreshed(run_v2).output == {"s": "v2"}
    assert run_v1.version.number == 1 and run_v2.version.number == 2


def test_published_version_cannot_be_changed(make_workflow):
    wf = make_workflow({"steps": [{"id": "s", "type": "noop"}]})
    version = wf.latest_version()
    version.definition = {"steps": []}
    with pytest.raises(ValueError, match="immutable"):
        version.save()


def test_duplicate_message_is_a_no_op(make_workflow, published):
    wf = make_workflow(
        {"steps": [{"id": "s", "type": "tool", "tool": "test.add", "args": {"a": 1, "b": 1}}]}
    )
    run = services.start_run(wf)
    step_id = published[0]
    assert engine.run_step(step_id) == 1
    assert engine.run_step(step_id) == 0
    from tests.orchestrator import testtools

    assert len(testtools.CALLS) == 1
    assert refreshed(run).status == "succeeded"


def test_journaled_effect_is_reused_not_repeated(make_workflow):
    wf = make_workflow(
        {"steps": [{"id": "s", "type": "tool", "tool": "test.add", "args": {"a": 2, "b": 3}}]}
    )
    run = services.start_run(wf)
    step = engine.claim(StepRun.objects.get(run=run).pk)
    ctx = engine.StepContext(
        run, step, engine.compiled_version(run.version_id).steps["s"], clock.now()
    )
    from tests.orchestrator import testtools

    first = ctx.effect("test.add", {}, lambda c: {"sum": 5, "key": c.idempotency_key})
    second = ctx.effect("test.add", {}, lambda c: testtools.CALLS.append("again") or {"sum": -1})
    assert first == second == {"sum": 5, "key": step.idempotency_key}
    assert "again" not in testtools.CALLS


def test_every_engine_event_is_in_the_audit_log_with_its_run(make_workflow):
    from audit.models import AuditEntry

    wf = make_workflow(
        {"steps": [{"id": "s", "type": "tool", "tool": "test.add", "args": {"a": 1, "b": 2}}]}
    )
    run = services.start_run(wf)
    engine.drain()
    events = list(RunEvent.objects.filter(run=run).order_by("id"))
    entries = list(AuditEntry.objects.filter(run_id=str(run.pk)).order_by("id"))
    engine_entries = [e for e in entries if e.action.startswith("engine.")]
    assert [e.action for e in engine_entries] == [f"engine.{e.kind}" for e in events]
    assert engine_entries[-1].target_type == "orchestrator.workflowrun"
    # The tool step's call went through the enforcement point: decided, checked again, called.
    assert [e.action for e in entries if not e.action.startswith("engine.")] == [
        "governance.policy.decided",
        "agents.tool.decided",
        "governance.policy.decided",
        "agents.tool.called",
    ]


def test_a_retried_foreach_item_keeps_its_item(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {
                    "id": "each",
                    "type": "tool",
                    "tool": "test.flaky",
                    "foreach": "['a', 'b']",
                    "args": {"fail_times": 1, "label": "{{ item }}", "position": "{{ index }}"},
                    "retry": {"max_attempts": 2, "initial_interval": 0},
                }
            ]
        }
    )
    from tests.orchestrator import testtools

    run = services.start_run(wf)
    engine.drain()
    engine.sweep()
    engine.drain()
    assert refreshed(run).status == "succeeded"
    seen = sorted((args["label"], args["position"]) for _, args in testtools.CALLS)
    assert seen == [("a", 0), ("a", 0), ("b", 1), ("b", 1)]


def test_lease_keeper_renews_long_steps_and_flags_lost_ones(make_workflow, settings):
    from orchestrator.leases import LeaseKeeper

    settings.STEWARD_HEARTBEAT_SECONDS = 0
    wf = make_workflow({"steps": [{"id": "a", "type": "noop"}, {"id": "b", "type": "noop"}]})
    with clock.frozen() as frozen:
        run = services.start_run(wf)
        a, b = (engine.claim(s.pk) for s in StepRun.objects.filter(run=run).order_by("id"))
        keeper = LeaseKeeper()
        steps = engine.compiled_version(run.version_id).steps
        ctx_a = engine.StepContext(run, a, steps["a"], frozen.current)
        ctx_b = engine.StepContext(run, b, steps["b"], frozen.current)
        keeper._held = {a.pk: (a.lease_token, ctx_a, 0.0), b.pk: (b.lease_token, ctx_b, 0.0)}
        frozen.advance(20)
        StepRun.objects.filter(pk=b.pk).update(lease_token="taken-back")  # b was reclaimed
        assert keeper.renew_due() == 2
    a.refresh_from_db()
    assert a.lease_expires_at == frozen.current + dt.timedelta(
        seconds=settings.STEWARD_LEASE_SECONDS
    )
    assert (ctx_a.lost, ctx_b.lost) == (False, True)


def test_a_lost_message_is_republished_with_growing_intervals(make_workflow, published, settings):
    settings.STEWARD_REPUBLISH_AFTER_SECONDS = 2
    settings.STEWARD_REPUBLISH_MAX_SECONDS = 60
    wf = make_workflow({"steps": [{"id": "s", "type": "noop"}]})
    with clock.frozen() as frozen:
        services.start_run(wf)  # its message is "lost": nobody runs it
        sent_at = []
        for second in range(1, 601):
            frozen.advance(1)
            if engine.sweep()["republished"]:
                sent_at.append(second)
    assert sent_at[:4] == [3, 6, 12, 24]  # just past the base interval, then doubling
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)]
    assert gaps == sorted(gaps) and max(gaps) == 60
    assert len(sent_at) < 20  # ten minutes without a worker: a handful of copies, not 300


# --- the cost of a step ---------------------------------------------------------------------------


def _chain(length, **last):
    """Return a definition of `length` sequential steps setting values (extra keys on the last)."""
    steps = [
        {
            "id": f"s{i}",
            "type": "set",
            "value": {"n": i},
            **({"depends_on": [f"s{i - 1}"]} if i else {}),
        }
        for i in range(length)
    ]
    steps[-1].update(last)
    return {"steps": steps}


def test_a_finished_step_reads_its_successor_not_the_whole_run(make_workflow, published):
    from django.db.models.signals import post_init

    run = services.start_run(make_workflow(_chain(30)))
    loaded = []

    def count(sender, instance, **kwargs):
        loaded.append(instance)

    post_init.connect(count, sender=StepRun)
    try:
        assert engine.drain() == 30
    finally:
        post_init.disconnect(count, sender=StepRun)
    assert refreshed(run).status == "succeeded"
    assert refreshed(run).output == {"s29": {"n": 29}}
    # Reading every row of the run at each step would load 30 x 30 rows; the run's end reads
    # them once to settle it.
    assert len(loaded) <= 3 * 30


def test_the_successor_claimed_inline_is_the_row_the_database_holds(make_workflow, published):
    run = services.start_run(make_workflow(_chain(2, timeout="90s")))
    first = engine.claim(published[0])
    with clock.frozen():
        second = engine.execute_claimed(first)
        stored = StepRun.objects.get(pk=second.pk)
        assert second.step_id == "s1" and stored.status == second.status == "running"
        for field in StepRun._meta.concrete_fields:
            assert getattr(second, field.attname) == getattr(stored, field.attname), field.name
        assert stored.attempt == 1 and stored.worker == engine.WORKER_ID
        assert stored.deadline_at == clock.now() + dt.timedelta(seconds=90)
    assert StepRun.objects.get(pk=first.pk).output == {"n": 0}
    assert event_kinds(run)[-2:] == [EventKind.STEP_SUCCEEDED, EventKind.STEP_STARTED]
    assert RunEvent.objects.filter(run=run).last().data == {
        "worker": engine.WORKER_ID,
        "inline": True,
    }
    assert engine.execute_claimed(second) is None
    assert refreshed(run).status == "succeeded"


def test_a_lost_lease_claims_no_successor(make_workflow, published, settings):
    settings.STEWARD_LEASE_SECONDS = 10
    definition = _chain(2)
    definition["steps"][0]["retry"] = {"max_attempts": 3, "initial_interval": 0}
    with clock.frozen() as frozen:
        run = services.start_run(make_workflow(definition))
        first = engine.claim(published[0])
        frozen.advance(11)
        assert engine.sweep()["reclaimed"] == 1  # the step is taken back while it runs
        assert engine.execute_claimed(first) is None
        assert steps_of(run) == {"s0": "ready", "s1": "pending"}
        assert EventKind.STEP_SUCCEEDED not in event_kinds(run)
        assert engine.drain() == 2
    assert refreshed(run).status == "succeeded"


def test_events_written_with_a_success_are_announced_in_one_batch_with_their_ids(make_workflow):
    from audit.models import AuditEntry
    from orchestrator.signals import run_events_recorded

    run = services.start_run(make_workflow(_chain(3)))
    batches = []

    def collect(sender, events, run, **kwargs):
        batches.append([(event.pk, event.kind, event.step_id, event.data) for event in events])

    run_events_recorded.connect(collect, weak=False, dispatch_uid="test.collect")
    try:
        engine.drain()
    finally:
        run_events_recorded.disconnect(dispatch_uid="test.collect")
    stored = [
        (e.pk, e.kind, e.step_id, e.data) for e in RunEvent.objects.filter(run=run).order_by("id")
    ]
    announced = [event for batch in batches for event in batch]
    assert announced == stored[2:]  # all but the start's two, with the ids the rows have
    assert [[kind for _, kind, _, _ in batch] for batch in batches] == [
        [EventKind.STEP_STARTED],
        [EventKind.STEP_SUCCEEDED, EventKind.STEP_STARTED],
        [EventKind.STEP_SUCCEEDED, EventKind.STEP_STARTED],
        [EventKind.STEP_SUCCEEDED, EventKind.RUN_SUCCEEDED],
    ]
    assert announced[2][2:] == ("s1", {"worker": engine.WORKER_ID, "inline": True})
    entries = AuditEntry.objects.filter(run_id=str(run.pk)).order_by("id")
    bodies = [json.loads(entry.body_row.content) for entry in entries]
    assert [body["event_id"] for body in bodies] == [pk for pk, *_ in stored]


def test_the_orm_path_records_the_same_history_as_the_batched_one(make_workflow, monkeypatch):
    """Without raw batches (another database, or server-side binding) the outcome is the same."""

    def history(run):
        events = RunEvent.objects.filter(run=run).order_by("id")
        return [(e.kind, e.step_id, e.attempt, e.data) for e in events]

    wf = make_workflow(_chain(4, timeout="60s"))
    batched = services.start_run(wf)
    assert engine.drain() == 4
    monkeypatch.setattr(engine, "_batches_statements", lambda: False)
    plain = services.start_run(wf)
    assert engine.drain() == 4
    assert history(plain) == history(batched)
    assert refreshed(plain).output == refreshed(batched).output == {"s3": {"n": 3}}
    assert steps_of(plain) == steps_of(batched) == {f"s{i}": "succeeded" for i in range(4)}


def test_plain_roots_are_written_ready_and_scheduled_in_the_history(make_workflow, published):
    wf = make_workflow(
        {
            "steps": [
                {"id": "a", "type": "noop"},
                {"id": "b", "type": "noop"},
                {"id": "c", "type": "noop", "depends_on": ["a", "b"]},
            ]
        }
    )
    run = services.start_run(wf)
    assert steps_of(run) == {"a": "ready", "b": "ready", "c": "pending"}
    rows = {row.step_id: row for row in StepRun.objects.filter(run=run)}
    assert published == [rows["a"].pk, rows["b"].pk]
    assert rows["a"].ready_at == rows["a"].dispatched_at == rows["a"].created_at
    assert rows["c"].ready_at is None
    assert event_kinds(run) == [
        EventKind.RUN_STARTED,
        EventKind.STEP_SCHEDULED,
        EventKind.STEP_SCHEDULED,
    ]
    assert [e.step_id for e in RunEvent.objects.filter(run=run).order_by("id")] == ["", "a", "b"]
    assert engine.drain() == 3
    assert refreshed(run).status == "succeeded"
