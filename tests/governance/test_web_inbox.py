"""The approvals inbox's pages through the authorisation matrix of the company.

On top of the company fixture: `by_agent`, a refund the payments agent asks for (maya owns the
agent), and `by_alice`, a refund alice asks for herself in a run she started. Alice and bob are
approvers; bob is also alice's delegate (in force). A cell of a table says what the person's
inbox lists, or what a page answers: "+" shown (200), "4" not visible (404, audited once), "L"
sent to the login page (agents and integrations have no session).
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.models import AuditEntry
from governance import services
from governance.actions.eligibility import may_decide
from governance.inbox import forget_decidable
from governance.models import ApprovalDecision, ApprovalRequest, ApprovalStatus
from tests.governance.conftest import fresh
from tests.governance.test_admin import PRINCIPALS, client_for

COLUMNS = ["by_agent", "by_alice"]
# What each person's "waiting for me" tab lists: exactly what they may decide.
MINE = {
    "gina": set(),
    "alice": {"by_agent"},
    "bob": {"by_agent", "by_alice"},
    "maya": set(),
    "oscar": set(),
}
# A request's page: "+" shown, "4" a 404, "L" the login page.
PAGE = {
    "gina": "44",
    "alice": "++",
    "bob": "++",
    "maya": "44",
    "oscar": "44",
    "integration": "LL",
    "agent": "LL",
}
# Why a person who sees a request may not decide it, in the page's words.
WHY_NOT = {("alice", "by_alice"): "You asked for this approval"}


@pytest.fixture
def requests_(company):
    """The two refunds of the table."""
    by_agent = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 900, "invoice": "INV-1"},
        target=company.payments,
        requested_by=company.agent,
    )
    by_alice = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 400, "invoice": "INV-2"},
        target=company.payments,
        requested_by=company.alice,
        run_initiator=company.alice,
    )
    return {"by_agent": by_agent, "by_alice": by_alice}


def _listed(response, requests) -> set[str]:
    """Name the requests a list page shows."""
    ids = {int(pk) for pk in re.findall(r'id="row-(\d+)"', response.content.decode())}
    return {name for name, request in requests.items() if request.pk in ids}


def _outcome(response) -> str:
    if response.status_code == 302 and response["Location"].startswith("/login/"):
        return "L"
    return {200: "+", 404: "4", 403: "3"}.get(response.status_code, str(response.status_code))


def _denials(username: str) -> int:
    return AuditEntry.objects.filter(action="governance.access_denied", actor_name=username).count()


@pytest.mark.parametrize("name", list(MINE))
def test_waiting_for_me_lists_exactly_what_the_person_may_decide(company, requests_, name):
    user = fresh(getattr(company, name))
    response = client_for(user).get(reverse("inbox:index"))
    assert response.status_code == 200
    assert _listed(response, requests_) == MINE[name]
    decidable = {label for label, request in requests_.items() if may_decide(user, request)}
    assert decidable == MINE[name]


@pytest.mark.parametrize("name", PRINCIPALS)
def test_a_request_page_through_the_matrix(company, requests_, name):
    user = fresh(getattr(company, name))
    client = client_for(user)
    for column, expected in zip(COLUMNS, PAGE[name], strict=True):
        before = _denials(user.get_username())
        response = client.get(reverse("inbox:request", args=[requests_[column].pk]))
        assert _outcome(response) == expected, (name, column)
        if expected == "4":
            assert _denials(user.get_username()) == before + 1
        if expected == "+":
            body = response.content.decode()
            assert requests_[column].arguments_digest in body
            why = WHY_NOT.get((name, column))
            if why:
                assert why in body and 'name="decision"' not in body
            else:
                assert 'value="approve"' in body


def test_the_other_tabs_show_what_the_person_sees_and_say_whose_it_is(company, requests_):
    alice = fresh(company.alice)
    client = client_for(alice)
    roles = client.get(reverse("inbox:index"), {"tab": "roles"})
    assert _listed(roles, requests_) == {"by_agent", "by_alice"}
    row = re.search(rf'id="row-{requests_["by_alice"].pk}".*?</li>', roles.content.decode(), re.S)
    assert "yours to decide" not in row.group(0)
    assert _listed(client.get(reverse("inbox:index"), {"tab": "decided"}), requests_) == set()
    services.decide_approval(
        requests_["by_agent"], user=alice, decision="approve", expected_digest=None
    )
    decided = client.get(reverse("inbox:index"), {"tab": "decided"})
    assert _listed(decided, requests_) == {"by_agent"}
    oscar = client_for(fresh(company.oscar)).get(reverse("inbox:index"), {"tab": "all"})
    assert _listed(oscar, requests_) == set()


def test_filters_narrow_and_sort_by_due_time(company, requests_):
    bob = client_for(fresh(company.bob))
    response = bob.get(reverse("inbox:index"), {"tab": "all", "agent": "payments-agent"})
    assert _listed(response, requests_) == {"by_agent"}
    body = bob.get(reverse("inbox:index"), {"tab": "all"}).content.decode()
    first, second = (requests_[n].pk for n in COLUMNS)  # by_agent was asked first: due first
    assert body.index(f'id="row-{first}"') < body.index(f'id="row-{second}"')
    newest = bob.get(reverse("inbox:index"), {"tab": "all", "sort": "-due"}).content.decode()
    assert newest.index(f'id="row-{second}"') < newest.index(f'id="row-{first}"')
    htmx = bob.get(
        reverse("inbox:index"),
        {"tab": "all", "risk": "critical"},
        HTTP_HX_REQUEST="true",
        HTTP_HX_TARGET="inbox-list",
    )
    assert "<html" not in htmx.content.decode() and _listed(htmx, requests_) == set()


def test_approving_opens_the_next_item(company, requests_):
    bob = client_for(fresh(company.bob))
    first = requests_["by_agent"]
    response = bob.post(
        reverse("inbox:decide", args=[first.pk]),
        {"decision": "approve", "expected_digest": first.arguments_digest, "back": "tab=mine"},
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("inbox:request", args=[requests_["by_alice"].pk]) + (
        "?tab=mine"
    )
    first.refresh_from_db()
    assert first.status == ApprovalStatus.APPROVED
    page = bob.get(response["Location"]).content.decode()
    assert f"#{first.pk} approved by you; the request is approved." in page


def test_a_rejection_needs_its_reason(company, requests_):
    bob = client_for(fresh(company.bob))
    request = requests_["by_agent"]
    url = reverse("inbox:decide", args=[request.pk])
    refused = bob.post(url, {"decision": "reject", "expected_digest": request.arguments_digest})
    assert refused.status_code == 422
    assert "Say why you reject" in refused.content.decode()
    assert not ApprovalDecision.objects.filter(request=request).exists()
    done = bob.post(
        url,
        {
            "decision": "reject",
            "comment": "Wrong invoice",
            "expected_digest": request.arguments_digest,
        },
    )
    assert done.status_code == 302
    request.refresh_from_db()
    assert request.status == ApprovalStatus.REJECTED
    assert request.decisions.get().comment == "Wrong invoice"


def test_a_stale_digest_is_refused_with_a_clear_message(company, requests_):
    bob = client_for(fresh(company.bob))
    request = requests_["by_agent"]
    stale = "0" * 64
    response = bob.post(
        reverse("inbox:decide", args=[request.pk]),
        {"decision": "approve", "expected_digest": stale},
        follow=True,
    )
    body = response.content.decode()
    assert "Not recorded: the arguments of request" in body
    assert "changed since you opened it" in body
    request.refresh_from_db()
    assert request.status == ApprovalStatus.PENDING
    assert AuditEntry.objects.filter(
        action="governance.approval.refused", actor_name="bob", target_id=str(request.pk)
    ).exists()


def test_a_person_who_may_not_decide_is_told_why_and_the_service_refuses(company, requests_):
    alice = client_for(fresh(company.alice))
    request = requests_["by_alice"]
    page = alice.get(reverse("inbox:request", args=[request.pk])).content.decode()
    assert "You cannot decide this request" in page and "Separation of duties" in page
    response = alice.post(
        reverse("inbox:decide", args=[request.pk]),
        {"decision": "approve", "expected_digest": request.arguments_digest},
        follow=True,
    )
    assert "Not recorded: Separation of duties" in response.content.decode()
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.PENDING


def test_already_voted_is_said(company, requests_):
    rule = company.rule
    services.update_approval_rule(rule, approvals_required=2, actor=company.gina, reason="two")
    request = services.request_approval(
        action="tool.refund",
        approval_rule=rule,
        arguments={"amount": 5},
        target=company.payments,
        requested_by=company.agent,
    )
    bob = fresh(company.bob)
    services.decide_approval(request, user=bob, decision="approve")
    page = client_for(bob).get(reverse("inbox:request", args=[request.pk])).content.decode()
    assert "You have already decided this request" in page


def test_decide_on_an_invisible_request_is_a_404_audited(company, requests_):
    oscar = fresh(company.oscar)
    request = requests_["by_agent"]
    before = _denials("oscar")
    response = client_for(oscar).post(
        reverse("inbox:decide", args=[request.pk]),
        {"decision": "approve", "expected_digest": request.arguments_digest},
    )
    assert response.status_code == 404 and _denials("oscar") == before + 1
    assert not request.decisions.exists()


def test_a_row_and_the_count_re_read_alone(company, requests_):
    bob = client_for(fresh(company.bob))
    request = requests_["by_agent"]
    row = bob.get(reverse("inbox:row", args=[request.pk])).content.decode()
    assert row.startswith("<li") and "yours to decide" in row
    assert ">2</span>" in bob.get(reverse("inbox:count")).content.decode()
    oscar = client_for(fresh(company.oscar))
    assert oscar.get(reverse("inbox:row", args=[request.pk])).content == b""


def test_a_workflow_version_shows_its_diff_against_the_live_one(company):
    from orchestrator import services as workflows

    gina = fresh(company.gina)
    services.add_member(company.admins, company.alice, actor=company.gina)
    version = workflows.publish_version(
        company.payments,
        {"steps": [{"id": "only", "type": "noop"}, {"id": "two", "type": "noop"}]},
        actor=gina,
        note="a second step",
    )
    alice = client_for(fresh(company.alice))
    page = alice.get(reverse("inbox:request", args=[version.approval_request_id]))
    body = page.content.decode()
    assert "Changes against the live version" in body
    assert '<span class="add">' in body and "Make version 2 of workflow payments live" in body


def _page_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def _rule_queries(user) -> int:
    """The queries of the eligibility rule alone (what the page adds must not grow)."""
    forget_decidable(user)
    with CaptureQueriesContext(connection) as queries:
        list(ApprovalRequest.objects.restrict(user, "decide").values_list("pk", flat=True))
    return len(queries)


def _more_refunds(company, count: int) -> None:
    for n in range(count):
        services.request_approval(
            action="tool.refund",
            approval_rule=company.rule,
            arguments={"amount": 10 + n},
            target=company.payments,
            requested_by=company.agent,
        )


@pytest.mark.parametrize("tab", ["mine", "all"])
def test_the_inbox_adds_no_query_per_row(company, requests_, tab):
    bob = fresh(company.bob)
    client = client_for(bob)
    url = reverse("inbox:index") + f"?tab={tab}"
    client.get(url)  # warm the session and content types
    small = _page_queries(client, url) - _rule_queries(bob)
    _more_refunds(company, 5)
    large = _page_queries(client, url) - _rule_queries(bob)
    assert large == small


def test_the_rule_asks_no_query_per_pending_request(company, requests_):
    """What bob may decide is read in as many queries for 2 pending requests as for 8, and is
    exactly what the rule says of each request alone (his own request is not among them)."""
    bob = fresh(company.bob)
    _rule_queries(bob)  # the first read warms what any read caches (content types)
    few = _rule_queries(bob)
    _more_refunds(company, 5)
    own = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 1},
        target=company.payments,
        requested_by=company.bob,
    )
    assert _rule_queries(bob) == few
    decidable = set(ApprovalRequest.objects.restrict(bob, "decide").values_list("pk", flat=True))
    pending = ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING)
    assert decidable == {request.pk for request in pending if may_decide(bob, request)}
    assert own.pk not in decidable and requests_["by_agent"].pk in decidable
    assert len(decidable) == 7


def test_a_request_page_costs_no_query_per_decision(company, requests_):
    bob = fresh(company.bob)
    request = requests_["by_agent"]
    client = client_for(bob)
    url = reverse("inbox:request", args=[request.pk])
    client.get(url)
    before = _page_queries(client, url) - _rule_queries(bob)
    assert before < 80
    services.decide_approval(request, user=fresh(company.alice), decision="approve")
    # ...approved now (one approval needed): the page shows the decision and no form.
    after = _page_queries(client, url) - _rule_queries(bob)
    assert after <= before


def test_anonymous_visitors_sign_in_first(db):
    response = Client().get(reverse("inbox:index"))
    assert response.status_code == 302 and response["Location"].startswith("/login/")
