"""Escalations in the approvals inbox through the authorisation matrix of the company.

On top of the company fixture: `unowned`, an escalation the system raised for the managers on
no run, and `on_mayas_run`, one on the run maya started (separation of duties keeps her from
resolving it). Maya is the only manager. A cell says what a page answers: "+" shown (200),
"4" not visible (404, audited once), "L" sent to the login page (no session for agents and
integrations). Resolutions go through the resolution service the API calls, so they are
audited and announced as there.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.inbox import forget_decidable, resolvable_ids
from governance.models import (
    ApprovalRequest,
    Escalation,
    EscalationStatus,
    LiveEvent,
    Resolution,
)
from tests.governance.conftest import fresh
from tests.governance.test_admin import PRINCIPALS, client_for

COLUMNS = ["unowned", "on_mayas_run"]
PAGE = {
    "gina": "44",
    "alice": "44",
    "bob": "44",
    "maya": "++",
    "oscar": "44",
    "integration": "LL",
    "agent": "LL",
}
MINE = {"gina": set(), "alice": set(), "bob": set(), "maya": {"unowned"}, "oscar": set()}
WHY_NOT = {("maya", "on_mayas_run"): "You started the run this escalation is about"}


@pytest.fixture
def escalations(company):
    """The two escalations of the table."""
    unowned = services.open_escalation(
        reason="low_confidence",
        summary="the triage agent is 40% sure",
        context={"agent": "triage", "result": {"severity": "sev2"}, "confidence": 0.4},
        role=company.managers,
        raised_by=SYSTEM,
    )
    on_mayas_run = services.open_escalation(
        reason="step_failed",
        summary="step call failed",
        context={"error": {"type": "ToolError", "message": "<script>alert(1)</script>"}},
        role=company.managers,
        run_id=company.run.pk,
        step_id="call",
        raised_by=SYSTEM,
    )
    return {"unowned": unowned, "on_mayas_run": on_mayas_run}


def _listed(response, escalations) -> set[str]:
    ids = {int(pk) for pk in re.findall(r'id="esc-row-(\d+)"', response.content.decode())}
    return {name for name, escalation in escalations.items() if escalation.pk in ids}


def _outcome(response) -> str:
    if response.status_code == 302 and response["Location"].startswith("/login/"):
        return "L"
    return {200: "+", 404: "4", 403: "3"}.get(response.status_code, str(response.status_code))


def _denials(username: str) -> int:
    return AuditEntry.objects.filter(action="governance.access_denied", actor_name=username).count()


def _resolve(client, escalation, resolution, **data):
    return client.post(
        reverse("inbox:resolve", args=[escalation.pk]), {"resolution": resolution, **data}
    )


@pytest.mark.parametrize("name", list(MINE))
def test_waiting_for_me_lists_exactly_the_escalations_the_person_may_resolve(
    company, escalations, name
):
    user = fresh(getattr(company, name))
    response = client_for(user).get(reverse("inbox:index"))
    assert response.status_code == 200
    assert _listed(response, escalations) == MINE[name]
    may = {label for label, e in escalations.items() if services.can(user, "resolve", e)}
    assert may == MINE[name]


@pytest.mark.parametrize("name", PRINCIPALS)
def test_an_escalation_page_through_the_matrix(company, escalations, name):
    user = fresh(getattr(company, name))
    client = client_for(user)
    for column, expected in zip(COLUMNS, PAGE[name], strict=True):
        before = _denials(user.get_username())
        response = client.get(reverse("inbox:escalation", args=[escalations[column].pk]))
        assert _outcome(response) == expected, (name, column)
        if expected == "4":
            assert _denials(user.get_username()) == before + 1
        if expected == "+":
            body = response.content.decode()
            why = WHY_NOT.get((name, column))
            if why:
                assert why in body and 'name="resolution"' not in body
                assert "Separation of duties" in body
            else:
                assert 'value="take_over"' in body and 'value="retry"' in body
                assert 'value="stop"' in body


@pytest.mark.parametrize("name", PRINCIPALS)
def test_resolving_through_the_matrix_is_the_services_answer(company, escalations, name):
    user = fresh(getattr(company, name))
    client = client_for(user)
    for column in COLUMNS:
        escalation = escalations[column]
        expected = services.can(user, "resolve", escalation)
        response = _resolve(client, escalation, "retry", comment="again")
        escalation.refresh_from_db()
        assert (escalation.status == EscalationStatus.RESOLVED) == expected, (name, column)
        if PAGE[name][COLUMNS.index(column)] == "4":
            assert response.status_code == 404
        elif PAGE[name][COLUMNS.index(column)] == "L":
            assert _outcome(response) == "L"
        else:
            assert response.status_code == 302


def test_the_page_says_what_the_escalation_needs_and_offers_the_agents_result(company, escalations):
    maya = client_for(fresh(company.maya))
    body = maya.get(reverse("inbox:escalation", args=[escalations["unowned"].pk])).content
    page = body.decode()
    assert "The agent triage is not confident enough in its result" in page
    assert "&quot;severity&quot;: &quot;sev2&quot;" in page  # the take-over starts from it
    assert "maya" in page  # who may resolve
    failed = maya.get(reverse("inbox:escalation", args=[escalations["on_mayas_run"].pk]))
    text = failed.content.decode()
    assert "The step call failed for good" in text
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text


def test_taking_over_records_the_result_audits_and_announces(company, escalations):
    maya = fresh(company.maya)
    client = client_for(maya)
    escalation = escalations["unowned"]
    response = _resolve(
        client,
        escalation,
        "take_over",
        result='{"severity": "sev1"}',
        comment="it is down",
        back="tab=mine",
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("inbox:index") + "?tab=mine"  # nothing else waits
    escalation.refresh_from_db()
    assert (escalation.status, escalation.resolution) == ("resolved", Resolution.TAKE_OVER)
    assert escalation.result == {"severity": "sev1"} and escalation.resolved_by == maya
    entry = AuditEntry.objects.get(action="governance.escalation.resolved", actor_name="maya")
    assert entry.target_id == str(escalation.pk)
    assert LiveEvent.objects.filter(
        event_type="escalation.resolved", target_id=str(escalation.pk)
    ).exists()
    page = client.get(response["Location"]).content.decode()
    assert f"Escalation #{escalation.pk} taken over by you" in page


def test_taking_over_without_a_result_is_refused_and_audited(company, escalations):
    maya = client_for(fresh(company.maya))
    escalation = escalations["unowned"]
    response = _resolve(maya, escalation, "take_over", result="")
    assert response.status_code == 302
    page = maya.get(response["Location"]).content.decode()
    assert "Not recorded: Taking over needs the result you supply." in page
    escalation.refresh_from_db()
    assert escalation.status == EscalationStatus.OPEN
    assert AuditEntry.objects.filter(
        action="governance.escalation.refused", actor_name="maya"
    ).exists()


def test_a_result_that_is_not_json_is_shown_again(company, escalations):
    maya = client_for(fresh(company.maya))
    response = _resolve(maya, escalations["unowned"], "take_over", result="{not json")
    assert response.status_code == 422
    assert 'id="result-error"' in response.content.decode()
    assert Escalation.objects.get(pk=escalations["unowned"].pk).status == EscalationStatus.OPEN


def test_the_run_initiator_is_refused_with_the_reason(company, escalations):
    maya = client_for(fresh(company.maya))
    escalation = escalations["on_mayas_run"]
    response = _resolve(maya, escalation, "stop")
    page = maya.get(response["Location"]).content.decode()
    assert "Not recorded: Separation of duties" in page
    assert Escalation.objects.get(pk=escalation.pk).status == EscalationStatus.OPEN
    assert AuditEntry.objects.filter(
        action="governance.escalation.refused", actor_name="maya", target_id=str(escalation.pk)
    ).exists()


@pytest.mark.parametrize("resolution", [Resolution.RETRY, Resolution.STOP])
def test_send_back_and_stop_are_recorded(company, escalations, resolution):
    escalation = escalations["unowned"]
    _resolve(client_for(fresh(company.maya)), escalation, resolution)
    escalation.refresh_from_db()
    assert (escalation.status, escalation.resolution) == ("resolved", resolution)


def test_the_other_tabs_and_the_filters(company, escalations):
    maya = client_for(fresh(company.maya))
    roles = maya.get(reverse("inbox:index"), {"tab": "roles"})
    assert _listed(roles, escalations) == {"unowned", "on_mayas_run"}
    row = re.search(
        rf'id="esc-row-{escalations["on_mayas_run"].pk}".*?</li>', roles.content.decode(), re.S
    )
    assert "yours to resolve" not in row.group(0)
    assert _listed(maya.get(reverse("inbox:index"), {"tab": "decided"}), escalations) == set()
    _resolve(maya, escalations["unowned"], "retry")
    decided = maya.get(reverse("inbox:index"), {"tab": "decided"})
    assert _listed(decided, escalations) == {"unowned"}
    # A filter only requests have leaves no escalation in the list.
    risky = maya.get(reverse("inbox:index"), {"tab": "all", "risk": "high"})
    assert _listed(risky, escalations) == set()


def test_an_escalation_row_and_the_count_re_read_alone(company, escalations):
    maya = client_for(fresh(company.maya))
    escalation = escalations["unowned"]
    row = maya.get(reverse("inbox:escalation-row", args=[escalation.pk])).content.decode()
    assert row.startswith("<li") and "yours to resolve" in row
    assert ">1</span>" in maya.get(reverse("inbox:count")).content.decode()
    oscar = client_for(fresh(company.oscar))
    assert oscar.get(reverse("inbox:escalation-row", args=[escalation.pk])).content == b""


def _page_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def _rule_queries(user) -> int:
    """The queries of the two eligibility rules alone (what the page adds must not grow)."""
    user = fresh(user)  # as a request's user: no permission cache yet
    forget_decidable(user)
    with CaptureQueriesContext(connection) as queries:
        list(ApprovalRequest.objects.restrict(user, "decide").values_list("pk", flat=True))
        resolvable_ids(user)
    return len(queries)


@pytest.mark.parametrize("tab", ["mine", "all"])
def test_escalations_add_no_query_per_row(company, escalations, tab):
    maya = fresh(company.maya)
    client = client_for(maya)
    url = reverse("inbox:index") + f"?tab={tab}"
    client.get(url)
    small = _page_queries(client, url) - _rule_queries(maya)
    for n in range(5):
        services.open_escalation(
            reason="step_failed", summary=f"#{n}", role=company.managers, raised_by=SYSTEM
        )
    large = _page_queries(client, url) - _rule_queries(maya)
    assert large == small


def test_an_escalation_page_costs_a_bounded_number_of_queries(company, escalations):
    maya = fresh(company.maya)
    client = client_for(maya)
    url = reverse("inbox:escalation", args=[escalations["unowned"].pk])
    client.get(url)
    before = _page_queries(client, url) - _rule_queries(maya)
    assert before < 80
    for n in range(5):
        services.open_escalation(
            reason="step_failed", summary=f"#{n}", role=company.managers, raised_by=SYSTEM
        )
    assert _page_queries(client, url) - _rule_queries(maya) == before
