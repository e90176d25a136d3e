"""On PostgreSQL the audit tables refuse UPDATE, DELETE and TRUNCATE to the application role
(a role that is not a superuser, granted everything on the tables): the triggers refuse, not
the grants. A body can only be erased."""

import uuid

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from audit import services
from audit.actors import SYSTEM
from audit.models import AuditCheckpoint, AuditLeaf

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
TABLES = ("audit_auditentry", "audit_auditbody", "audit_auditleaf", "audit_auditcheckpoint")


@pytest.fixture
def app_role():
    """Act as a fresh non-superuser role with every privilege on the audit tables."""
    role = f"audit_app_{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE {role} NOSUPERUSER NOLOGIN")
        cursor.execute(f"GRANT ALL ON {', '.join(TABLES)} TO {role}")
        cursor.execute(f"SET ROLE {role}")
    yield role
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")


def refused(sql: str, params=()) -> str:
    """Run a statement in a savepoint; return the database's refusal (fail if it passes)."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    except DatabaseError as exc:
        return str(exc)
    pytest.fail(f"not refused: {sql}")


def test_application_role_cannot_update_delete_or_truncate(app_role):
    entry = services.record(action="kept", body={"email": "a@example.com"}, actor=SYSTEM)
    AuditLeaf.objects.create(seq=0, entry=entry, leaf_hash=b"\0" * 32)
    AuditCheckpoint.objects.create(
        tree_size=1, root_hash="0" * 64, timestamp="t", key_id="k", signature="s"
    )
    for table in ("audit_auditentry", "audit_auditleaf", "audit_auditcheckpoint"):
        for sql in (f"UPDATE {table} SET created_at = created_at", f"DELETE FROM {table}"):
            if table == "audit_auditleaf":
                sql = sql.replace("created_at", "sequenced_at")
            message = refused(sql)
            assert f"on {table} is refused: the audit trail is append-only" in message
    assert "a body can only be erased" in refused(
        "UPDATE audit_auditbody SET content = '{}' WHERE entry_id = %s", [entry.pk]
    )
    assert "a body can only be erased" in refused(
        "DELETE FROM audit_auditbody WHERE entry_id = %s", [entry.pk]
    )
    assert "append-only" in refused(
        "UPDATE audit_auditentry SET action = 'changed' WHERE id = %s", [entry.pk]
    )


def test_application_role_cannot_truncate(app_role):
    # In a transaction of its own: rows inserted earlier in it would block TRUNCATE anyway.
    for table in TABLES:
        message = refused(f"TRUNCATE {table} CASCADE")
        assert "TRUNCATE on audit_" in message and "is refused" in message


def test_erasure_is_the_one_update_allowed_and_only_once(app_role):
    entry = services.record(action="kept", body={"email": "a@example.com"}, actor=SYSTEM)
    erasure = services.record(action="audit.body_erased", target_id=str(entry.pk), actor=SYSTEM)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditbody SET content = NULL, erased_at = %s, erasure_entry_id = %s "
            "WHERE entry_id = %s",
            [timezone.now(), erasure.pk, entry.pk],
        )
    assert "a body can only be erased, once" in refused(
        "UPDATE audit_auditbody SET erasure_entry_id = %s WHERE entry_id = %s",
        [entry.pk, entry.pk],
    )


def test_superuser_updates_are_refused_too():
    entry = services.record(action="kept", actor=SYSTEM)
    assert "append-only" in refused("DELETE FROM audit_auditentry WHERE id = %s", [entry.pk])
