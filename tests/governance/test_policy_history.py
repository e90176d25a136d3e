"""A rule edit makes a new policy version in the name of whoever edited the rule."""

from __future__ import annotations

import json

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.models import EscalationLevel, Policy, PolicyRule
from tests.governance.conftest import fresh


def new_rule(company) -> PolicyRule:
    return PolicyRule(
        policy=company.policy,
        name="refunds need approval",
        action="tool.refund",
        effect="require_approval",
        approval_rule=company.rule,
    )


def last_change(obj):
    """Return the newest history record of an object."""
    return obj.history.order_by("-history_id").first()


def audited(action: str, target_id) -> AuditEntry:
    return (
        AuditEntry.objects.filter(action=action, target_id=str(target_id)).order_by("-id").first()
    )


def test_saving_a_rule_bumps_the_policy_in_the_editors_name(company):
    gina = fresh(company.gina)
    rule = services.save_rule(new_rule(company), actor=gina, reason="refunds are risky")
    policy = Policy.objects.get(pk=company.policy.pk)
    assert policy.version == 2 and rule.version == 2
    version = last_change(policy)
    assert version.history_user == gina and version.version == 2
    assert "refunds are risky" in version.history_change_reason
    assert last_change(rule).history_user == gina
    entry = audited("governance.policy.changed", policy.pk)
    assert entry.actor_name == "gina"
    assert "refunds are risky" in json.loads(entry.body_row.content)["reason"]

    rule.condition = "arguments.amount > 100"
    services.save_rule(rule, actor=gina, reason="only above 100")
    assert last_change(Policy.objects.get(pk=policy.pk)).history_user == gina


def test_deleting_a_rule_or_a_policy_names_who_did_it(company):
    gina = fresh(company.gina)
    rule = services.save_rule(new_rule(company), actor=SYSTEM, reason="seeded")
    rule_id = rule.pk
    services.delete_rule(rule, actor=gina, reason="not needed")
    policy = Policy.objects.get(pk=company.policy.pk)
    assert last_change(policy).history_user == gina and policy.version == 3
    deleted = PolicyRule.history.filter(id=rule_id, history_type="-").get()
    assert deleted.history_user == gina
    assert audited("governance.policyrule.deleted", rule_id).actor_name == "gina"

    other_id = services.save_rule(new_rule(company), actor=SYSTEM, reason="seeded again").pk
    policy_id = policy.pk
    services.delete_policy(policy, actor=gina, reason="retired")
    assert PolicyRule.history.filter(id=other_id, history_type="-").get().history_user == gina
    assert Policy.history.filter(id=policy_id, history_type="-").get().history_user == gina


def test_changing_an_escalation_chain_names_who_did_it(company):
    gina = fresh(company.gina)
    services.update_approval_rule(
        company.rule,
        actor=gina,
        reason="directors too",
        escalation=[company.managers, company.admins],
    )
    levels = EscalationLevel.history.filter(rule_id=company.rule.pk)
    added = levels.filter(history_type="+", history_user=gina)
    removed = levels.filter(history_type="-", history_user=gina)
    assert added.count() == 2 and removed.count() == 1
