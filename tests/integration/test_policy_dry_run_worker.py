"""A policy dry run in a real Celery worker, killed -9 mid-replay: resumed, counted once."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from agents.actions import dryrun
from agents.models import DryRunStatus, PolicyDryRun, PolicyDryRunChange, ToolInvocation
from audit.actors import SYSTEM
from governance import services as governance
from governance.models import PolicyRule, RuleStatus
from tests.processes import StewardProcesses, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CALLS = 12_000


def facts(i: int) -> dict:
    """The policy facts of recorded call `i`: an agent or a person refunding an amount."""
    agent = i % 3 != 0
    return {
        "context": {
            "actor": {
                "username": f"caller-{i % 9}",
                "id": i % 9,
                "kind": "agent" if agent else "person",
                "is_agent": agent,
                "roles": [],
            },
            "action": "tool.refund",
            "target": {"type": "", "id": "", "repr": "", "classification": ""},
            "classification": "",
            "arguments": {"amount": (i * 37) % 5000},
            "risk": "medium",
            "run": {"id": None, "step": "", "workflow": ""},
        },
        "tool_approval_rule": None,
    }


@pytest.fixture
def processes(tmp_path):
    """A worker environment whose dry runs replay in small batches under a 2 s lease."""
    started = StewardProcesses(
        tmp_path, STEWARD_DRY_RUN_BATCH_SIZE=100, STEWARD_DRY_RUN_LEASE_SECONDS=2
    )
    yield started
    started.stop()


def test_a_killed_worker_s_dry_run_is_resumed_and_counts_each_call_once(processes):
    policy = governance.create_policy(slug="refunds", name="Refunds", actor=SYSTEM)
    live = governance.save_rule(
        PolicyRule(
            policy=policy,
            name="Refunds over 4000 are refused",
            action="tool.refund",
            condition="arguments.amount > 4000",
            effect="deny",
            reason="too much",
        ),
        actor=SYSTEM,
        reason="live",
    )
    governance.save_rule(
        PolicyRule(
            policy=policy,
            status=RuleStatus.DRAFT,
            name="Agents' refunds over 1000 are refused",
            action="tool.refund",
            condition="actor.is_agent and arguments.amount > 1000",
            effect="deny",
            reason="agents stop at 1000",
        ),
        actor=SYSTEM,
        reason="draft",
    )
    start = timezone.now() - dt.timedelta(days=2)
    ToolInvocation.objects.bulk_create(
        [
            ToolInvocation(
                caller_name=f"caller-{i % 9}",
                tool="refund",
                arguments=facts(i)["context"]["arguments"],
                verdict="deny" if (i * 37) % 5000 > 4000 else "allow",
                stage="policy",
                policy_rule=live.pk if (i * 37) % 5000 > 4000 else None,
                policy_facts=facts(i),
                key=f"call-{i}",
                created_at=start + dt.timedelta(seconds=i),
            )
            for i in range(CALLS)
        ],
        batch_size=2000,
    )
    expected = {
        i
        for i in range(CALLS)
        if i % 3 != 0 and 1000 < (i * 37) % 5000 <= 4000  # agents' refunds the draft refuses
    }

    asked = dryrun.request_dry_run(
        policy, period_start=start, period_end=timezone.now(), actor=SYSTEM
    )  # committed: the task is queued on the test's queue
    worker = processes.start_worker(concurrency=1)

    def partway() -> bool:
        row = PolicyDryRun.objects.get(pk=asked.pk)
        return row.processed >= 1000 or row.status == DryRunStatus.DONE

    wait_until(partway, timeout=120, interval=0.05, message=processes.logs)
    processes.kill(worker)
    killed_at = PolicyDryRun.objects.get(pk=asked.pk)
    assert killed_at.status == DryRunStatus.RUNNING, "the replay ended before the kill"
    assert 0 < killed_at.processed < CALLS

    # The killed worker's message is held unacknowledged; the beat sweep queues the dry run
    # again once the dead worker's lease ran out, and a new worker resumes from the cursor.
    time.sleep(2.5)
    assert dryrun.resume_dry_runs() == 1
    processes.start_worker(concurrency=1)
    wait_until(
        lambda: PolicyDryRun.objects.get(pk=asked.pk).is_finished,
        timeout=180,
        message=processes.logs,
    )
    result = PolicyDryRun.objects.get(pk=asked.pk)
    assert result.status == DryRunStatus.DONE, result.error
    assert result.processed == result.total == CALLS
    changed_keys = set(
        ToolInvocation.objects.filter(
            pk__in=PolicyDryRunChange.objects.filter(dry_run=result).values("invocation_id")
        ).values_list("key", flat=True)
    )
    assert changed_keys == {f"call-{i}" for i in expected}
    assert result.changed == len(expected) == result.counts["transitions"]["allow>deny"]
    assert result.counts["recorded"]["allow"] + result.counts["recorded"]["deny"] == CALLS
