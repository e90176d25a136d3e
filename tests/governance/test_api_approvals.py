"""The approvals and escalations API: inboxes by the eligibility rule, reads, decisions.

The matrix reuses test_matrix_decisions' company (gina made herself a decider, which does not
count): per principal and object, a cell is three characters: listed in the caller's inbox
(`+`/`-`), GET (`+` 200, `4` 404), POST of a decision or resolution (`+` 200, `3` 403 with the
eligibility rule's code, `4` 404). Every refusal is audited once, under the request's id.
"""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta, timezone
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.models import ApprovalRequest, ApprovalStatus, Escalation, EscalationStatus
from tests.governance.conftest import fresh
from tests.governance.test_admin import PRINCIPALS
from tests.governance.test_api_tokens import _problem, bearer, issuer  # noqa: F401
from tests.governance.test_matrix_decisions import EXPECTED as CODES
from tests.governance.test_matrix_decisions import doors  # noqa: F401

pytestmark = pytest.mark.django_db

MATRIX = {
    "gina": {"by_agent": "-+3", "by_alice": "-+3", "on_mayas_run": "-+3"},
    "alice": {"by_agent": "+++", "by_alice": "-+3", "on_mayas_run": "-44"},
    "bob": {"by_agent": "+++", "by_alice": "+++", "on_mayas_run": "-44"},
    "maya": {"by_agent": "-44", "by_alice": "-44", "on_mayas_run": "-+3"},
    "oscar": {"by_agent": "-44", "by_alice": "-44", "on_mayas_run": "-44"},
    "integration": {"by_agent": "-44", "by_alice": "-44", "on_mayas_run": "-44"},
    "agent": {"by_agent": "-+3", "by_alice": "-44", "on_mayas_run": "-44"},
}


def api(user) -> APIClient:
    """A client authenticated as `user` (tokens are tested on their own below)."""
    client = APIClient()
    client.force_authenticate(user)
    return client


def _paths(obj) -> tuple[str, str, str]:
    """Return the inbox, the object's and its write's paths."""
    if isinstance(obj, ApprovalRequest):
        return "/api/v1/approvals", f"/api/v1/approvals/{obj.pk}", "decision"
    return "/api/v1/escalations", f"/api/v1/escalations/{obj.pk}", "resolution"


def _write(obj) -> dict[str, Any]:
    """The body of a decision or resolution on `obj`."""
    if isinstance(obj, ApprovalRequest):
        return {"decision": "approve", "reason": "fine", "digest": obj.arguments_digest}
    return {"outcome": "retry", "reason": "try again"}


def _audited(user, response) -> list[str]:
    """Return the actions of the refusals audited for `user` under the response's request id."""
    entries = AuditEntry.objects.filter(request_id=response["X-Request-ID"], actor_id=user.pk)
    return [e.action for e in entries if e.action.endswith(("refused", "access_denied"))]


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


@pytest.mark.parametrize("actor", PRINCIPALS)
def test_every_endpoint_through_the_matrix(company, doors, actor):  # noqa: F811
    user = fresh(getattr(company, actor))
    client = api(user)
    for column, expected in MATRIX[actor].items():
        obj = doors[column]
        inbox, path, write = _paths(obj)
        listed = obj.pk in _ids(client.get(inbox))
        got = "+" if listed else "-"

        read = client.get(path)
        got += {200: "+", 404: "4"}[read.status_code]
        if read.status_code == 404:
            _problem(read, 404)
            assert _audited(user, read) == ["governance.access_denied"]
        else:
            answer = read.json()["can_decide" if write == "decision" else "can_resolve"]
            assert answer["allowed"] == (expected[2] == "+")
            assert answer["code"] == ("" if answer["allowed"] else CODES[actor][column])

        posted = client.post(f"{path}/{write}", _write(obj), format="json")
        got += {200: "+", 403: "3", 404: "4"}[posted.status_code]
        if posted.status_code == 403:
            body = _problem(posted, 403)
            assert body["type"].endswith(f"refused/{CODES[actor][column]}"), body
            kind = "approval" if write == "decision" else "escalation"
            assert _audited(user, posted) == [f"governance.{kind}.refused"]
        elif posted.status_code == 404:
            _problem(posted, 404)
            assert _audited(user, posted) == ["governance.access_denied"]
        else:
            assert _audited(user, posted) == []
        assert got == expected, (column, got)
        # The inbox lists exactly what the caller may decide: the decision's own rule.
        assert listed == (expected[2] == "+"), column


def test_the_detail_says_exactly_what_is_approved(company, doors):  # noqa: F811
    request = doors["by_agent"]
    response = api(fresh(company.bob)).get(f"/api/v1/approvals/{request.pk}")
    assert response.status_code == 200
    body = response.json()
    canonical = body["arguments_canonical"]
    assert body["arguments"] == {"amount": 900} and canonical == '{"amount":900}'
    assert body["digest"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert response["ETag"] == f'"{body["digest"]}"'
    assert body["target"] == {
        "type": "orchestrator.workflow",
        "id": str(company.payments.pk),
        "repr": str(company.payments),
    }
    assert body["requested_by"] == "payments-agent" and body["accountable_owner"] == "maya"
    assert body["approvals"] == {"given": 0, "required": 1}
    assert body["basis"]["approval_rule"] == "payments"
    assert body["basis"]["approval_rule_version"] == 1
    assert body["can_decide"] == {
        "allowed": True,
        "code": "",
        "reason": "",
        "role": "Approvers",
        "on_behalf_of": None,
    }
    assert body["decisions"] == []


def test_a_decision_is_recorded_and_shown(company, doors):  # noqa: F811
    request = doors["by_agent"]
    bob = fresh(company.bob)
    response = api(bob).post(
        f"/api/v1/approvals/{request.pk}/decision",
        {"decision": "approve", "reason": "within budget", "digest": request.arguments_digest},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == ApprovalStatus.APPROVED and body["approvals"]["given"] == 1
    [decision] = body["decisions"]
    assert decision["decided_by"] == "bob" and decision["reason"] == "within budget"
    assert decision["digest"] == request.arguments_digest
    assert body["can_decide"]["code"] == "already_decided"
    entry = AuditEntry.objects.get(action="governance.approval.decided", target_id=request.pk)
    assert entry.request_id == response["X-Request-ID"]
    # Decided, it leaves the inbox and shows under `decided`.
    assert request.pk not in _ids(api(bob).get("/api/v1/approvals"))
    assert _ids(api(bob).get("/api/v1/approvals?scope=decided")) == [request.pk]
    again = api(bob).post(
        f"/api/v1/approvals/{request.pk}/decision",
        {"decision": "approve", "digest": request.arguments_digest},
        format="json",
    )
    assert _problem(again, 409)["type"].endswith("refused/already_decided")


def test_the_inbox_follows_eligibility_through_two_approvals(company):
    services.add_member(company.approvers, company.gina, actor=SYSTEM)
    request = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 50_000},
        target=company.payments,
        risk="critical",
        requested_by=company.agent,
    )
    alice, bob, gina = fresh(company.alice), fresh(company.bob), fresh(company.gina)
    for person in (alice, bob, gina):
        assert request.pk in _ids(api(person).get("/api/v1/approvals"))
    first = api(alice).post(
        f"/api/v1/approvals/{request.pk}/decision",
        {"decision": "approve", "digest": request.arguments_digest},
        format="json",
    )
    assert first.status_code == 200 and first.json()["status"] == ApprovalStatus.PENDING
    assert first.json()["approvals"] == {"given": 1, "required": 2}
    # alice decided: not in her inbox any more; bob holds her delegation, but she decided.
    assert request.pk not in _ids(api(alice).get("/api/v1/approvals"))
    assert request.pk in _ids(api(bob).get("/api/v1/approvals"))
    assert request.pk in _ids(api(alice).get("/api/v1/approvals?scope=all"))
    repeated = api(alice).post(
        f"/api/v1/approvals/{request.pk}/decision",
        {"decision": "approve", "digest": request.arguments_digest},
        format="json",
    )
    assert _problem(repeated, 409)["type"].endswith("refused/already_decided_by_you")
    second = api(gina).post(
        f"/api/v1/approvals/{request.pk}/decision",
        {"decision": "approve", "digest": request.arguments_digest},
        format="json",
    )
    assert second.status_code == 200 and second.json()["status"] == ApprovalStatus.APPROVED
    assert request.pk not in _ids(api(bob).get("/api/v1/approvals"))


def test_a_stale_digest_is_refused_409_in_the_body_and_412_by_if_match(company, doors):  # noqa: F811
    request = doors["by_agent"]
    bob = fresh(company.bob)
    path = f"/api/v1/approvals/{request.pk}/decision"
    stale = "0" * 64
    body = _problem(
        api(bob).post(path, {"decision": "approve", "digest": stale}, format="json"), 409
    )
    assert body["type"].endswith("refused/arguments_changed")
    refused = AuditEntry.objects.filter(action="governance.approval.refused", actor_id=bob.pk)
    assert refused.count() == 1 and refused.get().request_id == body["request_id"]
    precondition = api(bob).post(
        path, {"decision": "approve"}, format="json", HTTP_IF_MATCH=f'"{stale}"'
    )
    assert _problem(precondition, 412)["type"].endswith("refused/arguments_changed")
    disagreeing = api(bob).post(
        path,
        {"decision": "approve", "digest": request.arguments_digest},
        format="json",
        HTTP_IF_MATCH=f'"{stale}"',
    )
    assert "digest" in _problem(disagreeing, 422)["errors"]
    missing = api(bob).post(path, {"decision": "approve"}, format="json")
    assert "digest" in _problem(missing, 422)["errors"]
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.PENDING
    etag = api(bob).get(f"/api/v1/approvals/{request.pk}")["ETag"]
    fine = api(bob).post(path, {"decision": "approve"}, format="json", HTTP_IF_MATCH=etag)
    assert fine.status_code == 200 and fine.json()["status"] == ApprovalStatus.APPROVED


def test_a_rejection_needs_a_reason(company, doors):  # noqa: F811
    request = doors["by_agent"]
    bob = fresh(company.bob)
    path = f"/api/v1/approvals/{request.pk}/decision"
    for decision in ("reject", "request_changes"):
        body = _problem(
            api(bob).post(
                path,
                {"decision": decision, "reason": "  ", "digest": request.arguments_digest},
                format="json",
            ),
            422,
        )
        assert body["type"].endswith("refused/reason")
        assert body["errors"]["reason"] == [
            "Say why you reject: the requester and the audit read it."
            if decision == "reject"
            else "Say why you ask for changes: the requester and the audit read it."
        ]
    assert not request.decisions.exists()
    rejected = api(bob).post(
        path,
        {"decision": "reject", "reason": "not ours", "digest": request.arguments_digest},
        format="json",
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == ApprovalStatus.REJECTED


def test_self_approval_is_refused_with_its_code(company, doors):  # noqa: F811
    request = doors["by_alice"]
    alice = fresh(company.alice)
    response = api(alice).post(
        f"/api/v1/approvals/{request.pk}/decision",
        {"decision": "approve", "digest": request.arguments_digest},
        format="json",
    )
    body = _problem(response, 403)
    assert body["type"].endswith("refused/requester") and "Separation of duties" in body["detail"]
    entry = AuditEntry.objects.get(action="governance.approval.refused", actor_id=alice.pk)
    assert entry.request_id == body["request_id"]
    assert not request.decisions.exists()


def test_an_escalation_is_resolved_by_an_eligible_person(company, doors):  # noqa: F811
    escalation = doors["on_mayas_run"]
    services.add_member(company.managers, company.bob, actor=SYSTEM)
    bob = fresh(company.bob)
    assert _ids(api(bob).get("/api/v1/escalations")) == [escalation.pk]
    path = f"/api/v1/escalations/{escalation.pk}/resolution"
    no_result = _problem(api(bob).post(path, {"outcome": "take_over"}, format="json"), 422)
    assert no_result["type"].endswith("refused/no_result")
    unknown = _problem(api(bob).post(path, {"outcome": "shrug"}, format="json"), 422)
    assert "outcome" in unknown["errors"]
    done = api(bob).post(
        path,
        {"outcome": "take_over", "result": {"refund": 20}, "reason": "I checked"},
        format="json",
    )
    assert done.status_code == 200, done.content
    body = done.json()
    assert body["status"] == EscalationStatus.RESOLVED and body["outcome"] == "take_over"
    assert body["result"] == {"refund": 20} and body["resolved_by"] == "bob"
    assert body["can_resolve"]["code"] == "already_resolved"
    assert _ids(api(bob).get("/api/v1/escalations")) == []
    assert _ids(api(bob).get("/api/v1/escalations?scope=decided")) == [escalation.pk]
    again = api(bob).post(path, {"outcome": "stop"}, format="json")
    assert _problem(again, 409)["type"].endswith("refused/already_resolved")
    assert Escalation.objects.get(pk=escalation.pk).resolution == "take_over"


def test_filters_narrow_the_inbox(company, doors):  # noqa: F811
    bob = fresh(company.bob)
    client = api(bob)
    by_agent, by_alice = doors["by_agent"], doors["by_alice"]
    assert set(_ids(client.get("/api/v1/approvals"))) == {by_agent.pk, by_alice.pk}
    assert _ids(client.get("/api/v1/approvals?agent=payments-agent")) == [by_agent.pk]
    assert _ids(client.get("/api/v1/approvals?agent=alice")) == []
    workflow = company.payments.slug
    assert len(_ids(client.get(f"/api/v1/approvals?workflow={workflow}"))) == 2
    assert _ids(client.get(f"/api/v1/approvals?workflow={company.hr.slug}")) == []
    assert _ids(client.get("/api/v1/approvals?status=approved&scope=all")) == []
    assert len(_ids(client.get("/api/v1/approvals?action=tool.refund&risk=medium"))) == 2
    due = by_agent.due_at.isoformat().replace("+00:00", "Z")
    assert _ids(client.get("/api/v1/approvals", {"due_before": due})) == []
    bad = client.get("/api/v1/approvals?scope=everything")
    assert "scope" in _problem(bad, 400)["errors"]


def test_a_time_in_any_utc_offset_filters_the_inbox_and_one_out_of_range_is_400(company, doors):  # noqa: F811
    # Python takes offsets up to ±23:59, PostgreSQL only ±15:59: the filter sends UTC (was 500).
    client = api(fresh(company.bob))
    by_agent, by_alice = doors["by_agent"], doors["by_alice"]
    far_east = timezone(timedelta(hours=17, minutes=45))
    later = (max(by_agent.due_at, by_alice.due_at) + timedelta(hours=1)).astimezone(far_east)
    due = client.get("/api/v1/approvals", {"due_before": later.isoformat()})
    assert set(_ids(due)) == {by_agent.pk, by_alice.pk}
    opened = client.get(
        "/api/v1/escalations", {"scope": "all", "opened_before": "1970-01-01T00:00+20:16"}
    )
    assert _ids(opened) == []
    for path, field in (
        ("/api/v1/approvals", "due_before"),
        ("/api/v1/escalations", "opened_before"),
    ):
        nowhere = client.get(path, {field: "0001-01-01T00:00:00+10:00"})
        assert field in _problem(nowhere, 400)["errors"]


@pytest.mark.parametrize("path", ["/api/v1/approvals", "/api/v1/escalations"])
def test_a_cursor_the_api_did_not_write_is_a_400(company, path):
    body = _problem(api(fresh(company.bob)).get(path, {"cursor": "escalation"}), 400)
    assert "cursor" in body["errors"]


def _requests(company, count: int) -> None:
    for amount in range(count):
        services.request_approval(
            action="tool.refund",
            approval_rule=company.rule,
            arguments={"amount": amount},
            target=company.payments,
            requested_by=company.agent,
        )


def _queries(client, path: str) -> int:
    """Count the queries of one page (after a first call that fills the permission caches)."""
    assert client.get(path).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


@pytest.mark.parametrize("path", ["/api/v1/approvals?scope=all", "/api/v1/escalations?scope=all"])
def test_list_queries_do_not_grow_with_the_rows(company, path):
    services.grant(company.admins, "governance.view_approvalrequest", actor=SYSTEM)
    services.grant(company.admins, "governance.view_escalation", actor=SYSTEM)
    client = api(fresh(company.gina))
    _requests(company, 2)
    for _ in range(2):
        services.open_escalation(reason="low_confidence", role=company.managers, raised_by=SYSTEM)
    few = _queries(client, path)
    _requests(company, 6)
    for _ in range(6):
        services.open_escalation(reason="low_confidence", role=company.managers, raised_by=SYSTEM)
    assert _queries(client, path) == few


def test_tokens_read_the_inbox_but_a_read_only_one_never_decides(company, doors, issuer):  # noqa: F811
    request = doors["by_agent"]
    row, token = services.issue_token(company.bob, actor=issuer, name="bob's phone", read_only=True)
    client = bearer(token)
    assert request.pk in _ids(client.get("/api/v1/approvals"))
    for path, body in (
        (f"/api/v1/approvals/{request.pk}/decision", _write(request)),
        (f"/api/v1/escalations/{doors['on_mayas_run'].pk}/resolution", {"outcome": "retry"}),
    ):
        response = client.post(path, body, format="json")
        assert "read-only" in _problem(response, 403)["detail"]
        denied = AuditEntry.objects.get(request_id=response["X-Request-ID"])
        assert denied.action == "governance.access_denied" and denied.target_id == str(row.pk)
    assert not request.decisions.exists()
    services.revoke_token(row, actor=issuer, reason="phone lost")
    _problem(client.get("/api/v1/approvals"), 401)
    _problem(client.get(f"/api/v1/escalations/{doors['on_mayas_run'].pk}"), 401)


def test_the_schema_validates():
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out, stderr=io.StringIO())
    schema = out.getvalue()
    for path in ("/api/v1/approvals/{id}/decision:", "/api/v1/escalations/{id}/resolution:"):
        assert path in schema
