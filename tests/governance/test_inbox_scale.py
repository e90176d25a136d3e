"""The inbox at scale: what a person may decide is read in a number of queries that does not
grow with the pending requests, and is exactly what the eligibility rule says of each request.

decidable_requests asks the rule once per group of alike candidates (target, eligible role,
which delegators are excluded) rather than once per request; these tests hold it to the rule
asked request by request, over a random mix of the cases that exclude a person.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit import clock
from audit.actors import SYSTEM
from governance import services
from governance.actions.eligibility import may_decide
from governance.inbox import forget_decidable
from governance.models import ApprovalRequest, ApprovalStatus
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for


def _refunds(company, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        services.request_approval(
            action="tool.refund",
            approval_rule=company.rule,
            arguments={"amount": 10 + n},
            target=company.payments,
            requested_by=company.agent,
        )


def _queries(client, url: str, **headers) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url, **headers).status_code == 200
    return len(queries)


def _pages(company, request_pk: int) -> dict[str, int]:
    """The query counts of bob's inbox, a request page (whole and partial), a row and the
    navigation's count."""
    bob = fresh(company.bob)
    client = client_for(bob)
    urls = {
        "inbox": (reverse("inbox:index"), {}),
        "request page": (reverse("inbox:request", args=[request_pk]), {}),
        "request partial": (
            reverse("inbox:request", args=[request_pk]),
            {"HTTP_HX_REQUEST": "true", "HTTP_HX_TARGET": "detail"},
        ),
        "row": (reverse("inbox:row", args=[request_pk]), {}),
        "count": (reverse("inbox:count"), {}),
    }
    for url, headers in urls.values():
        client.get(url, **headers)  # warm the session, content types and "seen" records
    return {name: _queries(client, url, **headers) for name, (url, headers) in urls.items()}


def test_the_inbox_pages_cost_the_same_queries_for_10_and_200_pending(company):
    _refunds(company, 10)
    first = ApprovalRequest.objects.order_by("pk").first()
    few = _pages(company, first.pk)
    _refunds(company, 190, start=10)
    assert ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING).count() == 200
    many = _pages(company, first.pk)
    assert many == few
    # ...and the count bob sees is all 200 (the agent asked; bob holds the approvers' role).
    page = client_for(fresh(company.bob)).get(reverse("inbox:count"))
    assert ">200<" in page.content.decode().replace(" ", "")


def _decidable(user) -> set[int]:
    forget_decidable(user)
    return set(ApprovalRequest.objects.restrict(user, "decide").values_list("pk", flat=True))


def _rule_of_each(user) -> set[int]:
    return {request.pk for request in ApprovalRequest.objects.all() if may_decide(user, request)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_narrowed_set_is_the_rule_asked_request_by_request(company, seed):
    """A random mix: requests people asked for themselves, started the run of, already voted
    on, outside their role, on other targets, escalated to another role; a delegation in force,
    one expired, one whose delegator is excluded."""
    rng = random.Random(seed)
    second = services.create_approval_rule(
        slug="payments-two",
        name="Two approvals",
        role=company.approvers,
        approvals_required=2,
        escalation=[company.managers],
        actor=SYSTEM,
    )
    hr_rule = services.create_approval_rule(
        slug="hr", name="HR approval", role=company.managers, actor=SYSTEM
    )
    services.grant(company.approvers, "orchestrator.view_workflow", company.hr, actor=SYSTEM)
    now = clock.now()
    # oscar stands in for alice (in force) and for bob (expired), set up by the system.
    services.create_delegation(
        delegator=company.alice,
        delegate=company.oscar,
        starts_at=now - dt.timedelta(hours=1),
        ends_at=now + dt.timedelta(hours=1),
        actor=SYSTEM,
    )
    services.create_delegation(
        delegator=company.bob,
        delegate=company.oscar,
        starts_at=now - dt.timedelta(days=2),
        ends_at=now - dt.timedelta(days=1),
        actor=SYSTEM,
    )
    people = [company.alice, company.bob, company.maya, company.oscar, company.gina]
    askers = [company.agent, company.alice, company.bob, company.oscar, company.gina]
    requests = []
    for n in range(24):
        asker = rng.choice(askers)
        rule = rng.choice([company.rule, second, second, hr_rule])
        target = rng.choice([company.payments, company.payments, company.hr, None])
        requests.append(
            services.request_approval(
                action="tool.refund",
                approval_rule=rule,
                arguments={"amount": n, "seed": seed},
                target=target,
                requested_by=asker,
                run_initiator=rng.choice([None, asker, company.bob]),
            )
        )
    for request in requests:
        roll = rng.random()
        if roll < 0.3:
            voter = rng.choice([company.alice, company.bob])
            if may_decide(fresh(voter), ApprovalRequest.objects.get(pk=request.pk)):
                services.decide_approval(request.pk, user=fresh(voter), decision="approve")
        elif roll < 0.45:
            later = now + dt.timedelta(seconds=request.approval_rule.sla_seconds + 1)
            services.escalate_overdue(request.pk, now=later, actor=SYSTEM)
    kinds = set()
    for person in people:
        person = fresh(person)
        expected = _rule_of_each(person)
        assert _decidable(person) == expected, person.username
        for request in ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING):
            kinds.add(may_decide(person, request).code or "allowed")
    # The mix holds the cases it is about (so the equality above is not of empty sets).
    assert {"allowed", "not_eligible"} <= kinds
    assert kinds & {"requester", "run_initiator", "already_decided_by_you"}
