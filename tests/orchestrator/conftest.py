"""Engine test helpers: a dispatcher that collects instead of publishing, and workflow builders."""

import pytest

from audit.actors import SYSTEM
from orchestrator import engine, services
from orchestrator.definitions import compiled_version
from tests.governance.conftest import company  # noqa: F401  (the API tests' company)
from tests.orchestrator import testtools
from tests.orchestrator.api_world import world  # noqa: F401  (the API tests' callers)


@pytest.fixture(autouse=True)
def published(monkeypatch):
    """Collect the step ids the engine publishes; tests run them with engine.drain().

    The test transaction never commits, so publishing is captured at the call; the worker tests
    exercise the real `on_commit` path.
    """
    sent: list[int] = []
    monkeypatch.setattr(engine, "publish_on_commit", lambda ids: sent.extend(ids))
    compiled_version.cache_clear()
    testtools.FLAKY_FAILURES.clear()
    testtools.CALLS.clear()
    return sent


@pytest.fixture
def make_workflow(db):
    """Create a workflow with a published definition."""
    counter = iter(range(1, 10_000))

    def make(definition, slug=None):
        return services.create_workflow(
            slug=slug or f"wf-{next(counter)}",
            name="Test workflow",
            definition=definition,
            actor=SYSTEM,
        )

    return make


@pytest.fixture(autouse=True)
def _tools_enabled(_tools_enabled_for_db_tests):
    """Engine tests call tools through tool steps: their governed rows exist and are enabled."""
