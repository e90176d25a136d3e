"""The governance management commands: decisions, escalations and delegations as named people.

Every decision goes through the decision service, so each rule holds from the command line too;
a refusal fails the command (CommandError: exit status 1) and is audited.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.models import (
    ApprovalStatus,
    Delegation,
    Escalation,
    EscalationStatus,
    Resolution,
)

ARGS = {"amount": 5000, "iban": "DE02100100109307118603"}


def run(*args) -> str:
    """Run a command and return what it printed."""
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def refused(*args) -> str:
    """Run a command that must fail; return its message (after checking the exit status)."""
    with pytest.raises(CommandError) as caught:
        run(*args)
    assert caught.value.returncode == 1
    return str(caught.value)


def ask(company, *, risk="medium", requested_by=None, run_initiator=None):
    """Open a refund request on the payments workflow, asked for by the agent by default."""
    return services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments=dict(ARGS),
        target=company.payments,
        risk=risk,
        requested_by=requested_by or company.agent,
        run_initiator=run_initiator,
    )


@pytest.fixture
def carol(company):
    """A person outside every role."""
    return services.create_person(
        username="carol", password="pw-carol-123", is_staff=True, actor=SYSTEM
    )


# --- approvals ----------------------------------------------------------------------------------


def test_pending_lists_only_what_the_user_may_decide(company):
    request = ask(company)
    listed = run("approvals", "pending", "--as", "alice")
    assert f"#{request.pk}  tool.refund" in listed and "0 of 1 approvals" in listed
    assert request.arguments_digest[:12] in listed
    assert "No request waits for oscar." in run("approvals", "pending", "--as", "oscar")


def test_show_gives_the_digest_and_hides_requests_from_outsiders(company):
    request = ask(company)
    shown = run("approvals", "show", str(request.pk), "--as", "alice")
    assert f"digest: {request.arguments_digest}" in shown and '"amount": 5000' in shown
    assert refused("approvals", "show", str(request.pk), "--as", "oscar").startswith("Not found")
    assert AuditEntry.objects.filter(action="governance.access_denied", actor_name="oscar").exists()


def test_approve_as_a_named_person_records_the_decision_and_comment(company):
    request = ask(company)
    out = run(
        "approvals", "approve", str(request.pk), "--as", "alice", "--comment", "checked the IBAN"
    )
    assert "alice decided approve as Approvers; the request is approved." in out
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED
    decision = request.decisions.get()
    assert (decision.decided_by, decision.comment) == (company.alice, "checked the IBAN")
    assert AuditEntry.objects.filter(
        action="governance.approval.decided", actor_name="alice"
    ).exists()


@pytest.mark.parametrize(
    ("decision", "status"),
    [("reject", ApprovalStatus.REJECTED), ("request-changes", ApprovalStatus.CHANGES_REQUESTED)],
)
def test_reject_and_request_changes_are_final(company, decision, status):
    request = ask(company)
    run("approvals", decision, str(request.pk), "--as", "bob", "--comment", "not this one")
    request.refresh_from_db()
    assert request.status == status
    message = refused("approvals", "approve", str(request.pk), "--as", "alice")
    assert message.startswith("Refused (already_decided)") and "a decision is final" in message


@pytest.mark.parametrize("decision", ["reject", "request-changes"])
def test_reject_and_request_changes_need_a_reason(company, decision):
    request = ask(company)
    message = refused("approvals", decision, str(request.pk), "--as", "bob")
    assert message.startswith("Refused (reason)") and "Say why you" in message
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING
    run("approvals", decision, str(request.pk), "--as", "bob", "--reason", "wrong vendor")
    assert request.decisions.get().comment == "wrong vendor"


def test_separation_of_duties_is_refused_with_a_clear_error_and_audited(company):
    services.add_member(company.approvers, company.maya, actor=SYSTEM)  # maya owns the agent
    by_agent = ask(company)
    message = refused("approvals", "approve", str(by_agent.pk), "--as", "maya")
    assert message.startswith("Refused (accountable_owner)") and "Separation of duties" in message
    by_alice = ask(company, requested_by=company.alice, run_initiator=company.bob)
    assert "Refused (requester)" in refused(
        "approvals", "approve", str(by_alice.pk), "--as", "alice"
    )
    assert "Refused (run_initiator)" in refused(
        "approvals", "reject", str(by_alice.pk), "--as", "bob", "--reason", "no"
    )
    assert "Refused (not_a_person)" in refused(
        "approvals", "approve", str(by_agent.pk), "--as", "payments-agent"
    )
    assert "Refused (not_eligible)" in refused(
        "approvals", "approve", str(by_agent.pk), "--as", "oscar"
    )
    refusals = AuditEntry.objects.filter(action="governance.approval.refused")
    assert set(refusals.values_list("actor_name", flat=True)) == {
        "maya",
        "alice",
        "bob",
        "payments-agent",
        "oscar",
    }
    for request in (by_agent, by_alice):
        request.refresh_from_db()
        assert request.status == ApprovalStatus.PENDING and not request.decisions.exists()


def test_the_highest_risk_needs_two_distinct_people(company):
    request = ask(company, risk="critical")
    out = run("approvals", "approve", str(request.pk), "--as", "alice")
    assert "the request is pending" in out
    assert "already_decided_by_you" in refused(
        "approvals", "approve", str(request.pk), "--as", "alice"
    )
    run("approvals", "approve", str(request.pk), "--as", "bob")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED and request.decisions.count() == 2


def test_a_decision_on_other_arguments_than_reviewed_is_refused(company):
    request = ask(company)
    other = services.digest({"amount": 1})
    message = refused("approvals", "approve", str(request.pk), "--as", "alice", "--digest", other)
    assert message.startswith("Refused (arguments_changed)")
    run(
        "approvals",
        "approve",
        str(request.pk),
        "--as",
        "alice",
        "--digest",
        request.arguments_digest,
    )
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED


def test_a_decision_after_the_deadline_is_refused(company):
    with clock.frozen() as frozen:
        request = ask(company)
        frozen.advance(company.rule.sla_seconds * 2 + 1)
        message = refused("approvals", "approve", str(request.pk), "--as", "alice")
    assert message.startswith("Refused (deadline_passed)")


def test_unknown_users_and_requests_fail_clearly(company):
    request = ask(company)
    assert refused("approvals", "approve", str(request.pk), "--as", "nobody") == (
        "No user is called 'nobody'."
    )
    assert "No approval request #999999 exists" in refused(
        "approvals", "approve", "999999", "--as", "alice"
    )


def test_sweep_escalates_overdue_requests(company):
    with clock.frozen() as frozen:
        request = ask(company, requested_by=company.oscar)
        frozen.advance(company.rule.sla_seconds + 1)
        assert refused("approvals", "sweep").startswith("approvals sweep needs to know who acts")
        assert "1 overdue request(s)" in run("approvals", "sweep", "--system")
    request.refresh_from_db()
    assert (request.level, request.role) == (1, company.managers)
    escalated = AuditEntry.objects.get(
        action="governance.approval.escalated", target_id=str(request.pk)
    )
    assert (escalated.actor_kind, escalated.actor_name) == ("system", "system")


# --- delegations --------------------------------------------------------------------------------


def test_a_delegation_set_from_the_command_line_lets_the_delegate_decide_in_its_window(
    company, carol
):
    with clock.frozen() as frozen:
        start = clock.now() + dt.timedelta(minutes=10)
        out = run(
            "delegations",
            "set",
            "--as",
            "alice",
            "--to",
            "carol",
            "--from",
            start.isoformat(),
            "--until",
            (start + dt.timedelta(minutes=10)).isoformat(),
            "--role",
            "Approvers",
            "--note",
            "conference",
        )
        delegation = Delegation.objects.get(delegate=carol)
        assert f"delegation #{delegation.pk}" in out and delegation.role == company.approvers
        assert "not in force" in run("delegations", "list", "--as", "carol")
        request = ask(company)
        assert "Refused (delegation_not_in_force)" in refused(
            "approvals", "approve", str(request.pk), "--as", "carol"
        )
        frozen.advance(15 * 60)
        assert f"#{request.pk}" in run("approvals", "pending", "--as", "carol")
        out = run("approvals", "approve", str(request.pk), "--as", "carol")
    assert "carol on behalf of alice decided approve" in out
    decision = request.decisions.get()
    assert (decision.decided_by, decision.on_behalf_of) == (carol, company.alice)


def test_delegating_for_someone_else_needs_the_permission(company, carol):
    until = (clock.now() + dt.timedelta(days=1)).isoformat()
    message = refused(
        "delegations", "set", "--as", "oscar", "--for", "alice", "--to", "carol", "--until", until
    )
    assert message.startswith("Forbidden")
    run("delegations", "set", "--as", "gina", "--for", "alice", "--to", "carol", "--until", until)
    assert Delegation.objects.filter(delegator=company.alice, delegate=carol).exists()
    assert "Refused (not_a_person)" in refused(
        "delegations", "set", "--as", "alice", "--to", "payments-agent", "--until", until
    )
    assert "is not an ISO date" in refused(
        "delegations", "set", "--as", "alice", "--to", "carol", "--until", "next week"
    )


def test_revoking_a_delegation(company):
    pk = str(company.delegation.pk)
    assert refused("delegations", "revoke", pk, "--as", "oscar").startswith("Not found")
    run("delegations", "revoke", pk, "--as", "alice", "--reason", "back early")
    company.delegation.refresh_from_db()
    assert company.delegation.revoked_at is not None
    assert "revoked" in run("delegations", "list", "--as", "bob")


# --- escalations --------------------------------------------------------------------------------


def open_for_managers(company) -> Escalation:
    """A task for the managers about the company's run (not parked: nobody waits in-engine)."""
    return services.open_escalation(
        reason="low_confidence",
        summary="The agent is unsure about the refund",
        role=company.managers,
        raised_by=SYSTEM,
    )


def test_list_shows_open_escalations_to_their_role_only(company):
    escalation = open_for_managers(company)
    listed = run("escalations", "list", "--as", "maya")
    assert f"#{escalation.pk}  open  low_confidence  role Managers" in listed
    assert "No escalation for alice." in run("escalations", "list", "--as", "alice")


def test_take_over_supplies_the_result(company):
    escalation = open_for_managers(company)
    out = run(
        "escalations",
        "take-over",
        str(escalation.pk),
        "--as",
        "maya",
        "--result",
        '{"refund": 120}',
        "--comment",
        "checked by hand",
    )
    assert 'with result {"refund": 120}' in out
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.RESOLVED
    assert (escalation.resolution, escalation.result) == (Resolution.TAKE_OVER, {"refund": 120})
    assert escalation.resolved_by == company.maya and escalation.comment == "checked by hand"
    assert "Refused (already_resolved)" in refused(
        "escalations", "stop", str(escalation.pk), "--as", "maya"
    )
    listed = run("escalations", "list", "--as", "maya", "--all")
    assert "take_over by maya" in listed


@pytest.mark.parametrize(
    ("operation", "resolution"), [("send-back", Resolution.RETRY), ("stop", Resolution.STOP)]
)
def test_send_back_and_stop(company, operation, resolution):
    escalation = open_for_managers(company)
    run("escalations", operation, str(escalation.pk), "--as", "maya")
    escalation.refresh_from_db()
    assert escalation.resolution == resolution and escalation.result is None


def test_only_the_role_resolves_and_take_over_needs_a_result(company):
    escalation = open_for_managers(company)
    assert refused("escalations", "stop", str(escalation.pk), "--as", "alice").startswith(
        "Not found"
    )
    assert "not valid JSON" in refused(
        "escalations", "take-over", str(escalation.pk), "--as", "maya", "--result", "{oops"
    )
    assert "needs --result" in refused(
        "escalations", "take-over", str(escalation.pk), "--as", "maya", "--result", "null"
    )
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.OPEN
