"""The orchestrator's admin through governance's one authorisation path.

Versions, steps, events and effects are shown exactly when their workflow or run is; steps are
read-only; starting and signalling need change on the workflow or run, proposing a version needs
publish on the workflow (and it waits for a second person's approval); the run
actions (cancel, pause, resume, retry a step) refuse and audit what the user may not do; the
object-permission pages of workflows and runs grant through governance's services.
"""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from guardian.shortcuts import get_group_perms

from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from orchestrator import engine, services
from orchestrator.models import (
    EffectJournal,
    RunEvent,
    RunStatus,
    StepRun,
    WorkflowRun,
    WorkflowVersion,
)
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for
from tests.orchestrator import testtools  # noqa: F401  (registers test.flaky)

WAITING = {"steps": [{"id": "w", "type": "wait", "signal": "go"}]}
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


def _denials(user) -> int:
    return AuditEntry.objects.filter(action="governance.access_denied", actor_id=user.pk).count()


def _changelist(model) -> str:
    return reverse(f"admin:orchestrator_{model._meta.model_name}_changelist")


def _change(obj) -> str:
    return reverse(f"admin:orchestrator_{obj._meta.model_name}_change", args=[obj.pk])


@pytest.fixture
def watcher(company):
    """Oscar, watching only the company's payments run (view on that one run)."""
    watchers = governance.create_role(name="Watchers", owner=company.gina, actor=SYSTEM)
    governance.add_member(watchers, company.oscar, actor=SYSTEM)
    governance.grant(watchers, "orchestrator.view_workflowrun", company.run, actor=SYSTEM)
    return fresh(company.oscar)


@pytest.fixture
def other_run(company):
    """A run of the HR workflow, which the watcher may not see."""
    return services.start_run(company.hr, {}, started_by=SYSTEM)


def test_steps_events_and_effects_are_listed_through_their_run(company, watcher, other_run):
    now = clock.now()
    EffectJournal.objects.create(key="mine", run=company.run, name="tool", created_at=now)
    EffectJournal.objects.create(key="theirs", run=other_run, name="tool", created_at=now)
    EffectJournal.objects.create(key="orphan", run=None, name="tool", created_at=now)
    for model in (StepRun, RunEvent, EffectJournal):
        listing = client_for(watcher).get(_changelist(model))
        assert listing.status_code == 200
        assert {row.run_id for row in listing.context["cl"].result_list} == {company.run.pk}
        everything = client_for(fresh(company.maya)).get(_changelist(model))
        assert {row.run_id for row in everything.context["cl"].result_list} >= {
            company.run.pk,
            other_run.pk,
        }
    orphan = client_for(fresh(company.maya)).get(_changelist(EffectJournal))
    assert "orphan" in {row.key for row in orphan.context["cl"].result_list}


def test_a_hidden_runs_step_is_a_404_and_a_visible_one_is_read_only(company, watcher, other_run):
    hidden = StepRun.objects.filter(run=other_run).first()
    visible = StepRun.objects.filter(run=company.run).first()
    client = client_for(watcher)
    before = _denials(watcher)
    assert client.get(_change(hidden)).status_code == 404
    assert _denials(watcher) == before + 1
    page = client.get(_change(visible))
    assert page.status_code == 200
    assert 'name="_save"' not in page.text and 'name="_continue"' not in page.text
    assert client.post(_change(visible), {"status": "succeeded"}).status_code == 403
    assert _denials(watcher) == before + 2
    assert StepRun.objects.get(pk=visible.pk).status == visible.status
    event = RunEvent.objects.filter(run=other_run).first()
    assert client.get(_change(event)).status_code == 404
    assert _denials(watcher) == before + 3


def test_an_outsider_sees_no_steps_at_all(company):
    oscar = fresh(company.oscar)
    before = _denials(oscar)
    assert client_for(oscar).get(_changelist(StepRun)).status_code == 403
    assert _denials(oscar) == before + 1


def test_versions_are_listed_through_their_workflow_and_publishing_needs_publish(company):
    alice, maya, gina = fresh(company.alice), fresh(company.maya), fresh(company.gina)
    listing = client_for(alice).get(_changelist(WorkflowVersion))
    assert {v.workflow_id for v in listing.context["cl"].result_list} == {company.payments.pk}
    hr_version = company.hr.versions.get()
    before = _denials(alice)
    assert client_for(alice).get(_change(hr_version)).status_code == 404
    add = reverse("admin:orchestrator_workflowversion_add")
    assert client_for(alice).get(add).status_code == 403  # she may publish no workflow
    assert _denials(alice) == before + 2

    # maya may change payments (start its runs): that is not the right to publish its versions.
    good = "steps:\n  - id: a\n    type: noop\n"
    before = _denials(maya)
    response = client_for(maya).post(
        add, {"workflow": company.payments.pk, "definition_text": good, "note": "n"}
    )
    assert response.status_code == 403
    assert company.payments.versions.count() == 1
    assert _denials(maya) == before + 1

    # A governance admin proposes; the version waits for a second person's approval.
    response = client_for(gina).post(
        add, {"workflow": company.payments.pk, "definition_text": good, "note": "n"}, follow=True
    )
    proposed = company.payments.versions.get(number=2)
    assert proposed.status == "proposed" and proposed.approval_request_id is not None
    assert f"request #{proposed.approval_request_id}" in response.text
    company.payments.refresh_from_db()
    assert company.payments.live_version.number == 1


def test_the_start_page_needs_change_on_the_workflow(company):
    url = reverse("admin:orchestrator_workflow_start", args=[company.payments.pk])
    alice, maya, oscar = fresh(company.alice), fresh(company.maya), fresh(company.oscar)
    for user, status in ((alice, 403), (oscar, 404)):
        before = _denials(user)
        assert client_for(user).post(url, {"input": "{}"}).status_code == status
        assert _denials(user) == before + 1
    assert not WorkflowRun.objects.filter(trigger="admin").exists()
    assert client_for(maya).get(url).status_code == 200
    response = client_for(maya).post(url, {"input": '{"x": 1}'})
    run = WorkflowRun.objects.get(trigger="admin")
    assert response.status_code == 302 and run.started_by_id == maya.pk
    # The workflow page offers the operations to her, not to alice who may only view it.
    change = _change(company.payments)
    assert url in client_for(maya).get(change).text
    assert url not in client_for(alice).get(change).text


# --- run actions: the allowed and the refused path -------------------------------------------


@pytest.fixture
def operator(company):
    """Maya, made operator of one payments run (change on it); she may only view the others."""
    run = services.start_run(company.payments, {}, started_by=SYSTEM)
    operators = governance.create_role(name="Operators", owner=company.gina, actor=SYSTEM)
    governance.add_member(operators, company.maya, actor=SYSTEM)
    governance.grant(operators, "orchestrator.change_workflowrun", run, actor=SYSTEM)
    return fresh(company.maya), run


def _not_hers(company):
    """Make the company's run one maya did not start (the starter operates their own runs)."""
    WorkflowRun.objects.filter(pk=company.run.pk).update(started_by=None, started_by_name="")
    return company.run


def _act(user, model, action, *rows):
    return client_for(user).post(
        _changelist(model),
        {"action": action, "_selected_action": [row.pk for row in rows]},
        follow=True,
    )


def _status(run):
    return WorkflowRun.objects.get(pk=run.pk).status


@pytest.mark.parametrize("action", ["pause_runs", "resume_runs", "cancel_runs"])
def test_run_actions_apply_where_allowed_and_refuse_and_audit_elsewhere(company, operator, action):
    maya, mine = operator
    theirs = _not_hers(company)
    if action == "resume_runs":
        services.pause_run(mine, actor=SYSTEM)
        services.pause_run(theirs, actor=SYSTEM)
    expected = {"pause_runs": "paused", "resume_runs": "running", "cancel_runs": "cancelled"}
    before_status = _status(theirs)
    before = _denials(maya)
    response = _act(maya, WorkflowRun, action, mine, theirs)
    assert response.status_code == 200
    assert _status(mine) == expected[action]
    assert _status(theirs) == before_status
    assert _denials(maya) == before + 1
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(f"Run {theirs.pk}: You may not change" in text for text in texts), texts


def test_run_actions_are_refused_outright_to_a_viewer(company):
    _not_hers(company)
    viewer = fresh(company.maya)  # views every run, changes none
    before = _denials(viewer)
    response = client_for(viewer).post(
        _changelist(WorkflowRun), {"action": "pause_runs", "_selected_action": [company.run.pk]}
    )
    assert response.status_code == 403
    assert _status(company.run) == RunStatus.RUNNING
    assert _denials(viewer) == before + 1


def test_retry_step_action_allowed_and_refused(company, operator):
    maya, _ = operator
    services.publish_version(company.payments, FAILING, actor=SYSTEM)
    mine, theirs = (
        services.start_run(company.payments, {}, started_by=SYSTEM),
        services.start_run(company.payments, started_by=SYSTEM),
    )
    operators = governance.create_role(name="Retriers", owner=company.gina, actor=SYSTEM)
    governance.add_member(operators, maya, actor=SYSTEM)
    governance.grant(operators, "orchestrator.change_workflowrun", mine, actor=SYSTEM)
    engine.drain()
    step_of = {run: StepRun.objects.get(run=run, step_id="call") for run in (mine, theirs)}
    assert {step.status for step in step_of.values()} == {"failed"}
    maya = fresh(maya)
    before = _denials(maya)
    response = _act(maya, StepRun, "retry_steps", step_of[mine], step_of[theirs])
    assert response.status_code == 200
    assert StepRun.objects.get(pk=step_of[mine].pk).status != "failed"
    assert StepRun.objects.get(pk=step_of[theirs].pk).status == "failed"
    assert _denials(maya) == before + 1
    # Someone who may change no run is not offered the action, and forcing it is a 403.
    alice = fresh(company.alice)
    before = _denials(alice)
    forced = client_for(alice).post(
        _changelist(StepRun), {"action": "retry_steps", "_selected_action": [step_of[theirs].pk]}
    )
    assert forced.status_code == 403
    assert _denials(alice) == before + 1


def test_signal_page_allowed_and_refused(company, operator):
    maya, mine = operator
    url = reverse("admin:orchestrator_workflowrun_signal", args=[mine.pk])
    response = client_for(maya).post(url, {"name": "nudge", "payload": '{"n": 1}'})
    assert response.status_code == 302
    assert mine.signals.filter(name="nudge").exists()
    # A name reserved for governance's decisions: the engine's refusal, shown on the form.
    response = client_for(maya).post(url, {"name": "approval:1", "payload": "{}"})
    assert response.status_code == 200 and "reserved" in response.text
    assert not mine.signals.filter(name="approval:1").exists()
    # Who may start runs of the workflow may signal its runs; without that, she may not.
    governance.revoke(
        company.managers, "orchestrator.change_workflow", company.payments, actor=SYSTEM
    )
    _not_hers(company)
    maya = fresh(maya)
    before = _denials(maya)
    theirs = reverse("admin:orchestrator_workflowrun_signal", args=[company.run.pk])
    assert client_for(maya).post(theirs, {"name": "nudge"}).status_code == 403
    assert not company.run.signals.exists()
    assert _denials(maya) == before + 1
    # The run page offers the signal only where she may send it.
    assert url in client_for(maya).get(_change(mine)).text
    assert theirs not in client_for(maya).get(_change(company.run)).text


def test_the_runs_command_reports_refusals_and_reserved_names(company, operator):
    from django.core.management import CommandError, call_command

    maya, mine = operator
    _not_hers(company)
    with pytest.raises(CommandError, match="You may not change"):
        call_command("runs", "--as", "maya", "cancel", str(company.run.pk))
    with pytest.raises(CommandError, match="reserved"):
        call_command("runs", "--as", "maya", "signal", str(mine.pk), "escalation:3")
    with pytest.raises(CommandError, match="is visible to you"):
        call_command("runs", "--as", "alice", "pause", str(mine.pk))
    assert _status(company.run) == _status(mine) == RunStatus.RUNNING
    assert _denials(maya) == 1 and _denials(fresh(company.alice)) == 1


# --- object permissions of workflows and runs ----------------------------------------------


@pytest.fixture
def permission_managers(company):
    """Governance admins and managers may use guardian's object-permission pages."""
    for role in (company.admins, company.managers):
        for model in ("userobjectpermission", "groupobjectpermission"):
            for action in ("view", "change"):
                governance.grant(role, f"guardian.{action}_{model}", actor=SYSTEM)
    # Managers may change the Integrations role (so grants to it are theirs to try).
    governance.grant(company.managers, "governance.change_role", company.integrations, actor=SYSTEM)
    governance.grant(company.managers, "governance.view_role", company.integrations, actor=SYSTEM)


def _perms_url(obj, *rest):
    name = f"admin:orchestrator_{obj._meta.model_name}_permissions"
    if rest:
        name += f"_manage_{rest[0]}"
        return reverse(name, args=[obj.pk, rest[1]])
    return reverse(name, args=[obj.pk])


def test_role_admin_links_to_the_workflow_and_run_permission_pages(company, permission_managers):
    governance.grant(company.agents, "orchestrator.change_workflowrun", company.run, actor=SYSTEM)
    gina = fresh(company.gina)
    for role, obj in ((company.approvers, company.payments), (company.agents, company.run)):
        page = client_for(gina).get(reverse("admin:governance_role_change", args=[role.pk]))
        assert _perms_url(obj) in page.text
        listing = client_for(gina).get(_perms_url(obj))
        assert listing.status_code == 200
        assert role.group in listing.context["groups_perms"]


def test_granting_on_a_workflow_goes_through_governance(company, permission_managers):
    maya = fresh(company.maya)
    url = _perms_url(company.payments, "group", company.integrations.group_id)
    assert client_for(maya).get(url).status_code == 200
    before = _denials(maya)
    # She holds change on payments, not delete: the first is granted, the second refused.
    response = client_for(maya).post(
        url, {"permissions": ["view_workflow", "change_workflow", "delete_workflow"]}, follow=True
    )
    assert response.status_code == 200
    held = set(get_group_perms(company.integrations.group, company.payments))
    assert held == {"view_workflow", "change_workflow"}
    assert _denials(maya) == before + 1
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("do not hold it yourself" in text for text in texts), texts
    # A role she may not change: refused by the service, audited, nothing granted.
    before = _denials(maya)
    url = _perms_url(company.hr, "group", company.managers.group_id)
    client_for(maya).post(url, {"permissions": ["view_workflow"]})
    assert "view_workflow" not in get_group_perms(company.managers.group, company.hr)
    assert _denials(maya) == before + 1


def test_object_permission_pages_refuse_and_audit(company, permission_managers):
    alice = fresh(company.alice)  # no guardian permissions
    before = _denials(alice)
    assert client_for(alice).get(_perms_url(company.payments)).status_code == 403
    assert _denials(alice) == before + 1
    gina = fresh(company.gina)
    before = _denials(gina)
    user_page = _perms_url(company.payments, "user", company.alice.pk)
    assert client_for(gina).get(user_page).status_code == 403  # grants go to roles
    assert _denials(gina) == before + 1
    maya = fresh(company.maya)
    governance.grant(company.managers, "orchestrator.view_workflowrun", actor=SYSTEM)
    hidden = services.start_run(company.hr, {}, started_by=SYSTEM)
    assert client_for(maya).get(_perms_url(company.payments)).status_code == 200
    before = _denials(maya)
    assert client_for(maya).get(_perms_url(hidden)).status_code == 403  # she only views runs
    assert _denials(maya) == before + 1
    oscar_role = governance.create_role(name="Guardians", owner=company.gina, actor=SYSTEM)
    governance.add_member(oscar_role, company.oscar, actor=SYSTEM)
    for action in ("view", "change"):
        for model in ("userobjectpermission", "groupobjectpermission"):
            governance.grant(oscar_role, f"guardian.{action}_{model}", actor=SYSTEM)
    oscar = fresh(company.oscar)
    before = _denials(oscar)
    assert client_for(oscar).get(_perms_url(company.payments)).status_code == 404
    assert _denials(oscar) == before + 1
