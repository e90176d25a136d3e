"""The KPI page on the demo's weeks of incident history, in Chromium.

dave, the demo's manager, opens the KPI page: incident triage is acknowledged in under five
minutes against the fifteen-minute manual baseline. He changes the period, then follows the
failure-by-step bar of `restart` to exactly the runs that failed there. oscar, an outsider, is
refused.
"""

from __future__ import annotations

import re
import time

import pytest

from orchestrator import demo
from orchestrator.models import KpiAck, StepRun, WorkflowRun

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _sign_in(page, base, username, password):
    page.goto(f"{base}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()


@pytest.fixture
def history(settings, monkeypatch):
    """The demo with six weeks of incident history and none of its live runs."""
    settings.DEBUG = True
    monkeypatch.setattr(demo, "DEMO_RUNS", [])
    began = time.monotonic()
    seeded = demo.seed(history_days=42)
    seconds = time.monotonic() - began
    settings.DEBUG = False
    return seeded, seconds


def test_the_demo_history_tells_the_incident_story(transactional_db, history):
    seeded, seconds = history
    assert seeded["history"] == WorkflowRun.objects.filter(trigger="demo-history").count() > 150
    assert seconds < 30  # a few seconds on a quiet machine; generous on a shared one
    from orchestrator import kpi_report
    from orchestrator.kpi_report import ALL, Period

    triage = seeded["workflows"]["incident-triage"]
    last = max(KpiAck.objects.values_list("acknowledged_at", flat=True)).date()
    report = kpi_report.build(
        Period(last.fromordinal(last.toordinal() - 29), last), {triage.pk: ("t", "t")}
    )
    now = report.acks[ALL][0]
    assert now["p95"] < 5 * 60 < 15 * 60 == report.baselines[triage.pk].ack_seconds
    assert report.escalations and report.approvers["bob"][0]["count"] > 0
    assert demo.seed(history_days=42)["history"] == 0  # once only


def test_a_manager_reads_the_kpis_and_follows_a_failing_step_to_its_runs(
    transactional_db, live_server, history, chromium
):
    page = chromium.new_context(
        viewport={"width": 1300, "height": 900}, color_scheme="dark"
    ).new_page()
    _sign_in(page, live_server.url, "dave", "dave-demo")
    page.goto(f"{live_server.url}/kpis/")
    acks = page.locator("section[aria-labelledby=ack-title] tbody").inner_text()
    assert "Incident triage" in acks and "15 min" in acks  # against the manual baseline
    assert page.locator(".kpi-people .kpi-card").first.inner_text().startswith("Time to ack")

    page.select_option("select[name=days]", "90")
    page.click(".kpi-filters button[type=submit]")
    page.wait_for_url(re.compile(r"days=90"))
    assert "90 days" in page.locator("select[name=days] option:checked").inner_text()

    bar = page.locator("section[aria-labelledby=steps-title] svg a.bar", has_text="restart")
    bar.first.click()
    page.wait_for_url(re.compile(r"/runs/\?.*failed_step=restart"))
    failed = set(
        StepRun.objects.filter(step_id="restart", status="failed").values_list("run_id", flat=True)
    )
    shown = {
        int(row.get_attribute("id").removeprefix("run-"))
        for row in page.locator("[id^=run-]").all()
    }
    assert shown and shown <= failed
    assert len(shown) == min(len(failed), 50)  # the list's first page

    outsider = chromium.new_context().new_page()
    _sign_in(outsider, live_server.url, "oscar", "oscar-demo")
    response = outsider.goto(f"{live_server.url}/kpis/")
    assert response.status == 403
