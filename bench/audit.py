"""Benchmark of the audit trail on PostgreSQL: append rate, sequencer lag, verification time.

    python bench/audit.py [--seconds 10] [--writers 4] [--entries 1000000] [--modes single,...]

Uses BENCH_DATABASE_URL (default postgres://root@127.0.0.1:5432/steward_bench), creating and
migrating the database when missing; it empties that database's audit tables first. An inherited
DATABASE_URL is ignored, so the benchmark never empties a real database. DEBUG is off, as in
production. Three measures:

1. appends/s through audit.services from parallel writer processes, each entry its own
   transaction (record() in autocommit), then with 10 record() calls per transaction, and with
   record_many() of 10 entries (what the engine does per step). A sequencer process runs
   meanwhile (the same service the Celery beat task calls, looping every 0.1 s).
   Before the single-entry run, the server's own ceiling for it: as many processes committing
   one-row inserts into a plain table through psycopg alone, no Django and no audit
   (commit_ceiling_per_s): what the machine's commit rate allows one entry per transaction.
2. the sequencer lag at those rates: per entry, leaf.sequenced_at - entry.created_at, p99.
   The sequencer numbers only entries below the server-wide snapshot horizon, so a transaction
   left open elsewhere on the same server delays it: each run reports the entries still
   unnumbered after a 30 s drain and the oldest other transaction, and no lag when any remain.
3. audit_verify over 1,000,000 entries: bulk-loaded with COPY, sequenced by the real
   sequencer, checkpointed every 100,000, then verified by the management command (its default
   of one worker process per core).

The last line printed is one JSON object with appends_per_s (single entry per transaction),
sequencer_lag_p99_s (the worst p99 of the three runs) and verify_1m_s, plus the details and the
load average before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
# The project first: this file, bench/audit.py, must not shadow the `audit` app.
sys.path[:0] = [str(ROOT)]
DEFAULT_URL = "postgres://root@127.0.0.1:5432/steward_bench"
AUDIT_TABLES = (
    "audit_auditbody",
    "audit_auditleaf",
    "audit_auditcheckpoint",
    "audit_audittreestate",
    "audit_auditentry",
)


def _prepare_environment() -> str:
    """Point Django at the benchmark database with throwaway secrets, set it up; return its URL.

    Only BENCH_DATABASE_URL is read: an inherited DATABASE_URL (a real database) is ignored,
    since the benchmark empties the audit tables of the database it uses.
    """
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
            "DEBUG": "0",  # as in production: no query log
            "SECRET_KEY": secrets.token_urlsafe(40),
            "AUDIT_SIGNING_KEY": encode_private_key(Ed25519PrivateKey.generate()),
            "STEWARD_SECRETS_KEY": Fernet.generate_key().decode(),
            "AUDIT_CHECKPOINT_SECONDS": "2",
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


def _reset() -> None:
    """Empty the audit tables (the triggers are skipped as a superuser's replica session)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute(f"TRUNCATE {', '.join(AUDIT_TABLES)} RESTART IDENTITY")
        cursor.execute("SET session_replication_role = DEFAULT")


def _entry(worker: int, n: int) -> dict:
    """Return the record() arguments of one benchmark entry, like an engine step's."""
    from audit.actors import SYSTEM

    return {
        "action": "step.succeeded" if n % 2 else "step.started",
        "actor": SYSTEM,
        "target_type": "orchestrator.steprun",
        "target_id": str(n),
        "target_repr": f"step {n} of run {worker}",
        "run_id": f"{worker}-{n // 10}",
        "step_id": str(n),
        "decision": {"policy": "default", "allowed": True} if n % 3 == 0 else None,
        "body": {"input": {"n": n, "text": "lorem ipsum " * 8}, "output": n * 2} if n % 2 else None,
    }


def _writer(worker: int, mode: str, seconds: float, start_at: float, counts, cpu) -> None:
    """Append entries for `seconds` from this process; store the count and its CPU seconds."""
    import django

    django.setup()
    from django.db import connection, transaction

    from audit import services

    connection.ensure_connection()
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    n = 0
    cpu_before = time.process_time()
    while time.time() < deadline:
        if mode == "single":
            services.record(**_entry(worker, n))
            n += 1
        elif mode == "batch10":
            with transaction.atomic():
                for _ in range(10):
                    services.record(**_entry(worker, n))
                    n += 1
        else:
            with transaction.atomic():
                services.record_many([_entry(worker, n + i) for i in range(10)])
                n += 10
    counts[worker] = n
    cpu[worker] = time.process_time() - cpu_before


def _committer(worker: int, url: str, seconds: float, start_at: float, counts) -> None:
    """Commit one-row inserts into the ceiling table for `seconds`, with no Django and no audit."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        while time.time() < start_at:
            time.sleep(0.001)
        deadline = start_at + seconds
        n = 0
        while time.time() < deadline:
            conn.execute(
                "INSERT INTO bench_commit_ceiling (v) VALUES (%s)", [f"{worker}:{n}"], prepare=True
            )
            n += 1
    counts[worker] = n


def measure_commit_ceiling(writers: int, seconds: float) -> dict:
    """Measure how many one-row transactions the server commits from `writers` processes.

    The ceiling for one audit entry per transaction on this machine: the same number of
    processes, each committing a plain one-row insert (one index) through psycopg alone.
    """
    from django.db import connection, connections

    url = _psycopg_url(connection.settings_dict)
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_commit_ceiling")
        cursor.execute("CREATE TABLE bench_commit_ceiling (id bigserial PRIMARY KEY, v text)")
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    counts = ctx.Array("q", writers)
    start_at = time.time() + 1.0
    procs = [
        ctx.Process(target=_committer, args=(i, url, seconds, start_at, counts))
        for i in range(writers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_commit_ceiling")
    return {
        "mode": "commit_ceiling",
        "writers": writers,
        "seconds": seconds,
        "commits_per_s": round(sum(counts) / seconds, 1),
    }


def _psycopg_url(db: dict) -> str:
    """Return a libpq URL for Django's database settings."""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    user = db.get("USER") or "root"
    return f"postgresql://{user}@{host}:{port}/{db['NAME']}"


def _sequencer(stop_at: float) -> None:
    """Run the sequencer loop (the service the beat task calls) until `stop_at`, then drain."""
    import django

    django.setup()
    from audit import services

    while time.time() < stop_at:
        count = services.sequence_pending()
        services.sign_checkpoint()
        if count < 5000:
            time.sleep(0.1)
    # Drain: a transaction open elsewhere on the server holds the horizon back (and shows as
    # lag), so wait for the last entries for up to 30 s rather than stop at the first empty run.
    from audit.models import AuditEntry

    deadline = time.time() + 30
    while AuditEntry.objects.filter(leaf__isnull=True).exists() and time.time() < deadline:
        if not services.sequence_pending():
            time.sleep(0.05)


def _lag_p99(since: datetime) -> tuple[float, float, int]:
    """Return (p50, p99) seconds from an entry's creation to its sequencing, and the count."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), COUNT(*)
            FROM (SELECT EXTRACT(EPOCH FROM l.sequenced_at - e.created_at) AS lag
                  FROM audit_auditentry e JOIN audit_auditleaf l ON l.entry_id = e.id
                  WHERE e.created_at >= %s) AS lags
            """,
            [since],
        )
        p50, p99, count = cursor.fetchone()
    return float(p50 or 0), float(p99 or 0), int(count)


def _unsequenced_and_horizon_holder() -> tuple[int, float | None]:
    """Return the entries still without a number, and the age of the oldest other transaction.

    The sequencer numbers only entries below the cluster-wide snapshot horizon, so a transaction
    left open by anything else on the same server (another database's test suite too) delays
    every number until it ends: that shows here rather than as a silent gap in the figures.
    """
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM audit_auditentry e "
            "WHERE NOT EXISTS (SELECT 1 FROM audit_auditleaf l WHERE l.entry_id = e.id)"
        )
        unsequenced = cursor.fetchone()[0]
        cursor.execute(
            "SELECT EXTRACT(EPOCH FROM MAX(now() - xact_start)) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND xact_start IS NOT NULL "
            "AND (backend_xid IS NOT NULL OR backend_xmin IS NOT NULL)"
        )
        oldest = cursor.fetchone()[0]
    return int(unsequenced), round(float(oldest), 1) if oldest is not None else None


def measure_appends(mode: str, writers: int, seconds: float) -> dict:
    """Run `writers` writer processes and a sequencer for `seconds`; return rate and lag."""
    from django.db import connections

    _reset()
    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    counts = ctx.Array("q", writers)
    cpu = ctx.Array("d", writers)
    start_at = time.time() + 1.0
    sequencer = ctx.Process(target=_sequencer, args=(start_at + seconds,))
    procs = [
        ctx.Process(target=_writer, args=(i, mode, seconds, start_at, counts, cpu))
        for i in range(writers)
    ]
    sequencer.start()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    sequencer.join()
    total = sum(counts)
    # Lag over the steady state: skip the first second of writing.
    since = datetime.fromtimestamp(start_at + 1.0, tz=UTC)
    p50, p99, sampled = _lag_p99(since)
    unsequenced, holder_s = _unsequenced_and_horizon_holder()
    return {
        "mode": mode,
        "writers": writers,
        "seconds": seconds,
        "entries": total,
        "appends_per_s": round(total / seconds, 1),
        # None when entries were still unsequenced after the drain: a lag cannot be given.
        "lag_p50_s": round(p50, 3) if not unsequenced else None,
        "lag_p99_s": round(p99, 3) if not unsequenced else None,
        "lag_sampled": sampled,
        "unsequenced_after_drain": unsequenced,
        # The oldest transaction elsewhere on the server: it holds the sequencer's horizon back.
        "oldest_other_transaction_s": holder_s,
        # CPU the writer processes spent per entry (Python, Django, psycopg); the rest of the
        # 2 cores goes to PostgreSQL, the sequencer and the operating system.
        "writer_cpu_us_per_entry": round(sum(cpu) / total * 1e6, 1) if total else None,
    }


def _copy_entries(count: int) -> None:
    """Bulk-load `count` entries (every other one with a body) with COPY."""
    from django.db import connection

    from audit.evidence import body_digest, canonical_json

    start = datetime(2025, 1, 1, tzinfo=UTC)
    chunk = 100_000
    connection.ensure_connection()
    raw = connection.connection
    for base in range(0, count, chunk):
        entries = io.StringIO()
        bodies = io.StringIO()
        for n in range(base + 1, min(base + chunk, count) + 1):
            item = _entry(n % 7, n)
            body = item["body"]
            digest = body_digest(body) if body is not None else ""
            decision = canonical_json(item["decision"]).decode() if item["decision"] else "\\N"
            created = (start + timedelta(microseconds=n * 1000)).isoformat()
            entries.write(
                f"{n}\t{created}\t\\N\t\t{item['actor_kind']}\t{item['action']}\t"
                f"{item['target_type']}\t{item['target_id']}\t{item['target_repr']}\t"
                f"{item['run_id']}\t{item['step_id']}\treq-{n // 10}\t{decision}\t{digest}\n"
            )
            if body is not None:
                text = canonical_json(body).decode().replace("\\", "\\\\")
                bodies.write(f"{n}\t{text}\n")
        with raw.cursor() as cursor:
            with cursor.copy(
                "COPY audit_auditentry (id, created_at, actor_id, actor_name, actor_kind, action,"
                " target_type, target_id, target_repr, run_id, step_id, request_id, decision,"
                " body_digest) FROM STDIN"
            ) as copy:
                copy.write(entries.getvalue())
            with cursor.copy("COPY audit_auditbody (entry_id, content) FROM STDIN") as copy:
                copy.write(bodies.getvalue())
        raw.commit()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('audit_auditentry', 'id'), %s)", [count]
        )
        cursor.execute("ANALYZE audit_auditentry")
        cursor.execute("ANALYZE audit_auditbody")


def measure_verify(count: int) -> dict:
    """Load `count` entries, sequence and checkpoint them, and time audit_verify."""
    from django.core.management import call_command
    from django.db import connection

    from audit import services

    _reset()
    started = time.monotonic()
    _copy_entries(count)
    loaded = time.monotonic()
    sequenced = 0
    while True:
        step = services.sequence_pending(batch_size=10_000, max_batches=10)
        sequenced += step
        services.sign_checkpoint(force=True)
        if step == 0:
            break
    done = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE audit_auditleaf")
    out, err = io.StringIO(), io.StringIO()
    began = time.monotonic()
    call_command("audit_verify", stdout=out, stderr=err)
    verify_s = time.monotonic() - began
    print(err.getvalue().strip().splitlines()[-1] if err.getvalue() else "", file=sys.stderr)
    print(out.getvalue().strip(), file=sys.stderr)
    if not out.getvalue().startswith("OK"):
        raise SystemExit("audit_verify failed on the benchmark data")
    return {
        "entries": count,
        "copy_s": round(loaded - started, 1),
        "sequence_s": round(done - loaded, 1),
        "sequencer_entries_per_s": round(sequenced / (done - loaded)),
        "verify_s": round(verify_s, 2),
    }


def main() -> None:
    """Run the three measures and print the figures, the JSON summary last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--entries", type=int, default=1_000_000, help="0: skip audit_verify")
    parser.add_argument(
        "--modes",
        default="single,batch10,record_many10",
        help="comma-separated append modes to run (default all three)",
    )
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    unknown = set(modes) - {"single", "batch10", "record_many10"}
    if unknown:
        parser.error(f"unknown modes: {sorted(unknown)}")
    load_before = os.getloadavg()
    database_url = _prepare_environment()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; database {database_url}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        file=sys.stderr,
    )
    ceiling = measure_commit_ceiling(args.writers, args.seconds) if "single" in modes else {}
    if ceiling:
        print(json.dumps(ceiling), file=sys.stderr)
    runs = []
    for mode in modes:
        run = measure_appends(mode, args.writers, args.seconds)
        runs.append(run)
        print(json.dumps(run), file=sys.stderr)
    verify = measure_verify(args.entries) if args.entries else {}
    if verify:
        print(json.dumps(verify), file=sys.stderr)
    by_mode = {run["mode"]: run for run in runs}
    summary = {
        "appends_per_s": by_mode.get("single", {}).get("appends_per_s"),
        "appends_per_s_batch10": by_mode.get("batch10", {}).get("appends_per_s"),
        "appends_per_s_record_many10": by_mode.get("record_many10", {}).get("appends_per_s"),
        # One-row transactions the server commits from as many processes, with no audit at all.
        "commit_ceiling_per_s": ceiling.get("commits_per_s"),
        # The worst p99 of the runs; None if any run's lag could not be measured.
        "sequencer_lag_p99_s": (
            None
            if any(run["lag_p99_s"] is None for run in runs)
            else max((run["lag_p99_s"] for run in runs), default=None)
        ),
        "verify_1m_s": verify["verify_s"] if args.entries == 1_000_000 else None,
        "verify_s": verify.get("verify_s"),
        "verify_entries": verify.get("entries"),
        "sequencer_entries_per_s": verify.get("sequencer_entries_per_s"),
        "writers": args.writers,
        "cores": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
