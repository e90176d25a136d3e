"""The company's API callers, each with a token, and the runs the orchestrator API tests act on.

Tokens (issued by gina, who is granted the token permissions here): gina (governance admin),
alice (approver), maya (manager), the ERP integration, oscar (nobody). The payments agent has no
token: agents act only through the engine, never through the API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from orchestrator import engine, services
from orchestrator.models import StepRun, WorkflowRun
from tests.governance.conftest import NOOP, fresh
from tests.governance.test_api_tokens import bearer

CALLERS = ["gina", "alice", "maya", "integration", "oscar"]
FAILING = {
    "steps": [
        {
            "id": "call",
            "type": "tool",
            "tool": "test.flaky",
            "args": {"fail_times": 1, "error": "FatalToolError"},
        }
    ]
}
WAITING = {"steps": [{"id": "hold", "type": "wait", "signal": "go"}]}


@dataclass
class World:
    """The company, a token per caller, and runs in each state the operations need."""

    company: object
    tokens: dict[str, str]
    running: WorkflowRun
    paused: WorkflowRun
    failed: WorkflowRun
    failed_step: StepRun
    keyed: WorkflowRun

    def client(self, caller: str):
        """Return an API client holding `caller`'s token."""
        return bearer(self.tokens[caller])

    def user(self, caller: str):
        """Return `caller`'s user, fresh from the database."""
        return fresh(getattr(self.company, caller))


@pytest.fixture
def world(company) -> World:
    """Tokens for every caller, and a running, a paused, a failed and a keyed payments run."""
    for action in ("view", "add", "change"):
        governance.grant(company.admins, f"governance.{action}_apitoken", actor=SYSTEM)
    gina = fresh(company.gina)
    tokens = {
        caller: governance.issue_token(getattr(company, caller), actor=gina, name=caller)[1]
        for caller in CALLERS
    }
    services.publish_version(company.payments, FAILING, actor=SYSTEM)
    failed = services.start_run(company.payments, {}, started_by=SYSTEM)
    engine.drain()
    services.publish_version(company.payments, WAITING, actor=SYSTEM)
    running = services.start_run(company.payments, {}, started_by=SYSTEM)
    paused = services.start_run(company.payments, {}, started_by=SYSTEM)
    keyed = services.start_run(company.payments, {}, started_by=SYSTEM, business_key="INV-1")
    engine.drain()
    services.pause_run(paused, actor=SYSTEM)
    services.publish_version(company.payments, NOOP, actor=SYSTEM)
    for run in (failed, running, paused, keyed):
        run.refresh_from_db()
    return World(
        company=company,
        tokens=tokens,
        running=running,
        paused=paused,
        failed=failed,
        failed_step=StepRun.objects.get(run=failed, step_id="call"),
        keyed=keyed,
    )


def denials(user) -> list[dict]:
    """Return the bodies of the access-denied entries written for `user`, with their ids."""
    return [
        {**json.loads(entry.body_row.content), "request_id": entry.request_id}
        for entry in AuditEntry.objects.filter(action="governance.access_denied", actor_id=user.pk)
    ]
