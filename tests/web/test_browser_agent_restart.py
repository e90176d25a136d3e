"""The issue's walk in Chromium with real processes: an agent's restart asks for approval.

The demo's incident-response workflow (its scripted agents, policies and roles, seeded by the
demo's own functions) runs on a real Celery worker and sweeper against the test database; the
pages are served by uvicorn. Dave joins bob as an incident commander. Both sign in, each in a
browser context of their own; INC-2002 starts (checkout-2 is down); the remediation agent's
call of incident.restart_service in production needs an incident commander's approval. The
request appears in both inboxes without a reload; bob approves it; it leaves dave's inbox live;
the run resumes and finishes. The worker also emailed both a link to the request's page.
"""

from __future__ import annotations

import re

import pytest
from django.conf import global_settings
from playwright.sync_api import expect

from audit.actors import SYSTEM
from governance import services as governance
from governance.models import ApprovalRequest, ApprovalStatus
from orchestrator import demo
from orchestrator.models import RunStatus, WorkflowRun
from tests.processes import AsgiServer, wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.worker,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

RESTART = "tool.incident.restart_service"


@pytest.fixture
def demo_company(settings):
    """The demo's people, roles, policies, tools, agents and workflows (no runs yet); dave is
    an incident commander too. Passwords hashed as the server checks them."""
    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS
    users = demo.ensure_users()
    admin = users["admin"]
    roles = demo.ensure_roles(users)
    demo.ensure_approval_rule(roles, admin)
    demo.ensure_version_rule(roles, admin)
    demo.ensure_policies(admin)
    demo.ensure_tools(admin)
    demo.ensure_agents(users)
    workflows = demo.ensure_workflows(users)
    demo.ensure_workflow_permissions(roles, workflows, admin)
    governance.add_member(roles[demo.INCIDENT_COMMANDERS], users["dave"], actor=SYSTEM)
    for name in ("bob", "dave"):
        users[name].email = f"{name}@example.com"
        users[name].save(update_fields=["email"])
    return users


def _inbox_of(chromium, server, username, password):
    """Sign in as one person in a browser context of their own; return their live inbox."""
    context = chromium.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(f"{server.url}/login/?next=/inbox/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/inbox/"))
    page.wait_for_selector("body[data-live-state=open]", timeout=20_000)
    page.evaluate("window.loadedOnce = true")  # gone if the page ever reloads
    return page


def test_an_agents_restart_waits_in_both_inboxes_bob_approves_and_the_run_finishes(
    demo_company, steward_processes, chromium, tmp_path
):
    processes = steward_processes
    mail_dir = tmp_path / "mail"
    processes.env.update(
        EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
        EMAIL_FILE_PATH=str(mail_dir),
        STEWARD_BASE_URL="https://steward.example.com",
    )
    server = AsgiServer(tmp_path, STEWARD_LIVE_POLL_SECONDS="1")
    server.start()
    try:
        processes.start_worker(concurrency=2, wait_ready=True)
        processes.start_sweeper()
        bob = _inbox_of(chromium, server, "bob", "bob-demo")
        dave = _inbox_of(chromium, server, "dave", "dave-demo")
        assert bob.locator("#inbox-count").inner_text() == "0"

        spec = next(run for run in demo.DEMO_RUNS if run.key == "demo:INC-2002")
        run = demo.ensure_run(spec, demo_company)
        wait_until(
            lambda: ApprovalRequest.objects.filter(action=RESTART, run_id=run.pk).exists(),
            180,
            message=lambda: "the restart never asked for approval:\n" + processes.logs(),
        )
        request = ApprovalRequest.objects.get(action=RESTART, run_id=run.pk)
        assert request.arguments["environment"] == "production"
        assert [u.username for u in governance.eligible_deciders(request)] == ["bob", "dave"]

        for page in (bob, dave):
            page.wait_for_selector(f"#row-{request.pk}", timeout=10_000)
            expect(page.locator("#inbox-count")).to_have_text("1", timeout=5_000)
            assert f"#{request.pk} waits for your decision" in (
                page.locator("#live-notice").inner_text()
            )

        bob.click(f"#row-{request.pk} a.row-link")
        bob.wait_for_selector(f"#request-{request.pk}")
        assert request.arguments_digest in bob.locator("[data-digest]").inner_text()
        bob.keyboard.press("a")
        bob.wait_for_selector(".messages")
        assert f"#{request.pk} approved by you" in bob.locator(".messages").inner_text()
        dave.wait_for_selector(f"#row-{request.pk}", state="detached", timeout=10_000)
        expect(dave.locator("#inbox-count")).to_have_text("0", timeout=5_000)
        assert dave.evaluate("window.loadedOnce") is True  # dave's page never reloaded

        wait_until(
            lambda: WorkflowRun.objects.get(pk=run.pk).is_finished,
            180,
            message=lambda: "the run did not finish:\n" + processes.logs(),
        )
        finished = WorkflowRun.objects.get(pk=run.pk)
        assert finished.status == RunStatus.SUCCEEDED, finished.error
        assert finished.output["result"]["applied"] == ["restarted checkout-2"]
        assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.APPROVED

        # The worker emailed both deciders a link to the page (sign-in required, no token).
        sent = "\n".join(path.read_text() for path in sorted(mail_dir.glob("*.log")))
        link = f"https://steward.example.com/inbox/{request.pk}/"
        assert sent.count(link) == 2, sent[-2000:]
        assert "bob@example.com" in sent and "dave@example.com" in sent
    finally:
        server.kill()
