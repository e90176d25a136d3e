"""Run operations from the admin and the command line go through the services."""

import json

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from orchestrator import engine, services
from orchestrator.models import RunSignal, StepRun, Workflow, WorkflowRun, WorkflowVersion

pytestmark = pytest.mark.django_db

WAITING = {"steps": [{"id": "w", "type": "wait", "signal": "go"}]}


@pytest.fixture
def admin_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("root-admin", "a@example.com", "pw")
    client.force_login(user)
    return client


def test_publishing_a_bad_definition_in_the_admin_shows_each_problem(admin_client):
    # Exempt from version approval: a valid version goes live at once (see test_versions).
    workflow = Workflow.objects.create(slug="w", name="W", version_approval_required=False)
    url = reverse("admin:orchestrator_workflowversion_add")
    bad = "steps:\n  - id: a\n    type: noop\n    depends_on: [zzz]\n"
    response = admin_client.post(url, {"workflow": workflow.pk, "definition_text": bad, "note": ""})
    assert response.status_code == 200
    assert (
        "step &#x27;a&#x27;, field &#x27;depends_on&#x27;: unknown step &#x27;zzz&#x27;"
        in response.text
    )
    assert not WorkflowVersion.objects.exists()

    good = "steps:\n  - id: a\n    type: noop\n"
    response = admin_client.post(
        url, {"workflow": workflow.pk, "definition_text": good, "note": "n"}
    )
    assert response.status_code == 302
    version = WorkflowVersion.objects.get()
    assert (version.number, version.published_by_name, version.status) == (
        1,
        "root-admin",
        "approved",
    )
    workflow.refresh_from_db()
    assert workflow.live_version == version


def test_start_a_run_and_signal_it_from_the_admin(admin_client):
    workflow = services.create_workflow(slug="w", name="W", definition=WAITING)
    response = admin_client.post(
        reverse("admin:orchestrator_workflow_start", args=[workflow.pk]),
        {"input": '{"x": 1}', "business_key": "INC-1", "idempotency_key": ""},
    )
    run = WorkflowRun.objects.get()
    assert response.status_code == 302
    assert (run.input, run.business_key, run.started_by_name, run.trigger) == (
        {"x": 1},
        "INC-1",
        "root-admin",
        "admin",
    )
    engine.drain()
    assert (
        admin_client.get(
            reverse("admin:orchestrator_workflowrun_change", args=[run.pk])
        ).status_code
        == 200
    )
    response = admin_client.post(
        reverse("admin:orchestrator_workflowrun_signal", args=[run.pk]),
        {"name": "go", "payload": '{"ok": true}'},
    )
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == "succeeded" and run.output == {"w": {"ok": True}}
    # The same page refuses a signal to the finished run with the engine's message.
    response = admin_client.post(
        reverse("admin:orchestrator_workflowrun_signal", args=[run.pk]), {"name": "go"}
    )
    assert "only unfinished runs accept signals" in response.text


def test_start_page_refuses_malformed_input(admin_client):
    workflow = services.create_workflow(slug="w", name="W", definition=WAITING)
    response = admin_client.post(
        reverse("admin:orchestrator_workflow_start", args=[workflow.pk]), {"input": "[1,"}
    )
    assert response.status_code == 200
    assert "Not valid JSON" in response.text
    assert not WorkflowRun.objects.exists()


def test_cancel_action_in_the_run_list(admin_client):
    workflow = services.create_workflow(slug="w", name="W", definition=WAITING)
    run = services.start_run(workflow)
    response = admin_client.post(
        reverse("admin:orchestrator_workflowrun_changelist"),
        {"action": "cancel_runs", "_selected_action": [run.pk]},
    )
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_admin_lists_render(admin_client):
    workflow = services.create_workflow(slug="w", name="W", definition=WAITING)
    services.start_run(workflow)
    for name in ["workflow", "workflowversion", "workflowrun", "steprun", "runevent"]:
        assert admin_client.get(reverse(f"admin:orchestrator_{name}_changelist")).status_code == 200
    assert (
        admin_client.get(
            reverse("admin:orchestrator_workflow_change", args=[workflow.pk])
        ).status_code
        == 200
    )
    assert (
        admin_client.get(
            reverse("admin:orchestrator_workflow_history", args=[workflow.pk])
        ).status_code
        == 200
    )


def test_runs_command_operates_through_services(capsys):
    services.create_workflow(slug="w", name="W", definition=WAITING)
    call_command("runs", "start", "w", "--input", '{"a": 1}', "--idempotency-key", "k1")
    run = WorkflowRun.objects.get()
    engine.drain()
    call_command("runs", "signal", str(run.pk), "go", "--payload", '{"v": 2}')
    call_command("runs", "show", str(run.pk))
    out = capsys.readouterr().out
    assert f"run {run.pk} (running)" in out
    assert 'output: {"w": {"v": 2}}' in out
    assert RunSignal.objects.get().payload == {"v": 2}
    with pytest.raises(CommandError, match="only unfinished runs accept signals"):
        call_command("runs", "signal", str(run.pk), "go")
    with pytest.raises(CommandError, match="expected a JSON object"):
        call_command("runs", "start", "w", "--input", "[]")


def test_retry_command_resumes_a_failed_run():
    definition = {
        "steps": [
            {
                "id": "s",
                "type": "tool",
                "tool": "test.flaky",
                "args": {"fail_times": 1, "error": "FatalToolError"},
            }
        ]
    }
    services.create_workflow(slug="w", name="W", definition=definition)
    call_command("runs", "start", "w")
    engine.drain()
    step = StepRun.objects.get()
    assert step.status == "failed"
    call_command("runs", "retry", str(step.pk))
    engine.drain()
    assert WorkflowRun.objects.get().status == "succeeded"


def test_publish_workflow_command_creates_nothing_for_a_bad_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - id: a\n    type: tool\n    tool: nope\n")
    with pytest.raises(
        CommandError, match="step 'a', field 'tool': no tool is registered as 'nope'"
    ):
        call_command("publish_workflow", "new-flow", str(bad))
    assert not Workflow.objects.exists()
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"steps": [{"id": "a", "type": "noop"}]}))
    call_command("publish_workflow", "new-flow", str(good))
    call_command("publish_workflow", "new-flow", str(good))
    assert list(
        Workflow.objects.get().versions.values_list("number", flat=True).order_by("number")
    ) == [1, 2]
