"""The web (ASGI) process lends each request a pooled database connection and takes it back at the
request's end; other processes keep their own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from django.db import connection

from tests.processes import AsgiServer

ROOT = Path(__file__).resolve().parent.parent
SHOW = (
    "import json; from django.conf import settings; db = settings.DATABASES['default']; "
    "print(json.dumps([db['CONN_MAX_AGE'], db.get('OPTIONS', {}).get('pool')]))"
)


def _database_settings(first_import: str) -> list:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("STEWARD_DB_CONN_MAX_AGE", "STEWARD_DB_POOL")
    }
    env.update(
        {
            "DATABASE_URL": "postgres://nobody@127.0.0.1:5432/unused",
            "STEWARD_FIND_SERVICES": "0",
            "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
        }
    )
    code = f"{first_import}; {SHOW}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("first_import", "expected"),
    [
        # Under ASGI each request runs in a thread of its own: Django keeps nothing, the pool does.
        ("import orchestrator.asgi", [0, {"min_size": 2, "max_size": 20, "timeout": 10}]),
        # Workers and commands keep theirs (tests/integration/test_worker_connections.py).
        ("import django; django.setup()", [60, None]),
    ],
)
def test_only_the_asgi_process_pools_its_connections(first_import, expected):
    assert _database_settings(first_import) == expected


def _server_backends() -> list[tuple[int, str]]:
    """The PostgreSQL backends on the test database other than this process's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, backend_start::text FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' ORDER BY pid"
        )
        return cursor.fetchall()


@pytest.mark.postgres
def test_the_server_reuses_its_pooled_connections_across_requests(transactional_db, tmp_path):
    server = AsgiServer(tmp_path, STEWARD_DB_POOL="3")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/readyz").status_code == 200
            held = _server_backends()
            for _ in range(20):
                assert client.get("/readyz").status_code == 200
            # The same backends served all twenty: none closed, none opened.
            assert _server_backends() == held
            assert 1 <= len(held) <= 3
    finally:
        server.kill()
