"""Property: over the demo's principals and requests, listed <=> decidable, and every refusal
says why.

The demo is seeded once per test; each example applies a few of the changes people make (add
themselves or someone else to a role, delegate, let an SLA pass, decide, open escalations) in a
transaction that is rolled back afterwards. Then, for every principal and every approval request
and escalation, what the inbox lists (`restrict(user, "decide" | "resolve")`) is exactly what
the decision service accepts, and every refusal carries a code and a message.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit import clock
from audit.actors import SYSTEM
from governance import services
from governance.actions.eligibility import may_decide
from governance.models import ApprovalRequest, Escalation, Role
from orchestrator import demo, engine
from orchestrator.models import WorkflowRun

User = get_user_model()


def _user(name):
    return User.objects.get(username=name)


def _role(name):
    return Role.objects.get(name=name)


def _run(key):
    return WorkflowRun.objects.get(business_key=key)


def _delegate(delegator, delegate, actor, *, hours_from=-1, hours_to=1):
    now = clock.now()
    services.create_delegation(
        delegator=_user(delegator),
        delegate=_user(delegate),
        starts_at=now + dt.timedelta(hours=hours_from),
        ends_at=now + dt.timedelta(hours=hours_to),
        actor=_user(actor),
    )


def _sla_passes():
    later = clock.now() + dt.timedelta(seconds=demo.APPROVAL_SLA_SECONDS + 1)
    for pk in ApprovalRequest.objects.filter(status="pending").values_list("pk", flat=True):
        services.escalate_overdue(pk, now=later, actor=SYSTEM)


def _bob_approves_one():
    request = services.pending_for(_user("bob")).order_by("pk").first()
    if request is not None:
        services.decide_approval(request, user=_user("bob"), decision="approve")


CHANGES = {
    "grace adds herself to the commanders": lambda: services.add_member(
        _role(demo.INCIDENT_COMMANDERS), _user("grace"), actor=_user("grace")
    ),
    "admin adds dave to the commanders": lambda: services.add_member(
        _role(demo.INCIDENT_COMMANDERS), _user("dave"), actor=_user("admin")
    ),
    "grace adds herself to the managers": lambda: services.add_member(
        _role(demo.MANAGERS), _user("grace"), actor=_user("grace")
    ),
    "bob delegates to carol": lambda: _delegate("bob", "carol", "bob"),
    "bob's delegation to oscar is over": lambda: _delegate(
        "bob", "oscar", "bob", hours_from=-3, hours_to=-2
    ),
    "grace hands bob's approvals to herself": lambda: _delegate("bob", "grace", "grace"),
    "a day passes: the managers are asked": _sla_passes,
    "bob approves one request": _bob_approves_one,
    "a step of alice's change fails to on-call": lambda: services.open_escalation(
        reason="step_failed", role=_role(demo.ON_CALL), run_id=_run("CHG-3001").pk, raised_by=SYSTEM
    ),
    "the remediation agent asks the managers": lambda: services.open_escalation(
        reason="low_confidence",
        role=_role(demo.MANAGERS),
        run_id=_run("INC-2002").pk,
        raised_by=_user("agent.incident-remediation"),
    ),
}


@pytest.fixture
def seeded(settings, db):
    """The demo, seeded and run until its requests wait for a decision."""
    settings.DEBUG = True
    demo.seed()
    engine.drain()


def _attempt(user, obj) -> tuple[bool, str, str]:
    """Decide (or resolve) as `user` and undo it: (accepted, refusal code, refusal message)."""
    try:
        with transaction.atomic():
            if isinstance(obj, ApprovalRequest):
                services.decide_approval(obj.pk, user=user, decision="approve")
            else:
                services.resolve_escalation(obj.pk, user=user, resolution="retry")
            transaction.set_rollback(True)
    except (services.GovernanceError, services.AccessDenied, services.NotVisible) as refusal:
        return False, getattr(refusal, "code", type(refusal).__name__), str(refusal)
    return True, "", ""


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(changes=st.lists(st.sampled_from(sorted(CHANGES)), unique=True, max_size=5))
def test_listed_exactly_when_decidable_and_every_refusal_says_why(seeded, changes):
    with transaction.atomic():
        for change in changes:
            CHANGES[change]()
        principals = list(User.objects.order_by("username"))
        objects = [*ApprovalRequest.objects.order_by("pk"), *Escalation.objects.order_by("pk")]
        assert any(isinstance(obj, ApprovalRequest) for obj in objects)
        for user in principals:
            inbox = {
                ApprovalRequest: set(
                    ApprovalRequest.objects.restrict(user, "decide").values_list("pk", flat=True)
                ),
                Escalation: set(
                    Escalation.objects.restrict(user, "resolve").values_list("pk", flat=True)
                ),
            }
            for obj in objects:
                listed = obj.pk in inbox[type(obj)]
                accepted, code, message = _attempt(user, obj)
                where = f"{user} on {obj} after {changes}"
                assert listed == accepted, f"{where}: listed {listed}, refused {code}: {message}"
                assert (
                    services.can(user, "decide" if type(obj) is ApprovalRequest else "resolve", obj)
                    == listed
                )
                if not accepted:
                    assert code and message, where
                    answer = may_decide(user, obj)
                    assert not answer.allowed and answer.message, where
        transaction.set_rollback(True)
