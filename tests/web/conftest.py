"""The web app's tests work in the governance tests' company (its actors and roles)."""

from tests.governance.conftest import _no_publishing, company  # noqa: F401
