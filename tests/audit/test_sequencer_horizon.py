"""The sequencer's horizon: a transaction running in this database holds it back, one running in
another database on the same server does not (audit/sequencer.py, `_PG_HORIZON`)."""

from __future__ import annotations

import psycopg
import pytest

from audit import services
from audit.actors import SYSTEM
from audit.models import AuditEntry
from tests import processes

pytestmark = pytest.mark.postgres


def _open_transaction(database_url: str) -> psycopg.Connection:
    """A connection holding a transaction that has a transaction id, left running."""
    held = psycopg.connect(database_url)
    held.execute("SELECT pg_current_xact_id()")
    return held


def _sealed(entry: AuditEntry) -> bool:
    services.sequence_pending()
    return AuditEntry.objects.filter(pk=entry.pk, leaf__isnull=False).exists()


@pytest.fixture
def other_database():
    """A second database on the same server, as another application's would be."""
    url = processes.test_database_url()
    admin = url.rsplit("/", 1)[0] + "/postgres"
    name = f"{url.rsplit('/', 1)[1]}_neighbour"  # one per test database: runs side by side
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_long_transaction_in_another_database_does_not_hold_the_trail(
    transactional_db, other_database
):
    neighbour = _open_transaction(other_database)
    try:
        entry = services.record(action="test.after_neighbour", actor=SYSTEM)
        assert _sealed(entry)
    finally:
        neighbour.close()


def test_a_long_transaction_in_this_database_holds_what_committed_after_it(transactional_db):
    older = _open_transaction(processes.test_database_url())
    try:
        entry = services.record(action="test.after_older", actor=SYSTEM)
        # The older transaction could still insert an entry ordered before this one.
        assert not _sealed(entry)
    finally:
        older.close()
    assert _sealed(entry)
