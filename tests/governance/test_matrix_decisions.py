"""The permission matrix of deciding: every door (inbox, service, command, admin) agrees.

Rows are the company's principals; columns two approval requests and an escalation; a cell is
"+" (listed and accepted) or the refusal code every door gives. On top of the company fixture,
gina adds herself to the approvers and to the managers (self-granted: it does not count), and:
* `by_agent`: a refund the payments agent asks for (maya owns the agent) on `payments`;
* `by_alice`: a refund alice asks for herself, in a run she started;
* `on_mayas_run`: an escalation to the managers about the run maya started.
In the admin, a request or an escalation the person may not see is a 404 ("4").
"""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.db import transaction
from django.urls import reverse

from audit.actors import SYSTEM
from governance import services
from governance.actions.eligibility import may_decide
from governance.models import ApprovalRequest, Escalation
from tests.governance.conftest import fresh
from tests.governance.test_admin import PRINCIPALS, STAFF, client_for

COLUMNS = ["by_agent", "by_alice", "on_mayas_run"]
EXPECTED = {
    "gina": dict.fromkeys(COLUMNS, "self_granted"),
    "alice": {"by_agent": "+", "by_alice": "requester", "on_mayas_run": "not_visible"},
    "bob": {"by_agent": "+", "by_alice": "+", "on_mayas_run": "not_visible"},
    "maya": {
        "by_agent": "accountable_owner",
        "by_alice": "not_eligible",
        "on_mayas_run": "run_initiator",
    },
    "oscar": {
        "by_agent": "not_eligible",
        "by_alice": "not_eligible",
        "on_mayas_run": "not_visible",
    },
    "integration": dict.fromkeys(COLUMNS, "not_a_person"),
    "agent": dict.fromkeys(COLUMNS, "not_a_person"),
}
# The admin refuses with a 404 what the person may not see at all.
ADMIN_NOT_FOUND = {
    ("maya", "by_agent"),
    ("maya", "by_alice"),
    *(("oscar", column) for column in COLUMNS),
    ("alice", "on_mayas_run"),
    ("bob", "on_mayas_run"),
}
DONE = {ApprovalRequest: "is recorded", Escalation: "resolved"}


@pytest.fixture
def doors(company):
    """The requests and the escalation of the table, after gina made herself a decider."""
    services.add_member(company.approvers, company.gina, actor=company.gina)
    services.add_member(company.managers, company.gina, actor=company.gina)
    by_agent = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 900},
        target=company.payments,
        requested_by=company.agent,
    )
    by_alice = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 400},
        target=company.payments,
        requested_by=company.alice,
        run_initiator=company.alice,
    )
    escalation = services.open_escalation(
        reason="low_confidence",
        summary="check",
        role=company.managers,
        run_id=company.run.pk,
        raised_by=SYSTEM,
    )
    return {"by_agent": by_agent, "by_alice": by_alice, "on_mayas_run": escalation}


def _code(refusal) -> str:
    """Name a refusal as the table does."""
    if isinstance(refusal, services.NotVisible):
        return "not_visible"
    return getattr(refusal, "code", type(refusal).__name__)


def _service(user, obj) -> str:
    try:
        if isinstance(obj, ApprovalRequest):
            services.decide_approval(obj.pk, user=user, decision="approve")
        else:
            services.resolve_escalation(obj.pk, user=user, resolution="retry")
    except (services.GovernanceError, services.AccessDenied, services.NotVisible) as refusal:
        return _code(refusal)
    return "+"


def _command(user, obj) -> str:
    if isinstance(obj, ApprovalRequest):
        args = ["approvals", "approve", str(obj.pk)]
    else:
        args = ["escalations", "send-back", str(obj.pk)]
    try:
        call_command(*args, "--as", user.username, stdout=StringIO())
    except CommandError as error:
        text = str(error)
        if text.startswith("Not found"):
            return "not_visible"
        return text.removeprefix("Refused (").split(")", 1)[0]
    return "+"


def _admin(user, obj) -> str:
    """Decide or resolve on the admin page; "+", "4", or the service's code by its message."""
    client = client_for(user)
    if isinstance(obj, ApprovalRequest):
        url = reverse("admin:governance_approvalrequest_decide", args=[obj.pk])
        data = {"decision": "approve", "expected_digest": obj.arguments_digest}
    else:
        url = reverse("admin:governance_escalation_resolve", args=[obj.pk])
        data = {"resolution": "retry", "result": "", "comment": ""}
    expected = may_decide(user, type(obj).objects.get(pk=obj.pk))
    response = client.post(url, data)
    if response.status_code == 404:
        return "4"
    shown = [str(message) for message in get_messages(response.wsgi_request)]
    if expected.allowed:
        return "+" if any(DONE[type(obj)] in message for message in shown) else f"? {shown}"
    return expected.code if expected.message in shown else f"? {shown}"


def _listed(user, obj) -> bool:
    if isinstance(obj, ApprovalRequest):
        return services.pending_for(user).filter(pk=obj.pk).exists()
    return Escalation.objects.restrict(user, "resolve").filter(pk=obj.pk).exists()


def _undone(door, user, obj) -> str:
    """Try one door, then undo whatever it did."""
    with transaction.atomic():
        outcome = door(user, obj)
        transaction.set_rollback(True)
    return outcome


@pytest.mark.parametrize("actor", PRINCIPALS)
def test_every_door_gives_the_same_answer(company, doors, actor):
    user = fresh(getattr(company, actor))
    got = {}
    for column in COLUMNS:
        obj = doors[column]
        listed = _listed(user, obj)
        service, command = _undone(_service, user, obj), _undone(_command, user, obj)
        assert service == command, (column, service, command)
        assert listed == (service == "+"), (column, listed, service)
        got[column] = service
        if actor in STAFF:
            admin = _undone(_admin, user, obj)
            expected_admin = "4" if (actor, column) in ADMIN_NOT_FOUND else service
            assert admin == expected_admin, (column, admin)
    assert got == EXPECTED[actor]
