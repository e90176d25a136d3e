"""The live inbox in Chromium, against a real ASGI server (uvicorn) on the test database.

Bob and dave, both approvers, each in their own browser context: a request appears in both
inboxes without a reload (the title and a notice say so); bob approves; it leaves dave's inbox
live. Then the server is killed (-9) mid-way: what happens while both sockets are down arrives
once they reconnect, nothing missed.
"""

from __future__ import annotations

import re

import pytest
from django.conf import global_settings
from playwright.sync_api import expect

from audit.actors import SYSTEM
from governance import services
from tests.processes import AsgiServer

pytestmark = [pytest.mark.browser, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def server(tmp_path):
    """Uvicorn on the test database; killed after the test."""
    asgi = AsgiServer(tmp_path, STEWARD_LIVE_POLL_SECONDS="1")
    asgi.start()
    yield asgi
    asgi.kill()


def _refund(company, amount):
    return services.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": amount},
        target=company.payments,
        requested_by=company.agent,
    )


def _inbox_of(chromium, server, username, password):
    """Sign in as one person in a browser context of their own; return their inbox page."""
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(f"{server.url}/login/?next=/inbox/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/inbox/"))
    page.wait_for_selector("body[data-live-state=open]")
    page.evaluate("window.loadedOnce = true")  # gone if the page ever reloads
    return page


def _live(page, state="open"):
    page.wait_for_selector(f"body[data-live-state={state}]", timeout=20_000)


@pytest.fixture
def dave(company, settings):
    """Dave, a second approver; bob's and his passwords hashed as the server checks them (the
    suite's fast hasher is this process's alone)."""
    person = services.create_person(username="dave", password="pw-dave-123", actor=SYSTEM)
    services.add_member(company.approvers, person, actor=SYSTEM)
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    for user, password in ((company.bob, "pw-bob-123"), (person, "pw-dave-123")):
        user.set_password(password)
        user.save(update_fields=["password"])
    return person


def test_a_request_appears_in_both_inboxes_and_leaves_daves_when_bob_approves(
    transactional_db, company, dave, chromium, server
):
    bob = _inbox_of(chromium, server, "bob", "pw-bob-123")
    dave_page = _inbox_of(chromium, server, "dave", "pw-dave-123")
    assert bob.locator("#inbox-count").inner_text() == "0"

    request = _refund(company, 120)
    for page in (bob, dave_page):
        page.wait_for_selector(f"#row-{request.pk}", timeout=5_000)
        page.wait_for_function("document.title.startsWith('(1) Inbox')")
        assert f"#{request.pk} waits for your decision" in page.locator("#live-notice").inner_text()
        assert page.locator("#inbox-count").inner_text() == "1"

    bob.click(f"#row-{request.pk} a.row-link")
    bob.wait_for_selector(f"#request-{request.pk}")
    bob.keyboard.press("a")
    bob.wait_for_selector(".messages")
    dave_page.wait_for_selector(f"#row-{request.pk}", state="detached", timeout=5_000)
    dave_page.wait_for_function("document.title.startsWith('Inbox')")
    expect(dave_page.locator("#inbox-count")).to_have_text("0", timeout=5_000)
    assert dave_page.evaluate("window.loadedOnce") is True  # all of it without a reload


def test_a_dropped_socket_catches_up_on_reconnect(
    transactional_db, company, dave, chromium, server
):
    first = _refund(company, 10)
    bob = _inbox_of(chromium, server, "bob", "pw-bob-123")
    dave_page = _inbox_of(chromium, server, "dave", "pw-dave-123")
    for page in (bob, dave_page):
        page.wait_for_selector(f"#row-{first.pk}")

    server.kill()  # both sockets drop; the pages retry with backoff
    for page in (bob, dave_page):
        _live(page, "closed")
    second = _refund(company, 20)  # asked while nobody listens
    services.decide_approval(
        first, user=company.alice, decision="approve", expected_digest=first.arguments_digest
    )
    server.start()

    for page in (bob, dave_page):
        _live(page)
        page.wait_for_selector(f"#row-{second.pk}", timeout=10_000)
        page.wait_for_selector(f"#row-{first.pk}", state="detached", timeout=10_000)
        expect(page.locator("#inbox-count")).to_have_text("1", timeout=5_000)
        assert page.evaluate("window.loadedOnce") is True

    bob.click(f"#row-{second.pk} a.row-link")
    bob.wait_for_selector(f"#request-{second.pk}")
    bob.keyboard.press("a")
    dave_page.wait_for_selector(f"#row-{second.pk}", state="detached", timeout=5_000)
    # The count is re-read by a request of its own, which may land after the list's.
    expect(dave_page.locator("#inbox-count")).to_have_text("0", timeout=5_000)
