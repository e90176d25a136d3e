"""The permission matrix through the services: each principal kind against each governed object.

Outcomes: "+" allowed, "3" refused with 403 (AccessDenied: visible, not allowed), "4" refused
with 404 (NotVisible). The list column is "+" (in the restricted list) or "-" (not in it).
Every refusal writes a `governance.access_denied` audit entry naming the actor.
"""

from __future__ import annotations

import pytest
from django.db import transaction

from audit.models import AuditEntry
from governance import services
from governance.models import ApprovalRule, Delegation, Policy, Role
from governance.permissions import can
from orchestrator.models import Workflow, WorkflowRun
from tests.governance.conftest import fresh

OBJECTS = ["role", "policy", "approvalrule", "delegation", "payments", "hr", "run"]
NONE = "-444"
# actor: {object: list view change delete}
EXPECTED = {
    "gina": dict.fromkeys(OBJECTS, "++++"),
    "alice": {**dict.fromkeys(OBJECTS, NONE), "delegation": "++++", "payments": "++33"},
    "bob": {**dict.fromkeys(OBJECTS, NONE), "delegation": "++33", "payments": "++33"},
    "maya": {
        "role": "++33",
        "policy": "++33",
        "approvalrule": "++33",
        "delegation": NONE,
        "payments": "+++3",
        "hr": "++33",
        "run": "+++3",  # she started it and may still start payments runs: she operates it
    },
    "integration": {**dict.fromkeys(OBJECTS, NONE), "payments": "+++3", "run": "++33"},
    "agent": {**dict.fromkeys(OBJECTS, NONE), "run": "++33"},
    "oscar": dict.fromkeys(OBJECTS, NONE),
}


def _target(company, name):
    """Return the object of the matrix column `name`."""
    return {
        "role": company.agents,
        "policy": company.policy,
        "approvalrule": company.rule,
        "delegation": company.delegation,
        "payments": company.payments,
        "hr": company.hr,
        "run": company.run,
    }[name]


def _change(user, obj):
    """Change an object through its service (engine models: the checked read they start with)."""
    if isinstance(obj, Role):
        services.update_role(obj, actor=user, reason="matrix", description="changed")
    elif isinstance(obj, Policy):
        services.update_policy(obj, actor=user, reason="matrix", description="changed")
    elif isinstance(obj, ApprovalRule):
        services.update_approval_rule(obj, actor=user, reason="matrix", sla_seconds=60)
    elif isinstance(obj, Delegation):
        services.update_delegation(obj, actor=user, reason="matrix", note="changed")
    else:
        services.get_for(user, type(obj), obj.pk, "change")


def _delete(user, obj):
    """Delete an object through its service (engine models: the checked read they start with)."""
    if isinstance(obj, Role):
        services.delete_role(obj, actor=user, reason="matrix")
    elif isinstance(obj, Policy):
        services.delete_policy(obj, actor=user, reason="matrix")
    elif isinstance(obj, ApprovalRule):
        services.delete_approval_rule(obj, actor=user, reason="matrix")
    elif isinstance(obj, Delegation):
        services.delete_delegation(obj, actor=user, reason="matrix")
    else:
        services.get_for(user, type(obj), obj.pk, "delete")


def _outcome(call) -> str:
    """Run a service call; undo what an allowed one wrote (not a refusal's audit); return +/3/4."""
    with transaction.atomic():
        try:
            call()
        except services.NotVisible:
            return "4"
        except services.AccessDenied:
            return "3"
        transaction.set_rollback(True)
        return "+"


def _denials(user) -> int:
    return AuditEntry.objects.filter(action="governance.access_denied", actor_id=user.pk).count()


@pytest.mark.parametrize("actor", list(EXPECTED))
@pytest.mark.parametrize("column", OBJECTS)
def test_permission_matrix_through_services(company, actor, column):
    user = fresh(getattr(company, actor))
    obj = _target(company, column)
    expected = EXPECTED[actor][column]
    listed = type(obj).objects.restrict(user, "view").filter(pk=obj.pk).exists()
    got = "+" if listed else "-"
    for operation in (
        lambda: services.get_for(user, type(obj), obj.pk, "view"),
        lambda: _change(user, obj),
        lambda: _delete(user, obj),
    ):
        before = _denials(user)
        result = _outcome(operation)
        refused_and_audited = result == "+" or _denials(user) == before + 1
        assert refused_and_audited, f"{actor} refused on {column} without an audit entry"
        got += result
    assert got == expected, f"{actor} on {column}: expected {expected}, got {got}"


def test_can_agrees_with_restrict(company):
    for actor in EXPECTED:
        user = fresh(getattr(company, actor))
        for column in OBJECTS:
            obj = _target(company, column)
            for action in ("view", "change", "delete"):
                listed = type(obj).objects.restrict(user, action).filter(pk=obj.pk).exists()
                assert can(user, action, obj) == listed, (actor, column, action)


def test_nothing_is_visible_by_default_and_superusers_see_all(company, django_user_model):
    nobody = django_user_model.objects.create_user("newcomer")
    root = django_user_model.objects.create_superuser("root", password="pw-root-123")
    for model in (Role, Policy, ApprovalRule, Delegation, Workflow, WorkflowRun):
        assert not model.objects.restrict(nobody, "view").exists()
        assert model.objects.restrict(root, "view").count() == model.objects.count()
    assert not Workflow.objects.restrict(None, "view").exists()


def test_inactive_user_loses_everything(company):
    gina = fresh(company.gina)
    gina.is_active = False
    gina.save()
    assert not Role.objects.restrict(gina, "view").exists()
    assert not can(gina, "view", company.payments)


def test_write_that_leaves_the_users_scope_is_rolled_back(company):
    # Alice may change her delegation, but not make it maya's: after the save it would be
    # outside what she may change, so the service refuses and nothing is written.
    alice = fresh(company.alice)
    with pytest.raises(services.AccessDenied):
        services.update_delegation(
            company.delegation, actor=alice, reason="swap", delegator=company.maya
        )
    company.delegation.refresh_from_db()
    assert company.delegation.delegator_id == company.alice.pk
    assert AuditEntry.objects.filter(
        action="governance.access_denied", actor_id=alice.pk, target_id=str(company.delegation.pk)
    ).exists()


# --- people, groups and parts -----------------------------------------------------------------


def test_people_see_themselves_their_colleagues_and_the_principals_they_may_view(company):
    from governance.permissions import visible_people

    names = {
        actor: set(
            visible_people(fresh(getattr(company, actor))).values_list("username", flat=True)
        )
        for actor in ("gina", "alice", "maya", "oscar")
    }
    assert names["alice"] == {"alice", "bob"}  # both approvers
    assert names["maya"] == {"maya"}  # a manager alone in her role, no view on principals
    assert names["oscar"] == {"oscar"}
    everyone = set(type(company.gina).objects.values_list("username", flat=True))
    assert names["gina"] == everyone  # governance admins view every principal


def test_a_roles_group_is_seen_with_the_role(company):
    from django.contrib.auth.models import Group

    from governance.permissions import restricted

    assert set(restricted(fresh(company.gina), Group)) == {
        role.group for role in Role.objects.all()
    }
    assert set(restricted(fresh(company.maya), Group)) == {
        role.group for role in Role.objects.all()
    }  # managers view roles
    assert not restricted(fresh(company.oscar), Group).exists()


def test_a_part_follows_its_whole_and_an_orphan_those_who_see_every_whole(company):
    from audit import clock
    from orchestrator.models import EffectJournal

    mine = EffectJournal.objects.create(key="k1", run=company.run, name="t", created_at=clock.now())
    orphan = EffectJournal.objects.create(key="k2", run=None, name="t", created_at=clock.now())
    agent, maya, oscar = fresh(company.agent), fresh(company.maya), fresh(company.oscar)
    assert can(agent, "view", mine) and not can(agent, "view", orphan)  # one run, not all
    assert can(maya, "view", orphan)  # model-wide view on runs
    assert not can(oscar, "view", mine) and not can(oscar, "view", orphan)
    assert set(EffectJournal.objects.restrict(agent)) == {mine}
    assert set(EffectJournal.objects.restrict(maya)) == {mine, orphan}
    assert not can(oscar, "change", mine)  # changing a part is changing its run
    assert can(maya, "change", mine)  # ...and maya started the run, so she may change it
