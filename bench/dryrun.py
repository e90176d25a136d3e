"""Benchmark of the policy dry run: a draft replayed over 100,000 recorded tool calls.

    python bench/dryrun.py [--calls 100000] [--batch-size 2000]

Uses BENCH_DATABASE_URL (default postgres://root@127.0.0.1:5432/steward_bench_dryrun), creating
and migrating the database when missing. An inherited DATABASE_URL is ignored, so the benchmark
never writes to a real database. DEBUG is off, as in production.

It seeds, by SQL (one INSERT ... SELECT generate_series), `--calls` tool invocations spread over
30 days: nine in ten reached the policy check and carry their policy facts (actors, agents and
people, amounts, classifications), one in ten was refused before it (a permission). Two
policies hold six live rules; the draft of one replaces a deny threshold with a stricter one and
adds an approval for agents' large refunds. Then it times what the Celery task does
(agents.actions.dryrun.run_dry_run, in this process): the request (snapshots, count, audit
entry) and the whole replay, batch by batch, with every change stored.

Target (issue #15): the dry run over 100,000 past tool calls in 60 s or less. The last line is
one JSON object: seconds, calls, calls_per_s, changed, and the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
DEFAULT_URL = "postgres://root@127.0.0.1:5432/steward_bench_dryrun"
KEY_PREFIX = "bench-dryrun-"


def _prepare_environment() -> str:
    """Point Django at the benchmark database with throwaway secrets, set it up; return its URL."""
    import secrets

    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit.keys import encode_private_key

    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL)
    for name in (
        "STEWARD_TEST_DB_NAME",
        "AUDIT_SIGNING_KEY_FILE",
        "SECRET_KEY_FILE",
        "STEWARD_SECRETS_KEY_FILE",
    ):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
            "STEWARD_FIND_SERVICES": "0",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(40),
            "AUDIT_SIGNING_KEY": encode_private_key(Ed25519PrivateKey.generate()),
            "STEWARD_SECRETS_KEY": Fernet.generate_key().decode(),
            "LOG_LEVEL": "WARNING",
        }
    )
    _create_database(database_url)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return database_url


def _create_database(url: str) -> None:
    """Create the benchmark database when it does not exist."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin_url = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _policies():
    """Create (once) the benchmark's policies, live rules and draft; return the drafted policy."""
    from audit.actors import SYSTEM
    from governance import services
    from governance.models import ApprovalRule, Policy, PolicyRule, Role, RuleStatus

    owner = (
        services.create_person(username="bench-owner", password="x" * 16, actor=SYSTEM)
        if (not Role.objects.filter(name="Bench approvers").exists())
        else None
    )
    if owner is not None:
        role = services.create_role(name="Bench approvers", owner=owner, actor=SYSTEM)
        services.create_approval_rule(slug="bench", name="Bench approval", role=role, actor=SYSTEM)
    approval = ApprovalRule.objects.get(slug="bench")
    if not Policy.objects.filter(slug="bench-payments").exists():
        payments = services.create_policy(
            slug="bench-payments", name="Bench payments", priority=10, actor=SYSTEM
        )
        other = services.create_policy(
            slug="bench-data", name="Bench data", priority=20, actor=SYSTEM
        )
        live = [
            (
                payments,
                "Refunds over 4000 are refused",
                "tool.bench.refund",
                "arguments.amount > 4000",
                "deny",
            ),
            (
                payments,
                "Refunds over 3000 need an approval",
                "tool.bench.refund",
                "arguments.amount > 3000",
                "require_approval",
            ),
            (
                payments,
                "Foreign currency refunds escalate",
                "tool.bench.refund",
                "arguments.currency != 'EUR' and arguments.amount > 2500",
                "escalate",
            ),
            (
                other,
                "Confidential exports are refused to agents",
                "tool.bench.export",
                "actor.is_agent and classification == 'confidential'",
                "deny",
            ),
            (
                other,
                "Exports outside runs need an approval",
                "tool.bench.export",
                "run.id == none",
                "require_approval",
            ),
            (other, "Lookups are allowed", "tool.bench.lookup", "", "allow"),
        ]
        role = Role.objects.get(name="Bench approvers")
        for position, (policy, name, action, condition, effect) in enumerate(live):
            services.save_rule(
                PolicyRule(
                    policy=policy,
                    position=10 * (position + 1),
                    name=name,
                    action=action,
                    condition=condition,
                    effect=effect,
                    reason=name,
                    approval_rule=approval if effect == "require_approval" else None,
                    escalate_to=role if effect == "escalate" else None,
                ),
                actor=SYSTEM,
                reason="bench",
            )
        payments = Policy.objects.get(slug="bench-payments")
        services.save_rule(
            PolicyRule(
                policy=payments,
                status=RuleStatus.DRAFT,
                position=10,
                name="Refunds over 3500 are refused",
                action="tool.bench.refund",
                condition="arguments.amount > 3500",
                effect="deny",
                reason="stricter cap",
                replaces=PolicyRule.objects.get(name="Refunds over 4000 are refused"),
            ),
            actor=SYSTEM,
            reason="bench draft",
        )
        services.save_rule(
            PolicyRule(
                policy=payments,
                status=RuleStatus.DRAFT,
                position=25,
                name="Agents' refunds over 1000 need an approval",
                action="tool.bench.refund",
                condition="actor.is_agent and arguments.amount > 1000",
                effect="require_approval",
                reason="agents ask first",
                approval_rule=approval,
            ),
            actor=SYSTEM,
            reason="bench draft",
        )
    return Policy.objects.get(slug="bench-payments")


SEED_SQL = """
INSERT INTO agents_toolinvocation (
    agent_slug, caller_kind, caller_name, tool, arguments, arguments_digest, verdict, stage,
    reason, policy, key, step_id, created_at, policy_facts
)
SELECT
    CASE WHEN agent THEN 'bench-agent-' || (i %% 7) ELSE '' END,
    CASE WHEN agent THEN 'agent' ELSE 'user' END,
    CASE WHEN agent THEN 'bench-agent-' || (i %% 7) ELSE 'person-' || (i %% 50) END,
    tool, args, '', verdict, stage, '', '', %(prefix)s || i, '',
    %(start)s::timestamptz + (i * %(spacing)s) * interval '1 second',
    CASE WHEN stage = 'permission' THEN NULL ELSE jsonb_build_object(
        'context', jsonb_build_object(
            'actor', jsonb_build_object(
                'username', CASE WHEN agent THEN 'bench-agent-' || (i %% 7)
                                 ELSE 'person-' || (i %% 50) END,
                'id', i %% 57, 'kind', CASE WHEN agent THEN 'agent' ELSE 'person' END,
                'is_agent', agent, 'roles', jsonb_build_array('Operators')),
            'action', 'tool.' || tool,
            'target', jsonb_build_object('type', 'bench.account', 'id', (i %% 1000)::text,
                                         'repr', 'account ' || (i %% 1000),
                                         'classification', classification),
            'classification', classification,
            'arguments', args,
            'risk', 'medium',
            'run', jsonb_build_object('id', CASE WHEN i %% 4 = 0 THEN NULL ELSE i / 10 END,
                                      'step', 'pay', 'workflow', 'bench')),
        'tool_approval_rule', NULL) END
FROM (
    SELECT i,
           i %% 3 <> 0 AS agent,
           CASE i %% 10 WHEN 0 THEN 'bench.export' WHEN 1 THEN 'bench.lookup'
                ELSE 'bench.refund' END AS tool,
           jsonb_build_object('amount', (i * 37) %% 5000,
                              'currency', CASE WHEN i %% 5 = 0 THEN 'USD' ELSE 'EUR' END) AS args,
           CASE WHEN i %% 11 = 0 THEN 'confidential' ELSE 'internal' END AS classification,
           CASE WHEN i %% 10 = 9 THEN 'permission' ELSE 'policy' END AS stage,
           -- as the live rules decided it then
           CASE WHEN i %% 10 = 9 THEN 'deny'
                WHEN i %% 10 = 0 AND i %% 3 <> 0 AND i %% 11 = 0 THEN 'deny'
                WHEN i %% 10 = 0 AND i %% 4 = 0 THEN 'approval'
                WHEN i %% 10 < 2 THEN 'allow'
                WHEN (i * 37) %% 5000 > 4000 THEN 'deny'
                WHEN (i * 37) %% 5000 > 3000 THEN 'approval'
                WHEN i %% 5 = 0 AND (i * 37) %% 5000 > 2500 THEN 'escalate'
                ELSE 'allow' END AS verdict
    FROM generate_series(1, %(calls)s) AS i
) AS calls
"""


def _seed_calls(calls: int, start: datetime, days: int = 30) -> None:
    """Replace the benchmark's recorded tool calls with `calls` fresh ones, by SQL."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM agents_policydryrunchange")
        cursor.execute("DELETE FROM agents_policydryrun")
        cursor.execute("DELETE FROM agents_toolinvocation WHERE key LIKE %s", [KEY_PREFIX + "%"])
        cursor.execute(
            SEED_SQL,
            {
                "prefix": KEY_PREFIX,
                "start": start,
                "spacing": days * 86400 / calls,
                "calls": calls,
            },
        )
        cursor.execute("ANALYZE agents_toolinvocation")


def main() -> None:
    """Seed, run one dry run over the period, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    options = parser.parse_args()
    database_url = _prepare_environment()
    load_before = os.getloadavg()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; database {database_url}; load average "
        f"{' '.join(f'{x:.2f}' for x in load_before)}",
        file=sys.stderr,
    )
    from agents.actions import dryrun
    from agents.models import PolicyDryRun
    from audit.actors import SYSTEM

    dryrun.dispatcher = lambda dry_run_id: None  # this process replays it, as the task would
    start = datetime(2026, 1, 1, tzinfo=UTC)
    policy = _policies()
    seeded = time.perf_counter()
    _seed_calls(options.calls, start)
    print(f"seeded {options.calls} calls in {time.perf_counter() - seeded:.1f} s", file=sys.stderr)

    began = time.perf_counter()
    asked = dryrun.request_dry_run(
        policy, period_start=start, period_end=start + timedelta(days=31), actor=SYSTEM
    )
    requested = time.perf_counter() - began
    dryrun.run_dry_run(asked.pk, batch_size=options.batch_size)
    seconds = time.perf_counter() - began
    result = PolicyDryRun.objects.get(pk=asked.pk)
    assert result.status == "done" and result.processed == options.calls, result.status
    figures = {
        "seconds": round(seconds, 2),
        "request_seconds": round(requested, 3),
        "calls": result.processed,
        "calls_per_s": round(result.processed / seconds),
        "changed": result.changed,
        "stored_changes": result.changes.count(),
        "transitions": result.counts["transitions"],
        "batch_size": options.batch_size,
        "target_seconds": 60,
        "met": seconds <= 60,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
