"""The effect journal: a step attempted again after its worker died reuses the recorded result."""

from __future__ import annotations

from audit import clock
from orchestrator import engine, services
from orchestrator.models import EffectJournal, StepRun
from tests.orchestrator import testtools

ADD = {
    "steps": [
        {
            "id": "add",
            "type": "tool",
            "tool": "test.add",
            "args": {"a": 2, "b": 3},
            "retry": {"max_attempts": 3, "initial_interval": 0},
        }
    ]
}


def test_a_call_made_before_the_worker_died_is_not_made_again(make_workflow, monkeypatch, settings):
    settings.STEWARD_LEASE_SECONDS = 10
    real_finish = engine._finish

    def die_after_the_call(*args, **kwargs):
        # What the database sees when a worker dies after the call: the step is still running
        # under the dead worker's lease, and nothing of the outcome was written.
        raise engine.LeaseLost(args[0])

    wf = make_workflow(ADD)
    with clock.frozen() as frozen:
        run = services.start_run(wf)
        step = StepRun.objects.get(run=run)
        monkeypatch.setattr(engine, "_finish", die_after_the_call)
        engine.run_step(step.pk)
        monkeypatch.setattr(engine, "_finish", real_finish)
        assert len(testtools.CALLS) == 1
        step.refresh_from_db()
        assert step.status == "running"  # as the dead worker left it
        frozen.advance(11)
        assert engine.sweep()["reclaimed"] == 1
        engine.sweep()
        engine.drain()
    step.refresh_from_db()
    assert step.status == "succeeded" and step.attempt == 2
    assert step.output == {"sum": 5}
    assert len(testtools.CALLS) == 1, "the second attempt called the tool again"
    journal = EffectJournal.objects.filter(run_id=run.pk).order_by("id")
    assert [entry.name for entry in journal] == ["decide:test.add", "test.add"]


def test_a_journal_entry_of_another_effect_is_a_clear_failure(make_workflow):
    wf = make_workflow(ADD)
    run = services.start_run(wf)
    step = StepRun.objects.get(run=run)
    EffectJournal.objects.create(
        key=step.idempotency_key,
        run_id=run.pk,
        step_run_id=step.pk,
        name="something.else",
        request={},
        result={"sum": 99},
        created_at=clock.now(),
    )
    engine.drain()
    step.refresh_from_db()
    assert step.error is not None, "the step should have failed"
    assert step.error["type"] == "JournalMismatch", step.error
    assert testtools.CALLS == []
