"""The web (ASGI) process closes each request's database connection; other processes keep theirs."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOW = "from django.conf import settings; print(settings.DATABASES['default']['CONN_MAX_AGE'])"


def _conn_max_age(first_import: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "STEWARD_DB_CONN_MAX_AGE"}
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
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("first_import", "expected"),
    [
        # Under ASGI each request runs in a thread of its own: a kept connection is never reused.
        ("import orchestrator.asgi", "0"),
        # Workers and commands reuse theirs (tests/integration/test_worker_connections.py).
        ("import django; django.setup()", "60"),
    ],
)
def test_only_the_asgi_process_closes_its_connection_after_each_request(first_import, expected):
    assert _conn_max_age(first_import) == expected
