"""A workflow version is governed configuration: published by someone with that right, it runs
only once a second person approves it, seeing its diff against the live version.

Issue 10, item 1: alice (who may start a workflow) published a version without its approval
step and ran it. Here the company's managers (maya) may start `payments` runs and, granted
below, publish its versions; the governance admins (gina, and hank added below) approve them
under the `workflow-versions` rule and may exempt a workflow from that approval.
"""

from __future__ import annotations

import datetime as dt
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from governance.models import ApprovalRequest, ApprovalStatus
from governance.signals import approval_decided
from orchestrator import engine, services
from orchestrator.models import VersionStatus, Workflow, WorkflowVersion
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for

V2 = {"steps": [{"id": "only", "type": "noop"}, {"id": "more", "type": "noop"}]}
V3 = {"steps": [{"id": "third", "type": "noop"}]}


@pytest.fixture
def hank(company):
    """A second governance admin, who approves what gina proposes."""
    hank = governance.create_person(
        username="hank", password="pw-hank-123", is_staff=True, actor=SYSTEM
    )
    governance.add_member(company.admins, hank, actor=SYSTEM)
    return fresh(hank)


@pytest.fixture
def maya_publishes(company):
    """Let the managers publish versions of `payments` (they already start its runs)."""
    governance.grant(
        company.managers, "orchestrator.publish_workflow", company.payments, actor=SYSTEM
    )
    return fresh(company.maya)


def _live(workflow: Workflow) -> int | None:
    """Return the number of a workflow's live version, read again."""
    live = Workflow.objects.get(pk=workflow.pk).live_version
    return live.number if live else None


def _run_version(workflow: Workflow, user) -> int:
    """Start a run as `user` and return the number of the version it is pinned to."""
    run = services.start_run(Workflow.objects.get(pk=workflow.pk), {}, started_by=user)
    return run.version.number


def _request(version: WorkflowVersion) -> ApprovalRequest:
    return ApprovalRequest.objects.get(pk=version.approval_request_id)


def test_starting_runs_does_not_let_anyone_publish(company):
    for user in (fresh(company.maya), fresh(company.integration)):
        assert governance.can(user, "change", company.payments)  # they start its runs
        before = AuditEntry.objects.filter(action="governance.access_denied").count()
        with pytest.raises(services.OperationDenied):
            services.publish_version(company.payments, V2, actor=user)
        assert company.payments.versions.count() == 1
        assert AuditEntry.objects.filter(action="governance.access_denied").count() == before + 1


def test_a_publishers_version_runs_only_once_a_second_person_approves_it(company, maya_publishes):
    maya, gina = maya_publishes, fresh(company.gina)
    version = services.publish_version(company.payments, V2, actor=maya, note="a second step")
    assert version.status == VersionStatus.PROPOSED and version.base_version.number == 1
    request = _request(version)
    assert (request.action, request.status, request.requested_by_id) == (
        services.PUBLISH_ACTION,
        ApprovalStatus.PENDING,
        maya.pk,
    )
    assert request.target_type == "orchestrator.workflowversion"
    assert request.target_id == str(version.pk)
    # What is approved is exactly this definition, and the diff the approver reads.
    assert request.arguments["definition_digest"] == version.digest
    assert request.arguments["live_version"] == 1
    assert "+- id: more" in request.arguments["diff"]
    assert request.arguments_digest == governance.digest(services.version_arguments(version))

    assert _run_version(company.payments, maya) == 1  # the proposal does not run
    assert [u.username for u in governance.eligible_deciders(request)] == ["gina"]
    governance.decide_approval(
        request, user=gina, decision="approve", expected_digest=request.arguments_digest
    )
    version.refresh_from_db()
    assert version.status == VersionStatus.APPROVED and _live(company.payments) == 2
    assert _run_version(company.payments, maya) == 2  # the next run uses it
    # History and audit name who did what: maya proposed, gina made it live.
    assert version.history.earliest().history_user_id == maya.pk
    assert version.history.latest().history_user_id == gina.pk
    assert Workflow.objects.get(pk=company.payments.pk).history.latest().history_user == gina
    assert AuditEntry.objects.filter(
        action="orchestrator.workflowversion.created", actor_name="maya"
    ).exists()
    assert AuditEntry.objects.filter(
        action="orchestrator.workflow.changed", actor_name="gina"
    ).exists()


def test_rejection_leaves_the_live_version(company, maya_publishes):
    version = services.publish_version(company.payments, V2, actor=maya_publishes)
    governance.decide_approval(
        _request(version), user=fresh(company.gina), decision="reject", comment="not ready"
    )
    version.refresh_from_db()
    assert version.status == VersionStatus.REJECTED and _live(company.payments) == 1
    assert _run_version(company.payments, maya_publishes) == 1
    # Not even named explicitly does a refused version run.
    with pytest.raises(engine.EngineError, match="only an approved version runs"):
        engine.start_run(company.payments, {}, version=version, started_by=SYSTEM)


def test_without_a_live_version_a_run_is_refused_clearly(company):
    gina = fresh(company.gina)
    workflow = services.create_workflow(slug="treasury", name="Treasury", definition=V2, actor=gina)
    version = workflow.versions.get()
    assert version.status == VersionStatus.PROPOSED and workflow.live_version is None
    with pytest.raises(engine.EngineError) as refused:
        services.start_run(workflow, {}, started_by=gina)
    assert str(refused.value) == (
        "workflow 'treasury' has no live version yet: v1 waits for approval "
        f"(approval request #{version.approval_request_id})"
    )


@pytest.mark.parametrize("path", ["service", "bulk action", "command", "delegation"])
def test_the_author_cannot_approve_their_version(company, hank, path):
    gina = fresh(company.gina)  # a governance admin: she holds the approving role herself
    version = services.publish_version(company.payments, V2, actor=gina)
    request = _request(version)
    if path == "service":
        with pytest.raises(governance.ApprovalRefused, match="Separation of duties"):
            governance.decide_approval(request, user=gina, decision="approve")
    elif path == "bulk action":
        response = client_for(gina).post(
            reverse("admin:governance_approvalrequest_changelist"),
            {"action": "approve_selected", "_selected_action": [request.pk]},
            follow=True,
        )
        assert b"Separation of duties" in response.content
    elif path == "command":
        with pytest.raises(CommandError, match="Separation of duties"):
            call_command("approvals", "approve", str(request.pk), "--as", "gina", stdout=StringIO())
    else:
        now = dt.datetime.now(dt.UTC)
        governance.create_delegation(
            delegator=hank,
            delegate=gina,
            starts_at=now - dt.timedelta(hours=1),
            ends_at=now + dt.timedelta(days=1),
            note="holiday",
            actor=SYSTEM,
        )
        with pytest.raises(governance.ApprovalRefused, match="Separation of duties"):
            governance.decide_approval(request, user=gina, decision="approve")
    request.refresh_from_db()
    version.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING and not request.decisions.exists()
    assert version.status == VersionStatus.PROPOSED and _live(company.payments) == 1
    # The second governance admin may.
    governance.decide_approval(request, user=hank, decision="approve")
    assert _live(company.payments) == 2


def test_a_workflow_exempt_from_approval_publishes_at_once(company, maya_publishes):
    maya, gina = maya_publishes, fresh(company.gina)
    # maya may change the workflow but not exempt it: refused, audited, unchanged.
    with pytest.raises(services.OperationDenied):
        services.set_version_approval(company.payments, False, actor=maya, reason="faster")
    assert Workflow.objects.get(pk=company.payments.pk).version_approval_required
    services.set_version_approval(company.payments, False, actor=gina, reason="a sandbox")
    version = services.publish_version(company.payments, V2, actor=maya)
    assert version.status == VersionStatus.APPROVED and version.approval_request_id is None
    assert _live(company.payments) == 2
    assert (
        Workflow.objects.get(pk=company.payments.pk)
        .history.filter(history_change_reason="a sandbox", history_user=gina)
        .exists()
    )


def test_who_exempted_a_workflow_still_needs_a_second_person_for_their_own_versions(
    company, maya_publishes, hank
):
    gina = fresh(company.gina)
    governance.grant(company.admins, "orchestrator.publish_workflow", actor=SYSTEM)
    gina = fresh(gina)
    services.set_version_approval(company.payments, False, actor=gina, reason="a sandbox")
    own = services.publish_version(company.payments, V2, actor=gina)
    assert own.status == VersionStatus.PROPOSED and _live(company.payments) == 1
    governance.decide_approval(_request(own), user=hank, decision="approve", comment="ok")
    assert _live(company.payments) == 2
    # Others publish to the exempt workflow at once.
    theirs = services.publish_version(company.payments, V3, actor=maya_publishes)
    assert theirs.status == VersionStatus.APPROVED and _live(company.payments) == 3


def test_the_workflow_form_does_not_let_a_runner_switch_approval_off(company):
    maya = fresh(company.maya)
    url = reverse("admin:orchestrator_workflow_change", args=[company.payments.pk])
    data = {
        "slug": "payments",
        "name": "Payments, renamed",
        "description": "",
        "is_active": "on",
        # A read-only field for her: what she posts for it is ignored.
        "version_approval_required": "",
        "change_reason": "try",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }
    assert client_for(maya).post(url, data).status_code == 302
    saved = Workflow.objects.get(pk=company.payments.pk)
    assert saved.name == "Payments, renamed" and saved.version_approval_required
    with pytest.raises(services.OperationDenied):
        services.update_workflow(
            company.payments, actor=maya, reason="try", version_approval_required=False
        )


def test_a_forged_decision_signal_settles_nothing(company, maya_publishes):
    version = services.publish_version(company.payments, V2, actor=maya_publishes)
    request = _request(version)
    request.status = ApprovalStatus.APPROVED  # in memory only
    approval_decided.send(sender=ApprovalRequest, request=request, payload={}, actor=SYSTEM)
    version.refresh_from_db()
    assert version.status == VersionStatus.PROPOSED and _live(company.payments) == 1


def test_a_version_going_live_withdraws_the_proposals_made_against_the_old_one(
    company, maya_publishes, django_capture_on_commit_callbacks
):
    maya, gina = maya_publishes, fresh(company.gina)
    second = services.publish_version(company.payments, V2, actor=maya)
    third = services.publish_version(company.payments, V3, actor=maya)
    with django_capture_on_commit_callbacks(execute=True):
        governance.decide_approval(_request(third), user=gina, decision="approve")
    second.refresh_from_db()
    assert _live(company.payments) == 3
    assert second.status == VersionStatus.WITHDRAWN
    assert _request(second).status == ApprovalStatus.CANCELLED


def test_an_approval_given_after_the_live_version_changed_does_not_make_it_live(
    company, maya_publishes
):
    maya, gina = maya_publishes, fresh(company.gina)
    second = services.publish_version(company.payments, V2, actor=maya)
    third = services.publish_version(company.payments, V3, actor=maya)
    governance.decide_approval(_request(third), user=gina, decision="approve")
    # The after-commit cancellation did not happen (the test transaction never commits).
    governance.decide_approval(_request(second), user=gina, decision="approve")
    second.refresh_from_db()
    assert second.status == VersionStatus.WITHDRAWN and _live(company.payments) == 3


def test_without_a_rule_for_versions_nothing_is_proposed(company, maya_publishes, settings):
    settings.STEWARD_VERSION_APPROVAL_RULE = "nobody-configured-this"
    with pytest.raises(services.VersionApprovalUnavailable, match="nobody-configured-this"):
        services.publish_version(company.payments, V2, actor=maya_publishes)
    assert company.payments.versions.count() == 1


def test_the_publish_command_proposes_as_the_named_author(company, tmp_path):
    path = tmp_path / "payments.yaml"
    path.write_text("steps:\n  - id: only\n    type: noop\n  - id: more\n    type: noop\n")
    out = StringIO()
    call_command("publish_workflow", "payments", str(path), "--as", "gina", stdout=out)
    version = company.payments.versions.get(number=2)
    assert version.status == VersionStatus.PROPOSED and version.published_by_name == "gina"
    assert f"request #{version.approval_request_id}" in out.getvalue()
    with pytest.raises(CommandError, match="may not publish"):
        call_command("publish_workflow", "payments", str(path), "--as", "maya", stdout=out)
