"""Generated workflows never hang: the invariant holds after every engine step, and every run
settles as docs/workflows.md says.

Each case is a small random graph (parallel branches, fan-in) whose steps succeed, fail at
render, fail a few times before succeeding, time out waiting, or sleep; with `when` and
`foreach` expressions that are true, false, empty, or cannot be evaluated; and every
`on_failure`. The engine runs it one step per call under a frozen clock (timers and backoff
are moved past, never slept). A small model of the documented rules says how the run ends.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from audit import clock
from orchestrator import engine, services
from orchestrator.models import RunStatus, StepRun, StepStatus

pytestmark = pytest.mark.django_db

# What a step's body does, and how the documented rules end it (with the default retry policy
# of three attempts).
BODIES = {
    "ok": ({"type": "set", "value": {"ok": True}}, "succeeded"),
    "render_error": ({"type": "set", "value": "{{ input.missing.deeper }}"}, "failed"),
    "flaky_then_ok": (
        {"type": "tool", "tool": "test.flaky", "args": {"fail_times": 2}},
        "succeeded",
    ),
    "flaky_for_good": (
        {"type": "tool", "tool": "test.flaky", "args": {"fail_times": 5}},
        "failed",
    ),
    "fatal": (
        {
            "type": "tool",
            "tool": "test.flaky",
            "args": {"fail_times": 1, "error": "FatalToolError"},
        },
        "failed",
    ),
    "sleep": ({"type": "sleep", "duration": "30s"}, "succeeded"),
    "wait_times_out": ({"type": "wait", "signal": "never", "timeout": "1m"}, "failed"),
    "wait_continues": (
        {"type": "wait", "signal": "never", "timeout": "1m", "on_timeout": "continue"},
        "succeeded",
    ),
}
# `when`: its value, or None when it cannot be evaluated.
WHENS = {"true": True, "false": False, "input.missing.deeper": None, "input.flag": None}
# `foreach`: its items, or None when it cannot be evaluated (or is not a list).
FOREACHES = {"[1, 2]": [1, 2], "[]": [], "range(2)": [0, 1], "input.missing": None, "3": None}

step_strategy = st.fixed_dictionaries(
    {
        "body": st.sampled_from(sorted(BODIES)),
        "when": st.one_of(st.none(), st.sampled_from(sorted(WHENS))),
        "foreach": st.one_of(st.none(), st.sampled_from(sorted(FOREACHES))),
        "on_failure": st.sampled_from(["fail", "continue", "escalate"]),
        "parents": st.sets(st.integers(min_value=0, max_value=5), max_size=3),
    }
)


def definition_of(steps: list[dict]) -> dict:
    """Build a workflow definition: step i may depend on any earlier step."""
    built = []
    for index, spec in enumerate(steps):
        step = {"id": f"s{index}", **BODIES[spec["body"]][0], "on_failure": spec["on_failure"]}
        parents = sorted(p for p in spec["parents"] if p < index)
        if parents:
            step["depends_on"] = [f"s{p}" for p in parents]
        if spec["when"] is not None:
            step["when"] = spec["when"]
        if spec["foreach"] is not None:
            step["foreach"] = spec["foreach"]
        built.append(step)
    return {"steps": built}


def expected(steps: list[dict]) -> tuple[str, dict[str, str]]:
    """Return the run's end and each step's end, by the rules docs/workflows.md states.

    A step ends "stops" when it fails for good with `on_failure: fail` (it fails the run), and
    "unreached" below such a step. A parked (escalated) step is resolved by a person with an
    output, so it ends succeeded.
    """
    ends: dict[str, str] = {}
    for index, spec in enumerate(steps):
        sid = f"s{index}"
        parents = [f"s{p}" for p in sorted(spec["parents"]) if p < index]
        if any(ends[p] in ("stops", "unreached") for p in parents):
            ends[sid] = "unreached"
            continue
        if spec["when"] is not None and WHENS[spec["when"]] is False:
            ends[sid] = "skipped"
            continue
        if spec["when"] is not None and WHENS[spec["when"]] is None:
            outcome = "failed"
        elif spec["foreach"] is not None:
            items = FOREACHES[spec["foreach"]]
            outcome = "failed" if items is None else "succeeded"
            if items and BODIES[spec["body"]][1] == "failed" and spec["on_failure"] != "continue":
                outcome = "failed"  # ItemsFailed; with continue the step succeeds
        else:
            outcome = BODIES[spec["body"]][1]
        if outcome == "failed" and spec["on_failure"] == "escalate":
            outcome = "succeeded"  # resolved by a person with an output
        if outcome == "failed" and spec["on_failure"] == "fail":
            outcome = "stops"
        ends[sid] = outcome
    return ("failed" if "stops" in ends.values() else "succeeded"), ends


def drive(run, frozen) -> None:
    """Run the engine one step per call; after each, the invariant must hold.

    When nothing is due: a parked step gets a person's output, else time moves past the next
    timer or backoff and the sweeper runs (it must find nothing to repair).
    """
    for _ in range(400):
        assert engine.runs_breaking_invariant() == [], "the engine left a run hanging"
        run.refresh_from_db()
        if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
            return
        due = (
            StepRun.objects.filter(run=run, status=StepStatus.READY, ready_at__lte=frozen.current)
            .order_by("id")
            .values_list("pk", flat=True)
            .first()
        )
        if due is not None:
            engine.run_step(due)
            continue
        parked = StepRun.objects.filter(
            run=run, status=StepStatus.WAITING, error__has_key="awaiting"
        ).first()
        if parked is not None:
            engine.resolve_parked_step(parked.pk, output={"by": "a person"})
            continue
        frozen.advance(61)
        counts = engine.sweep()
        assert counts["repaired"] == 0, "the sweeper had to repair a run"
    raise AssertionError(f"run {run.pk} did not end: {list(StepRun.objects.filter(run=run))}")


slugs = itertools.count()


@hypothesis_settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step_strategy, min_size=1, max_size=6))
def test_generated_workflows_never_hang_and_settle_as_documented(steps, settings):
    settings.STEWARD_INLINE_STEPS = 1  # one step per engine call, so each is checked
    workflow = services.create_workflow(
        slug=f"generated-{next(slugs)}", name="Generated", definition=definition_of(steps)
    )
    with clock.frozen(seed=7) as frozen:
        run = services.start_run(workflow, {})
        drive(run, frozen)
    run.refresh_from_db()
    run_end, ends = expected(steps)
    described = definition_of(steps)
    assert run.status == run_end, (described, run.error)
    rows = {row.step_id: row.status for row in StepRun.objects.filter(run=run, item_index=-1)}
    if run_end == "succeeded":
        assert rows == ends, described
        return
    # Parallel branches: the first step to fail for good fails the run, and every step still
    # open then is cancelled, so a later branch may not have had its turn.
    stoppers = {sid for sid, end in ends.items() if end == "stops"}
    assert run.error["step"] in stoppers, (described, run.error)
    assert rows[run.error["step"]] == "failed"
    for sid, end in ends.items():
        allowed = {"unreached": {"cancelled"}, "stops": {"failed", "cancelled"}}.get(
            end, {end, "cancelled"}
        )
        assert rows[sid] in allowed, (sid, rows, described)
