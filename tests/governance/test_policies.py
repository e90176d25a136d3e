"""Policies: validation on save, versions, the decision service and its audit, the dry run."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.models import PolicyRule
from tests.governance.conftest import fresh


def rule(company, **fields) -> PolicyRule:
    """Build an unsaved rule of the payments policy."""
    values = {"policy": company.policy, "name": "r", "action": "tool.refund", "effect": "allow"}
    return PolicyRule(**{**values, **fields})


def save(company, **fields) -> PolicyRule:
    return services.save_rule(rule(company, **fields), actor=SYSTEM, reason="test")


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"condition": "arguments.amount >"}, "condition", "does not parse"),
        ({"condition": "os.system('x')"}, "condition", "unknown name 'os'"),
        ({"effect": "require_approval"}, "approval_rule", "needs an approval rule"),
        ({"effect": "escalate"}, "escalate_to", "needs a role"),
        ({"effect": "deny"}, "reason", "states its reason"),
    ],
)
def test_bad_rules_are_refused_when_saved(company, fields, field, words):
    with pytest.raises(ValidationError) as caught:
        save(company, **fields)
    assert words in " ".join(caught.value.message_dict[field])
    assert not PolicyRule.objects.exists()


def test_each_rule_change_makes_a_new_policy_version(company):
    first = save(company, name="small refunds", condition="arguments.amount <= 100")
    assert (first.policy.version, first.version) == (2, 2)
    first.condition = "arguments.amount <= 200"
    services.save_rule(first, actor=fresh(company.gina), reason="raise the limit")
    company.policy.refresh_from_db()
    assert company.policy.version == 3
    assert first.history.first().history_change_reason == "raise the limit"


def test_first_matching_rule_decides_and_is_audited_with_its_version(company):
    save(
        company,
        name="agents need approval",
        position=10,
        condition="actor.is_agent and arguments.amount > 1000",
        effect="require_approval",
        approval_rule=company.rule,
        risk="high",
    )
    save(
        company,
        name="confidential denied",
        position=20,
        condition="classification == 'confidential'",
        effect="deny",
        reason="not for bots",
    )
    save(company, name="everything else", position=30, action="tool.*", effect="allow")
    company.policy.refresh_from_db()
    agent = fresh(company.agent)

    big = services.decide(actor=agent, action="tool.refund", arguments={"amount": 5000})
    assert (big.effect, big.rule_name, big.policy_version) == (
        "require_approval",
        "agents need approval",
        company.policy.version,
    )
    assert big.approval_rule_id == company.rule.pk and big.risk == "high"
    secret = services.decide(
        actor=agent, action="tool.refund", arguments={"amount": 5}, classification="confidential"
    )
    assert (secret.effect, secret.reason) == ("deny", "not for bots")
    other = services.decide(actor=agent, action="tool.lookup", arguments={})
    assert other.effect == "allow" and other.rule_name == "everything else"
    unmatched = services.decide(actor=agent, action="memory.write")
    assert unmatched.effect == "allow" and unmatched.rule_id is None
    assert unmatched.reason == "no policy rule matched"

    entries = AuditEntry.objects.filter(action="governance.policy.decided").order_by("id")
    assert entries.count() == 4
    first = entries.first()
    assert first.actor_kind == "agent" and first.actor_name == "payments-agent"
    recorded = json.loads(first.decision)
    assert recorded["effect"] == "require_approval"
    assert recorded["policy"] == "payments"
    assert recorded["policy_version"] == company.policy.version


def test_a_condition_that_cannot_run_fails_closed(company):
    save(company, name="allow small", position=10, condition="arguments.amount < 10")
    save(
        company,
        name="deny big",
        position=20,
        condition="arguments.amount > 10000",
        effect="deny",
        reason="too big",
    )
    # No amount: the allow rule cannot run and does not allow; the deny rule cannot run and denies.
    decision = services.decide(actor=fresh(company.alice), action="tool.refund", arguments={})
    assert decision.effect == "deny"
    assert len(decision.errors) == 2


def test_draft_rules_are_not_live(company):
    save(company, name="draft deny", status="draft", effect="deny", reason="maybe")
    decision = services.decide(actor=fresh(company.alice), action="tool.refund", arguments={})
    assert decision.effect == "allow"


def test_dry_run_lists_what_a_draft_would_have_changed(company):
    agent = fresh(company.agent)
    for amount in (10, 500, 2000, 9000):
        services.decide(actor=agent, action="tool.refund", arguments={"amount": amount})
    services.decide(actor=agent, action="tool.lookup", arguments={"amount": 9000})
    draft = rule(
        company,
        name="cap",
        status="draft",
        condition="arguments.amount > 1000",
        effect="deny",
        reason="over the cap",
    )
    report = services.dry_run(draft)
    assert report.examined == 5
    assert sorted(row.action for row in report.changed) == ["tool.refund", "tool.refund"]
    assert {(row.recorded, row.current, row.with_draft) for row in report.changed} == {
        ("allow", "allow", "deny")
    }
    assert not PolicyRule.objects.exists()  # the draft was never saved


def test_dry_run_of_an_edit_replaces_the_saved_rule(company):
    saved = save(
        company,
        name="cap",
        condition="arguments.amount > 1000",
        effect="deny",
        reason="over the cap",
    )
    agent = fresh(company.agent)
    for amount in (500, 2000, 9000):
        services.decide(actor=agent, action="tool.refund", arguments={"amount": amount})
    saved.condition = "arguments.amount > 5000"
    report = services.dry_run(saved)
    assert [(row.current, row.with_draft) for row in report.changed] == [("deny", "allow")]


def test_policy_changes_need_permission(company):
    with pytest.raises(services.AccessDenied):
        services.save_rule(rule(company, name="sneaky"), actor=fresh(company.maya), reason="x")
    with pytest.raises(services.NotVisible):
        services.save_rule(rule(company, name="sneaky"), actor=fresh(company.alice), reason="x")
    assert not PolicyRule.objects.exists()
