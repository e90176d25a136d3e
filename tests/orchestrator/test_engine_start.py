"""Starting a run: the batched start writes what the ORM path writes, in fewer statements."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.actors import SYSTEM
from audit.models import AuditEntry
from orchestrator import engine
from orchestrator.models import RunEvent, StepRun

pytestmark = pytest.mark.django_db

DEFINITION = {
    "steps": [
        {"id": "a", "type": "noop"},
        {"id": "b", "type": "noop"},
        {"id": "c", "type": "noop", "depends_on": ["a", "b"]},
        {"id": "d", "type": "sleep", "duration": "1h", "depends_on": ["c"]},
    ]
}
IGNORED = {"id", "run", "created_at", "ready_at", "dispatched_at"}


def written(run):
    """Return a run's step rows (every column but ids and times) and its events, comparably."""
    steps = {
        row.step_id: {
            field.name: getattr(row, field.attname)
            for field in StepRun._meta.concrete_fields
            if field.name not in IGNORED
        }
        for row in StepRun.objects.filter(run=run)
    }
    step_ids = {row.pk: row.step_id for row in StepRun.objects.filter(run=run)}
    events = [
        (e.kind, step_ids.get(e.step_run_id), e.step_id, e.item_index, e.attempt, e.data)
        + (e.actor_id, e.actor_name)
        for e in RunEvent.objects.filter(run=run).order_by("id")
    ]
    return steps, events


@pytest.mark.postgres  # elsewhere both paths are the ORM's
def test_the_batched_start_writes_what_the_orm_path_writes(
    make_workflow, monkeypatch, django_user_model, published
):
    user = django_user_model.objects.create(username="starter")
    wf = make_workflow(DEFINITION)
    engine.start_run(wf, {"x": 0}, started_by=user)  # caches the definition and the actor
    published.clear()
    with CaptureQueriesContext(connection) as batched_queries:
        batched = engine.start_run(wf, {"x": 1}, started_by=user, trigger="test")
    monkeypatch.setattr(engine, "_batches_statements", lambda: False)
    with CaptureQueriesContext(connection) as orm_queries:
        plain = engine.start_run(wf, {"x": 1}, started_by=user, trigger="test")
    assert written(batched) == written(plain)
    steps, events = written(batched)
    assert {sid: row["status"] for sid, row in steps.items()} == {
        "a": "ready",
        "b": "ready",
        "c": "pending",
        "d": "pending",
    }
    assert [event[:2] for event in events] == [
        ("run_started", None),
        ("step_scheduled", "a"),
        ("step_scheduled", "b"),
    ]
    assert events[0][-2:] == (user.pk, "starter")
    rows = {row.step_id: row for row in StepRun.objects.filter(run=batched)}
    assert published[:2] == [rows["a"].pk, rows["b"].pk]
    assert rows["a"].ready_at == rows["a"].dispatched_at == rows["a"].created_at
    # The audit entries name the events by their ids, in order.
    entries = AuditEntry.objects.filter(run_id=str(batched.pk)).order_by("id")
    event_ids = list(
        RunEvent.objects.filter(run=batched).order_by("id").values_list("pk", flat=True)
    )
    assert [json.loads(e.body_row.content)["event_id"] for e in entries] == event_ids
    # Steps and events go in one statement, not two.
    assert len(batched_queries) == len(orm_queries) - 1, [q["sql"][:90] for q in batched_queries]


def test_the_batched_start_runs_to_the_end(make_workflow):
    wf = make_workflow({"steps": [{"id": "a", "type": "noop"}, {"id": "b", "type": "noop"}]})
    run = engine.start_run(wf, started_by=SYSTEM)
    assert engine.drain() == 2
    run.refresh_from_db()
    assert run.status == "succeeded"
