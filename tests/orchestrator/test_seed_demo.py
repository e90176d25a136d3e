"""The demo seed: idempotent, refused outside DEBUG, and its runs do what the seed says."""

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from agents.models import IncidentUpdate
from audit import clock
from orchestrator import demo, engine, services
from orchestrator.models import (
    EventKind,
    RunEvent,
    RunSignal,
    StepRun,
    Workflow,
    WorkflowRun,
    WorkflowVersion,
)

pytestmark = pytest.mark.django_db

SEEDED_MODELS = [get_user_model(), Workflow, WorkflowVersion, WorkflowRun, StepRun, RunSignal]


@pytest.fixture(autouse=True)
def _debug_on(settings):
    """The demo is for DEBUG instances (pytest-django turns DEBUG off)."""
    settings.DEBUG = True


def counts():
    """Count the rows of every model the seed writes, and the run history."""
    return {model.__name__: model.objects.count() for model in [*SEEDED_MODELS, RunEvent]}


def demo_run(incident: str, workflow: str = "incident-postmortem") -> WorkflowRun:
    """Return the demo run of an incident."""
    return WorkflowRun.objects.get(business_key=incident, workflow__slug=workflow)


def step(run: WorkflowRun, step_id: str) -> StepRun:
    """Return a run's step row."""
    return StepRun.objects.get(run=run, step_id=step_id, item_index=-1)


def test_seed_demo_twice_creates_nothing_new(capsys):
    call_command("seed_demo")
    first = counts()
    call_command("seed_demo")
    assert counts() == first
    assert first["Workflow"] == len(demo.DEMO_WORKFLOWS)
    assert first["WorkflowRun"] == len(demo.DEMO_RUNS)
    assert first["RunSignal"] == 1
    output = capsys.readouterr().out
    assert "admin  / admin-demo" in output


def test_seed_demo_logins_work_and_staff_may_only_view():
    call_command("seed_demo")
    User = get_user_model()
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("admin-demo")
    alice = User.objects.get(username="alice")
    assert alice.is_staff and not alice.is_superuser and alice.check_password("alice-demo")
    assert alice.has_perm("orchestrator.view_workflowrun")
    assert not alice.has_perm("orchestrator.change_workflowrun")


def test_seed_demo_refuses_with_debug_off(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="public passwords"):
        call_command("seed_demo")
    assert not get_user_model().objects.exists()


def test_a_changed_demo_definition_is_published_as_a_new_version(monkeypatch):
    call_command("seed_demo")
    slug, name, text = demo.DEMO_WORKFLOWS[0]
    changed = text.replace("Look up a service", "Look up the service")
    monkeypatch.setattr(demo, "DEMO_WORKFLOWS", [(slug, name, changed), *demo.DEMO_WORKFLOWS[1:]])
    call_command("seed_demo")
    workflow = Workflow.objects.get(slug=slug)
    assert list(workflow.versions.values_list("number", flat=True)) == [2, 1]
    assert set(workflow.runs.values_list("version__number", flat=True)) == {1}  # runs stay pinned


def test_demo_runs_complete_wait_and_sleep_as_the_seed_says():
    with clock.frozen(seed=3) as frozen:
        demo.seed()
        engine.drain()
        triage = demo_run("INC-1001", "incident-triage")
        assert step(triage, "restart").status == "ready"  # attempt 1 failed; backoff ≤ 2 s
        frozen.advance(2.01)
        engine.sweep()
        engine.drain()
        frozen.advance(10)
        engine.sweep()  # INC-0998's 10 s cool-down and INC-0999's 5 s one are due
        engine.drain()

        triage.refresh_from_db()
        assert triage.status == "succeeded"
        assert triage.output["summary"] == {
            "unhealthy": ["checkout-2"],
            "restarted": ["checkout-2"],
            "notified": 2,
        }
        assert step(triage, "restart").attempt == 2
        assert RunEvent.objects.filter(run=triage, kind=EventKind.RETRY_SCHEDULED).count() == 1

        healthy = demo_run("INC-1002", "incident-triage")
        assert healthy.status == "succeeded"
        assert step(healthy, "restart").status == "skipped"

        early_signal = demo_run("INC-0998")
        assert early_signal.status == "succeeded"
        assert early_signal.output == {"incident": "INC-0998", "approved": True}

        waiting = demo_run("INC-0999")
        assert waiting.status == "running"
        assert step(waiting, "review").status == "waiting"
        assert step(waiting, "review").wait_signal == "postmortem_reviewed"

        sleeping = demo_run("INC-1000")
        nap = step(sleeping, "cool_down")
        assert nap.status == "waiting"
        assert nap.wake_at - nap.started_at == dt.timedelta(minutes=10)

        services.send_signal(waiting, "postmortem_reviewed", {"approved": True, "reviewer": "bob"})
        engine.drain()
    waiting.refresh_from_db()
    assert waiting.status == "succeeded"
    assert IncidentUpdate.objects.filter(
        incident="INC-0999", message__contains="approved by bob"
    ).exists()
