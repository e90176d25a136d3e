"""Tools that ship with Steward and need nothing outside the project.

Each tool declares its target and the permission needed on it, so the policy enforcement point
checks the calling agent's principal before the tool runs; the tool itself then calls the same
service a person would, as that principal (a workflow `tool` step acts as the run's initiator).
Every write is keyed by the call's idempotency key, so a resumed step never repeats it.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from agents.actions import memory, work
from agents.actions.enforcement import TargetRefused
from agents.models import (
    Agent,
    MemoryNamespace,
    MemoryScope,
    Notification,
    Ticket,
    TicketPriority,
    Tool,
)
from agents.models import TicketStatus as Status
from agents.tools import FatalToolError, ToolContext, tool


def _actor(context: ToolContext):
    """Return the user a call acts as (the agent's principal, or the run's initiator)."""
    if context.actor_id is None:
        return None
    return get_user_model().objects.get(pk=context.actor_id)


def _agent(context: ToolContext) -> Agent | None:
    """Return the agent making the call, if an agent makes it."""
    return Agent.objects.filter(pk=context.agent_id).first() if context.agent_id else None


def _config(name: str) -> dict[str, Any]:
    """Return the settings an admin gave a tool on its row."""
    return Tool.objects.filter(name=name).values_list("config", flat=True).first() or {}


@tool(
    "echo",
    schema={"type": "object"},
    description="Return the arguments unchanged; useful to shape data between steps.",
    side_effects=False,
)
def echo(arguments: dict, context: ToolContext) -> dict:
    """Return the arguments unchanged."""
    return arguments


# --- tickets -------------------------------------------------------------------------------------

TICKET_ID = {"type": "integer", "minimum": 1}


def _ticket(arguments: dict, context: ToolContext) -> Ticket:
    """Return the ticket a call is about."""
    return Ticket.objects.get(pk=arguments["ticket"])


@tool(
    "ticket.create",
    schema={
        "type": "object",
        "required": ["title"],
        "additionalProperties": False,
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 300},
            "description": {"type": "string", "maxLength": 10000},
            "priority": {"enum": list(TicketPriority.values)},
            "service": {"type": "string", "maxLength": 100},
        },
    },
    description="Open a ticket in the ticket system (title, description, priority p1-p4, "
    "service). Returns its number.",
    side_effects=True,
    target=lambda arguments, context: Ticket,
    permission="add",
    target_model="agents.ticket",
)
def ticket_create(arguments: dict, context: ToolContext) -> dict:
    """Open a ticket once per call."""
    ticket = work.create_ticket(
        title=arguments["title"],
        description=arguments.get("description", ""),
        priority=arguments.get("priority", TicketPriority.P3),
        service=arguments.get("service", ""),
        actor=_actor(context),
        run_id=context.run_id,
        idempotency_key=context.idempotency_key,
    )
    return {"ticket": ticket.pk, "title": ticket.title, "status": ticket.status}


@tool(
    "ticket.update",
    schema={
        "type": "object",
        "required": ["ticket"],
        "minProperties": 2,
        "additionalProperties": False,
        "properties": {
            "ticket": TICKET_ID,
            "status": {"enum": list(Status.values)},
            "priority": {"enum": list(TicketPriority.values)},
            "assignee": {"type": "string"},
            "title": {"type": "string", "minLength": 1, "maxLength": 300},
            "service": {"type": "string", "maxLength": 100},
            "reason": {"type": "string", "maxLength": 500},
        },
    },
    description="Change a ticket's status, priority, assignee (a username), title or service.",
    side_effects=True,
    target=_ticket,
    permission="change",
    target_model="agents.ticket",
)
def ticket_update(arguments: dict, context: ToolContext) -> dict:
    """Change a ticket (history records the agent and its reason)."""
    changes = {k: v for k, v in arguments.items() if k not in ("ticket", "reason")}
    ticket = work.update_ticket(
        _ticket(arguments, context),
        actor=_actor(context),
        reason=arguments.get("reason", "updated by a tool call"),
        **changes,
    )
    return {"ticket": ticket.pk, "status": ticket.status, "priority": ticket.priority}


@tool(
    "ticket.comment",
    schema={
        "type": "object",
        "required": ["ticket", "body"],
        "additionalProperties": False,
        "properties": {"ticket": TICKET_ID, "body": {"type": "string", "minLength": 1}},
    },
    description="Add a comment to a ticket.",
    side_effects=True,
    target=_ticket,
    permission="change",
    target_model="agents.ticket",
)
def ticket_comment(arguments: dict, context: ToolContext) -> dict:
    """Comment once per call."""
    comment = work.comment_on_ticket(
        _ticket(arguments, context),
        arguments["body"],
        actor=_actor(context),
        run_id=context.run_id,
        idempotency_key=context.idempotency_key,
    )
    return {"ticket": comment.ticket_id, "comment": comment.pk}


# --- governed records ----------------------------------------------------------------------------


def _record(arguments: dict, context: ToolContext):
    """Return the governed record a call changes, refusing fields off the allow-list."""
    label = arguments["record"].lower()
    allowed = work.updatable_fields(label, _config("record.update"))
    if not allowed:
        raise TargetRefused(f"{label} records may not be changed by tools")
    refused = sorted(set(arguments["changes"]) - allowed)
    if refused:
        raise TargetRefused(f"fields {', '.join(refused)} of {label} may not be changed")
    return work.record_model(label)._default_manager.get(pk=arguments["id"])


def _record_models(config: dict) -> list[str]:
    """Return the models the record tool's allow-list (row settings or defaults) opens."""
    from django.conf import settings

    return list((config.get("models") or settings.STEWARD_AGENT_UPDATABLE_RECORDS).keys())


@tool(
    "record.update",
    schema={
        "type": "object",
        "required": ["record", "id", "changes", "reason"],
        "additionalProperties": False,
        "properties": {
            "record": {"type": "string", "pattern": r"^[a-z_]+\.[a-z_]+$"},
            "id": {"type": ["integer", "string"]},
            "changes": {"type": "object", "minProperties": 1},
            "reason": {"type": "string", "minLength": 1, "maxLength": 500},
        },
    },
    description="Change allow-listed fields of a governed record ('app.model', its id, the "
    "changes, and why). History keeps who changed what and why.",
    side_effects=True,
    target=_record,
    permission="change",
    target_model=_record_models,
)
def record_update(arguments: dict, context: ToolContext) -> dict:
    """Change the record through the governed save."""
    label = arguments["record"].lower()
    obj = work.update_record(
        label,
        arguments["id"],
        arguments["changes"],
        actor=_actor(context),
        reason=arguments["reason"],
        allowed_fields=work.updatable_fields(label, _config("record.update")),
    )
    return {"record": label, "id": obj.pk, "changed": sorted(arguments["changes"])}


# --- notifications -------------------------------------------------------------------------------


@tool(
    "notify",
    schema={
        "type": "object",
        "required": ["recipient", "subject"],
        "additionalProperties": False,
        "properties": {
            "recipient": {"type": "string", "minLength": 1},
            "subject": {"type": "string", "minLength": 1, "maxLength": 300},
            "body": {"type": "string", "maxLength": 20000},
            "channels": {
                "type": "array",
                "items": {"enum": ["inbox", "email", "webhook"]},
                "uniqueItems": True,
            },
        },
    },
    description="Send a notification to a person (a username): always to their inbox, and by "
    "email or webhook when asked and configured.",
    side_effects=True,
    target=lambda arguments, context: Notification,
    permission="add",
    target_model="agents.notification",
)
def notify(arguments: dict, context: ToolContext) -> dict:
    """Notify once per call."""
    notification = work.notify(
        arguments["recipient"],
        arguments["subject"],
        arguments.get("body", ""),
        sent_by=_actor(context),
        channels=arguments.get("channels"),
        run_id=context.run_id,
        idempotency_key=context.idempotency_key,
        webhook_url=_config("notify").get("webhook_url", ""),
    )
    return {"notification": notification.pk, "deliveries": notification.deliveries}


# --- HTTP ----------------------------------------------------------------------------------------


def _endpoint(arguments: dict, context: ToolContext) -> None:
    """Refuse a URL and method that are not on the tool's allow-list (set on its row)."""
    allowed, why = work.endpoint_allowed(
        arguments["url"], arguments["method"], _config("http.request").get("allow", [])
    )
    if not allowed:
        raise TargetRefused(why)
    return None


@tool(
    "http.request",
    schema={
        "type": "object",
        "required": ["method", "url"],
        "additionalProperties": False,
        "properties": {
            "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
            "url": {"type": "string", "minLength": 1, "maxLength": 2000},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "json": {},
        },
    },
    description="Make an HTTP request to an allow-listed host and method; returns the status "
    "and the body (at most 64 KiB).",
    side_effects=True,
    risk="medium",
    target=_endpoint,
)
def http_request(arguments: dict, context: ToolContext) -> dict:
    """Make the request; transport failures are retryable tool errors."""
    import httpx

    from agents.tools import ToolError

    _endpoint(arguments, context)  # the allow-list may have changed since the decision
    try:
        return work.http_request(
            arguments["method"],
            arguments["url"],
            headers=arguments.get("headers"),
            json_body=arguments.get("json"),
            idempotency_key=context.idempotency_key,
            timeout=float(_config("http.request").get("timeout", 10.0)),
        )
    except httpx.HTTPError as exc:
        raise ToolError(f"{arguments['method']} {arguments['url']} failed: {exc}") from None


# --- shared memory -------------------------------------------------------------------------------


def _namespace(arguments: dict, context: ToolContext) -> MemoryNamespace:
    """Return the namespace a call names ('run': the calling run's); refuse other runs' and
    other workflows' namespaces, whatever permission the caller holds on them."""
    slug = arguments["namespace"]
    if slug == "run":
        if context.run_id is None:
            raise TargetRefused("'run' memory exists only inside a run")
        slug = memory.run_namespace_slug(context.run_id)
    namespace = MemoryNamespace.objects.get(slug=slug)
    if namespace.scope == MemoryScope.RUN and namespace.run_id != context.run_id:
        raise TargetRefused("a run's memory is reachable only from within that run")
    if namespace.scope == MemoryScope.WORKFLOW and (
        context.workflow_id is None or namespace.workflow_id != context.workflow_id
    ):
        raise TargetRefused("a workflow's memory is reachable only from runs of that workflow")
    return namespace


MEMORY_KEY = {"type": "string", "minLength": 1, "maxLength": 200}
NAMESPACE = {"type": "string", "minLength": 1, "maxLength": 150}


@tool(
    "memory.read",
    schema={
        "type": "object",
        "required": ["namespace", "key"],
        "additionalProperties": False,
        "properties": {"namespace": NAMESPACE, "key": MEMORY_KEY},
    },
    description="Read a key of shared memory ('run' is this run's namespace). Returns its value "
    "and version; write with that version.",
    side_effects=False,
    target=_namespace,
    permission="read",
    target_model="agents.memorynamespace",
)
def memory_read(arguments: dict, context: ToolContext) -> dict:
    """Read through the memory service (audited); the outcome names the held value."""
    return memory.read_for_tool(
        _namespace(arguments, context),
        arguments["key"],
        user=_actor(context),
        run_id=context.run_id,
        step_id=context.step_id,
    )


@tool(
    "memory.write",
    schema={
        "type": "object",
        "required": ["namespace", "key", "value", "expected_version"],
        "additionalProperties": False,
        "properties": {
            "namespace": NAMESPACE,
            "key": MEMORY_KEY,
            "value": {},
            "expected_version": {"type": "integer", "minimum": 0},
        },
    },
    description="Write a key of shared memory, stating the version you read (0 for a new key); "
    "if someone wrote it since, you get a conflict and must read again.",
    side_effects=True,
    target=_namespace,
    permission="write",
    target_model="agents.memorynamespace",
    digested_arguments=("value",),
)
def memory_write(arguments: dict, context: ToolContext) -> dict:
    """Write through the memory service: a stale version is a conflict, never an overwrite."""
    return memory.write_for_tool(
        _namespace(arguments, context),
        arguments["key"],
        arguments["value"],
        expected_version=arguments["expected_version"],
        user=_actor(context),
        agent=_agent(context),
        run_id=context.run_id,
        step_id=context.step_id,
    )


# --- delegation ----------------------------------------------------------------------------------


@tool(
    "delegate",
    schema={
        "type": "object",
        "required": ["agent", "task"],
        "additionalProperties": False,
        "properties": {
            "agent": {"type": "string", "minLength": 1, "maxLength": 100},
            "task": {"type": "object"},
        },
    },
    description="Hand a task to one of your specialised agents (by slug). Several delegations in "
    "one answer run in parallel; you get each one's result.",
    side_effects=True,
    target=lambda arguments, context: Agent.objects.get(slug=arguments["agent"]),
    permission="delegate",
    target_model="agents.agent",
)
def delegate(arguments: dict, context: ToolContext) -> dict:
    """Delegations run as child steps of the agent step, never as a plain call."""
    raise FatalToolError("delegate only works inside an agent step")
