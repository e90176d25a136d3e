"""The demo seed: idempotent, refused outside DEBUG, and its runs do what the README says."""

import datetime as dt
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.urls import reverse
from guardian.models import GroupObjectPermission

from agents.models import Agent, IncidentUpdate, ModelCall, ModelProvider, Tool, ToolInvocation
from audit import clock
from audit.models import AuditEntry
from governance import services as governance
from governance.models import (
    ApprovalRequest,
    ApprovalRule,
    Escalation,
    Policy,
    PolicyRule,
    Principal,
    Role,
)
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

User = get_user_model()
SEEDED_MODELS = [
    User,
    Principal,
    Role,
    GroupObjectPermission,
    ApprovalRule,
    Escalation,
    Policy,
    PolicyRule,
    ModelProvider,
    Tool,
    Agent,
    Workflow,
    WorkflowVersion,
    WorkflowRun,
    StepRun,
    RunSignal,
    ApprovalRequest,
    ToolInvocation,
]
HISTORIES = [Policy, PolicyRule, Role, Agent, Tool, ApprovalRule]


@pytest.fixture(autouse=True)
def _debug_on(settings):
    """The demo is for DEBUG instances (pytest-django turns DEBUG off)."""
    settings.DEBUG = True


def counts():
    """Count the rows of every model the seed writes, their history, and the run history."""
    rows = {model.__name__: model.objects.count() for model in [*SEEDED_MODELS, RunEvent]}
    rows.update({f"{m.__name__} history": m.history.count() for m in HISTORIES})
    rows["group permissions"] = sum(role.group.permissions.count() for role in Role.objects.all())
    rows["policy versions"] = sorted(Policy.objects.values_list("slug", "version"))
    return rows


def demo_run(key: str, workflow: str = "incident-postmortem") -> WorkflowRun:
    """Return the demo run of an incident or a change."""
    return WorkflowRun.objects.get(business_key=key, workflow__slug=workflow)


def step(run: WorkflowRun, step_id: str) -> StepRun:
    """Return a run's step row."""
    return StepRun.objects.get(run=run, step_id=step_id, item_index=-1)


def user(username: str):
    """Return a demo login."""
    return User.objects.get(username=username)


RESTART = "tool.incident.restart_service"


def pending(action: str, run: WorkflowRun) -> ApprovalRequest:
    """Return the one pending approval request of an action in a run."""
    return ApprovalRequest.objects.get(action=action, status="pending", run_id=run.pk)


def let_retries_run(frozen, seconds: float = 5) -> None:
    """Let backoff delays pass: advance the clock, fire due timers, run what is ready."""
    frozen.advance(seconds)
    engine.sweep()
    engine.drain()


def test_seed_demo_twice_creates_nothing_new(capsys):
    call_command("seed_demo")
    first = counts()
    call_command("seed_demo")
    assert counts() == first
    assert first["Workflow"] == len(demo.DEMO_WORKFLOWS)
    history = WorkflowRun.objects.filter(trigger=demo.HISTORY_TRIGGER).count()
    assert history > 150  # weeks of past incidents for the KPI page, seeded once
    assert first["WorkflowRun"] == len(demo.DEMO_RUNS) + history
    assert first["Agent"] == len(demo.DEMO_AGENTS)
    assert first["Role"] == len(demo.DEMO_ROLES)
    assert first["PolicyRule"] == sum(len(policy.rules) for policy in demo.DEMO_POLICIES)
    assert first["RunSignal"] == 1
    output = capsys.readouterr().out
    assert f"History: {history} past incident-triage runs" in output
    assert "admin  / admin-demo" in output
    assert "bob    / bob-demo" in output
    assert "Scripted agents (rules, no real model): incident-monitor" in output


def test_a_changed_agent_script_updates_the_agent_once(monkeypatch):
    demo.seed()
    spec = demo.DEMO_AGENTS[1]
    rules = [{**spec.rules[0], "confidence": 0.95}, *spec.rules[1:]]
    changed = demo.DemoAgent(**{**spec.__dict__, "rules": rules})
    monkeypatch.setattr(demo, "DEMO_AGENTS", [demo.DEMO_AGENTS[0], changed, *demo.DEMO_AGENTS[2:]])
    demo.seed()
    demo.seed()
    agent = Agent.objects.get(slug=spec.slug)
    assert agent.script == {"rules": rules}
    assert list(agent.history.values_list("history_change_reason", flat=True)) == [
        "demo script updated",
        "demo seed",
    ]


def test_every_login_holds_the_roles_the_readme_says():
    call_command("seed_demo")
    for spec in demo.DEMO_USERS:
        login = user(spec.username)
        assert login.check_password(spec.password), spec.username
        assert governance.is_person(login)
        assert [role.name for role in governance.roles_of(login)] == sorted(spec.roles)
    admin, alice, oscar = user("admin"), user("alice"), user("oscar")
    assert admin.is_superuser
    assert alice.is_staff and not alice.is_superuser
    assert alice.has_perm("orchestrator.view_workflowrun")
    assert not alice.has_perm("orchestrator.change_workflowrun")
    assert oscar.is_staff and not WorkflowRun.objects.restrict(oscar).exists()
    assert not Agent.objects.restrict(oscar).exists()
    assert user("grace").has_perm("governance.change_policy")
    assert not user("carol").has_perm("governance.change_policy")
    assert user("carol").has_perm("audit.view_auditentry")
    # Every role and agent has an accountable person; agents are scripted and say so.
    assert all(role.owner is not None for role in Role.objects.all())
    for agent in Agent.objects.select_related("provider", "user__principal"):
        assert agent.owner is not None and governance.is_person(agent.owner)
        assert agent.user.principal.is_agent and not agent.user.has_usable_password()
        assert agent.provider.kind == "scripted" and agent.is_scripted
        assert "scripted" in agent.name.lower() and "no real model" in agent.mandate


def test_object_permissions_decide_who_sees_and_starts_which_workflow():
    workflows = demo.seed()["workflows"]
    bob, alice = user("bob"), user("alice")
    visible = set(Workflow.objects.restrict(bob).values_list("slug", flat=True))
    assert visible == {"incident-response", "production-change", "incident-postmortem"}
    assert not bob.has_perm("orchestrator.view_workflow")  # row by row, not model-wide
    assert not governance.can(bob, "view", workflows["incident-triage"])
    started = set(Workflow.objects.restrict(alice, "change").values_list("slug", flat=True))
    assert started == {"incident-triage", "incident-response", "production-change"}
    with pytest.raises(services.OperationDenied):
        services.start_run(workflows["incident-postmortem"], {"incident": "X"}, started_by=alice)


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
        # INC-1001's restart of checkout is a tool step under the Production changes policy:
        # it waits for an incident commander, and alice, who started the run, may not approve.
        triage = demo_run("INC-1001", "incident-triage")
        restart = pending(RESTART, triage)
        assert step(triage, "restart").status == "waiting"
        assert step(triage, "restart").wait_signal == restart.signal_name
        assert restart.arguments == {
            "service": "checkout",
            "hosts": ["checkout-2"],
            "environment": "production",
        }
        assert restart.requested_by == restart.run_initiator == user("alice")
        assert restart.decision_basis["policy_slug"] == "production-changes"
        assert [u.username for u in governance.eligible_deciders(restart)] == ["bob"]
        with pytest.raises(governance.ApprovalRefused, match="Separation of duties"):
            governance.decide_approval(restart, user=user("alice"), decision="approve")
        invocation = ToolInvocation.objects.get(run_id=triage.pk, tool="incident.restart_service")
        assert (invocation.verdict, invocation.caller_name, invocation.executed_at) == (
            "approval",
            "alice",
            None,
        )
        governance.decide_approval(restart, user=user("bob"), decision="approve")
        engine.drain()
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

        review = {"approved": True, "reviewer": "dave"}
        with pytest.raises(services.OperationDenied):  # the auditor only reads
            services.send_signal(waiting, "postmortem_reviewed", review, sent_by=user("carol"))
        services.send_signal(waiting, "postmortem_reviewed", review, sent_by=user("dave"))
        engine.drain()
    waiting.refresh_from_db()
    assert waiting.status == "succeeded"
    assert IncidentUpdate.objects.filter(
        incident="INC-0999", message__contains="approved by dave"
    ).exists()


def test_agent_incidents_finish_get_denied_and_wait_for_approval_as_the_readme_says():
    with clock.frozen(seed=3):
        demo.seed()
        engine.drain()

    # INC-2001: every host healthy, sev3, nothing to restart, an update posted; finished.
    healthy = demo_run("INC-2001", "incident-response")
    assert healthy.status == "succeeded", healthy.error
    result = healthy.output["result"]
    assert (result["severity"], result["unhealthy"], result["applied"]) == ("sev3", [], [])
    assert result["update"] == IncidentUpdate.objects.get(incident="INC-2001").message
    assert result["update"].startswith("INC-2001 (sev3): we are working on search")
    delegated = StepRun.objects.filter(run=healthy).exclude(item_index=-1).order_by("pk")
    assert [child.item["agent"] for child in delegated] == [
        "incident-monitor",
        "incident-triage",
        "incident-remediation",
        "incident-comms",
    ]
    # Model calls: coordinator 4 (one per delegation round and the summary), monitor 3, triage 1,
    # remediation 1 (nothing to restart), comms 2.
    calls = ModelCall.objects.filter(run_id=healthy.pk, provider="scripted-demo")
    assert sorted(calls.values_list("agent_slug", flat=True)) == sorted(
        ["incident-coordinator"] * 4
        + ["incident-monitor"] * 3
        + ["incident-triage", "incident-remediation"]
        + ["incident-comms"] * 2
    )

    # INC-2003: 20 replicas denied by policy, the refusal goes back to the model, 10 allowed.
    slow = demo_run("INC-2003", "incident-response")
    assert slow.status == "succeeded", slow.error
    denied, allowed = ToolInvocation.objects.filter(
        run_id=slow.pk, tool="incident.scale_service"
    ).order_by("pk")
    assert (denied.arguments["replicas"], denied.verdict, denied.stage) == (20, "deny", "policy")
    assert denied.policy == "capacity-limits" and denied.executed_at is None
    assert (allowed.arguments["replicas"], allowed.verdict) == (10, "allow")
    assert allowed.outcome["result"] == {"service": "billing", "replicas": 10, "previous": 4}
    audited = AuditEntry.objects.filter(action="agents.tool.decided", run_id=slow.pk)
    verdicts = [json.loads(entry.decision) for entry in audited]
    assert {"verdict": "deny", "stage": "policy", "policy": "capacity-limits"}.items() <= next(
        v for v in verdicts if v["verdict"] == "deny"
    ).items()
    result = slow.output["result"]
    assert result["severity"] == "sev2"
    assert result["applied"] == ["scaled billing to 10 replicas"]
    assert "ask for 10 or fewer" in result["runbook"][1]  # the model was told why

    # INC-2002: checkout-2 is down; the remediation agent's restart waits for an approval.
    down = demo_run("INC-2002", "incident-response")
    assert down.status == "running"
    remediation = StepRun.objects.get(run=down, item__agent="incident-remediation")
    request = pending(RESTART, down)
    assert remediation.status == "waiting" and remediation.wait_signal == request.signal_name
    assert request.run_id == down.pk
    # Decided, and asked for, on the arguments resolved against the service catalogue.
    assert request.arguments == {
        "service": "checkout",
        "hosts": ["checkout-2"],
        "environment": "production",
    }
    assert (request.risk, request.role.name) == ("high", demo.INCIDENT_COMMANDERS)
    assert request.requested_by == Agent.objects.get(slug="incident-remediation").user
    assert request.accountable_owner == request.run_initiator == user("alice")
    assert request.decision_basis["policy_slug"] == "production-changes"
    comms = StepRun.objects.get(run=down, item__agent="incident-comms")
    assert comms.status == "succeeded"  # ran in parallel with the remediation
    assert IncidentUpdate.objects.get(incident="INC-2002").message.startswith("INC-2002 (sev1)")

    # CHG-3001: the approval step waits for an incident commander; it approves the restart call.
    change = demo_run("CHG-3001", "production-change")
    approval = pending(RESTART, change)
    assert change.status == "running" and step(change, "approve").status == "waiting"
    assert approval.arguments == {
        "service": "billing",
        "hosts": ["billing-1"],
        "environment": "production",
    }
    assert approval.target_repr == str(Workflow.objects.get(slug="production-change"))
    # INC-1001's tool step asks too (see test_demo_runs_complete_wait_and_sleep_as_the_seed_says).
    triage = pending(RESTART, demo_run("INC-1001", "incident-triage"))

    # Only bob may decide them now: alice asked, dave's turn comes after a day, oscar has no role.
    for waiting in (request, approval, triage):
        assert [u.username for u in governance.eligible_deciders(waiting)] == ["bob"]
    bob_queue = set(governance.pending_for(user("bob")).values_list("pk", flat=True))
    assert bob_queue == {request.pk, approval.pk, triage.pk}
    for name in ("alice", "dave", "oscar", "carol"):
        assert not governance.pending_for(user(name)).exists(), name
    with pytest.raises(governance.ApprovalRefused, match="Separation of duties"):
        governance.decide_approval(approval, user=user("alice"), decision="approve")


def test_bob_decides_both_requests_in_the_admin_and_the_runs_complete(client):
    with clock.frozen(seed=3) as frozen:
        demo.seed()
        engine.drain()
        restart = pending(RESTART, demo_run("INC-2002", "incident-response"))
        change = pending(RESTART, demo_run("CHG-3001", "production-change"))
        triage = pending(RESTART, demo_run("INC-1001", "incident-triage"))

        client.force_login(user("oscar"))
        listing = client.get(reverse("admin:governance_approvalrequest_changelist"))
        assert listing.status_code == 403

        assert client.login(username="bob", password="bob-demo")
        listing = client.get(reverse("admin:governance_approvalrequest_changelist"))
        assert listing.status_code == 200
        for request in (restart, change, triage):
            assert reverse("admin:governance_approvalrequest_change", args=[request.pk]) in (
                listing.content.decode()
            )
            page = client.get(reverse("admin:governance_approvalrequest_change", args=[request.pk]))
            assert page.status_code == 200 and page.context["decision_form"] is not None
            decided = client.post(
                reverse("admin:governance_approvalrequest_decide", args=[request.pk]),
                {
                    "decision": "approve",
                    "comment": "go ahead",
                    "expected_digest": request.arguments_digest,
                },
            )
            assert decided.status_code == 302
            request.refresh_from_db()
            assert request.status == "approved", request.status
        engine.drain()
        let_retries_run(frozen)  # each restart fails its first attempt, as restarts do

    down = demo_run("INC-2002", "incident-response")
    assert down.status == "succeeded", down.error
    result = down.output["result"]
    assert (result["severity"], result["applied"]) == ("sev1", ["restarted checkout-2"])
    restarted = ToolInvocation.objects.get(run_id=down.pk, tool="incident.restart_service")
    assert restarted.verdict == "approval" and restarted.outcome["ok"] is True

    change_run = demo_run("CHG-3001", "production-change")
    assert change_run.status == "succeeded", change_run.error
    assert change_run.output == {
        "change": "CHG-3001",
        "restarted": ["billing-1"],
        "approved_by": ["bob"],
    }
    # The restart step passed the policy check on the approval its approval step obtained:
    # one request in the run, not two.
    assert list(ApprovalRequest.objects.filter(run_id=change_run.pk)) == [change]
    restarted = ToolInvocation.objects.get(run_id=change_run.pk, tool="incident.restart_service")
    assert (restarted.verdict, restarted.approval_request) == ("approval", change.pk)
    assert restarted.caller_name == "alice" and restarted.outcome["ok"] is True

    triage_run = demo_run("INC-1001", "incident-triage")
    assert triage_run.status == "succeeded", triage_run.error
    assert triage_run.output["summary"]["restarted"] == ["checkout-2"]
    decided = AuditEntry.objects.filter(action="governance.approval.decided", actor_name="bob")
    assert decided.count() == 3


def test_rejected_after_a_day_by_the_managers_the_change_fails_and_a_person_takes_over():
    with clock.frozen(seed=3) as frozen:
        demo.seed()
        engine.drain()
        frozen.advance(demo.APPROVAL_SLA_SECONDS + 1)
        engine.sweep()
        engine.drain()
        change = pending(RESTART, demo_run("CHG-3001", "production-change"))
        restart = pending(RESTART, demo_run("INC-2002", "incident-response"))
        for request in (change, restart):
            assert request.role.name == demo.MANAGERS, request.action
        # dave may decide now; the agent's restart still excludes alice (owner and initiator).
        assert [u.username for u in governance.eligible_deciders(change)] == ["bob", "dave"]
        assert [u.username for u in governance.eligible_deciders(restart)] == ["bob", "dave"]
        governance.decide_approval(change, user=user("dave"), decision="reject", comment="no")
        governance.decide_approval(restart, user=user("dave"), decision="reject", comment="wait")
        engine.drain()
    change_run = demo_run("CHG-3001", "production-change")
    assert change_run.status == "failed"
    assert step(change_run, "approve").error["type"] == "ApprovalRejected"
    # The remediation agent is told, is not confident enough, and hands over to the managers.
    down = demo_run("INC-2002", "incident-response")
    escalation = Escalation.objects.get(run_id=down.pk, status="open")
    assert (escalation.reason, escalation.role.name) == ("low_confidence", demo.MANAGERS)
    assert "was rejected" in escalation.context["result"]["runbook"][0]
    assert not ToolInvocation.objects.filter(
        run_id=down.pk, tool="incident.restart_service", executed_at__isnull=False
    ).exists()


def test_workflow_versions_are_proposed_by_grace_and_approved_by_a_second_admin(client):
    seeded = demo.seed()
    for workflow in Workflow.objects.select_related("live_version"):
        live = workflow.live_version
        assert live.published_by_name == demo.VERSION_AUTHOR, workflow.slug
        decisions = live.approval_request.decisions.values_list("decided_by_name", flat=True)
        assert list(decisions) == [demo.VERSION_APPROVER], workflow.slug
    change = Workflow.objects.get(slug="production-change")
    alice, grace, bob = user("alice"), user("grace"), user("bob")

    # Issue 10: alice may start the production change, not publish a version of it.
    assert governance.can(alice, "change", change)
    client.force_login(alice)
    response = client.post(
        reverse("admin:orchestrator_workflowversion_add"),
        {"workflow": change.pk, "definition_text": json.dumps(demo.DEMO_PROPOSAL[1]), "note": ""},
    )
    assert response.status_code == 403
    assert not change.versions.filter(published_by_name="alice").exists()

    # grace's proposal drops the approval step; its request shows that diff and waits for admin.
    proposal = seeded["proposal"]
    request = proposal.approval_request
    assert (proposal.status, request.status) == ("proposed", "pending")
    removed = [line for line in request.arguments["diff"] if line.startswith("-")]
    assert any("id: approve" in line for line in removed)
    assert [u.username for u in governance.eligible_deciders(request)] == ["admin"]
    for person in (grace, bob):
        with pytest.raises(governance.ApprovalRefused):
            governance.decide_approval(request, user=person, decision="approve")
    run = services.start_run(
        change,
        {"change": "CHG-9", "service": "billing", "environment": "production", "reason": "x"},
        started_by=alice,
    )
    assert run.version_id == change.live_version_id != proposal.pk
    assert StepRun.objects.filter(run=run, step_id="approve").exists()
