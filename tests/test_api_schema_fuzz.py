"""schemathesis against the served OpenAPI schema: every operation, no 5xx, every response as
the schema says.

The schema is read from `/api/v1/schema/` of the running Django app at test time, so every
operation any app adds is fuzzed without naming it here. The caller is a governance admin who
also reads the audit trail, with a bearer token, in the governance suite's company with a
sealed audit trail (so entries have proofs and checkpoints exist). `STEWARD_FUZZ_EXAMPLES`
bounds the examples per operation: 5 by default (`make test`), 200 for `make fuzz`.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from audit import services as audit
from audit.actors import SYSTEM
from governance import services
from tests.audit.conftest import _audit_key, seal  # noqa: F401
from tests.governance.conftest import _no_publishing, company, fresh  # noqa: F401

BOUNDED_EXAMPLES = 5
EXAMPLES = int(os.environ.get("STEWARD_FUZZ_EXAMPLES", BOUNDED_EXAMPLES))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def fuzz_token(company, settings):  # noqa: F811 (the governance suite's fixture)
    """A token of gina, a governance admin who also reads the audit trail; the trail sealed."""
    settings.STEWARD_API_RATE = "100000/min"  # fuzzing is many requests; 429 is tested apart
    for permission in ("audit.view_auditentry", "audit.view_auditcheckpoint"):
        services.grant(company.admins, permission, actor=SYSTEM)
    for action in ("view", "add", "change"):
        services.grant(company.admins, f"governance.{action}_apitoken", actor=SYSTEM)
    gina = fresh(company.gina)
    audit.record(action="run.started", actor=gina, run_id=str(company.run.pk), body={"n": 1})
    _, token = services.issue_token(gina, actor=gina, name="fuzz")
    seal()
    return token


@pytest.mark.django_db(transaction=True)
def test_every_operation_answers_as_its_schema_says(fuzz_token):
    """Each operation of the served schema, fuzzed in turn over one world (built once: the
    company and a sealed trail cost more than the calls), every failure reported together."""
    schema = schemathesis.openapi.from_wsgi("/api/v1/schema/?format=json", get_wsgi_application())
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40, "the schema lost operations"
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=EXAMPLES <= BOUNDED_EXAMPLES,  # make test repeats; make fuzz explores
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case):
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            fuzz()
        except Exception as error:  # every operation is tried; all failures are shown at once
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert not failures, "\n\n".join(failures)


def test_every_operation_declares_the_problems_the_shared_machinery_answers():
    generated = SchemaGenerator().get_schema(request=None, public=True)
    for path, methods in generated["paths"].items():
        for method, operation in methods.items():
            declared = set(operation["responses"])
            names = {(p["in"], p["name"]) for p in operation.get("parameters", [])}
            expected = {"401", "429"}
            if ("query", "cursor") in names:
                expected.add("400")
            if any(where == "path" for where, _ in names):
                expected.add("404")
            if operation.get("security") and method != "get":
                expected.add("403")
            if operation.get("security") and "requestBody" in operation:
                expected.update({"400", "415"})
            assert expected <= declared, (method, path, expected - declared)
