"""Tools used by the engine tests; importing this module registers them (workers too)."""

import os
import time

import psycopg
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


_external: dict[int, psycopg.Connection] = {}


def _external_system() -> psycopg.Connection:
    """Return this process's own autocommit connection: what it writes, no rollback undoes."""
    conn = _external.get(os.getpid())
    if conn is None or conn.closed:
        db = connection.settings_dict
        conn = psycopg.connect(
            dbname=db["NAME"],
            user=db.get("USER") or None,
            host=db.get("HOST") or None,
            port=db.get("PORT") or None,
            autocommit=True,
        )
        _external[os.getpid()] = conn
    return conn


@tool(
    "test.record_effect",
    schema={
        "type": "object",
        "properties": {"value": {}, "pause": {"type": "number", "minimum": 0, "maximum": 5}},
    },
)
def record_effect(arguments: dict, context: ToolContext) -> dict:
    """Call a stand-in external system that logs every call and applies each key's effect once.

    It writes on a connection of its own, so a call outlives the worker's transaction as a call
    to a real ITSM would; like such a system, it honours the idempotency key it is given.
    """
    # A pause stands for a slow external system, so that a worker killed at random is often
    # killed inside a call rather than between two.
    time.sleep(arguments.get("pause", 0))
    value = str(arguments.get("value"))
    with _external_system().cursor() as cursor:
        cursor.execute(
            "INSERT INTO test_calls (idempotency_key, value) VALUES (%s, %s)",
            [context.idempotency_key, value],
        )
        cursor.execute(
            "INSERT INTO test_effects (idempotency_key, value) VALUES (%s, %s)"
            " ON CONFLICT (idempotency_key) DO NOTHING",
            [context.idempotency_key, value],
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


@tool("test.backend_pid", schema={"type": "object"}, side_effects=False)
def backend_pid(arguments: dict, context: ToolContext) -> dict:
    """Return the PostgreSQL backend serving this worker's own (Django) connection."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return {"pid": cursor.fetchone()[0]}
