"""Tools used by the engine tests; importing this module registers them (workers too)."""

from django.db import connection

from agents.tools import FatalToolError, ToolContext, ToolError, tool

# Scripted failures per (idempotency key): how many attempts fail before one succeeds.
FLAKY_FAILURES: dict[str, int] = {}
CALLS: list[tuple[str, dict]] = []


@tool(
    "test.add",
    schema={
        "type": "object",
        "required": ["a", "b"],
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    },
    side_effects=False,
)
def add(arguments: dict, context: ToolContext) -> dict:
    """Add two numbers."""
    CALLS.append((context.idempotency_key, arguments))
    return {"sum": arguments["a"] + arguments["b"]}


@tool("test.flaky", schema={"type": "object"})
def flaky(arguments: dict, context: ToolContext) -> dict:
    """Fail with a retryable error until the scripted number of failures is used up."""
    CALLS.append((context.idempotency_key, arguments))
    remaining = FLAKY_FAILURES.get(context.idempotency_key, arguments.get("fail_times", 0))
    if remaining > 0:
        FLAKY_FAILURES[context.idempotency_key] = remaining - 1
        error = arguments.get("error", "ToolError")
        if error == "ConnectionError":
            raise ConnectionError("upstream unreachable")
        if error == "FatalToolError":
            raise FatalToolError("upstream said no, for good")
        raise ToolError("upstream hiccup")
    return {"attempt": context.attempt}


@tool("test.record_effect", schema={"type": "object", "properties": {"value": {}}})
def record_effect(arguments: dict, context: ToolContext) -> dict:
    """Record the call with its idempotency key in the test_effects table (a side effect)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO test_effects (idempotency_key, value) VALUES (%s, %s)",
            [context.idempotency_key, str(arguments.get("value"))],
        )
    return {"recorded": context.idempotency_key}


@tool(
    "test.items",
    schema={"type": "object", "properties": {"n": {"type": "integer"}}},
    side_effects=False,
)
def items(arguments: dict, context: ToolContext) -> dict:
    """Return a list of n numbers."""
    return {"items": list(range(arguments.get("n", 3)))}
