"""The inbox in Chromium: bob signs in, opens his inbox, approves one request with the key `a`,
rejects the next with a reason, and each time the next item opens by itself."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from governance import services
from governance.models import ApprovalRequest, ApprovalStatus

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _refunds(company, amounts):
    return [
        services.request_approval(
            action="tool.refund",
            approval_rule=company.rule,
            arguments={"amount": amount, "note": "<script>window.pwned = 1</script>"},
            target=company.payments,
            requested_by=company.agent,
        )
        for amount in amounts
    ]


def test_bob_approves_one_rejects_one_and_the_next_item_opens(
    transactional_db, live_server, company, chromium
):
    first, second, third = _refunds(company, [100, 200, 300])
    context = chromium.new_context(
        timezone_id="Europe/Paris", viewport={"width": 1200, "height": 900}
    )
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "bob")
    page.fill("#id_password", "pw-bob-123")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/inbox/"))
    assert page.locator("#inbox-count").inner_text() == "3"
    assert page.locator(f"#row-{first.pk}").is_visible()

    page.keyboard.press("j")  # opens the first request (the soonest due)
    page.wait_for_selector(f"#request-{first.pk}")
    assert first.arguments_digest in page.locator("[data-digest]").inner_text()
    assert "<script>" in page.locator("pre.json").inner_text()  # shown as text...
    assert page.evaluate("window.pwned") is None  # ...never run
    page.keyboard.press("a")
    page.wait_for_selector(f"#request-{second.pk}")
    assert f"#{first.pk} approved by you" in page.locator(".messages").inner_text()

    page.keyboard.press("r")
    page.keyboard.type("Duplicate of an earlier refund")
    page.click("button.reject")
    page.wait_for_selector(f"#request-{third.pk}")
    assert f"#{second.pk} rejected by you" in page.locator(".messages").inner_text()
    expect(page.locator("#inbox-count")).to_have_text("1", timeout=5_000)
    shown = page.locator("time[datetime]:not([data-countdown])").first.inner_text()
    assert "CET" in shown  # the viewer's zone

    statuses = dict(ApprovalRequest.objects.values_list("pk", "status"))
    assert statuses[first.pk] == ApprovalStatus.APPROVED
    assert statuses[second.pk] == ApprovalStatus.REJECTED
    assert statuses[third.pk] == ApprovalStatus.PENDING
    rejection = ApprovalRequest.objects.get(pk=second.pk)
    assert rejection.decisions.get().comment == "Duplicate of an earlier refund"
    context.close()


def test_alice_sees_why_she_cannot_approve_her_own_request_on_a_phone(
    transactional_db, live_server, company, chromium
):
    own = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 50},
        target=company.payments,
        requested_by=company.alice,
    )
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(f"{live_server.url}/login/?next=/inbox/{own.pk}/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice-123")
    page.click("button[type=submit]")
    page.wait_for_selector(f"#request-{own.pk}")
    assert "You asked for this approval" in page.locator(".why-not").inner_text()
    assert page.locator("button.approve").count() == 0
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the phone
    context.close()


def test_oscar_sees_nothing_in_the_inbox_and_a_request_page_is_not_found(
    transactional_db, live_server, company, chromium
):
    hidden = services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 70},
        target=company.payments,
        requested_by=company.agent,
    )
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(f"{live_server.url}/login/?next=/inbox/")
    page.fill("#id_username", "oscar")
    page.fill("#id_password", "pw-oscar-123")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/inbox/"))
    for tab in ("mine", "roles", "decided", "all"):
        page.goto(f"{live_server.url}/inbox/?tab={tab}")
        assert page.locator("#inbox-list .row").count() == 0, tab
        if tab == "mine":
            assert "Nothing waits for your decision" in page.locator("#inbox-list").inner_text()
    assert page.locator("#inbox-count").count() == 0  # no inbox in his navigation at all
    response = page.goto(f"{live_server.url}/inbox/{hidden.pk}/")
    assert response.status == 404
    assert hidden.arguments_digest not in page.content()
    context.close()
