"""Policy dry runs on the demo's history: exact findings, nothing written, resumable, governed."""

from __future__ import annotations

import datetime as dt

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.urls import reverse

from agents import services
from agents.actions import dryrun
from agents.models import DryRunStatus, PolicyDryRun, PolicyDryRunChange, ToolInvocation
from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from governance.models import Policy, PolicyRule, RuleStatus
from orchestrator import demo, engine

pytestmark = pytest.mark.django_db

User = get_user_model()
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
WHOLE_HISTORY = {"period_start": START - dt.timedelta(days=1)}
STATUS_POSTS = "Agents' status posts need an incident commander"


@pytest.fixture
def history(monkeypatch):
    """The demo seeded and its runs drained (38 recorded tool calls), queued tasks collected."""
    queued: list[int] = []
    monkeypatch.setattr(dryrun, "dispatcher", queued.append)
    with clock.frozen(START, seed=3) as frozen:
        demo.seed()
        engine.drain()
        frozen.advance(60)
        yield {"clock": frozen, "queued": queued, "grace": User.objects.get(username="grace")}


def policy(slug: str) -> Policy:
    """Return a demo policy."""
    return Policy.objects.get(slug=slug)


def draft(policy_slug: str, **fields) -> PolicyRule:
    """Save a draft rule of a demo policy (as the governance admin of the demo)."""
    rule = PolicyRule(policy=policy(policy_slug), status=RuleStatus.DRAFT, **fields)
    return governance.save_rule(rule, actor=User.objects.get(username="grace"), reason="draft")


def stricter_capacity() -> PolicyRule:
    """A draft that takes the place of 'No scaling beyond 10 replicas' with 8."""
    return draft(
        "capacity-limits",
        name="No scaling beyond 8 replicas",
        action="tool.incident.scale_service",
        condition="arguments.replicas > 8",
        effect="deny",
        reason="the capacity plan now stops at 8",
        replaces=PolicyRule.objects.get(name="No scaling beyond 10 replicas"),
    )


def status_posts_need_approval() -> PolicyRule:
    """A draft that adds an approval for agents posting to the public status channel."""
    return draft(
        "production-changes",
        name=STATUS_POSTS,
        action="tool.incident.post_update",
        condition="actor.is_agent and arguments.channel == '#status'",
        effect="require_approval",
        approval_rule=PolicyRule.objects.exclude(approval_rule=None).first().approval_rule,
        position=30,
    )


def ask_and_run(policy_slug: str, actor, **run) -> PolicyDryRun:
    """Ask for a dry run of a policy's draft over the whole demo history and replay it."""
    asked = services.request_dry_run(
        policy(policy_slug), period_end=clock.now(), actor=actor, **WHOLE_HISTORY
    )
    dryrun.run_dry_run(asked.pk, **run)
    return PolicyDryRun.objects.get(pk=asked.pk)


def table_counts() -> dict[str, int]:
    """Count the rows of every table of the database (models or not)."""
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
        counts = {}
        for table in tables:
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            counts[table] = cursor.fetchone()[0]
    return counts


def test_a_stricter_draft_finds_exactly_the_calls_it_should(history):
    stricter_capacity()
    expected = set(
        ToolInvocation.objects.filter(
            tool="incident.scale_service", verdict="allow", arguments__replicas__gt=8
        ).values_list("pk", flat=True)
    )
    assert len(expected) == 1  # INC-2003's scale to 10, allowed then
    result = ask_and_run("capacity-limits", history["grace"])
    assert result.status == DryRunStatus.DONE
    assert result.processed == result.total == ToolInvocation.objects.count() == 38
    changes = list(result.changes.all())
    assert {change.invocation_id for change in changes} == expected
    assert [(c.recorded, c.live, c.draft, c.draft_rule_name) for c in changes] == [
        ("allow", "allow", "deny", "No scaling beyond 8 replicas")
    ]
    assert result.changed == 1
    assert result.counts["transitions"] == {"allow>deny": 1}
    effect = {row["verdict"]: row for row in services.kpi_effect(result)}
    assert effect["deny"]["versus_recorded"] == 1 and effect["allow"]["versus_recorded"] == -1
    assert effect["approval"]["versus_recorded"] == effect["escalate"]["versus_recorded"] == 0


def test_an_added_approval_counts_the_approvals_it_would_ask(history):
    status_posts_need_approval()
    expected = set(
        ToolInvocation.objects.filter(
            tool="incident.post_update", caller_kind="agent", arguments__channel="#status"
        ).values_list("pk", flat=True)
    )
    assert len(expected) == 3  # the comms agent's three public posts
    result = ask_and_run("production-changes", history["grace"])
    assert set(result.changes.values_list("invocation_id", flat=True)) == expected
    assert set(result.changes.values_list("recorded", "draft")) == {("allow", "approval")}
    effect = {row["verdict"]: row for row in services.kpi_effect(result)}
    asked_then = ToolInvocation.objects.filter(verdict="approval").count()
    assert asked_then == 2  # the production restarts (a tool step's and an agent's)
    assert effect["approval"]["recorded"] == asked_then
    assert effect["approval"]["draft"] == asked_then + 3
    assert effect["approval"]["versus_recorded"] == 3
    assert result.counts["replayed"] == 38 and result.counts["unreplayable"] == 0


def test_nothing_is_written_outside_the_result(history, django_capture_on_commit_callbacks):
    stricter_capacity()
    status_posts_need_approval()
    before = table_counts()
    entries_before = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first()
    with django_capture_on_commit_callbacks(execute=True):
        result = ask_and_run("capacity-limits", history["grace"], batch_size=7)
    assert history["queued"] == [result.pk]  # queued once the request committed
    after = table_counts()
    changed = {
        table: after[table] - before[table] for table in after if after[table] != before[table]
    }
    assert changed == {
        "agents_policydryrun": 1,
        "agents_policydryrunchange": 1,
        "audit_auditentry": 2,
        "audit_auditbody": 2,
    }
    written = AuditEntry.objects.filter(id__gt=entries_before).order_by("id")
    assert [(e.action, e.actor_name) for e in written] == [
        (dryrun.REQUESTED_ACTION, "grace"),
        (dryrun.FINISHED_ACTION, "system"),
    ]
    requested = written[0]
    assert requested.target_id == str(result.pk)
    assert PolicyRule.objects.filter(status=RuleStatus.DRAFT).count() == 2  # still drafts


def test_a_redelivered_or_resumed_task_counts_nothing_twice(history):
    stricter_capacity()
    grace = history["grace"]
    whole = ask_and_run("capacity-limits", grace, batch_size=5)

    asked = services.request_dry_run(
        policy("capacity-limits"), period_end=clock.now(), actor=grace, **WHOLE_HISTORY
    )
    dryrun.run_dry_run(asked.pk, batch_size=5, max_batches=2)  # the worker dies after two
    asked.refresh_from_db()
    assert (asked.status, asked.processed) == (DryRunStatus.RUNNING, 10)

    class Killed(BaseException):
        """The process dies in the middle of a batch (not an error the task handles)."""

    real_bulk_create = PolicyDryRunChange.objects.bulk_create

    def dies_after_writing(objs, **kwargs):
        real_bulk_create(objs, **kwargs)
        raise Killed

    # The redelivered message, while the first worker's lease still runs: nothing happens.
    assert dryrun.run_dry_run(asked.pk, batch_size=5) is None
    asked.refresh_from_db()
    assert asked.processed == 10
    # Past the lease, a worker resumes and dies with a batch half written: it is undone.
    history["clock"].advance(settings.STEWARD_DRY_RUN_LEASE_SECONDS + 1)
    PolicyDryRunChange.objects.bulk_create = dies_after_writing
    try:
        with pytest.raises(Killed):
            dryrun.run_dry_run(asked.pk, batch_size=5)
    finally:
        PolicyDryRunChange.objects.bulk_create = real_bulk_create
    asked.refresh_from_db()
    assert (asked.status, asked.processed) == (DryRunStatus.RUNNING, 10)
    # The next redelivery past that lease finishes it; the totals are those of one clean pass.
    history["clock"].advance(settings.STEWARD_DRY_RUN_LEASE_SECONDS + 1)
    dryrun.run_dry_run(asked.pk, batch_size=5)
    asked.refresh_from_db()
    assert asked.status == DryRunStatus.DONE
    assert asked.processed == asked.total == whole.processed == 38
    assert asked.counts == whole.counts
    assert list(asked.changes.values_list("invocation_id", "recorded", "draft")) == list(
        whole.changes.values_list("invocation_id", "recorded", "draft")
    )
    # A message delivered after the end finds nothing to do.
    assert dryrun.run_dry_run(asked.pk) is None
    assert (
        AuditEntry.objects.filter(action=dryrun.FINISHED_ACTION, target_id=str(asked.pk)).count()
        == 1
    )


def test_the_result_does_not_follow_later_edits_of_the_draft(history):
    rule = stricter_capacity()
    grace = history["grace"]
    asked = services.request_dry_run(
        policy("capacity-limits"), period_end=clock.now(), actor=grace, **WHOLE_HISTORY
    )
    rule.condition = "arguments.replicas > 50"
    governance.save_rule(rule, actor=grace, reason="softer after all")
    dryrun.run_dry_run(asked.pk)
    asked.refresh_from_db()
    assert asked.changed == 1  # the draft as it was asked for
    with pytest.raises(governance.GovernanceError, match="run it again"):
        services.publish_tested_draft(asked, actor=grace, reason="ship it")


def test_only_who_may_change_the_policy_runs_or_sees_dry_runs(history):
    stricter_capacity()
    grace = history["grace"]
    result = ask_and_run("capacity-limits", grace)
    carol, oscar = User.objects.get(username="carol"), User.objects.get(username="oscar")
    for outsider in (carol, oscar):
        with pytest.raises((governance.AccessDenied, governance.NotVisible)):
            services.request_dry_run(
                policy("capacity-limits"), period_end=clock.now(), actor=outsider, **WHOLE_HISTORY
            )
        assert not PolicyDryRun.objects.restrict(outsider).exists()
        with pytest.raises((governance.AccessDenied, governance.NotVisible)):
            services.publish_tested_draft(result, actor=outsider, reason="x")
    assert list(PolicyDryRun.objects.restrict(grace)) == [result]
    refusals = AuditEntry.objects.filter(action="governance.access_denied", actor_name="carol")
    assert refusals.exists()

    # A guardian permission on one policy is enough for that policy, and only that one.
    capacity_admins = governance.create_role(name="Capacity admins", owner=grace, actor=SYSTEM)
    governance.add_member(capacity_admins, carol, actor=SYSTEM)
    governance.grant(
        capacity_admins, "governance.change_policy", policy("capacity-limits"), actor=SYSTEM
    )
    governance.grant(
        capacity_admins, "governance.view_policy", policy("capacity-limits"), actor=SYSTEM
    )
    carol = User.objects.get(pk=carol.pk)
    assert list(PolicyDryRun.objects.restrict(carol)) == [result]
    status_posts_need_approval()
    with pytest.raises((governance.AccessDenied, governance.NotVisible)):
        services.request_dry_run(
            policy("production-changes"), period_end=clock.now(), actor=carol, **WHOLE_HISTORY
        )
    assert ask_and_run("capacity-limits", carol).changed == 1


def test_a_policy_without_a_draft_or_an_empty_period_is_refused(history):
    grace = history["grace"]
    with pytest.raises(governance.GovernanceError, match="no draft"):
        services.request_dry_run(
            policy("capacity-limits"), period_end=clock.now(), actor=grace, **WHOLE_HISTORY
        )
    stricter_capacity()
    with pytest.raises(governance.GovernanceError, match="start before it ends"):
        services.request_dry_run(
            policy("capacity-limits"),
            period_start=clock.now(),
            period_end=clock.now() - dt.timedelta(hours=1),
            actor=grace,
        )
    assert not PolicyDryRun.objects.exists()


def test_publishing_the_tested_draft_is_one_action(history):
    replacing = stricter_capacity()
    grace = history["grace"]
    capacity = policy("capacity-limits")
    result = ask_and_run("capacity-limits", grace)
    published = services.publish_tested_draft(result, actor=grace, reason="capacity plan 2026")
    assert published.version == capacity.version + 1
    replacing.refresh_from_db()
    assert (replacing.status, replacing.replaces, replacing.version) == (
        RuleStatus.ACTIVE,
        None,
        published.version,
    )
    old = PolicyRule.objects.get(name="No scaling beyond 10 replicas")
    assert old.status == RuleStatus.DISABLED
    assert old.history.first().history_change_reason.startswith("replaced by")
    decision = governance.decide(
        actor=grace, action="tool.incident.scale_service", arguments={"replicas": 9}
    )
    assert (decision.effect, decision.rule_name) == ("deny", "No scaling beyond 8 replicas")
    with pytest.raises(governance.GovernanceError, match="no draft"):
        governance.publish_draft(capacity, actor=grace, reason="again")


def test_a_draft_replaces_only_an_active_rule_of_its_own_policy(history):
    other = PolicyRule.objects.get(name="Production restarts need an incident commander")
    with pytest.raises(ValidationError, match="its own policy"):
        draft(
            "capacity-limits",
            name="Elsewhere",
            action="tool.x",
            effect="deny",
            reason="no",
            replaces=other,
        )


# --- the admin -----------------------------------------------------------------------------------


def client_for(user) -> Client:
    """A test client logged in as a user."""
    client = Client()
    client.force_login(user)
    return client


def test_the_admin_runs_follows_and_publishes_a_dry_run(history):
    stricter_capacity()
    grace = history["grace"]
    client = client_for(grace)
    capacity = policy("capacity-limits")
    # The admin action on the policy opens the form for it.
    response = client.post(
        reverse("admin:governance_policy_changelist"),
        {"action": "dry_run_draft", "_selected_action": [capacity.pk]},
    )
    assert response.status_code == 302
    assert (
        response["Location"] == f"{reverse('admin:agents_policydryrun_new')}?policy={capacity.pk}"
    )
    form = client.get(response["Location"])
    assert form.status_code == 200
    assert list(form.context["form"].fields["policy"].queryset) == [capacity]  # has a draft
    start = (clock.now() - dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    end = clock.now().strftime("%Y-%m-%d %H:%M:%S")
    response = client.post(
        reverse("admin:agents_policydryrun_new"),
        {"policy": capacity.pk, "period_start": start, "period_end": end},
    )
    assert response.status_code == 302, response.context["form"].errors
    dry_run = PolicyDryRun.objects.get()
    assert response["Location"] == reverse("admin:agents_policydryrun_change", args=[dry_run.pk])
    # Queued: the page polls its progress bar.
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert b'hx-trigger="every 1s"' in page.content and b"<progress" in page.content
    assert b"Publish the draft" not in page.content
    dryrun.run_dry_run(dry_run.pk, batch_size=10)
    progress = client.get(
        reverse("admin:agents_policydryrun_progress", args=[dry_run.pk]), HTTP_HX_REQUEST="true"
    )
    assert progress["HX-Refresh"] == "true" and b"38 of 38" in progress.content
    page = client.get(response["Location"])
    assert b"hx-trigger" not in page.content
    effect = {row["verdict"]: row for row in page.context["effect"]}
    assert effect["deny"]["versus_recorded"] == 1
    assert [c.tool for c in page.context["changes"]] == ["incident.scale_service"]
    assert b"No scaling beyond 8 replicas" in page.content and b"Publish the draft" in page.content
    # Publishing from the result is one action, with its reason.
    published = client.post(
        reverse("admin:agents_policydryrun_publish", args=[dry_run.pk]),
        {"reason": "capacity plan 2026"},
    )
    assert published.status_code == 302
    assert published["Location"] == reverse("admin:governance_policy_change", args=[capacity.pk])
    assert PolicyRule.objects.get(name="No scaling beyond 8 replicas").status == RuleStatus.ACTIVE
    assert not PolicyRule.objects.filter(status=RuleStatus.DRAFT).exists()


def test_the_admin_refuses_who_may_not_change_the_policy(history):
    stricter_capacity()
    result = ask_and_run("capacity-limits", history["grace"])
    carol = client_for(User.objects.get(username="carol"))  # an auditor: reads, changes nothing
    for url in (
        reverse("admin:agents_policydryrun_change", args=[result.pk]),
        reverse("admin:agents_policydryrun_progress", args=[result.pk]),
        reverse("admin:agents_policydryrun_new"),
    ):
        assert carol.get(url).status_code in (403, 404), url
    response = carol.post(
        reverse("admin:agents_policydryrun_publish", args=[result.pk]), {"reason": "x"}
    )
    assert response.status_code in (403, 404)
    assert PolicyRule.objects.filter(status=RuleStatus.DRAFT).count() == 1
    assert PolicyDryRun.objects.count() == 1
