"""Policy dry runs: a policy's draft version replayed on the recorded tool calls of a period.

Asking for one (`request_dry_run`) checks that the asker may change the policy, snapshots the
draft version and the live rules, saves the row with the audit entry of who asked for what, and
queues the replay once that commits. The replay (`run_dry_run`, Celery task
`agents.run_policy_dry_run`) reads the period's ToolInvocation rows in (created_at, id) order,
in batches: each batch's changed calls, totals and cursor commit together, under the claim of
the worker holding the row (a conditional update with a lease), so a redelivered or resumed
task carries on from the cursor and counts nothing twice.

The evaluation is a pure function of the snapshots and the recorded call: the context its
policy decision was taken on and the tool's own approval rule then (`ToolInvocation.
policy_facts`). It writes no audit entry, opens no approval or escalation, and touches no rate
counter. Calls decided before the policy check (the caller stopped, a tool disabled, arguments
or permission refused, rate limit) would be decided the same way by any draft, and are counted
as such; calls recorded before their facts were kept cannot be replayed, and are counted too.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce

from agents.models import DryRunStatus, PolicyDryRun, PolicyDryRunChange, ToolInvocation, Verdict
from audit import clock
from audit import services as audit
from audit.actors import SYSTEM, requires_actor
from governance.actions.common import GovernanceError, audited_refusals, name_of
from governance.actions.policies import (
    active_rules,
    draft_rules,
    policy_drafts,
    publish_draft,
    replay,
    rule_snapshot,
    rules_from_snapshot,
)
from governance.models import Effect, Policy
from governance.permissions import require

log = logging.getLogger(__name__)

REQUESTED_ACTION = "agents.policy_dry_run.requested"
FINISHED_ACTION = "agents.policy_dry_run.finished"
# The stages where the policy decided (or a tool's own approval rule asked on top of an allow).
POLICY_STAGES = frozenset({"policy", "tool_approval_rule"})


class LostClaim(Exception):
    """Another worker took the dry run over (this one's lease ran out): stop, count nothing."""


def verdict_under(rules, facts: dict[str, Any]) -> tuple[str, Any]:
    """Return the verdict rules would give a recorded call's policy facts, and the deciding rule.

    Mirrors the enforcement point's last step: deny and escalate stand; an approval needs its
    rule's approval rule (none: denied); an allow still needs the tool's own approval rule.
    """
    effect, rule = replay(rules, facts["context"])
    if effect == Effect.DENY:
        return Verdict.DENY, rule
    if effect == Effect.ESCALATE:
        return Verdict.ESCALATE, rule
    if effect == Effect.REQUIRE_APPROVAL:
        return (Verdict.APPROVAL if rule.approval_rule_id else Verdict.DENY), rule
    return (Verdict.APPROVAL if facts.get("tool_approval_rule") else Verdict.ALLOW), rule


@requires_actor
@audited_refusals
def request_dry_run(
    policy: Policy, *, period_start: dt.datetime, period_end: dt.datetime, actor
) -> PolicyDryRun:
    """Ask for a dry run of a policy's draft on the calls of a period; it runs in the background.

    Only whoever may change the policy may (its governance admins). The period ends now at the
    latest: the calls replayed are those recorded when it was asked for.
    """
    if actor is not SYSTEM:
        require(actor, "change", Policy.objects.get(pk=policy.pk))
    now = clock.now()
    period_end = min(period_end, now)
    if period_start >= period_end:
        raise GovernanceError("the period must start before it ends (and before now)")
    policy = Policy.objects.get(pk=policy.pk)
    drafts = policy_drafts(policy)
    candidate = draft_rules(policy)  # refuses a policy without a draft
    dry_run = PolicyDryRun.objects.create(
        policy=policy,
        policy_slug=policy.slug,
        policy_version=policy.version,
        draft_rule_ids=[rule.pk for rule in drafts],
        draft_rules=rule_snapshot(candidate),
        live_rules=rule_snapshot(active_rules()),
        period_start=period_start,
        period_end=period_end,
        total=_period(period_start, period_end).count(),
        requested_by=actor if getattr(actor, "pk", None) else None,
        requested_by_name=name_of(actor) if actor is not SYSTEM else "",
        created_at=now,
    )
    audit.record(
        action=REQUESTED_ACTION,
        actor=actor,
        target=dry_run,
        target_repr=str(dry_run),
        body={
            "policy": policy.slug,
            "policy_version": policy.version,
            "draft_rules": dry_run.draft_rule_ids,
            "period_start": period_start.isoformat(),
            "period_end": period_end.isoformat(),
            "calls": dry_run.total,
        },
    )
    dry_run_id = dry_run.pk
    transaction.on_commit(lambda: dispatcher(dry_run_id))
    return dry_run


@requires_actor
@audited_refusals
def publish_tested_draft(dry_run: PolicyDryRun, *, actor, reason: str) -> Policy:
    """Publish the draft a dry run evaluated, refused when the policy changed since it ran."""
    policy = dry_run.policy
    if policy is None:
        raise GovernanceError("the policy of this dry run was deleted", code="gone")
    if actor is not SYSTEM:
        require(actor, "change", policy)
    current = Policy.objects.select_for_update().get(pk=policy.pk)
    if current.version != dry_run.policy_version:
        raise GovernanceError(
            f"policy {current.slug!r} is at v{current.version} now, not the v"
            f"{dry_run.policy_version} this dry run tested: run it again before publishing",
            code="changed_since",
        )
    return publish_draft(current, actor=actor, reason=reason or f"tested by {dry_run}")


def _send_task(dry_run_id: int) -> None:
    """Ask a worker to replay a dry run; a lost message leaves it queued for resume_dry_runs."""
    from agents.tasks import run_policy_dry_run

    try:
        run_policy_dry_run.apply_async(args=[dry_run_id])
    except Exception:  # broker down: the row stays queued and the sweep queues it again
        log.warning("could not queue policy dry run %s; the sweep will", dry_run_id)


dispatcher = _send_task


def _period(start: dt.datetime, end: dt.datetime):
    """Return the recorded tool calls of a period (start included, end excluded)."""
    return ToolInvocation.objects.filter(created_at__gte=start, created_at__lt=end)


def _setting(name: str) -> float:
    """Return a dry-run setting (STEWARD_DRY_RUN_*)."""
    return getattr(settings, f"STEWARD_DRY_RUN_{name}")


def _claim(dry_run_id: int, *, lease_seconds: float) -> str | None:
    """Claim a queued dry run, or one whose worker's lease ran out; return the claim, or None."""
    now = clock.now()
    token = uuid.uuid4().hex
    claimable = Q(status=DryRunStatus.QUEUED) | Q(status=DryRunStatus.RUNNING, lease_until__lt=now)
    taken = PolicyDryRun.objects.filter(claimable, pk=dry_run_id).update(
        status=DryRunStatus.RUNNING,
        claim=token,
        lease_until=now + dt.timedelta(seconds=lease_seconds),
        started_at=Coalesce("started_at", now),
    )
    return token if taken else None


def run_dry_run(
    dry_run_id: int,
    *,
    batch_size: int | None = None,
    lease_seconds: float | None = None,
    max_batches: int | None = None,
) -> PolicyDryRun | None:
    """Replay a dry run to its end (or `max_batches` batches); None when another holds it.

    Safe to run twice: a second delivery finds the row claimed (or finished) and does nothing;
    after a worker died, the next one past its lease resumes from the committed cursor.
    """
    batch_size = batch_size or int(_setting("BATCH_SIZE"))
    lease_seconds = lease_seconds or _setting("LEASE_SECONDS")
    token = _claim(dry_run_id, lease_seconds=lease_seconds)
    if token is None:
        return None
    dry_run = PolicyDryRun.objects.get(pk=dry_run_id)
    live = rules_from_snapshot(dry_run.live_rules)
    draft = rules_from_snapshot(dry_run.draft_rules)
    batches = 0
    try:
        while max_batches is None or batches < max_batches:
            batches += 1
            if not _replay_batch(dry_run_id, token, live, draft, batch_size, lease_seconds):
                break
    except LostClaim:
        return None
    except Exception as exc:
        _fail(dry_run_id, token, exc)
        raise
    return PolicyDryRun.objects.get(pk=dry_run_id)


def _replay_batch(dry_run_id, token, live, draft, batch_size, lease_seconds) -> bool:
    """Replay the next batch and commit its changes, totals and cursor; False once done."""
    with transaction.atomic():
        row = PolicyDryRun.objects.select_for_update().get(pk=dry_run_id)
        if row.claim != token or row.status != DryRunStatus.RUNNING:
            raise LostClaim(dry_run_id)
        calls = _period(row.period_start, row.period_end)
        if row.cursor_at is not None:
            calls = calls.filter(created_at__gte=row.cursor_at).filter(
                Q(created_at__gt=row.cursor_at) | Q(id__gt=row.cursor_id)
            )
        batch = list(
            calls.order_by("created_at", "id").values_list(
                "id",
                "created_at",
                "caller_name",
                "tool",
                "run_id",
                "verdict",
                "stage",
                "policy_facts",
            )[:batch_size]
        )
        counts = _Counts(row.counts)
        changes = []
        for pk, created_at, caller, tool, run_id, recorded, stage, facts in batch:
            if stage not in POLICY_STAGES:
                counts.add(recorded, recorded, recorded, "before_policy")
                continue
            if not facts or "context" not in facts:
                counts.add(recorded, recorded, recorded, "unreplayable")
                continue
            now_verdict, _ = verdict_under(live, facts)
            draft_verdict, rule = verdict_under(draft, facts)
            counts.add(recorded, now_verdict, draft_verdict, "replayed")
            if draft_verdict != recorded or draft_verdict != now_verdict:
                changes.append(
                    PolicyDryRunChange(
                        dry_run_id=dry_run_id,
                        invocation_id=pk,
                        created_at=created_at,
                        caller_name=caller,
                        tool=tool,
                        run_id=run_id,
                        recorded=recorded,
                        live=now_verdict,
                        draft=draft_verdict,
                        draft_rule_id=rule.pk if rule is not None else None,
                        draft_rule_name=rule.name if rule is not None else "",
                    )
                )
        # No ignore_conflicts: the cursor commits with the changes, so a call replayed twice
        # would be a bug, and the unique constraint makes it fail loudly instead of hiding.
        PolicyDryRunChange.objects.bulk_create(changes, batch_size=1000)
        now = clock.now()
        row.counts = counts.data
        row.changed = counts.data["changed"]
        row.processed += len(batch)
        if batch:
            row.cursor_id, row.cursor_at = batch[-1][0], batch[-1][1]
        row.lease_until = now + dt.timedelta(seconds=lease_seconds)
        done = len(batch) < batch_size
        fields = ["counts", "changed", "processed", "cursor_id", "cursor_at", "lease_until"]
        if done:
            row.status, row.finished_at, row.claim = DryRunStatus.DONE, now, ""
            row.total = max(row.total, row.processed)
            fields += ["status", "finished_at", "claim", "total"]
            audit.record(
                action=FINISHED_ACTION,
                actor=SYSTEM,
                target=row,
                target_repr=str(row),
                body={
                    "policy": row.policy_slug,
                    "policy_version": row.policy_version,
                    "requested_by": row.requested_by_name,
                    "processed": row.processed,
                    "changed": row.changed,
                    "counts": row.counts,
                },
            )
        row.save(update_fields=fields)
        return not done


def _fail(dry_run_id: int, token: str, exc: Exception) -> None:
    """Mark a dry run failed (if this worker still holds it), saying why, and audit it."""
    with transaction.atomic():
        failed = PolicyDryRun.objects.filter(
            pk=dry_run_id, claim=token, status=DryRunStatus.RUNNING
        ).update(status=DryRunStatus.FAILED, error=repr(exc)[:2000], finished_at=clock.now())
        if failed:
            audit.record(
                action=FINISHED_ACTION,
                actor=SYSTEM,
                target_type="agents.policydryrun",
                target_id=str(dry_run_id),
                body={"failed": repr(exc)[:2000]},
            )


def resume_dry_runs(*, older_than_seconds: float = 60) -> int:
    """Queue again the dry runs whose message was lost or whose worker died; return how many."""
    now = clock.now()
    stalled = PolicyDryRun.objects.filter(
        Q(status=DryRunStatus.QUEUED, created_at__lt=now - dt.timedelta(seconds=older_than_seconds))
        | Q(status=DryRunStatus.RUNNING, lease_until__lt=now)
    ).values_list("pk", flat=True)
    ids = list(stalled)
    for dry_run_id in ids:
        dispatcher(dry_run_id)
    return len(ids)


class _Counts:
    """The totals of a dry run, kept as JSON on its row and added to batch by batch."""

    def __init__(self, data: dict[str, Any] | None):
        data = dict(data or {})
        for name in ("recorded", "live", "draft", "transitions"):
            data[name] = Counter(data.get(name) or {})
        for name in ("replayed", "before_policy", "unreplayable", "changed", "differs_from_live"):
            data.setdefault(name, 0)
        self.data = data

    def add(self, recorded: str, live: str, draft: str, how: str) -> None:
        """Count one call: its verdict as recorded, under the live rules and with the draft."""
        data = self.data
        data["recorded"][recorded] += 1
        data["live"][live] += 1
        data["draft"][draft] += 1
        data[how] += 1
        if draft != recorded:
            data["changed"] += 1
            data["transitions"][f"{recorded}>{draft}"] += 1
        if draft != live:
            data["differs_from_live"] += 1


def kpi_effect(dry_run: PolicyDryRun) -> list[dict[str, Any]]:
    """Return, per verdict, the calls as recorded, under the live rules, with the draft, and the
    differences: how many more approvals, escalations and blocked calls the draft makes."""
    counts = dry_run.counts or {}
    labels = dict(Verdict.choices)
    rows = []
    for verdict in (Verdict.DENY, Verdict.APPROVAL, Verdict.ESCALATE, Verdict.ALLOW):
        recorded = (counts.get("recorded") or {}).get(verdict, 0)
        live = (counts.get("live") or {}).get(verdict, 0)
        draft = (counts.get("draft") or {}).get(verdict, 0)
        rows.append(
            {
                "verdict": verdict,
                "label": labels[verdict],
                "recorded": recorded,
                "live": live,
                "draft": draft,
                "versus_recorded": draft - recorded,
                "versus_live": draft - live,
            }
        )
    return rows
