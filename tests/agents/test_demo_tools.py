"""The demo's incident tools: deterministic answers, argument checks, and once-only updates."""

import pytest

from agents.models import IncidentUpdate
from agents.tools import (
    ArgumentsInvalid,
    ArgumentsRefused,
    FatalToolError,
    ToolContext,
    ToolError,
    get_tool,
)


def call(name, arguments, key="k1", attempt=1):
    """Call a registered tool the way a step does."""
    return get_tool(name).call(arguments, ToolContext(idempotency_key=key, attempt=attempt))


def test_lookup_service_returns_the_catalogue_entry():
    result = call("incident.lookup_service", {"service": "search"})
    assert result["team"] == "discovery"
    assert result["hosts"] == ["search-1", "search-2"]


def test_lookup_of_an_unknown_service_is_final_and_names_the_known_ones():
    with pytest.raises(FatalToolError, match="known: billing, checkout, search"):
        call("incident.lookup_service", {"service": "nope"})


def test_check_health_is_deterministic_and_reports_the_down_host():
    first = call("incident.check_health", {"hosts": ["checkout-1", "checkout-2"]})
    again = call("incident.check_health", {"hosts": ["checkout-1", "checkout-2"]})
    assert first == again
    assert first["unhealthy"] == ["checkout-2"]
    assert first["healthy"] == 1


def test_check_health_refuses_an_empty_host_list():
    with pytest.raises(ArgumentsInvalid, match="hosts"):
        call("incident.check_health", {"hosts": []})


def test_restart_fails_its_first_attempt_with_a_retryable_error():
    arguments = {"service": "checkout", "hosts": ["checkout-2"]}
    with pytest.raises(ToolError) as raised:
        call("incident.restart_service", arguments, attempt=1)
    assert raised.value.retryable
    assert call("incident.restart_service", arguments, attempt=2)["restarted"] == ["checkout-2"]


def test_scale_answers_with_the_new_and_the_previous_replica_count():
    result = call("incident.scale_service", {"service": "billing", "replicas": 10})
    assert result == {"service": "billing", "replicas": 10, "previous": 4}


def test_scale_refuses_an_unknown_service_and_a_count_outside_the_schema():
    with pytest.raises(FatalToolError, match="nope"):
        call("incident.scale_service", {"service": "nope", "replicas": 2})
    with pytest.raises(ArgumentsInvalid, match="replicas"):
        call("incident.scale_service", {"service": "billing", "replicas": 0})


@pytest.mark.django_db
def test_post_update_writes_one_row_per_idempotency_key():
    arguments = {"incident": "INC-1", "channel": "#ops", "message": "looking"}
    first = call("incident.post_update", arguments, key="run:1:step:a:item:-1")
    repeat = call("incident.post_update", arguments, key="run:1:step:a:item:-1")
    other = call("incident.post_update", arguments, key="run:1:step:b:item:-1")
    assert first == repeat
    assert other["update_id"] != first["update_id"]
    assert IncidentUpdate.objects.count() == 2


def test_lookup_and_scale_resolve_the_service_and_add_its_environment():
    assert call("incident.lookup_service", {"service": " Search "})["environment"] == "staging"
    assert call("incident.scale_service", {"service": "BILLING", "replicas": 2})["service"] == (
        "billing"
    )
    with pytest.raises(ArgumentsRefused, match="CYRILLIC SMALL LETTER A"):
        call("incident.scale_service", {"service": "billing\u0430", "replicas": 2})
    with pytest.raises(ArgumentsRefused, match="billing runs in production, not staging"):
        call(
            "incident.scale_service",
            {"service": "billing", "replicas": 2, "environment": "staging"},
        )


def test_check_health_probes_only_catalogue_hosts_once_each():
    result = call("incident.check_health", {"hosts": ["Checkout-2", "checkout-2", "checkout-1 "]})
    assert [r["host"] for r in result["results"]] == ["checkout-1", "checkout-2"]
    with pytest.raises(ArgumentsRefused, match="no host is called db-1"):
        call("incident.check_health", {"hosts": ["checkout-1", "db-1"]})
