"""The demo's incident-management tools: small, real and deterministic.

`incident.lookup_service` reads a service catalogue kept in this module, `incident.check_health`
gives each host a health that depends only on its name, `incident.restart_service` fails its
first attempt (to show retries), `incident.scale_service` answers with the new and the previous
replica count, and `incident.post_update` writes an IncidentUpdate row, once per idempotency
key, so a redelivered step never posts twice. The demo's policies decide which calls need an
approval (production restarts) or are denied (scaling above a threshold); the tools do not.

The tools that name a service or hosts resolve them against the catalogue before anything
decides (`canonical=`): the service's catalogue name (case, surrounding spaces and Unicode
compatibility forms folded; look-alike letters, zero-width characters and unknown names
refused), the service the hosts really belong to (unknown hosts, hosts of several services, or
hosts of another service than the one named are refused), and the service's `environment`,
which the policies match on. So a policy rule on `arguments.environment == 'production'`
catches every spelling of a production service and every host list that reaches one.
"""

from __future__ import annotations

import hashlib

from agents import services
from agents.tools import (
    ArgumentsRefused,
    ToolContext,
    ToolError,
    canonical_name,
    tool,
)

SERVICES: dict[str, dict] = {
    "checkout": {
        "team": "payments",
        "owners": ["alice", "bob"],
        "runbook": "https://runbooks.example.com/checkout",
        "hosts": ["checkout-1", "checkout-2", "checkout-3"],
        "tier": 1,
        "replicas": 3,
        "environment": "production",
    },
    "search": {
        "team": "discovery",
        "owners": ["carol"],
        "runbook": "https://runbooks.example.com/search",
        "hosts": ["search-1", "search-2"],
        "tier": 2,
        "replicas": 2,
        "environment": "staging",
    },
    "billing": {
        "team": "payments",
        "owners": ["bob"],
        "runbook": "https://runbooks.example.com/billing",
        "hosts": ["billing-1"],
        "tier": 1,
        "replicas": 4,
        "environment": "production",
    },
}
ENVIRONMENTS = ("production", "staging")

# Hosts that are down in the demo; every other host's latency comes from its name.
DOWN_HOSTS = {"checkout-2"}


def service_of_host() -> dict[str, str]:
    """Return the catalogue's hosts, each with the service it belongs to."""
    return {host: name for name, entry in SERVICES.items() for host in entry["hosts"]}


def known_service(value: str) -> str:
    """Return the catalogue name a service is spelled as; refuse a name it does not hold."""
    name = canonical_name(value, "service")
    if name not in SERVICES:
        known = ", ".join(sorted(SERVICES))
        raise ArgumentsRefused(f"no service is called {value!r} (known: {known})")
    return name


def known_hosts(values: list[str]) -> list[str]:
    """Return the catalogue names of some hosts, sorted and once each; refuse unknown ones."""
    owners = service_of_host()
    hosts = {canonical_name(value, "host") for value in values}
    if unknown := sorted(host for host in hosts if host not in owners):
        raise ArgumentsRefused(f"no host is called {', '.join(unknown)} in the service catalogue")
    return sorted(hosts)


def checked_environment(arguments: dict, service: str) -> str:
    """Return the service's environment; refuse a different one named in the arguments."""
    environment = SERVICES[service]["environment"]
    if "environment" in arguments:
        named = canonical_name(arguments["environment"], "environment")
        if named != environment:
            raise ArgumentsRefused(f"{service} runs in {environment}, not {named}")
    return environment


def service_arguments(arguments: dict, context: ToolContext) -> dict:
    """Resolve a call on a service: its catalogue name and environment."""
    service = known_service(arguments["service"])
    return {
        **arguments,
        "service": service,
        "environment": checked_environment(arguments, service),
    }


def hosts_arguments(arguments: dict, context: ToolContext) -> dict:
    """Resolve a list of hosts to the catalogue's names."""
    return {**arguments, "hosts": known_hosts(arguments["hosts"])}


def restart_arguments(arguments: dict, context: ToolContext) -> dict:
    """Resolve a restart: the hosts, the one service they belong to, and its environment.

    The service is the hosts' own: hosts of several services, or of another service than the
    one named, are refused rather than restarted under a name that does not fit them.
    """
    hosts = known_hosts(arguments["hosts"])
    service = known_service(arguments["service"])
    owners = service_of_host()
    if others := sorted({owners[host] for host in hosts} - {service}):
        foreign = [host for host in hosts if owners[host] != service]
        raise ArgumentsRefused(
            f"hosts {', '.join(foreign)} belong to {', '.join(others)}, not to {service}: "
            "restart each service on its own hosts"
        )
    return {
        "service": service,
        "hosts": hosts,
        "environment": checked_environment(arguments, service),
    }


SERVICE = {"type": "string", "minLength": 1}
ENVIRONMENT = {
    "type": "string",
    "minLength": 1,
    "description": "Filled in from the service catalogue; a different value is refused.",
}


@tool(
    "incident.lookup_service",
    schema={
        "type": "object",
        "required": ["service"],
        "properties": {"service": SERVICE, "environment": ENVIRONMENT},
        "additionalProperties": False,
    },
    description="Return the owning team, owners, runbook, hosts and environment of a service.",
    side_effects=False,
    canonical=service_arguments,
)
def lookup_service(arguments: dict, context: ToolContext) -> dict:
    """Return the catalogue entry of a service (an unknown one is refused before the call)."""
    name = arguments["service"]
    return {"service": name, **SERVICES[name]}


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
    canonical=hosts_arguments,
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
            "service": SERVICE,
            "hosts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
            "environment": ENVIRONMENT,
        },
        "additionalProperties": False,
    },
    description="Restart a service on some of its hosts; the first attempt times out, as "
    "restarts do.",
    side_effects=True,
    risk="medium",
    canonical=restart_arguments,
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
            "service": SERVICE,
            "replicas": {"type": "integer", "minimum": 1, "maximum": 100},
            "environment": ENVIRONMENT,
        },
        "additionalProperties": False,
    },
    description="Set the number of replicas of a service; answers with the previous count.",
    side_effects=True,
    risk="medium",
    canonical=service_arguments,
)
def scale_service(arguments: dict, context: ToolContext) -> dict:
    """Scale a known service (the catalogue's count is the 'previous' one)."""
    name = arguments["service"]
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
