"""Benchmark of the web pages over HTTP: inbox, live updates, run inspector, audit and KPI pages.

    python bench/web.py [--runs 1000000] [--approvals 10000] [--audit-entries 10000000]
    python bench/web.py --runs 20000 --approvals 2000 --audit-entries 100000 --seconds 3  # smoke

The server is the one `make run` starts (the Procfile's `web`): uvicorn on
orchestrator.asgi:application, one process, on a free port with DEBUG=0, started as bench/api.py
starts it. People sign in as a browser does: GET /login/, POST it with the CSRF token, and keep
the session cookie (httpx async clients; the cookies are not Secure here, the server being plain
HTTP on 127.0.0.1). --phases picks a subset of PHASES.

The database is dropped, recreated, migrated and seeded: --runs runs and their steps by SQL
(bench/api.py's seeding: four workflows over 180 days), through the services the people (the
approvers of one approval rule, who may also read runs, the audit trail and the KPIs) and the
first requests, then by SQL the rest of --approvals pending requests (cloned from those, with
their own arguments, digests, eligible role and object permissions), one run of 1,000 steps
and 10,000 events, and --audit-entries audit entries (INSERT ... SELECT over generate_series,
then numbered and checkpointed by the real sequencer, so every proof on an entry page checks).
The KPI rollups are built by the service `manage.py rebuild_kpis` calls. Then ANALYZE.

Measured (p50/p95/p99):

- inbox: the inbox (waiting for me), a request's page (whole, and the partial htmx asks for) at
  --users concurrent signed-in approvers, each in a closed loop for --seconds;
- live: --sockets websockets on /ws/live/ (the approvers' sessions, round robin), each said hello
  with the approval topic; this process opens --live-requests requests through
  governance.services.request_approval, one every --live-interval s, each stamped by an
  on_commit hook that runs before the nudge's; per socket and request, the time from the commit
  to the live message carrying the id, and to the end of the re-read GET of its row;
- resume: a real Celery worker (bench/steward_worker.py's app, as bench/engine.py starts it);
  runs of a workflow whose `approval` step waits for a decision, then a noop; an approver POSTs
  the decision to /inbox/<id>/decide/; from the decision's decided_at to the resumed approval
  step's signal_received event (it resumes in that transaction and ends there), and to the
  next step's step_started (the services' own timestamps);
- runs: the runs list unfiltered and filtered (one client, --requests each), and the first byte
  of the 1,000-step run's page;
- audit: the report (/audit/, unfiltered and filtered) and an entry's page (its inclusion proof
  checked against the signed checkpoint) over the seeded entries;
- kpis: the KPI page for 7, 30 and 90 days, across workflows and for one.

A step's end on a connected run page is not measured: no live message for run steps exists yet
(only approval, escalation, run-level and agent events; governance.models.WebhookEventType).

Targets (issues #13-#15, on 2 cores): inbox and request page p95 <= 100 ms at 20 users; commit
to a connected inbox p99 <= 1 s with 50 sockets; approval to resumed step p50 <= 200 ms; runs
list p95 <= 150 ms; a 1,000-step run's first byte <= 300 ms; audit report p95 <= 200 ms; an
entry's proof <= 50 ms; KPI page p95 <= 300 ms. --explain prints, per page, its query count and
its slowest query's plan (through Django's test client in this process).

Uses BENCH_DATABASE_URL (default postgres://root@127.0.0.1:5432/steward_bench_web; dropped at
the end unless --keep; --reuse measures one kept by an earlier --keep with the same sizes) and
BENCH_REDIS_URL (default redis://127.0.0.1:6379/11, flushed at the start and the end). An
inherited DATABASE_URL / REDIS_URL is ignored. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT), str(BENCH_DIR)]

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/steward_bench_web")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
# The server is plain HTTP on 127.0.0.1: Secure cookies would never be sent back by httpx.
os.environ["SESSION_COOKIE_SECURE"] = "0"
os.environ["CSRF_COOKIE_SECURE"] = "0"

import api  # noqa: E402  (bench/api.py: the run seeding, the server, the figures)

PHASES = ("inbox", "live", "resume", "runs", "audit", "kpis")
PASSWORD = "bench-web-password"
RULE = "bench-web"
THOUSAND = "bench-thousand"  # the workflow of the 1,000-step run
APPROVE = "bench-approve"  # the workflow whose approval step the resume phase decides
TEMPLATES = 20  # requests opened through the service; the rest are cloned from them by SQL
TARGETS = {  # name: (figure, limit in ms)
    "inbox p95 <= 100 ms at 20 users": ("inbox", "p95_ms", 100.0),
    "request page p95 <= 100 ms at 20 users": ("request page", "p95_ms", 100.0),
    "commit to a connected inbox p99 <= 1 s with 50 sockets": ("live arrival", "p99_ms", 1000.0),
    "approval to resumed step p50 <= 200 ms": ("resume", "p50_ms", 200.0),
    "runs list p95 <= 150 ms": ("runs list", "p95_ms", 150.0),
    "1,000-step run page first byte <= 300 ms": ("thousand-step run", "p95_ms", 300.0),
    "audit report p95 <= 200 ms": ("audit report", "p95_ms", 200.0),
    "entry inclusion proof <= 50 ms": ("audit entry", "p95_ms", 50.0),
    "KPI page p95 <= 300 ms": ("kpis", "p95_ms", 300.0),
}

log = api.log
summary = api.summary


# --- seeding -------------------------------------------------------------------------------------


READER = "bench-reader"  # reads runs, the audit trail and the KPIs; approves nothing
RESUMER = "bench-resumer"  # decides the resume phase's requests (a rule and role of their own)
RESUME_RULE = "bench-resume"
# What an auditor holds (tests/web/test_audit_pages.py): the entries, checkpoints, tree, checks.
AUDITOR = tuple(
    f"audit.view_audit{model}" for model in ("entry", "checkpoint", "treestate", "verification")
)


def _team(name: str, admin, perms: tuple[str, ...], workflows):
    """Create a role with model-wide `perms` and view on `workflows`."""
    from audit.actors import SYSTEM
    from governance import services as governance

    role = governance.create_role(name=name, owner=admin, actor=SYSTEM)
    for perm in perms:
        governance.grant(role, perm, actor=SYSTEM)
    for workflow in workflows:
        governance.grant(role, "orchestrator.view_workflow", workflow, actor=SYSTEM)
    return role


def _person(username: str, *roles) -> None:
    """Create (once) a staff person who signs in with PASSWORD, in `roles`."""
    from django.contrib.auth import get_user_model

    from audit.actors import SYSTEM
    from governance import services as governance

    if get_user_model().objects.filter(username=username).exists():
        return
    person = governance.create_person(
        username=username, password=PASSWORD, is_staff=True, actor=SYSTEM
    )
    for role in roles:
        governance.add_member(role, person, actor=SYSTEM)


def people(count: int, admin):
    """Create (once) `count` approvers (who may also read runs, the audit trail and the KPIs),
    a reader who approves nothing, and the resume phase's approver with a rule of their own."""
    from audit.actors import SYSTEM
    from governance import services as governance
    from governance.models import ApprovalRule
    from orchestrator.models import Workflow

    names = [f"bench-approver-{k:02d}" for k in range(count)]
    rule = ApprovalRule.objects.filter(slug=RULE).first()
    if rule is None:
        perms = ("orchestrator.view_workflowrun", *AUDITOR)
        workflows = list(Workflow.objects.all())
        role = _team("Bench approvers", admin, perms, workflows)
        rule = governance.create_approval_rule(
            slug=RULE, name="Bench approval", role=role, sla_seconds=7 * 86400, actor=SYSTEM
        )
        _person(READER, _team("Bench readers", admin, perms, workflows))
        resumers = _team("Bench resume approvers", admin, (), [])
        governance.create_approval_rule(
            slug=RESUME_RULE, name="Bench resume", role=resumers, sla_seconds=86400, actor=SYSTEM
        )
        _person(RESUMER, resumers)
    for name in names:
        _person(name, rule.role)
    return rule, names


def _grant_view(workflow) -> None:
    """Let the reader's and the approvers' roles see a workflow created after them."""
    from audit.actors import SYSTEM
    from governance import services as governance
    from governance.models import Role

    for role in Role.objects.filter(name__in=["Bench approvers", "Bench readers"]):
        governance.grant(role, "orchestrator.view_workflow", workflow, actor=SYSTEM)


def _open_runs(limit: int) -> list[int]:
    """Return the ids of up to `limit` seeded runs still running (what requests belong to)."""
    from orchestrator.models import WorkflowRun

    return list(
        WorkflowRun.objects.filter(status="running", request_id__startswith="seed-")
        .order_by("-id")
        .values_list("pk", flat=True)[:limit]
    )


def open_request(rule, client, k: int, run_id: int | None):
    """Open one request through the service, as an integration's run would ask for it."""
    from governance import services as governance
    from orchestrator.models import Workflow

    workflow = Workflow.objects.get(slug=api.WORKFLOWS[k % len(api.WORKFLOWS)][0])
    return governance.request_approval(
        action="tool.erp.refund",
        approval_rule=rule,
        arguments={"amount": 100 + k, "invoice": f"INV-{k}"},
        target=workflow,
        summary=f"Refund invoice INV-{k}",
        risk=("low", "medium", "high")[k % 3],
        requested_by=client,
        run_initiator=client,
        run_id=run_id,
        step_id="only",
    )


# Clone a template request `count` times: own arguments (and their SHA-256 over the canonical
# JSON, as governance.actions.common.digest computes it), run, risk and times.
CLONE_REQUESTS = """
INSERT INTO governance_approvalrequest ({columns})
SELECT {values}
FROM governance_approvalrequest t, generate_series(%(first)s, %(last)s) AS k
WHERE t.id = %(template)s
ORDER BY k
"""
CLONED = {
    "arguments": "jsonb_build_object('amount', 100 + k, 'invoice', 'INV-' || k)",
    "arguments_digest": (
        'encode(sha256(convert_to(\'{"amount":\' || (100 + k) || \',"invoice":"INV-\' || k'
        " || '\"}', 'UTF8')), 'hex')"
    ),
    "summary": "'Refund invoice INV-' || k",
    "risk": "(ARRAY['low', 'medium', 'high'])[1 + k %% 3]",
    "run_id": "(%(runs)s::bigint[])[1 + k %% cardinality(%(runs)s::bigint[])]",
    "created_at": "now() - (k %% 2880) * interval '1 minute'",
    "due_at": "now() - (k %% 2880) * interval '1 minute' + t.sla_seconds * interval '1 second'",
    "expires_at": (
        "now() - (k %% 2880) * interval '1 minute' + t.sla_seconds * interval '1 second'"
    ),
}


def seed_requests(total: int, rule, client) -> float:
    """Open TEMPLATES requests through the service, clone the rest by SQL; return the seconds."""
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection, transaction

    from governance.models import ApprovalRequest

    began = time.perf_counter()
    runs = _open_runs(max(total, 1))
    templates = [
        open_request(rule, client, k, runs[k % len(runs)] if runs else None)
        for k in range(min(TEMPLATES, total))
    ]
    if total > len(templates):
        template = templates[0]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'governance_approvalrequest' AND column_name <> 'id'"
                " ORDER BY ordinal_position"
            )
            columns = [row[0] for row in cursor.fetchall()]
        values = ", ".join(CLONED.get(column, f"t.{column}") for column in columns)
        above = ApprovalRequest.objects.order_by("-id").values_list("id", flat=True).first()
        ct = ContentType.objects.get_for_model(ApprovalRequest).pk
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                CLONE_REQUESTS.format(columns=", ".join(columns), values=values),
                {
                    "first": len(templates),
                    "last": total - 1,
                    "template": template.pk,
                    "runs": runs or [None],
                },
            )
            cursor.execute(
                "INSERT INTO governance_approvalrequest_eligible_roles"
                " (approvalrequest_id, role_id)"
                " SELECT r.id, e.role_id FROM governance_approvalrequest r,"
                " governance_approvalrequest_eligible_roles e"
                " WHERE r.id > %s AND e.approvalrequest_id = %s",
                [above, template.pk],
            )
            cursor.execute(
                "INSERT INTO guardian_groupobjectpermission"
                " (object_pk, content_type_id, group_id, permission_id)"
                " SELECT r.id::text, p.content_type_id, p.group_id, p.permission_id"
                " FROM governance_approvalrequest r, guardian_groupobjectpermission p"
                " WHERE r.id > %s AND p.object_pk = %s AND p.content_type_id = %s",
                [above, str(template.pk), ct],
            )
    with connection.cursor() as cursor:
        for table in (
            "governance_approvalrequest",
            "governance_approvalrequest_eligible_roles",
            "guardian_groupobjectpermission",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - began


THOUSAND_STEPS = 1000
THOUSAND_EVENTS = 10_000


def _chain(count: int, prefix: str = "s") -> list[dict]:
    """Return `count` no-op steps, each after the one before."""
    return [
        {
            "id": f"{prefix}{i:04d}",
            "type": "noop",
            **({"depends_on": [f"{prefix}{i - 1:04d}"]} if i else {}),
        }
        for i in range(count)
    ]


def seed_thousand(client, rule) -> int:
    """Insert one finished run of 1,000 steps and 10,000 events by SQL; return its id."""
    from django.db import connection, transaction

    from audit.actors import SYSTEM
    from orchestrator import services
    from orchestrator.models import Workflow, WorkflowRun

    workflow = Workflow.objects.filter(slug=THOUSAND).first()
    if workflow is None:
        workflow = services.create_workflow(
            slug=THOUSAND,
            name="Bench: a thousand steps",
            definition={"description": "bench/web.py", "steps": _chain(THOUSAND_STEPS)},
            actor=SYSTEM,
            version_approval_required=False,
        )
        _grant_view(workflow)
    workflow.refresh_from_db()
    existing = WorkflowRun.objects.filter(workflow=workflow).values_list("pk", flat=True).first()
    if existing:
        return existing
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO orchestrator_workflowrun (
                workflow_id, version_id, status, input, output, error, started_by_id,
                started_by_name, trigger, business_key, idempotency_key, request_id, created_at,
                updated_at, finished_at)
            VALUES (%s, %s, 'succeeded', '{}', '{"ok": true}', NULL, %s, %s, 'api',
                'thousand', NULL, 'bench-thousand', now() - interval '1 hour',
                now() - interval '10 minutes', now() - interval '10 minutes')
            RETURNING id
            """,
            [workflow.pk, workflow.live_version_id, client.pk, client.username],
        )
        run_id = cursor.fetchone()[0]
        cursor.execute(
            """
            INSERT INTO orchestrator_steprun (
                run_id, step_id, item_index, parent_id, step_type, status, attempt, item, input,
                output, error, ready_at, dispatched_at, lease_token, lease_expires_at,
                deadline_at, worker, wake_at, wait_signal, created_at, started_at, finished_at)
            SELECT %(run)s, 's' || lpad(i::text, 4, '0'), -1, NULL, 'noop', 'succeeded', 1, NULL,
                jsonb_build_object('i', i), jsonb_build_object('i', i), NULL,
                now() - interval '1 hour' + i * interval '3 seconds', NULL, '', NULL, NULL, '',
                NULL, '', now() - interval '1 hour' + i * interval '3 seconds',
                now() - interval '1 hour' + i * interval '3 seconds',
                now() - interval '1 hour' + i * interval '3 seconds' + interval '2 seconds'
            FROM generate_series(0, %(steps)s - 1) AS i
            """,
            {"run": run_id, "steps": THOUSAND_STEPS},
        )
        per_step = THOUSAND_EVENTS // THOUSAND_STEPS
        kinds = ["step_scheduled", "step_started"] + ["waiting"] * (per_step - 3)
        kinds.append("step_succeeded")
        cursor.execute(
            """
            INSERT INTO orchestrator_runevent (
                run_id, step_run_id, step_id, item_index, attempt, kind, data, actor_id,
                actor_name, created_at)
            SELECT %(run)s, s.id, s.step_id, NULL, 1, (%(kinds)s::text[])[e],
                jsonb_build_object('n', e), NULL, '', s.started_at + e * interval '100 ms'
            FROM orchestrator_steprun s, generate_series(1, %(per_step)s) AS e
            WHERE s.run_id = %(run)s
            ORDER BY s.id, e
            """,
            {"run": run_id, "kinds": kinds, "per_step": per_step},
        )
    return run_id


AUDIT_CHUNK = 1_000_000
SEED_AUDIT = """
INSERT INTO audit_auditentry (
    created_at, actor_id, actor_name, actor_kind, action, target_type, target_id, target_repr,
    run_id, step_id, request_id, decision, body_digest)
SELECT now() - interval '180 days' + i * (interval '180 days' / %(n)s),
    CASE WHEN i %% 10 = 0 THEN %(client)s END,
    CASE WHEN i %% 10 = 0 THEN %(client_name)s ELSE '' END,
    CASE WHEN i %% 10 = 0 THEN 'user' ELSE 'system' END,
    (ARRAY['run.started', 'step.started', 'step.succeeded', 'step.started', 'step.succeeded',
           'run.succeeded', 'tool.called', 'model.called', 'governance.approval.requested',
           'governance.approval.decided'])[1 + i %% 10],
    'orchestrator.workflowrun', (%(run_lo)s + (i / 10) %% %(runs)s)::text,
    'run ' || (%(run_lo)s + (i / 10) %% %(runs)s),
    (%(run_lo)s + (i / 10) %% %(runs)s)::text,
    CASE WHEN i %% 10 IN (1, 2, 3, 4) THEN 'only' ELSE '' END,
    'seed-' || (i / 10),
    CASE WHEN i %% 10 = 6 THEN '{"allowed":true,"policy":"default"}' END,
    CASE WHEN i %% 4 = 0 THEN encode(sha256(convert_to(
        '{"note":"seeded","request":"seed-' || (i / 10) || '","run":"'
        || (%(run_lo)s + (i / 10) %% %(runs)s) || '"}', 'UTF8')), 'hex') ELSE '' END
FROM generate_series(%(first)s, %(last)s) AS i
ORDER BY i
"""
# A body as canonical JSON: what its entry's body_digest above is the SHA-256 of.
SEED_BODIES = """
INSERT INTO audit_auditbody (entry_id, content)
SELECT id, '{"note":"seeded","request":"' || request_id || '","run":"' || run_id || '"}'
FROM audit_auditentry WHERE id > %s AND body_digest <> ''
"""


def seed_audit(count: int, client) -> dict:
    """Insert `count` audit entries by SQL, sequence and checkpoint them; return the seconds."""
    from django.db import connection, transaction

    from audit import services as audit
    from audit.models import AuditEntry
    from orchestrator.models import WorkflowRun

    began = time.perf_counter()
    lo = WorkflowRun.objects.order_by("id").values_list("id", flat=True).first() or 1
    runs = WorkflowRun.objects.count() or 1
    for first in range(1, count + 1, AUDIT_CHUNK):
        last = min(count, first + AUDIT_CHUNK - 1)
        above = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                SEED_AUDIT,
                {
                    "n": count,
                    "first": first,
                    "last": last,
                    "client": client.pk,
                    "client_name": client.username,
                    "run_lo": lo,
                    "runs": runs,
                },
            )
            cursor.execute(SEED_BODIES, [above])
        log(f"  {last:,} audit entries inserted ({time.perf_counter() - began:.0f} s)")
    inserted = time.perf_counter() - began
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_auditentry")
        cursor.execute("VACUUM ANALYZE audit_auditbody")
    sequenced = 0
    stalled_since = time.monotonic()
    while True:
        step = audit.sequence_pending(batch_size=20_000, max_batches=25)
        sequenced += step
        if step:
            stalled_since = time.monotonic()
            if sequenced % 1_000_000 < 500_000:
                log(f"  {sequenced:,} sequenced ({time.perf_counter() - began:.0f} s)")
        elif not _unsequenced() or time.monotonic() - stalled_since > 120:
            break
        else:
            time.sleep(0.5)  # a transaction open elsewhere on the server holds the horizon
    audit.sign_checkpoint(force=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE audit_auditleaf")
    done = time.perf_counter()
    return {
        "insert_s": round(inserted, 1),
        "sequence_s": round(done - began - inserted, 1),
        "sequenced": sequenced,
    }


def _unsequenced() -> bool:
    """Tell whether an entry still waits for its sequence number."""
    from audit.models import AuditEntry

    return AuditEntry.objects.filter(leaf__isnull=True).exists()


def _body_check() -> str | None:
    """Say what is wrong with a seeded body's digest or a cloned request's, if anything."""
    import json as json_

    from audit.evidence import body_digest
    from audit.models import AuditBody
    from governance.actions.common import digest
    from governance.models import ApprovalRequest

    body = AuditBody.objects.select_related("entry").order_by("-entry_id").first()
    if body is not None and body_digest(json_.loads(body.content)) != body.entry.body_digest:
        return f"seeded body {body.entry_id}: digest mismatch"
    request = ApprovalRequest.objects.order_by("-id").first()
    if request is not None and digest(request.arguments) != request.arguments_digest:
        return f"cloned request {request.pk}: digest mismatch"
    return None


def seed_approve_workflow(rule) -> None:
    """Create (once) the workflow whose approval step the resume phase decides."""
    from audit.actors import SYSTEM
    from governance import services as governance
    from governance.models import Role
    from orchestrator import services
    from orchestrator.models import Workflow

    if Workflow.objects.filter(slug=APPROVE).exists():
        return
    workflow = services.create_workflow(
        slug=APPROVE,
        name="Bench: approve, then go on",
        definition={
            "description": "bench/web.py",
            "steps": [
                {
                    "id": "approve",
                    "type": "approval",
                    "rule": RESUME_RULE,
                    "summary": "Go on with {{ input.n }}",
                    "arguments": {"n": "{{ input.n }}"},
                },
                {"id": "after", "type": "noop", "depends_on": ["approve"]},
            ],
        },
        actor=SYSTEM,
        version_approval_required=False,
    )
    resumers = Role.objects.get(name="Bench resume approvers")
    governance.grant(resumers, "orchestrator.view_workflow", workflow, actor=SYSTEM)
    starters = Role.objects.get(name="Bench integrations")  # bench/api.py's: the runs' starter
    for perm in ("view_workflow", "change_workflow"):
        governance.grant(starters, f"orchestrator.{perm}", workflow, actor=SYSTEM)


def build_kpis() -> float:
    """Build the KPI rollups as `manage.py rebuild_kpis` does, VACUUM ANALYZE them; seconds."""
    from django.db import connection

    from audit.actors import SYSTEM
    from orchestrator import kpis

    began = time.perf_counter()
    kpis.rebuild(actor=SYSTEM)
    # A rebuild rewrites every row: without this the planner keeps the statistics of the
    # empty tables and index-only scans fetch every heap row, until autovacuum passes.
    with connection.cursor() as cursor:
        for model in kpis._ROLLUPS:
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")
    return time.perf_counter() - began


# --- signing in ----------------------------------------------------------------------------------


async def sign_in(base: str, username: str):
    """Return an httpx async client signed in through /login/ as a browser would be."""
    import httpx

    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    http = httpx.AsyncClient(base_url=base, timeout=120, limits=limits)
    (await http.get("/login/")).raise_for_status()
    response = await http.post(
        "/login/",
        data={
            "username": username,
            "password": PASSWORD,
            "csrfmiddlewaretoken": http.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/login/"},
    )
    if response.status_code != 302:
        raise RuntimeError(
            f"signing in as {username}: {response.status_code} {response.text[:300]}"
        )
    return http


async def sign_in_all(base: str, names: list[str]) -> list[dict[str, str]]:
    """Sign every person in (one session each); return their cookies."""
    sessions = []
    for name in names:
        http = await sign_in(base, name)
        sessions.append(dict(http.cookies.items()))
        await http.aclose()
    return sessions


def _client(base: str, cookies: dict[str, str]):
    """Return an httpx async client carrying a session's cookies."""
    import httpx

    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    return httpx.AsyncClient(base_url=base, timeout=120, limits=limits, cookies=cookies)


# --- measuring -----------------------------------------------------------------------------------


async def closed_loop(base: str, sessions: list[dict], pick, seconds: float, headers=None):
    """Each session GETs `pick(index, k)` in a closed loop for `seconds`; return the figures."""
    latencies: list[float] = []
    errors: dict[str, int] = {}

    async def one(index: int, cookies: dict) -> None:
        async with _client(base, cookies) as http:
            k = 0
            while time.perf_counter() < stop_at:
                path = pick(index, k)
                began = time.perf_counter()
                response = await http.get(path, headers=headers)
                took = time.perf_counter() - began
                k += 1
                if response.status_code == 200:
                    latencies.append(took)
                else:
                    key = f"{response.status_code} {path}"
                    errors[key] = errors.get(key, 0) + 1

    stop_at = time.perf_counter() + seconds
    began = time.perf_counter()
    with api.ConnectionSampler(os.environ["DATABASE_URL"]) as connections:
        await asyncio.gather(*(one(i, cookies) for i, cookies in enumerate(sessions)))
    figures = summary(latencies, time.perf_counter() - began, errors)
    figures["db_connections_peak"] = connections.peak - 1
    return figures


async def sequential(
    base: str, cookies: dict, paths: list[str], requests: int, first_byte=False, headers=None
):
    """GET `paths` in turn, `requests` times (after one untimed round unless only one is asked
    for); the whole response's time, or the first byte's."""
    latencies = []
    async with _client(base, cookies) as http:
        for path in paths if requests > 1 else []:
            (await http.get(path, headers=headers)).raise_for_status()
        for k in range(requests):
            path = paths[k % len(paths)]
            began = time.perf_counter()
            async with http.stream("GET", path, headers=headers) as response:
                response.raise_for_status()
                async for _ in response.aiter_raw():
                    if first_byte:
                        break
                took = time.perf_counter() - began
            latencies.append(took)
    return summary(latencies)


def phase_inbox(base, sessions, users: int, seconds: float, probe_limit: float) -> dict:
    """The inbox and a request's page (whole, and as htmx asks for it) at `users` users."""
    from governance.models import ApprovalRequest

    pending = list(ApprovalRequest.objects.filter(status="pending").values_list("pk", flat=True))
    chooser = random.Random(13)
    picks = [chooser.choice(pending) for _ in range(5000)]
    team = [sessions[i % len(sessions)] for i in range(users)]
    result = {}
    pages = {
        "inbox": (lambda i, k: "/inbox/", None),
        "request page": (lambda i, k: f"/inbox/{picks[(i * 997 + k) % len(picks)]}/", None),
        "request partial": (
            lambda i, k: f"/inbox/{picks[(i * 991 + k) % len(picks)]}/",
            {"HX-Request": "true", "HX-Target": "detail"},
        ),
        "inbox, another tab (roles)": (lambda i, k: "/inbox/?tab=roles", None),
    }
    for name, (pick, headers) in pages.items():
        # One request first, alone: a page far over its target is not run concurrently (20
        # users would keep the server busy for as many times as long), its one time is shown.
        probe = asyncio.run(sequential(base, team[0], [pick(0, 0)], 1, headers=headers))
        if probe["p50_ms"] > probe_limit * 1000:
            probe["note"] = f"one request alone took over {probe_limit:g} s: not run at {users}"
            result[name] = probe
            log(f"{name}, one user, one request: {api._line(probe)} ({probe['note']})")
            continue
        figures = asyncio.run(closed_loop(base, team, pick, seconds, headers))
        result[name] = figures
        log(f"{name}, {users} users: {api._line(figures)}")
    return result


def phase_live(
    base, sessions, sockets: int, count: int, interval: float, rule, client, reread: bool
) -> dict:
    """Commit requests here; time their arrival (and re-read) at `sockets` connected inboxes."""
    import websockets
    from django.db import transaction

    commits: dict[int, float] = {}
    arrivals: dict[int, list[float]] = {}
    rereads: dict[int, list[float]] = {}
    ready = threading.Event()
    done = threading.Event()
    failures: list[str] = []
    ws_base = base.replace("http://", "ws://")

    async def listen(index: int, cookies: dict) -> None:
        header = "; ".join(f"{name}={value}" for name, value in cookies.items())
        async with (
            websockets.connect(
                f"{ws_base}/ws/live/",
                additional_headers={"Cookie": header, "Origin": base},
                open_timeout=60,
                max_queue=None,
            ) as socket,
            _client(base, cookies) as http,
        ):
            await socket.send(json.dumps({"type": "hello", "cursor": None, "topics": ["approval"]}))
            while json.loads(await socket.recv()).get("type") != "ready":
                pass
            connected.append(index)
            if len(connected) == sockets:
                ready.set()
            while not done.is_set():
                try:
                    message = json.loads(await asyncio.wait_for(socket.recv(), timeout=0.5))
                except TimeoutError:
                    continue
                if message.get("type") != "event" or message.get("kind") != "approval":
                    continue
                arrived = time.perf_counter()
                pk = message["id"]
                arrivals.setdefault(pk, []).append(arrived)
                if not reread:
                    continue
                response = await http.get(f"/inbox/{pk}/row/")
                if response.status_code != 200 or f"row-{pk}" not in response.text:
                    failures.append(f"row {pk}: {response.status_code}")
                rereads.setdefault(pk, []).append(time.perf_counter())

    connected: list[int] = []

    def run_listeners() -> None:
        async def everything():
            results = await asyncio.gather(
                *(listen(i, sessions[i % len(sessions)]) for i in range(sockets)),
                return_exceptions=True,
            )
            failures.extend(repr(r) for r in results if isinstance(r, BaseException))
            ready.set()

        asyncio.run(everything())

    thread = threading.Thread(target=run_listeners, daemon=True)
    thread.start()
    if not ready.wait(timeout=180) or failures:
        done.set()
        raise RuntimeError(f"the sockets did not connect: {failures[:3]}")
    runs = _open_runs(count) or [None]
    for k in range(count):
        stamp: dict[str, float] = {}
        with transaction.atomic():
            # Registered first, so it runs first once the commit is done: before the nudge.
            transaction.on_commit(lambda stamp=stamp: stamp.setdefault("at", time.perf_counter()))
            request = open_request(rule, client, 1_000_000 + k, runs[k % len(runs)])
        commits[request.pk] = stamp["at"]
        time.sleep(interval)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(len(rereads.get(pk, [])) < sockets for pk in commits):
        time.sleep(0.1)
    done.set()
    thread.join(timeout=10)
    arrival = [t - commits[pk] for pk in commits for t in arrivals.get(pk, [])]
    reread = [t - commits[pk] for pk in commits for t in rereads.get(pk, [])]
    missing = sum(max(0, sockets - len(arrivals.get(pk, []))) for pk in commits)
    result = {
        "live arrival": summary(arrival),
        "live arrival and re-read": summary(reread),
        "sockets": sockets,
        "requests": count,
        "missing_deliveries": missing,
        "failures": failures[:5],
    }
    log(f"live arrival, {sockets} sockets: {api._line(result['live arrival'])}, {missing} missing")
    if reread:
        log(f"live arrival + re-read of the row: {api._line(result['live arrival and re-read'])}")
    else:
        result["note"] = "no re-read: the inbox's row is over its time alone (the inbox phase)"
        log(f"live: {result['note']}")
    return result


def phase_resume(base, processes, cookies: dict, client, count: int) -> dict:
    """Decide runs' approval steps over HTTP with a real worker; time the resumed step."""
    import httpx
    import redis
    from engine import STEWARD_QUEUE, _celery_argv
    from steward_worker import DONE_CHANNEL

    from governance.models import ApprovalDecision, ApprovalRequest
    from orchestrator import services
    from orchestrator.models import RunEvent, Workflow

    env = {**os.environ, "STEWARD_FIND_SERVICES": "0"}
    processes.start("worker", _celery_argv("steward_worker", STEWARD_QUEUE, "bench-web"), env)
    pubsub = redis.Redis.from_url(os.environ["REDIS_URL"]).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(DONE_CHANNEL)
    workflow = Workflow.objects.get(slug=APPROVE)
    resumed, after, wall = [], [], []
    with httpx.Client(base_url=base, cookies=cookies, timeout=120) as http:
        http.get("/inbox/").raise_for_status()
        for k in range(count + 2):
            run = services.start_run(workflow, {"n": k}, started_by=client, trigger="bench")
            request = _wait_for(
                lambda run=run: ApprovalRequest.objects.filter(
                    run_id=run.pk, status="pending"
                ).first(),
                processes,
            )
            page = http.get(f"/inbox/{request.pk}/")
            page.raise_for_status()
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
            began = time.perf_counter()
            response = http.post(
                f"/inbox/{request.pk}/decide/",
                data={
                    "decision": "approve",
                    "expected_digest": request.arguments_digest,
                    "comment": "",
                    "back": "",
                    "csrfmiddlewaretoken": token.group(1) if token else http.cookies["csrftoken"],
                },
                headers={"Referer": f"{base}/inbox/{request.pk}/"},
            )
            if response.status_code != 302:
                raise RuntimeError(f"deciding {request.pk}: {response.status_code}")
            _wait_done(pubsub, run.pk, processes)
            ended = time.perf_counter()
            decided = ApprovalDecision.objects.get(request=request).decided_at
            # The approval step resumes in the transaction that records the signal it waited
            # for (signal_received), then the next step starts (step_started).
            events = RunEvent.objects.filter(
                run=run, created_at__gte=decided, kind__in=["signal_received", "step_started"]
            )
            at = {(e.step_id, e.kind): e.created_at for e in events}
            if k >= 2:  # two untimed: the worker's first steps
                resumed.append((at["approve", "signal_received"] - decided).total_seconds())
                after.append((at["after", "step_started"] - decided).total_seconds())
                wall.append(ended - began)
    pubsub.close()
    result = {
        "resume": summary(resumed),
        "next step started": summary(after),
        "decision POST to run end (wall)": summary(wall),
    }
    for name, figures in result.items():
        log(f"approval to {name}: {api._line(figures)}")
    return result


def _wait_for(read, processes, timeout: float = 60.0):
    """Poll `read()` until it returns something (the worker must stay alive)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = read()
        if found is not None:
            return found
        processes.check_alive()
        time.sleep(0.01)
    raise TimeoutError("the worker did not open the approval request in time")


def _wait_done(pubsub, run_id: int, processes, timeout: float = 60.0) -> None:
    """Wait for the worker's notice that the run ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is None:
            processes.check_alive()
            continue
        pk, status = message["data"].decode().split()
        if int(pk) == run_id:
            if status != "succeeded":
                raise RuntimeError(f"run {run_id} {status}")
            return
    raise TimeoutError(f"run {run_id} did not end")


def run_paths(runs: int) -> dict[str, str]:
    """The runs list's pages to time, with values from the seeded data (bench/api.py's)."""
    api_paths = api.list_paths(runs)
    key = api_paths["business_key"].rpartition("=")[2]
    return {
        "unfiltered": "/runs/",
        "status=failed": "/runs/?status=failed",
        "status=running": "/runs/?status=running",
        "status=running,paused": "/runs/?status=running&status=paused",
        "workflow": "/runs/?workflow=bench-kyc",
        "workflow+status": "/runs/?workflow=bench-kyc&status=failed",
        "business_key": f"/runs/?business_key={key}",
        "started_by": "/runs/?started_by=bench-erp",
        "last 7 days": "/runs/?created_after=" + _days_ago(7),
        "waiting_on=approval": "/runs/?waiting_on=approval",
    }


def _days_ago(days: int) -> str:
    """Return the ISO time `days` days ago (a filter value)."""
    import datetime as dt

    when = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def phase_runs(base, cookies, runs: int, thousand: int, requests: int) -> dict:
    """The runs list, unfiltered and filtered, and the 1,000-step run's page's first byte."""
    result = {"runs list": {}}
    for name, path in run_paths(runs).items():
        figures = asyncio.run(sequential(base, cookies, [path], requests))
        result["runs list"][name] = figures
        log(f"runs list {name}: {api._line(figures)}")
    worst = max(result["runs list"].items(), key=lambda item: item[1]["p95_ms"])
    result["runs list worst"] = {"page": worst[0], **worst[1]}
    figures = asyncio.run(
        sequential(base, cookies, [f"/runs/{thousand}/"], max(10, requests // 5), True)
    )
    result["thousand-step run"] = figures
    log(f"the 1,000-step run's page, first byte: {api._line(figures)}")
    whole = asyncio.run(sequential(base, cookies, [f"/runs/{thousand}/"], max(10, requests // 5)))
    result["thousand-step run, whole"] = whole
    log(f"the 1,000-step run's page, whole: {api._line(whole)}")
    return result


def audit_paths() -> dict[str, str]:
    """The audit report's pages to time."""
    from audit.models import AuditEntry

    middle = AuditEntry.objects.order_by("id").values_list("run_id", flat=True)[
        max(0, AuditEntry.objects.count() // 2)
    ]
    return {
        "unfiltered": "/audit/",
        "action=step.succeeded": "/audit/?action=step.succeeded",
        "action=governance.*": "/audit/?action=governance.*",
        "actor=bench-erp": "/audit/?actor=bench-erp",
        f"run_id={middle}": f"/audit/?run_id={middle}",
        "since 30 days ago": "/audit/?since=" + _days_ago(30),
        "until 90 days ago": "/audit/?until=" + _days_ago(90),
    }


def phase_audit(base, cookies, requests: int, proofs: int) -> dict:
    """The audit report, unfiltered and filtered, and covered entries' pages with their proofs."""
    from audit.models import AuditCheckpoint, AuditLeaf

    result = {"audit report": {}}
    for name, path in audit_paths().items():
        figures = asyncio.run(sequential(base, cookies, [path], requests))
        result["audit report"][name] = figures
        log(f"audit report {name}: {api._line(figures)}")
    worst = max(result["audit report"].items(), key=lambda item: item[1]["p95_ms"])
    result["audit report worst"] = {"page": worst[0], **worst[1]}
    checkpoint = AuditCheckpoint.objects.order_by("-id").first()
    if checkpoint is None:
        return result
    chooser = random.Random(14)
    seqs = [chooser.randrange(checkpoint.tree_size) for _ in range(10)]
    entries = list(AuditLeaf.objects.filter(seq__in=seqs).values_list("entry_id", flat=True))
    paths = [f"/audit/entries/{pk}/" for pk in entries]
    figures = asyncio.run(sequential(base, cookies, paths[:1], proofs))
    figures["tree_size"] = checkpoint.tree_size
    result["audit entry"] = figures
    log(f"an entry's page with its proof (tree of {checkpoint.tree_size:,}): {api._line(figures)}")
    return result


def kpi_paths() -> dict[str, str]:
    """The KPI pages to time: each period, across workflows and for one."""
    paths = {}
    for days in (7, 30, 90):
        paths[f"{days} days"] = f"/kpis/?days={days}"
        paths[f"{days} days, bench-orders"] = f"/kpis/?days={days}&workflow=bench-orders"
    paths["90 days ending 60 days ago"] = "/kpis/?days=90&end=" + _days_ago(60)[:10]
    return paths


def phase_kpis(base, cookies, requests: int) -> dict:
    """The KPI page for each period."""
    result = {"kpis": {}}
    for name, path in kpi_paths().items():
        figures = asyncio.run(sequential(base, cookies, [path], requests))
        result["kpis"][name] = figures
        log(f"KPI page {name}: {api._line(figures)}")
    worst = max(result["kpis"].items(), key=lambda item: item[1]["p95_ms"])
    result["kpis worst"] = {"page": worst[0], **worst[1]}
    return result


def explain(username: str, paths: dict[str, str]) -> None:
    """Print each page's query count and its slowest query's plan, run in this process."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    http = Client()
    http.force_login(get_user_model().objects.get(username=username))
    for name, path in paths.items():
        http.get(path)
        with CaptureQueriesContext(connection) as queries:
            began = time.perf_counter()
            response = http.get(path)
            took = (time.perf_counter() - began) * 1000
        timed = sorted(queries.captured_queries, key=lambda q: -float(q["time"]))
        slowest = timed[0]
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest["sql"])
            plan = "\n    ".join(row[0] for row in cursor.fetchall())
        total = sum(float(q["time"]) for q in queries.captured_queries) * 1000
        print(
            f"-- {name} ({path}): {response.status_code}, {took:.0f} ms in this process, "
            f"{len(queries)} queries taking {total:.0f} ms; the slowest "
            f"({float(slowest['time']) * 1000:.0f} ms):\n    {slowest['sql'][:2000]}\n    {plan}"
        )


# --- main ----------------------------------------------------------------------------------------


def targets(result: dict) -> dict:
    """Say which of the issues' targets the figures meet."""
    flat = {}
    for value in result.values():
        if isinstance(value, dict):
            flat.update(value)
    verdicts = {}
    for name, (figure, key, limit) in TARGETS.items():
        source = flat.get(f"{figure} worst") or flat.get(figure)
        if not source or not source.get("n"):
            continue
        where = f"{source['page']}, " if "page" in source else ""
        ok = source[key] <= limit and not source.get("errors")
        verdicts[name] = f"{'met' if ok else 'NOT met'} ({where}{key[:3]} {source[key]} ms)"
    return verdicts


def main() -> None:
    """Seed the database, start the server, and measure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--approvals", type=int, default=10_000, help="pending requests")
    parser.add_argument("--audit-entries", type=int, default=10_000_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per inbox page")
    parser.add_argument("--users", type=int, default=20, help="concurrent inbox users")
    parser.add_argument("--sockets", type=int, default=50, help="connected inboxes")
    parser.add_argument("--live-requests", type=int, default=40)
    parser.add_argument("--live-interval", type=float, default=0.5, help="seconds between them")
    parser.add_argument("--resumes", type=int, default=30, help="approvals decided")
    parser.add_argument("--requests", type=int, default=50, help="per runs/audit/KPI page")
    parser.add_argument("--proofs", type=int, default=10, help="entry pages timed")
    parser.add_argument(
        "--probe-limit", type=float, default=5.0, help="s; a slower inbox page is timed alone"
    )
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"a subset of {','.join(PHASES)}"
    )
    parser.add_argument("--explain", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave the database in place")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept, seeded database")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    unknown = phases - set(PHASES)
    if unknown:
        parser.error(f"unknown phases: {sorted(unknown)}")

    def _terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)

    from engine import (
        Processes,
        _admin_url,
        _prepare_environment,
        _recreate_database,
        busy_neighbours,
        machine,
    )

    database_url = os.environ["BENCH_DATABASE_URL"]
    if not args.reuse:
        _recreate_database(database_url)
    began = time.monotonic()
    load_before = os.getloadavg()
    urls = _prepare_environment()  # migrates
    import redis

    broker = redis.Redis.from_url(urls["redis_url"])
    broker.flushdb()
    info = machine()
    admin, client = api._principals()
    seeding = {}
    seeded = api._seeded_runs()
    if seeded != args.runs:
        if seeded:
            raise SystemExit(f"the database holds {seeded} seeded runs, not {args.runs}")
        log(f"seeding {args.runs:,} runs ...")
        seeding["runs_s"] = round(api.seed(args.runs, client), 1)
    rule, names = people(max(args.users, 1), admin)
    seed_approve_workflow(rule)
    from audit.models import AuditEntry
    from governance.models import ApprovalRequest

    if not ApprovalRequest.objects.exists():
        log(f"seeding {args.approvals:,} pending requests ...")
        seeding["approvals_s"] = round(seed_requests(args.approvals, rule, client), 1)
    thousand = seed_thousand(client, rule)
    if AuditEntry.objects.count() < args.audit_entries:
        log(f"seeding {args.audit_entries:,} audit entries ...")
        seeding["audit"] = seed_audit(args.audit_entries, client)
    problem = _body_check()
    if problem:
        raise SystemExit(f"the seeding is wrong: {problem}")
    if "kpis" in phases:
        log("building the KPI rollups ...")
        seeding["kpis_s"] = round(build_kpis(), 1)
    for name, seconds in seeding.items():
        log(f"seeded {name}: {seconds}")
    result: dict = {
        "runs": args.runs,
        "approvals": args.approvals,
        "audit_entries": AuditEntry.objects.count(),
        "seconds": args.seconds,
        "seeding": seeding,
    }
    processes = Processes(Path(tempfile.mkdtemp(prefix="steward-bench-web-")))
    try:
        port = api._free_port()
        api.start_server(processes, port, 1)
        base = f"http://127.0.0.1:{port}"
        *sessions, reader, resumer = asyncio.run(sign_in_all(base, [*names, READER, RESUMER]))
        reread = True
        if "inbox" in phases:
            result["inbox"] = phase_inbox(
                base, sessions, args.users, args.seconds, args.probe_limit
            )
            reread = all("note" not in figures for figures in result["inbox"].values())
        if "live" in phases:
            result["live"] = phase_live(
                base,
                sessions,
                args.sockets,
                args.live_requests,
                args.live_interval,
                rule,
                client,
                reread,
            )
        if "runs" in phases:
            result["runs"] = phase_runs(base, reader, args.runs, thousand, args.requests)
        if "audit" in phases:
            result["audit"] = phase_audit(base, reader, args.requests, args.proofs)
        if "kpis" in phases:
            result["kpis"] = phase_kpis(base, reader, args.requests)
        if "resume" in phases:
            result["resume"] = phase_resume(base, processes, resumer, client, args.resumes)
        log("step end on a connected run page: not measured (no live message for run steps)")
        if args.explain:
            pending = ApprovalRequest.objects.filter(status="pending").order_by("id").first()
            pages = {"inbox": "/inbox/", "request page": f"/inbox/{pending.pk}/"}
            pages |= {f"runs {k}": v for k, v in run_paths(args.runs).items()}
            pages["thousand-step run"] = f"/runs/{thousand}/"
            pages |= {f"audit {k}": v for k, v in audit_paths().items()}
            pages |= {f"kpis {k}": v for k, v in kpi_paths().items()}
            explain(READER, {k: v for k, v in pages.items() if not v.startswith("/inbox/")})
            explain(names[0], {k: v for k, v in pages.items() if v.startswith("/inbox/")})
    finally:
        processes.stop_all()
        broker.flushdb()
    result["targets"] = targets(result)
    for name, verdict in result["targets"].items():
        log(f"target {name}: {verdict}")
    result.update(
        {
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "neighbours": busy_neighbours(),
            "elapsed_s": round(time.monotonic() - began, 1),
            "machine": info,
        }
    )
    if not args.keep:
        from django.db import connections

        connections.close_all()
        import psycopg

        admin_url, name = _admin_url(database_url)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
