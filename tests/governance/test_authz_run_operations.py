"""The permission matrix of workflow and run operations through orchestrator.services.

Each principal kind of the governance company tries each operation: "+" it happens, "3" it is
refused as forbidden (403: the target is visible), "4" as not found (404: it is not). Every
refusal leaves the target untouched and writes one `governance.access_denied` audit entry naming
the actor, the action and the outcome.

Who holds what (tests/governance/conftest.py, plus one grant here): the governance admins hold
everything model-wide, publishing workflow versions included; the managers and the integration
may change the `payments` workflow (start its runs, and so signal them) and view every run, but
not publish its versions nor operate runs they did not start; the approvers may view
`payments`; the payments agent may view and change the one run it works on (granted below);
the outsider holds nothing.
"""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from orchestrator import engine, services
from orchestrator.models import RunSignal, RunStatus, StepRun, Workflow
from tests.governance.conftest import fresh
from tests.orchestrator import testtools  # noqa: F401  (registers test.flaky)

PRINCIPALS = ["gina", "alice", "maya", "integration", "agent", "oscar"]
OPERATIONS = ["create", "publish", "start", "signal", "cancel", "pause", "resume", "retry"]
# principal: outcome per operation, in the order of OPERATIONS.
EXPECTED = {
    "gina": "++++++++",
    "alice": "33344444",
    "maya": "33++3333",
    "integration": "33++3333",
    "agent": "344+++++",
    "oscar": "34444444",
}
NOOP = {"steps": [{"id": "only", "type": "noop"}]}
FAILING = {
    "steps": [
        {
            "id": "call",
            "type": "tool",
            "tool": "test.flaky",
            "args": {"fail_times": 1, "error": "FatalToolError"},
        }
    ]
}


def _target_run(company, definition=NOOP, *, pause=False):
    """Start a run of `payments` as the system and let the payments agent work on it."""
    services.publish_version(company.payments, definition, actor=SYSTEM)
    run = services.start_run(company.payments, {}, started_by=SYSTEM)
    governance.grant(company.agents, "orchestrator.view_workflowrun", run, actor=SYSTEM)
    governance.grant(company.agents, "orchestrator.change_workflowrun", run, actor=SYSTEM)
    if definition is FAILING:
        engine.drain()
    if pause:
        services.pause_run(run, actor=SYSTEM)
    run.refresh_from_db()
    return run


def _scenario(company, operation, user):
    """Prepare the target of `operation`; return (do it as `user`, tell whether it happened)."""
    if operation == "create":
        return (
            lambda: services.create_workflow(
                slug="treasury", name="Treasury", definition=NOOP, actor=user
            ),
            lambda: Workflow.objects.filter(slug="treasury").exists(),
        )
    if operation == "publish":
        before = company.payments.versions.count()
        return (
            lambda: services.publish_version(company.payments, NOOP, actor=user, note="matrix"),
            lambda: company.payments.versions.count() == before + 1,
        )
    if operation == "start":
        before = company.payments.runs.count()
        return (
            lambda: services.start_run("payments", {}, started_by=user, trigger="matrix"),
            lambda: (
                company.payments.runs.filter(trigger="matrix").count() == 1
                and company.payments.runs.count() == before + 1
            ),
        )
    if operation == "retry":
        run = _target_run(company, FAILING)
        step = StepRun.objects.get(run=run, step_id="call")
        assert (run.status, step.status) == (RunStatus.FAILED, "failed")
        return (
            lambda: services.retry_step(step.pk, actor=user),
            lambda: StepRun.objects.get(pk=step.pk).status != "failed",
        )
    run = _target_run(company, pause=operation == "resume")
    call, expected_status = {
        "signal": (lambda: services.send_signal(run.pk, "nudge", {"n": 1}, sent_by=user), None),
        "cancel": (lambda: services.cancel_run(run.pk, actor=user), RunStatus.CANCELLED),
        "pause": (lambda: services.pause_run(run, actor=user), RunStatus.PAUSED),
        "resume": (lambda: services.resume_run(run, actor=user), RunStatus.RUNNING),
    }[operation]
    if operation == "signal":
        return call, lambda: RunSignal.objects.filter(run=run, name="nudge").exists()
    return call, lambda: type(run).objects.get(pk=run.pk).status == expected_status


def _denials(user):
    return AuditEntry.objects.filter(action="governance.access_denied", actor_id=user.pk)


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_run_operations_permission_matrix(company, principal, operation):
    user = fresh(getattr(company, principal))
    expected = EXPECTED[principal][OPERATIONS.index(operation)]
    call, happened = _scenario(company, operation, user)
    assert not happened()
    try:
        call()
    except Http404 as refusal:
        assert isinstance(refusal, services.EngineError)  # the `runs` command reports it
        got = "4"
    except PermissionDenied as refusal:
        assert isinstance(refusal, services.EngineError)
        got = "3"
    else:
        got = "+"
    assert got == expected, f"{principal} {operation}: expected {expected}, got {got}"
    assert happened() == (got == "+")
    denials = list(_denials(user))
    if got == "+":
        assert denials == []
        return
    assert len(denials) == 1, f"{principal} {operation}: {len(denials)} audit entries"
    body = json.loads(denials[0].body_row.content)
    assert denials[0].actor_name == user.username
    assert body["outcome"] == {"3": "forbidden", "4": "not_found"}[got]
    assert body["action"] == {"create": "add", "publish": "publish", "signal": "signal"}.get(
        operation, "change"
    )


def test_system_calls_are_not_checked(company):
    # The engine, the sweeper and tasks act as SYSTEM on work someone authorised.
    run = _target_run(company)
    services.send_signal(run, "nudge", sent_by=SYSTEM)
    services.pause_run(run, actor=SYSTEM)
    services.resume_run(run, actor=SYSTEM)
    services.cancel_run(run, reason="system", actor=SYSTEM)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert not AuditEntry.objects.filter(action="governance.access_denied").exists()


def test_a_missing_run_and_a_hidden_one_look_alike(company):
    oscar = fresh(company.oscar)
    hidden = _target_run(company)
    messages = []
    for run_id in (hidden.pk, hidden.pk + 10_000):
        with pytest.raises(services.OperationNotVisible) as refused:
            services.cancel_run(run_id, actor=oscar)
        messages.append(str(refused.value).replace(str(run_id), "N"))
    assert messages[0] == messages[1]
    assert hidden.status == RunStatus.RUNNING
    assert _denials(oscar).count() == 2


@pytest.mark.parametrize("name", ["approval:42", "escalation:7"])
def test_reserved_signals_are_refused_even_to_a_governance_admin(company, name):
    run = _target_run(company)
    with pytest.raises(services.EngineError, match="reserved"):
        services.send_signal(run, name, {"approved": True}, sent_by=fresh(company.gina))
    assert not RunSignal.objects.filter(run=run, name=name).exists()
