"""Operations tests run engine workflows (the orchestrator tests' fixtures) in the company."""

from tests.governance.conftest import company  # noqa: F401
from tests.orchestrator.conftest import _tools_enabled, make_workflow, published  # noqa: F401
