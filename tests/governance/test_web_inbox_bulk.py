"""Bulk approval in the inbox: one low-risk class only, each item on its own digest.

The class (services.bulk_class): the same action, the same policy verdict (policy, its
version, the rule and its effect) and the same approval rule at the same version, at low risk.
Each item goes through decide_approval with the digest the person was shown, in its own
transaction, and is audited on its own; the page says per item what happened.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from audit.models import AuditEntry
from governance import services
from governance.models import ApprovalRequest, ApprovalStatus
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for


def _refund(company, amount, *, risk="low", action="tool.refund", decision=None):
    return services.request_approval(
        action=action,
        approval_rule=company.rule,
        arguments={"amount": amount},
        target=company.payments,
        requested_by=company.agent,
        risk=risk,
        decision=decision,
    )


def _verdict(company, version):
    return services.PolicyDecision(
        effect="require_approval",
        reason="refunds need an approver",
        policy_id=company.policy.pk,
        policy_slug=company.policy.slug,
        policy_version=version,
        rule_name="refunds",
        approval_rule_id=company.rule.pk,
        risk="low",
    )


@pytest.fixture
def refunds(company):
    """Three low-risk refunds of one class."""
    return [_refund(company, amount) for amount in (10, 20, 30)]


def _items(*requests, digests=None):
    digests = digests or {}
    return [f"{r.pk}:{digests.get(r.pk, r.arguments_digest)}" for r in requests]


def _bulk(client, items):
    return client.post(reverse("inbox:bulk"), {"items": items, "back": "tab=mine"})


def _decided_entries(request) -> int:
    return AuditEntry.objects.filter(
        action="governance.approval.decided", target_id=str(request.pk), actor_name="bob"
    ).count()


def _outcomes(response) -> dict[int, str]:
    body = response.content.decode()
    found = re.findall(r'<li id="bulk-(\d+)" class="(approved|refused)"', body)
    return {int(pk): outcome for pk, outcome in found}


def test_the_class_is_action_policy_verdict_and_approval_rule_version_at_low_risk(company):
    base = _refund(company, 1, decision=_verdict(company, 1))
    same = _refund(company, 2, decision=_verdict(company, 1))
    assert services.bulk_class(base) == services.bulk_class(same) is not None
    assert services.bulk_class(_refund(company, 3, decision=_verdict(company, 2))) != (
        services.bulk_class(base)
    )
    other_action = _refund(company, 4, action="tool.pay", decision=_verdict(company, 1))
    assert services.bulk_class(other_action) != services.bulk_class(base)
    assert services.bulk_class(_refund(company, 5, risk="medium")) is None
    services.update_approval_rule(company.rule, sla_seconds=600, actor=company.gina, reason="x")
    newer_rule = _refund(company, 6, decision=_verdict(company, 1))
    assert services.bulk_class(newer_rule) != services.bulk_class(base)


def test_bob_approves_three_at_once_each_audited_on_its_own(company, refunds):
    bob = client_for(fresh(company.bob))
    response = _bulk(bob, _items(*refunds))
    assert response.status_code == 200
    assert _outcomes(response) == {r.pk: "approved" for r in refunds}
    assert "3 of 3 approved by you" in response.content.decode()
    for request in refunds:
        request.refresh_from_db()
        assert request.status == ApprovalStatus.APPROVED
        assert _decided_entries(request) == 1
        assert request.decisions.get().arguments_digest == request.arguments_digest


def test_one_stale_digest_is_refused_alone(company, refunds):
    bob = client_for(fresh(company.bob))
    stale = refunds[1]
    response = _bulk(bob, _items(*refunds, digests={stale.pk: "0" * 64}))
    outcomes = _outcomes(response)
    assert outcomes == {refunds[0].pk: "approved", stale.pk: "refused", refunds[2].pk: "approved"}
    assert "The arguments changed since you looked" in response.content.decode()
    stale.refresh_from_db()
    assert stale.status == ApprovalStatus.PENDING and not stale.decisions.exists()
    assert AuditEntry.objects.filter(
        action="governance.approval.refused", target_id=str(stale.pk), actor_name="bob"
    ).exists()


def test_one_already_final_is_refused_with_its_reason(company, refunds):
    services.decide_approval(refunds[0], user=fresh(company.alice), decision="approve")
    response = _bulk(client_for(fresh(company.bob)), _items(*refunds))
    assert _outcomes(response)[refunds[0].pk] == "refused"
    assert "is already approved" in response.content.decode()
    assert [_decided_entries(r) for r in refunds] == [0, 1, 1]


def test_a_mixed_batch_is_refused_whole_and_audited(company, refunds):
    medium = _refund(company, 99, risk="medium")
    bob = client_for(fresh(company.bob))
    response = _bulk(bob, _items(refunds[0], medium))
    assert response.status_code == 302
    page = bob.get(response["Location"]).content.decode()
    assert "Nothing approved: Bulk approval takes requests of one low-risk class only" in page
    assert not ApprovalRequest.objects.filter(decisions__isnull=False).exists()
    assert AuditEntry.objects.filter(
        action="governance.approval.bulk_refused", actor_name="bob"
    ).exists()
    other = _refund(company, 5, action="tool.pay")
    _bulk(bob, _items(refunds[0], other))
    assert not ApprovalRequest.objects.filter(decisions__isnull=False).exists()


def test_requests_the_person_may_not_see_are_refused_as_not_visible(company, refunds):
    oscar = client_for(fresh(company.oscar))
    before = AuditEntry.objects.filter(action="governance.access_denied", actor_name="oscar")
    count = before.count()
    response = _bulk(oscar, _items(*refunds))
    assert set(_outcomes(response).values()) == {"refused"}
    assert not ApprovalRequest.objects.filter(decisions__isnull=False).exists()
    assert before.count() == count + len(refunds)


def test_the_list_offers_the_boxes_only_where_a_class_has_two(company, refunds):
    lone_medium = _refund(company, 77, risk="medium")
    body = client_for(fresh(company.bob)).get(reverse("inbox:index")).content.decode()
    assert 'id="bulk-form"' in body
    for request in refunds:
        assert f'value="{request.pk}:{request.arguments_digest}"' in body
    assert f'value="{lone_medium.pk}:' not in body
    # Alice may decide them too, but oscar's inbox has nothing to offer.
    oscar = client_for(fresh(company.oscar)).get(reverse("inbox:index")).content.decode()
    assert 'id="bulk-form"' not in oscar


def test_a_batch_that_is_not_pairs_is_refused(company, refunds):
    bob = client_for(fresh(company.bob))
    response = _bulk(bob, [f"{refunds[0].pk}:short"])
    page = bob.get(response["Location"]).content.decode()
    assert "Nothing approved: Not a request and its digest" in page
    assert not refunds[0].decisions.exists()
