"""A policy's `escalate` effect in an approval step opens a human escalation to the named role.

It is not an approval: no approval request is opened, and the step's approvers are not asked;
the members of the role the rule names (`escalate_to`) get the task.
"""

from __future__ import annotations

import json

import pytest

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.actions import approvals
from governance.models import ApprovalRequest, Escalation, EscalationStatus, PolicyRule
from orchestrator.models import StepRun
from tests.governance.conftest import fresh

ARGS = {"amount": 90000}


@pytest.fixture
def escalating_rule(company):
    """Payments above 50 000 go to the managers as a human escalation."""
    return services.save_rule(
        PolicyRule(
            policy=company.policy,
            name="big payments go to a manager",
            action="workflow.payments.*",
            condition="arguments.amount > 50000",
            effect="escalate",
            escalate_to=company.managers,
            reason="too big for the approvers alone",
            risk="high",
        ),
        actor=SYSTEM,
        reason="test",
    )


def open_for(company, arguments):
    """Open the gate of an approval step of the company's run, as the engine does."""
    step = StepRun.objects.get(run=company.run, step_id="only")
    return step, approvals.open_step_approval(
        run=company.run,
        step=step,
        rule_slug=company.rule.slug,
        arguments=arguments,
        action="workflow.payments.approve",
        summary="Pay the supplier",
    )


def test_escalate_opens_a_human_escalation_to_the_named_role_not_an_approval(
    company, escalating_rule
):
    step, (request, decision) = open_for(company, ARGS)
    assert request is None
    assert (decision.effect, decision.escalate_to_id) == ("escalate", company.managers.pk)
    assert not ApprovalRequest.objects.exists()
    escalation = Escalation.objects.get()
    assert escalation == approvals.policy_escalation_for_step(step.pk)
    assert (escalation.reason, escalation.role, escalation.parked) == (
        "policy",
        company.managers,
        False,
    )
    assert (escalation.run_id, escalation.step_run_id, escalation.step_id) == (
        company.run.pk,
        step.pk,
        "only",
    )
    assert escalation.raised_by == company.maya  # who started the run
    assert escalation.summary == "Pay the supplier"
    assert escalation.context["arguments"] == ARGS
    assert escalation.context["arguments_digest"] == services.digest(ARGS)
    assert escalation.context["decision"]["rule_id"] == escalating_rule.pk
    assert escalation.context["decision"]["policy_version"] == escalating_rule.version
    opened = AuditEntry.objects.get(action="governance.escalation.opened")
    assert json.loads(opened.body_row.content)["role"] == "Managers"
    # maya, a manager, started the run: separation of duties leaves it to another manager.
    assert not services.can(fresh(company.maya), "resolve", escalation)
    services.add_member(company.managers, company.bob, actor=SYSTEM)
    assert services.can(fresh(company.bob), "resolve", escalation)
    assert not services.can(fresh(company.alice), "view", escalation)  # approvers are not asked


def test_a_smaller_amount_still_asks_the_approvers(company, escalating_rule):
    _, (request, decision) = open_for(company, {"amount": 100})
    assert decision.effect == "allow" and request is not None
    assert request.role == company.approvers
    assert not Escalation.objects.exists()


def test_asking_again_reuses_the_escalation_and_other_arguments_replace_it(
    company, escalating_rule
):
    step, _ = open_for(company, ARGS)
    first = approvals.policy_escalation_for_step(step.pk)
    open_for(company, dict(ARGS))
    assert Escalation.objects.count() == 1
    open_for(company, {"amount": 80000})
    first.refresh_from_db()
    assert first.status == EscalationStatus.CANCELLED
    latest = approvals.policy_escalation_for_step(step.pk)
    assert latest != first and latest.status == EscalationStatus.OPEN
    assert latest.context["arguments"] == {"amount": 80000}
