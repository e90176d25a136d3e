"""No run hangs: every failure path settles the run, and the sweeper repairs one that would not.

The invariant: a running (or paused) run always has a step that is ready, waiting, or held by a
worker under a lease; otherwise it is settled. `engine.runs_breaking_invariant()` lists the runs
that break it; the sweeper repairs them and reports each one.
"""

import json
import logging

import pytest

from audit.models import AuditEntry
from orchestrator import engine, services
from orchestrator.models import EventKind, RunEvent, StepRun, StepStatus, WorkflowRun

pytestmark = pytest.mark.django_db


def statuses(run) -> dict[str, str]:
    """Return {step label: status} for a run."""
    return {
        (s.step_id if s.item_index == -1 else f"{s.step_id}[{s.item_index}]"): s.status
        for s in StepRun.objects.filter(run=run)
    }


def chain_after(first: dict) -> dict:
    """Return a definition: `first`, then a step depending on it, then a step after that."""
    return {
        "steps": [
            {"id": "before", "type": "noop"},
            {**first, "id": "broken", "depends_on": ["before"]},
            {"id": "after", "type": "noop", "depends_on": ["broken"]},
            {"id": "last", "type": "noop", "depends_on": ["after"]},
        ]
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "noop", "when": "input.missing.deeper"},
        {"type": "noop", "foreach": "input.missing.deeper"},
        {"type": "noop", "foreach": "5"},  # evaluates, but not to a list
        {"type": "noop", "foreach": "{'a': 1}"},
    ],
    ids=["when", "foreach-undefined", "foreach-number", "foreach-mapping"],
)
def test_a_when_or_foreach_that_cannot_be_evaluated_fails_the_run(make_workflow, fields):
    run = services.start_run(make_workflow(chain_after(fields)))
    engine.drain()
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error["step"] == "broken"
    assert run.error["type"] == "ExpressionError"
    assert statuses(run) == {
        "before": "succeeded",
        "broken": "failed",
        "after": "cancelled",
        "last": "cancelled",
    }
    assert EventKind.RUN_FAILED in RunEvent.objects.filter(run=run).values_list("kind", flat=True)
    assert engine.runs_breaking_invariant() == []


def test_a_root_whose_when_cannot_be_evaluated_fails_the_run_at_its_start(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {"id": "ok", "type": "noop"},
                {"id": "broken", "type": "noop", "when": "input.missing.deeper"},
                {"id": "after", "type": "noop", "depends_on": ["broken", "ok"]},
            ]
        }
    )
    run = services.start_run(wf)
    run.refresh_from_db()
    assert run.status == "failed"
    # The root readied before the broken one is cancelled with the rest: nothing runs.
    assert statuses(run) == {"ok": "cancelled", "broken": "failed", "after": "cancelled"}
    assert engine.drain() == 0


def test_on_failure_continue_still_lets_the_run_go_on(make_workflow):
    wf = make_workflow(
        chain_after({"type": "noop", "when": "input.missing.deeper", "on_failure": "continue"})
    )
    run = services.start_run(wf)
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert statuses(run)["broken"] == "failed"
    assert statuses(run)["last"] == "succeeded"


def test_on_failure_escalate_parks_the_step_for_a_person(make_workflow):
    wf = make_workflow(
        chain_after({"type": "noop", "foreach": "input.missing", "on_failure": "escalate"})
    )
    run = services.start_run(wf)
    engine.drain()
    broken = StepRun.objects.get(run=run, step_id="broken")
    assert broken.status == "waiting"
    assert "escalation" in broken.error["awaiting"]
    assert engine.runs_breaking_invariant() == []
    engine.resolve_parked_step(broken.pk, output=["by hand"])
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"


def test_retrying_a_step_whose_foreach_failed_evaluates_the_foreach_again(make_workflow):
    wf = make_workflow(
        {
            "steps": [
                {"id": "pick", "type": "set", "value": {"items": "{{ input.items }}"}},
                {"id": "each", "type": "noop", "depends_on": ["pick"], "foreach": "steps.pick.n"},
            ]
        }
    )
    run = services.start_run(wf, {"items": [1, 2]})
    engine.drain()
    each = StepRun.objects.get(run=run, step_id="each", item_index=-1)
    assert each.status == "failed" and each.error["stage"] == "activation"
    services.retry_step(each.pk)
    engine.drain()
    run.refresh_from_db()
    each.refresh_from_db()
    # Evaluated again (and failing again), not executed past its foreach as a single step.
    assert (run.status, each.status, each.attempt) == ("failed", "failed", 0)
    assert not StepRun.objects.filter(run=run, step_id="each").exclude(item_index=-1).exists()


@pytest.mark.parametrize(
    "foreach", ["range(3)", "input.hosts | map('upper')"], ids=["range", "filter"]
)
def test_foreach_over_a_range_or_a_filtered_sequence_runs_one_item_each(make_workflow, foreach):
    wf = make_workflow(
        {"steps": [{"id": "each", "type": "set", "foreach": foreach, "value": "{{ item }}"}]}
    )
    run = services.start_run(wf, {"hosts": ["a", "b", "c"]})
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    expected = [0, 1, 2] if foreach == "range(3)" else ["A", "B", "C"]
    assert run.output == {"each": expected}


# --- the sweeper repairs and reports ----------------------------------------------------------


def break_run(make_workflow):
    """Return a run left as a lost engine path would leave it: nothing ready, nothing settled."""
    run = services.start_run(make_workflow(chain_after({"type": "noop"})))
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    WorkflowRun.objects.filter(pk=run.pk).update(status="running", finished_at=None, output=None)
    StepRun.objects.filter(run=run, step_id__in=["after", "last"]).update(
        status=StepStatus.PENDING, finished_at=None
    )
    return run


def test_the_sweeper_repairs_a_run_that_breaks_the_invariant_and_reports_it(make_workflow, caplog):
    run = break_run(make_workflow)
    assert engine.runs_breaking_invariant() == [run.pk]
    with caplog.at_level(logging.ERROR, logger="orchestrator.engine"):
        counts = engine.sweep()
    assert counts["repaired"] == 1
    assert f"run {run.pk} is running but no step is ready" in caplog.text
    # The repair activated the pending step; every event it wrote names the violation.
    repaired = RunEvent.objects.filter(run=run, data__has_key="repair")
    assert list(repaired.values_list("step_id", "kind")) == [("after", EventKind.STEP_SCHEDULED)]
    audited = [
        json.loads(entry.body_row.content)["data"]
        for entry in AuditEntry.objects.filter(run_id=run.pk, action="engine.step_scheduled")
    ]
    assert [data["repair"] for data in audited if "repair" in data] == [repaired[0].data["repair"]]
    engine.drain()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert engine.sweep()["repaired"] == 0


def test_a_run_the_repair_cannot_move_on_fails_as_stuck(make_workflow):
    run = break_run(make_workflow)
    # A step "running" with no worker's lease and no items: nothing will ever finish it.
    StepRun.objects.filter(run=run, step_id="broken").update(status=StepStatus.RUNNING)
    assert engine.sweep()["repaired"] == 1
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error["type"] == "RunStuck"
    assert engine.runs_breaking_invariant() == []


def test_a_failed_step_left_behind_fails_the_run_when_repaired(make_workflow):
    run = break_run(make_workflow)
    StepRun.objects.filter(run=run, step_id="broken").update(
        status=StepStatus.FAILED, error={"type": "ToolError", "message": "lost"}
    )
    assert engine.sweep()["repaired"] == 1
    run.refresh_from_db()
    assert (run.status, run.error["step"], run.error["type"]) == ("failed", "broken", "ToolError")
    assert statuses(run)["after"] == "cancelled"


def test_a_healthy_run_is_never_repaired(make_workflow):
    wf = make_workflow({"steps": [{"id": "w", "type": "wait", "signal": "go"}]})
    run = services.start_run(wf)
    engine.drain()
    assert engine.runs_breaking_invariant() == []
    assert engine.repair_run(run.pk) == 0
    assert statuses(run) == {"w": "waiting"}
