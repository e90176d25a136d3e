"""Make the audit trail append-only in the database, and give each entry its inserting transaction.

PostgreSQL only (SQLite serves the laptop demo and has neither roles nor xids):

* Triggers refuse UPDATE, DELETE and TRUNCATE on audit_auditentry, audit_auditleaf and
  audit_auditcheckpoint, for every role. On audit_auditbody the single UPDATE allowed is an
  erasure: content from a value to NULL, with erased_at and erasure_entry_id set, nothing else
  changed. The leaf commits to the body's digest, so an erasure leaves every proof valid.
* The one exception is TRUNCATE by a superuser in a database named test_*: Django's test runner
  flushes test databases with TRUNCATE between transactional tests. A superuser can disable any
  trigger anyway; in any other database TRUNCATE is refused to everyone.
* The triggers protect against the application, not against the tables' owner, who may
  ALTER TABLE ... DISABLE TRIGGER. Production runs the application under a role that neither owns
  these tables nor is a superuser; audit_verify detects what an owner could still change.
* audit_auditentry.txid holds the top-level transaction id of the transaction that inserted the
  row (pg_current_xact_id()). The sequencer numbers only entries whose txid is below
  pg_snapshot_xmin(pg_current_snapshot()): those transactions have all ended, so no entry can
  still appear below that horizon (see audit/sequencer.py).
"""

from django.db import migrations

APPEND_ONLY_TABLES = ["audit_auditentry", "audit_auditleaf", "audit_auditcheckpoint"]

FORWARD_SQL = [
    """
    ALTER TABLE audit_auditentry
        ADD COLUMN txid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)
    """,
    "CREATE INDEX audit_auditentry_txid_id ON audit_auditentry (txid, id)",
    """
    CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' AND current_database() LIKE 'test\\_%'
           AND (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'audit: % on % is refused: the audit trail is append-only',
            TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    """
    CREATE FUNCTION audit_body_guard() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE'
           AND NEW.entry_id = OLD.entry_id
           AND OLD.content IS NOT NULL AND NEW.content IS NULL
           AND OLD.erased_at IS NULL AND NEW.erased_at IS NOT NULL
           AND OLD.erasure_entry_id IS NULL AND NEW.erasure_entry_id IS NOT NULL THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION
            'audit: % on audit_auditbody is refused: a body can only be erased, once', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$
    """,
    *[
        sql
        for table in APPEND_ONLY_TABLES
        for sql in (
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_refuse_change()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()",
        )
    ],
    "CREATE TRIGGER audit_auditbody_erase_only BEFORE UPDATE OR DELETE ON audit_auditbody "
    "FOR EACH ROW EXECUTE FUNCTION audit_body_guard()",
    "CREATE TRIGGER audit_auditbody_no_truncate BEFORE TRUNCATE ON audit_auditbody "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change()",
]

BACKWARD_SQL = [
    *[
        sql
        for table in [*APPEND_ONLY_TABLES, "audit_auditbody"]
        for sql in (
            f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        )
    ],
    "DROP TRIGGER IF EXISTS audit_auditbody_erase_only ON audit_auditbody",
    "DROP FUNCTION IF EXISTS audit_body_guard()",
    "DROP FUNCTION IF EXISTS audit_refuse_change()",
    "DROP INDEX IF EXISTS audit_auditentry_txid_id",
    "ALTER TABLE audit_auditentry DROP COLUMN IF EXISTS txid",
]


def forwards(apps, schema_editor):
    """Create the txid column and the append-only triggers on PostgreSQL."""
    if schema_editor.connection.vendor != "postgresql":
        return
    for sql in FORWARD_SQL:
        schema_editor.execute(sql, None)


def backwards(apps, schema_editor):
    """Drop the triggers and the txid column on PostgreSQL."""
    if schema_editor.connection.vendor != "postgresql":
        return
    for sql in BACKWARD_SQL:
        schema_editor.execute(sql, None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
