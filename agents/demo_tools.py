"""The demo's incident-management tools: small, real and deterministic.

`incident.lookup_service` reads a service catalogue kept in this module, `incident.check_health`
gives each host a health that depends only on its name, `incident.restart_service` fails its
first attempt (to show retries), `incident.scale_service` answers with the new and the previous
replica count, and `incident.post_update` writes an IncidentUpdate row, once per idempotency
key, so a redelivered step never posts twice. The demo's policies decide which calls need an
approval (production restarts) or are denied (scaling above a threshold); the tools do not.
"""

from __future__ import annotations

import hashlib

from agents import services
from agents.tools import FatalToolError, ToolContext, ToolError, tool

SERVICES: dict[str, dict] = {
    "checkout": {
        "team": "payments",
        "owners": ["alice", "bob"],
        "runbook": "https://runbooks.example.com/checkout",
        "hosts": ["checkout-1", "checkout-2", "checkout-3"],
        "tier": 1,
        "replicas": 3,
    },
    "search": {
        "team": "discovery",
        "owners": ["carol"],
        "runbook": "https://runbooks.example.com/search",
        "hosts": ["search-1", "search-2"],
        "tier": 2,
        "replicas": 2,
    },
    "billing": {
        "team": "payments",
        "owners": ["bob"],
        "runbook": "https://runbooks.example.com/billing",
        "hosts": ["billing-1"],
        "tier": 1,
        "replicas": 4,
    },
}

# Hosts that are down in the demo; every other host's latency comes from its name.
DOWN_HOSTS = {"checkout-2"}


@tool(
    "incident.lookup_service",
    schema={
        "type": "object",
        "required": ["service"],
        "properties": {"service": {"type": "string", "minLength": 1}},
        "additionalProperties": False,
    },
    description="Return the owning team, owners, runbook and hosts of a service.",
    side_effects=False,
)
def lookup_service(arguments: dict, context: ToolContext) -> dict:
    """Return the catalogue entry of a service; an unknown service is a final error."""
    name = arguments["service"]
    try:
        entry = SERVICES[name]
    except KeyError:
        known = ", ".join(sorted(SERVICES))
        raise FatalToolError(f"no service is called {name!r} (known: {known})") from None
    return {"service": name, **entry}


def host_health(host: str) -> dict:
    """Return a host's health: down if listed in DOWN_HOSTS, else a latency from its name."""
    if host in DOWN_HOSTS:
        return {"host": host, "healthy": False, "latency_ms": None, "detail": "connection refused"}
    latency = 5 + int(hashlib.sha256(host.encode()).hexdigest()[:4], 16) % 60
    return {"host": host, "healthy": True, "latency_ms": latency, "detail": "ok"}


@tool(
    "incident.check_health",
    schema={
        "type": "object",
        "required": ["hosts"],
        "properties": {
            "hosts": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
        },
        "additionalProperties": False,
    },
    description="Probe a list of hosts; the result is deterministic for the demo.",
    side_effects=False,
)
def check_health(arguments: dict, context: ToolContext) -> dict:
    """Probe each host and say which are unhealthy."""
    results = [host_health(host) for host in arguments["hosts"]]
    return {
        "results": results,
        "healthy": sum(1 for r in results if r["healthy"]),
        "unhealthy": [r["host"] for r in results if not r["healthy"]],
    }


@tool(
    "incident.restart_service",
    schema={
        "type": "object",
        "required": ["service", "hosts"],
        "properties": {
            "service": {"type": "string", "minLength": 1},
            "hosts": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": False,
    },
    description="Restart a service on some hosts; the first attempt times out, as restarts do.",
    side_effects=True,
    risk="medium",
)
def restart_service(arguments: dict, context: ToolContext) -> dict:
    """Restart the hosts; attempt 1 raises a retryable error so the demo shows a retry."""
    if context.attempt < 2:
        raise ToolError(f"restart of {arguments['service']} timed out; will try again")
    return {"service": arguments["service"], "restarted": arguments["hosts"]}


@tool(
    "incident.scale_service",
    schema={
        "type": "object",
        "required": ["service", "replicas"],
        "properties": {
            "service": {"type": "string", "minLength": 1},
            "replicas": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        "additionalProperties": False,
    },
    description="Set the number of replicas of a service; answers with the previous count.",
    side_effects=True,
    risk="medium",
)
def scale_service(arguments: dict, context: ToolContext) -> dict:
    """Scale a known service (the catalogue's count is the 'previous' one); unknown is final."""
    name = arguments["service"]
    if name not in SERVICES:
        raise FatalToolError(f"no service is called {name!r}")
    return {
        "service": name,
        "replicas": arguments["replicas"],
        "previous": SERVICES[name]["replicas"],
    }


@tool(
    "incident.post_update",
    schema={
        "type": "object",
        "required": ["incident", "channel", "message"],
        "properties": {
            "incident": {"type": "string", "minLength": 1},
            "channel": {"type": "string", "minLength": 1},
            "message": {"type": "string", "minLength": 1},
        },
        "additionalProperties": False,
    },
    description="Post a status update about an incident to a channel or person.",
    side_effects=True,
)
def post_update(arguments: dict, context: ToolContext) -> dict:
    """Write the update, once per idempotency key, and return what was posted."""
    update = services.post_incident_update(
        incident=arguments["incident"],
        channel=arguments["channel"],
        message=arguments["message"],
        idempotency_key=context.idempotency_key,
        run_id=context.run_id,
        step_id=context.step_id,
    )
    return {"update_id": update.pk, "channel": update.channel, "message": update.message}
