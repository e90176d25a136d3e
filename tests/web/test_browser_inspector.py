"""The run inspector and the audit pages in Chromium.

carol, the demo's auditor, finds INC-2002 in the runs list and sees the approval that holds it
(who may decide, who is excluded and why), opens INC-2003 and its remediation agent's denied
tool call with its policy, then follows the run's audit trail to an entry and sees it verified.
gina, an operator, retries a failed step from its run page, and watches a run, moved by a real
Celery worker, finish on its page and in the runs list without a reload.
"""

from __future__ import annotations

import re

import pytest
from django.conf import global_settings
from playwright.sync_api import expect

from agents.models import ToolInvocation
from audit.actors import SYSTEM
from governance import services as governance
from governance.models import ApprovalRequest
from orchestrator import demo, engine
from orchestrator import services as workflows
from orchestrator.models import StepRun, StepStatus, WorkflowRun
from tests.audit.conftest import _audit_key, seal  # noqa: F401
from tests.processes import AsgiServer, wait_until
from tests.web.test_runs import FAILING, _agent_turns

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _sign_in(page, base, username, password):
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


@pytest.fixture
def seeded(settings, monkeypatch):
    """The demo with its two agent incidents, run as far as they go, the trail signed."""
    settings.DEBUG = True  # the demo seeds DEBUG instances only
    wanted = ("INC-2002", "INC-2003")  # the other runs would only slow the test
    monkeypatch.setattr(
        demo, "DEMO_RUNS", [run for run in demo.DEMO_RUNS if run.business_key in wanted]
    )
    demo.seed()
    engine.drain()
    settings.DEBUG = False
    seal()


def test_an_auditor_follows_two_incidents_to_an_approval_a_denial_and_a_verified_entry(
    transactional_db,
    live_server,
    seeded,
    chromium,
):
    page = chromium.new_context(viewport={"width": 1300, "height": 900}).new_page()
    _sign_in(page, live_server.url, "carol", "carol-demo")
    page.click("nav a.nav-runs")
    page.wait_for_url(re.compile(r"/runs/$"))
    page.fill("input[name=business_key]", "INC-2002")
    page.click(".run-filters button[type=submit]")
    page.wait_for_url(re.compile(r"business_key=INC-2002"))  # the filter is in the link
    down = WorkflowRun.objects.get(business_key="INC-2002")
    page.click(f"#run-{down.pk} a")
    page.wait_for_url(re.compile(rf"/runs/{down.pk}/$"))
    waits = page.locator(".waits").inner_text()
    assert "waits for approval" in waits and "bob" in waits  # who may decide
    assert "alice" in waits and "Excluded" in waits  # who may not, and why
    assert page.locator("svg.graph .node").count() >= 1
    held = ApprovalRequest.objects.get(run_id=down.pk, status="pending")
    page.click(f".waits a[href*='/inbox/{held.pk}/']")  # to the approval that holds it
    page.wait_for_selector(f"#request-{held.pk}")
    assert held.arguments_digest in page.locator("[data-digest]").inner_text()

    slow = WorkflowRun.objects.get(business_key="INC-2003")
    denied = ToolInvocation.objects.get(run_id=slow.pk, verdict="deny")
    remediation = StepRun.objects.get(run=slow, item__agent="incident-remediation")
    page.goto(f"{live_server.url}/runs/?business_key=INC-2003")
    page.click(f"#run-{slow.pk} a")
    page.wait_for_url(re.compile(rf"/runs/{slow.pk}/$"))
    page.click(f"svg.graph a[data-step='{remediation.parent_id}']")  # the coordinator's node
    page.wait_for_selector(f"#items-{remediation.parent_id}")
    item = page.locator(f"#items-{remediation.parent_id} tr:has-text('incident-remediation')")
    item.locator(f"a[href$='/steps/{remediation.pk}/']").click()
    page.wait_for_selector(f"#tool-call-{denied.pk}")
    call = page.locator(f"#tool-call-{denied.pk}").inner_text()
    assert "Denied" in call and "capacity-limits" in call and denied.arguments_digest in call

    page.click("text=Audit trail")
    page.wait_for_url(re.compile(rf"/audit/\?run_id={slow.pk}"))
    page.locator("#result_list tbody a").first.click()
    page.wait_for_selector("#proof")
    assert page.locator("#proof").get_attribute("data-state") == "verified"
    assert page.locator("#proof strong").inner_text() == "Verified"


def test_an_operator_retries_a_failed_step_from_the_run_page(
    transactional_db,
    live_server,
    company,
    chromium,
):
    flaky = workflows.create_workflow(
        slug="flaky", name="Flaky <script>window.pwned=1</script>", definition=FAILING, actor=SYSTEM
    )
    run = workflows.start_run(
        flaky, {"note": "<script>window.pwned=2</script>"}, started_by=company.gina
    )
    engine.drain()
    failed = StepRun.objects.get(run=run, step_id="boom")
    assert failed.status == StepStatus.FAILED
    page = chromium.new_context().new_page()
    _sign_in(page, live_server.url, "gina", "pw-gina-123")
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    assert "<script>" in page.locator("pre.json").first.inner_text()  # shown as text...
    assert page.evaluate("window.pwned") is None  # ...never run
    page.click(f"#step-row-{failed.pk} a")
    page.wait_for_selector(f"#step-panel [data-step='{failed.pk}']")
    page.click("text=Retry this step…")
    page.wait_for_url(re.compile(rf"/runs/{run.pk}/steps/{failed.pk}/retry/"))
    page.click("button[name=confirmed]")
    page.wait_for_url(re.compile(rf"/runs/{run.pk}/\?step={failed.pk}"))
    assert "retried" in page.locator(".messages").inner_text()
    failed.refresh_from_db()
    assert failed.status == StepStatus.READY

    # A model's prompt and response with markup are shown as text, never run.
    governance.grant(company.admins, "agents.view_agent", actor=SYSTEM)
    call = _agent_turns(run, StepRun.objects.get(run=run, step_id="first"))
    page.goto(f"{live_server.url}/runs/{run.pk}/model-calls/{call.pk}/")
    page.click("text=Open the prompt and response")
    page.wait_for_selector("pre.response")
    assert "<script>window.pwned = 1</script>" in page.locator(".messages-list").inner_text()
    assert "<img src=x" in page.locator("pre.response").inner_text()
    assert page.evaluate("window.pwned") is None


PUBLISH = engine.publish_on_commit  # the real one: the suite's fixture keeps steps in-process

GATED = {
    "steps": [
        {"id": "hold", "type": "wait", "signal": "go"},
        {"id": "after", "type": "noop", "depends_on": ["hold"]},
    ]
}


@pytest.mark.redis
@pytest.mark.worker
def test_a_run_page_and_the_runs_list_change_live_as_a_worker_finishes_the_run(
    transactional_db, company, chromium, steward_processes, tmp_path, settings, monkeypatch
):
    monkeypatch.setattr(engine, "publish_on_commit", PUBLISH)  # steps go to the real worker
    # Uvicorn checks the password with the default hashers (the suite's fast one is ours).
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    company.gina.set_password("pw-gina-123")
    company.gina.save(update_fields=["password"])
    server = AsgiServer(tmp_path, STEWARD_LIVE_POLL_SECONDS="5")  # the nudge must do it
    server.start()
    try:
        steward_processes.start_worker(wait_ready=True)
        gated = workflows.create_workflow(
            slug="gated", name="Gated", definition=GATED, actor=SYSTEM
        )
        run = workflows.start_run(gated, {}, started_by=company.gina)
        wait_until(
            lambda: StepRun.objects.filter(run=run, step_id="hold", status="waiting").exists(),
            60,
            message=lambda: "the worker never ran the first step:\n" + steward_processes.logs(),
        )
        context = chromium.new_context(viewport={"width": 1300, "height": 900})
        listing = context.new_page()
        _sign_in(listing, server.url, "gina", "pw-gina-123")
        listing.goto(f"{server.url}/runs/?workflow=gated")
        run_page = context.new_page()
        run_page.goto(f"{server.url}/runs/{run.pk}/")
        for page in (listing, run_page):
            page.wait_for_selector("body[data-live-state=open]", timeout=20_000)
            page.evaluate("window.loadedOnce = true")  # gone if the page ever reloads
        assert "Running" in run_page.locator("#run-header h1").inner_text()
        assert "waits for the signal" in run_page.locator(".waits").inner_text().lower()
        assert run_page.locator("#node-after.state-pending").count() == 1

        workflows.send_signal(run, "go", {"ok": True}, sent_by=company.gina)  # the worker ends it

        expect(run_page.locator("#run-header h1")).to_contain_text("Succeeded", timeout=10_000)
        expect(run_page.locator("#node-after")).to_have_class(
            re.compile(r"state-succeeded"), timeout=5_000
        )
        expect(run_page.locator("#run-steps tr[data-step] .state-succeeded")).to_have_count(
            2, timeout=5_000
        )
        assert run_page.locator(".waits").count() == 0  # nothing left to wait for
        expect(listing.locator(f"#run-{run.pk}")).to_contain_text("Succeeded", timeout=10_000)
        for page in (listing, run_page):
            assert page.evaluate("window.loadedOnce") is True  # all of it without a reload
        assert WorkflowRun.objects.get(pk=run.pk).status == "succeeded"
    finally:
        server.kill()
