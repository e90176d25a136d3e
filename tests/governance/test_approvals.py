"""Approvals: separation of duties, N-of-M, digest binding, deadlines, delegation, escalation."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection

from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.actions import approvals as approval_actions
from governance.models import ApprovalStatus
from governance.signals import approval_decided
from tests.governance.conftest import fresh

ARGS = {"amount": 5000, "iban": "DE02100100109307118603"}


@pytest.fixture
def carol(company):
    """A person outside every role, who stands in for alice when she delegates."""
    return services.create_person(
        username="carol", password="pw-carol-123", is_staff=True, actor=SYSTEM
    )


def ask(company, *, requested_by=None, run_initiator=None, risk="medium", target=None, **kw):
    """Open a request for a refund on the payments workflow."""
    return services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments=dict(ARGS),
        target=target if target is not None else company.payments,
        risk=risk,
        requested_by=requested_by if requested_by is not None else company.agent,
        run_initiator=run_initiator,
        **kw,
    )


def refused(request, user, decision="approve", **kw) -> str:
    """Decide and expect a refusal; return its code."""
    with pytest.raises(services.ApprovalRefused) as caught:
        services.decide_approval(request, user=fresh(user), decision=decision, **kw)
    return caught.value.code


def test_an_eligible_person_approves_and_the_decision_is_recorded_and_audited(company):
    request = ask(company)
    decision = services.decide_approval(request, user=fresh(company.alice), decision="approve")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED
    assert (decision.decided_by, decision.role_name) == (company.alice, "Approvers")
    assert decision.arguments_digest == services.digest(ARGS)
    entry = AuditEntry.objects.get(action="governance.approval.decided")
    assert entry.actor_name == "alice" and entry.target_id == str(request.pk)
    assert '"approval_rule":"payments"' in entry.decision
    assert AuditEntry.objects.filter(action="governance.approval.approved").exists()


def test_every_forbidden_pairing_is_refused_and_audited(company):
    services.add_member(company.approvers, company.maya, actor=SYSTEM)  # maya owns the agent
    by_person = ask(company, requested_by=company.alice, run_initiator=company.bob)
    assert refused(by_person, company.alice) == "requester"
    assert refused(by_person, company.bob) == "run_initiator"
    by_agent = ask(company)
    assert refused(by_agent, company.maya) == "accountable_owner"
    assert refused(by_agent, company.agent) == "not_a_person"
    assert refused(by_agent, company.integration) == "not_a_person"
    assert refused(by_agent, company.oscar) == "not_eligible"
    codes = set(
        AuditEntry.objects.filter(action="governance.approval.refused").values_list(
            "actor_name", flat=True
        )
    )
    assert codes == {"alice", "bob", "maya", "payments-agent", "erp-sync", "oscar"}
    for request in (by_person, by_agent):
        request.refresh_from_db()
        assert request.status == ApprovalStatus.PENDING and not request.decisions.exists()


def test_the_role_must_cover_the_target_at_decision_time(company):
    request = ask(company, target=company.hr)  # approvers see payments, not hr
    assert refused(request, company.alice) == "not_eligible"
    services.grant(company.approvers, "orchestrator.view_workflow", company.hr, actor=SYSTEM)
    services.decide_approval(request, user=fresh(company.alice), decision="approve")
    other = ask(company)
    services.remove_member(company.approvers, company.bob, actor=SYSTEM)
    services.revoke_delegation(company.delegation, actor=SYSTEM)  # bob stood in for alice
    assert refused(other, company.bob) == "not_eligible"


def test_highest_risk_needs_two_distinct_people(company, carol):
    now = clock.now()
    services.create_delegation(
        delegator=company.alice,
        delegate=carol,
        starts_at=now - dt.timedelta(hours=1),
        ends_at=now + dt.timedelta(hours=1),
        actor=SYSTEM,
    )
    request = ask(company, risk="critical")
    assert request.approvals_required == 2
    services.decide_approval(request, user=fresh(company.alice), decision="approve")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING
    assert refused(request, company.alice) == "already_decided_by_you"
    # Carol only stands in for alice, who already approved: she is not a second person.
    assert refused(request, carol) == "not_eligible"
    services.decide_approval(request, user=fresh(company.bob), decision="approve")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED
    assert sorted(request.decisions.values_list("decided_by__username", flat=True)) == [
        "alice",
        "bob",
    ]


def test_a_rejection_is_final(company):
    request = ask(company, risk="critical")
    services.decide_approval(request, user=fresh(company.alice), decision="reject", comment="no")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.REJECTED
    assert refused(request, company.bob) == "already_decided"


@pytest.mark.parametrize("decision", ["reject", "request_changes"])
@pytest.mark.parametrize("comment", ["", "   \n"])
def test_a_rejection_or_a_request_for_changes_needs_its_reason(company, decision, comment):
    request = ask(company)
    with pytest.raises(services.ReasonRequired) as caught:
        services.decide_approval(
            request, user=fresh(company.alice), decision=decision, comment=comment
        )
    assert caught.value.code == "reason" and "Say why you" in str(caught.value)
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING and not request.decisions.exists()
    services.decide_approval(request, user=fresh(company.alice), decision=decision, comment="no")
    assert request.decisions.get().comment == "no"


def test_an_approval_needs_no_reason(company):
    request = ask(company)
    services.decide_approval(request, user=fresh(company.alice), decision="approve")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED


def test_an_approval_for_changed_arguments_does_not_apply(company):
    request = ask(company)
    assert refused(request, company.alice, expected_digest=services.digest({"amount": 1})) == (
        "arguments_changed"
    )
    services.decide_approval(
        request,
        user=fresh(company.alice),
        decision="approve",
        expected_digest=services.digest(ARGS),
    )
    request.refresh_from_db()
    assert services.approval_applies(request, dict(ARGS))
    assert not services.approval_applies(request, {**ARGS, "amount": 5001})
    assert services.require_approval_for(request.pk, dict(ARGS)) == request
    with pytest.raises(services.ApprovalMismatch):
        services.require_approval_for(request.pk, {**ARGS, "iban": "GB33BUKB20201555555555"})


def test_a_decision_after_the_deadline_is_refused(company):
    with clock.frozen() as frozen:
        request = ask(company)
        frozen.advance(company.rule.sla_seconds * 2 + 1)  # past both levels: the deadline
        assert refused(request, company.alice) == "deadline_passed"
        assert refused(request, company.maya) == "deadline_passed"


def test_a_delegate_decides_only_inside_the_window(company, carol):
    with clock.frozen() as frozen:
        now = clock.now()
        services.create_delegation(
            delegator=company.alice,
            delegate=carol,
            starts_at=now + dt.timedelta(minutes=10),
            ends_at=now + dt.timedelta(minutes=20),
            note="conference",
            actor=SYSTEM,
        )
        request = ask(company)
        assert not services.pending_for(fresh(carol)).filter(pk=request.pk).exists()
        assert refused(request, carol) == "delegation_not_in_force"
        frozen.advance(15 * 60)
        assert services.pending_for(fresh(carol)).filter(pk=request.pk).exists()
        decision = services.decide_approval(request, user=fresh(carol), decision="approve")
        assert decision.on_behalf_of == company.alice and decision.decided_by == carol
        late = ask(company)
        frozen.advance(10 * 60)
        assert refused(late, carol) == "delegation_not_in_force"


def test_sla_escalates_along_the_chain_then_expires_every_hop_audited(company):
    outcomes = []

    def remember(sender, request, payload, **kwargs):
        outcomes.append(payload["status"])

    approval_decided.connect(remember, dispatch_uid="test-remember")
    try:
        with clock.frozen() as frozen:
            request = ask(company, requested_by=company.oscar)
            assert refused(request, company.maya) == "not_eligible"  # managers are level 1
            frozen.advance(company.rule.sla_seconds + 1)
            assert services.sweep_overdue(actor=SYSTEM) == 1
            request.refresh_from_db()
            assert (request.level, request.role) == (1, company.managers)
            assert services.pending_for(fresh(company.maya)).filter(pk=request.pk).exists()
            hop = AuditEntry.objects.get(action="governance.approval.escalated")
            assert '"to_role":"Managers"' in hop.body_row.content
            frozen.advance(company.rule.sla_seconds)
            services.sweep_overdue(actor=SYSTEM)
            request.refresh_from_db()
            assert request.status == ApprovalStatus.EXPIRED
    finally:
        approval_decided.disconnect(dispatch_uid="test-remember")
    assert outcomes == ["expired"]
    assert AuditEntry.objects.filter(action="governance.approval.expired").count() == 1


def test_an_escalated_request_can_be_decided_by_the_next_role(company):
    with clock.frozen() as frozen:
        request = ask(company, requested_by=company.oscar)
        frozen.advance(company.rule.sla_seconds + 1)
        services.escalate_overdue(request.pk, actor=SYSTEM)
        services.decide_approval(request, user=fresh(company.maya), decision="approve")
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED


def test_escalating_twice_is_harmless(company):
    with clock.frozen() as frozen:
        request = ask(company)
        frozen.advance(company.rule.sla_seconds + 1)
        services.escalate_overdue(request.pk, actor=SYSTEM)
        services.escalate_overdue(request.pk, actor=SYSTEM)
    request.refresh_from_db()
    assert request.level == 1
    assert AuditEntry.objects.filter(action="governance.approval.escalated").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_decisions_exactly_one_wins(company, monkeypatch):
    request = ask(company)
    results: dict[str, str] = {}
    barrier = threading.Barrier(2)
    eligibility = approval_actions._eligibility

    def slow_eligibility(*args, **kwargs):
        found = eligibility(*args, **kwargs)
        time.sleep(0.3)  # hold the request's row lock a while: the other decider must wait
        return found

    monkeypatch.setattr(approval_actions, "_eligibility", slow_eligibility)

    def decide(user):
        try:
            barrier.wait()
            services.decide_approval(request.pk, user=fresh(user), decision="approve")
            results[user.username] = "won"
        except services.AlreadyDecided as exc:
            results[user.username] = f"refused: {exc}"
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(u,)) for u in (company.alice, company.bob)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(value.split(":")[0] for value in results.values()) == ["refused", "won"]
    loser = next(value for value in results.values() if value.startswith("refused"))
    assert "already approved" in loser
    request.refresh_from_db()
    assert request.status == ApprovalStatus.APPROVED and request.decisions.count() == 1
