"""Server-side prepared statements on Django's PostgreSQL connection, one or several per trip.

The hot paths of every app (audit appends, the engine's step transactions) send the same few
statements over and over. Django binds parameters on the client and never prepares, so the
server parses and plans each one every time; here they are protocol-level prepared statements
of the connection, parsed and planned once. Several can travel in one network round trip
(psycopg's pipeline mode). `audit` is the lowest app, so every app may use this module.

psycopg keeps the prepared statements per connection; behind PgBouncer in transaction mode this
needs PgBouncer 1.21 or later (max_prepared_statements).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import psycopg
from django.db import connections
from django.utils.connection import ConnectionProxy
from psycopg import pq

# psycopg prepares a statement only when asked (prepare=True) once the connection has a
# threshold; Django leaves it at None (never). This threshold is never reached by a count, so
# nothing else on the connection gets prepared: only the statements sent through here.
_ONLY_WHEN_ASKED = 2**62
_TUPLES_OK = pq.ExecStatus.TUPLES_OK


def _wrapper(connection):
    """Return the connection itself, not `django.db.connection`'s proxy to it."""
    # The proxy looks the connection up in a context-local store on every attribute read, and
    # the hot paths read several.
    if type(connection) is ConnectionProxy:
        return connections[connection.alias]
    return connection


def _raw_connection(connection) -> psycopg.Connection:
    """Return the psycopg connection under a Django one, ready to prepare on request."""
    connection.ensure_connection()
    connection.validate_no_broken_transaction()
    raw = connection.connection
    if raw.prepare_threshold is None:
        raw.prepare_threshold = _ONLY_WHEN_ASKED
    return raw


def _cursors(connection, raw: psycopg.Connection, count: int) -> list[psycopg.Cursor]:
    """Return `count` cursors of the raw connection, kept on the Django connection for reuse."""
    # A new psycopg cursor starts with an empty adaptation cache and looks every parameter's
    # dumper up again in Django's adapters map: measured here, that cost more client CPU than
    # the rest of an audit append's Python. A reconnect brings a new raw connection, and new
    # cursors with it.
    kept = getattr(connection, "_prepared_cursors", None)
    if kept is None or kept[0] is not raw:
        kept = (raw, [])
        connection._prepared_cursors = kept
    cursors = kept[1]
    while len(cursors) < count:
        cursors.append(psycopg.Cursor(raw))
    return cursors[:count]


def _log(connection, sql: str, began: float) -> None:
    """Add a round trip to Django's query log when it keeps one (DEBUG, or a test capturing)."""
    if connection.queries_logged:
        connection.queries_log.append(
            {"sql": sql, "time": f"{time.monotonic() - began:.3f}", "prepared": True}
        )


def _rows(cursor: psycopg.Cursor) -> list[tuple]:
    """Return a cursor's rows, or [] for a statement that returns none (UPDATE, no RETURNING)."""
    # The result's status, not `description`, which builds every column's description.
    result = cursor.pgresult
    if result is None or result.status != _TUPLES_OK:
        return []
    return cursor.fetchall()


def execute_prepared(connection, sql: str, params: Sequence) -> list[tuple]:
    """Run one statement as a prepared statement; return its rows ([] if it returns none).

    Django's error translation applies. Inside the caller's atomic block an error marks that
    transaction for rollback, as any failed statement does.
    """
    connection = _wrapper(connection)
    raw = _raw_connection(connection)
    began = time.monotonic()
    (cursor,) = _cursors(connection, raw, 1)
    with connection.wrap_database_errors:
        cursor.execute(sql, params, prepare=True)
        rows = _rows(cursor)
    _log(connection, sql, began)
    return rows


def execute_pipeline(connection, statements: Sequence[tuple[str, Sequence]]) -> list[list[tuple]]:
    """Run statements in order as prepared statements in one round trip; return each one's rows.

    The statements are sent together and their results read once the server has run them all,
    so a statement cannot depend on what Python makes of an earlier one's rows; it may depend
    on what an earlier statement wrote. The first error stops the rest and is raised.
    """
    connection = _wrapper(connection)
    raw = _raw_connection(connection)
    began = time.monotonic()
    cursors = _cursors(connection, raw, len(statements))
    with connection.wrap_database_errors:
        with raw.pipeline():
            for cursor, (sql, params) in zip(cursors, statements, strict=True):
                cursor.execute(sql, params, prepare=True)
        rows = [_rows(cursor) for cursor in cursors]
    # One entry per round trip, as a multi-statement query would be logged.
    _log(connection, ";\n".join(sql for sql, _ in statements), began)
    return rows
