"""Fixtures of the audit tests: a signing key, an attacker with database access, helpers."""

from __future__ import annotations

import time
from contextlib import contextmanager

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth import get_user_model
from django.db import connection

from audit import services
from audit.keys import encode_private_key
from audit.models import AuditEntry
from audit.verification import verify_log

AUDIT_TABLES = (
    "audit_auditentry",
    "audit_auditbody",
    "audit_auditleaf",
    "audit_auditnode",
    "audit_auditcheckpoint",
)
TEST_KEY = encode_private_key(Ed25519PrivateKey.generate())


@pytest.fixture(autouse=True)
def _audit_key(settings, tmp_path):
    """Sign checkpoints with a key made for this test session; keep dev keys out of var/."""
    settings.AUDIT_SIGNING_KEY = TEST_KEY
    settings.AUDIT_CHECKPOINT_SECONDS = 0.0


@contextmanager
def attacker():
    """Yield a cursor that bypasses the append-only triggers, as a database owner could."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for table in AUDIT_TABLES:
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        try:
            yield cursor
        finally:
            if connection.vendor == "postgresql":
                for table in AUDIT_TABLES:
                    cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def sequence_all(timeout: float = 60.0) -> None:
    """Sequence every committed entry, waiting while older transactions hold the horizon back.

    On PostgreSQL the sequencer takes only entries below the oldest transaction still running in
    this database, so a long transaction of another test here delays, never loses, an entry.
    """
    deadline = time.monotonic() + timeout
    while True:
        services.sequence_pending()
        if not AuditEntry.objects.filter(leaf__isnull=True).exists():
            return
        if time.monotonic() > deadline:
            raise AssertionError("committed entries still unsequenced after the timeout")
        time.sleep(0.05)


def seal() -> None:
    """Sequence every committed entry and sign a checkpoint of the result."""
    sequence_all()
    services.sign_checkpoint(force=True)


def failures(**kwargs) -> list[tuple[str, str]]:
    """Return (code, message) of every verification failure."""
    return [(f.code, f.message) for f in verify_log(**kwargs).failures]


@pytest.fixture
def user(db):
    """A plain user who acts."""
    return get_user_model().objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def staff(db):
    """A staff superuser who may read the audit trail."""
    return get_user_model().objects.create_superuser("root-admin", password="pw-admin-123")
