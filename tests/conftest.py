"""Suite-wide fixtures: service detection, fixed actors, and the REQUIRE_SERVICES rule.

A test marked `postgres`, `redis`, `worker` or `browser` runs only where that service is
reachable. Without it the test skips with a reason naming the service; with
REQUIRE_SERVICES=1 (what .ci/run sets) it fails instead.
"""

import os
import shutil
import socket
from urllib.parse import urlparse

import pytest
from django.conf import settings

from tests.orchestrator import testtools  # noqa: F401  (registers the tools tests use)

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _reachable(url: str | None, default_port: int) -> bool:
    """Tell whether the host:port of a service URL accepts connections."""
    if not url:
        return False
    parsed = urlparse(url)
    address = (parsed.hostname or "127.0.0.1", parsed.port or default_port)
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


def _missing_services(item) -> list[str]:
    """Name the services a test's markers ask for that this machine lacks."""
    missing = []
    markers = {m.name for m in item.iter_markers()}
    if {"postgres", "worker"} & markers and not settings.IS_POSTGRES:
        missing.append("PostgreSQL (set DATABASE_URL or start it on 127.0.0.1:5432)")
    if {"redis", "worker"} & markers and not _reachable(settings.REDIS_URL, 6379):
        missing.append("Redis (set REDIS_URL or start it on 127.0.0.1:6379)")
    if "browser" in markers and not shutil.which("chromium"):
        missing.append("Chromium (apt-get install chromium chromium-driver)")
    return missing


def pytest_runtest_setup(item):
    """Skip, or under REQUIRE_SERVICES fail, a test whose services are missing."""
    missing = _missing_services(item)
    if not missing:
        return
    reason = "needs " + ", ".join(missing)
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but this test {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _no_broker_queue_length(monkeypatch):
    """The sweeper in a test process reads no real broker queue (tests that need one set it).

    Unknown, it republishes on its growing interval alone; the worker tests' own sweeper
    process reads its real queue.
    """
    from orchestrator import engine

    monkeypatch.setattr(engine, "queued_messages", lambda: None)


@pytest.fixture(autouse=True)
def _notices_in_process(request, monkeypatch):
    """Approval notices are sent in the test process after the commit (locmem email), not queued
    to a broker nobody reads; a test with real worker processes keeps the Celery task."""
    if "steward_processes" in request.fixturenames:
        return
    from governance.actions import notifications
    from tests.governance.notices import send_in_process

    monkeypatch.setattr(notifications, "dispatcher", send_in_process)


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """Use a fast hasher: tests create many users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def steward_processes(tmp_path):
    """Real worker and sweeper processes against the test database; killed after the test."""
    from tests.processes import StewardProcesses

    processes = StewardProcesses(tmp_path)
    yield processes
    processes.stop()


def enable_registered_tools() -> None:
    """Give every registered tool an enabled governed row (tool steps and agents need one).

    Test setup, not a governed change: the rows are created in one statement without history.
    """
    from agents.models import Tool
    from agents.tools import registered_tools

    Tool.objects.bulk_create(
        [
            Tool(name=name, description=spec.description, side_effects=spec.side_effects)
            for name, spec in registered_tools().items()
        ],
        ignore_conflicts=True,
    )
    Tool.objects.filter(name__in=registered_tools()).update(enabled=True)


@pytest.fixture
def governed_tools(db):
    """Every registered tool has an enabled Tool row, as an admin set it up."""
    enable_registered_tools()


@pytest.fixture
def _tools_enabled_for_db_tests(request):
    """For a test that uses the database: enable every registered tool (see governed_tools)."""
    if request.node.get_closest_marker("django_db") is None and not (
        {"db", "transactional_db"} & set(request.fixturenames)
    ):
        return
    request.getfixturevalue("_django_db_helper")
    enable_registered_tools()
