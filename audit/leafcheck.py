"""Recompute the leaves of one range of sequence numbers; no Django, so worker processes can run it.

audit_verify splits the log into ranges of sequence numbers. Each range is read in one query (on
PostgreSQL one binary COPY) and checked here: every entry recomputed into its leaf hash and
compared with the one stored when it was sequenced, every body compared with its digest, and
the missing sequence numbers noted. The result carries the leaf hashes in order, so that the
caller, which owns the Merkle frontier, builds the tree without hashing an entry again. With
several workers each range runs in its own process on its own connection, reading the snapshot
the caller exported, so every range sees the log as of one moment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from audit.leaves import ENTRY_COLUMNS, entry_leaf_hash, fast_leaf_hash, pg_leaf_time

WIDTH = len(ENTRY_COLUMNS)
# The entries of a range of seqs have ids in a narrow range too (they are numbered in commit
# order), so the joins are bounded by the range's lowest and highest entry id: each range then
# reads its own part of the entry and body tables, not the whole of them.
_SELECT = """
    SELECT l.seq, l.leaf_hash, l.entry_id, {columns},
           b.entry_id IS NOT NULL, b.content, b.erasure_entry_id
    FROM audit_auditleaf l
    LEFT JOIN audit_auditentry e
      ON e.id = l.entry_id AND e.id BETWEEN {low_id} AND {high_id}
    LEFT JOIN audit_auditbody b
      ON b.entry_id = l.entry_id AND b.entry_id BETWEEN {low_id} AND {high_id}
    WHERE l.seq >= {start} AND l.seq < {stop}
    ORDER BY l.seq
"""
# For the sessions that read ranges: no JIT (compiling costs more than it saves here), no
# parallel query (the worker processes already fill the cores), and room to sort a range of
# rows by seq in memory after the hash joins.
SESSION_SETTINGS = ("jit = off", "max_parallel_workers_per_gather = 0", "work_mem = '256MB'")
ID_BOUNDS_SQL = (
    "SELECT COALESCE(MIN(entry_id), 0), COALESCE(MAX(entry_id), 0) FROM audit_auditleaf "
    "WHERE seq >= %s AND seq < %s"
)
PG_TYPES = ["int8", "bytea", "int8", "int8", "text", "int8", *["text"] * 11, "bool", "text", "int8"]


def range_sql(vendor: str, start: int, stop: int, low_id: int, high_id: int) -> str:
    """Return the query of the leaves in [start, stop) with their entries and bodies, by seq.

    `low_id` and `high_id` are the lowest and highest entry id of those leaves (ID_BOUNDS_SQL).
    """
    if vendor == "postgresql":
        columns = ", ".join(
            # The server formats the time (in the leaf's form) while Python hashes.
            pg_leaf_time("e.created_at")
            if name == "created_at"
            else f"e.{name}"
            if name in ("id", "actor_id")
            else f"e.{name}::text"
            for name in ENTRY_COLUMNS
        )
    else:
        columns = ", ".join(f"e.{name}" for name in ENTRY_COLUMNS)
    return _SELECT.format(
        columns=columns,
        start=int(start),
        stop=int(stop),
        low_id=int(low_id),
        high_id=int(high_id),
    )


def pg_copy_sql(start: int, stop: int, low_id: int, high_id: int) -> str:
    """Return the binary COPY of range_sql on PostgreSQL."""
    sql = range_sql("postgresql", start, stop, low_id, high_id)
    return f"COPY ({sql}) TO STDOUT (FORMAT BINARY)"


@dataclass
class RangeResult:
    """What one range of sequence numbers recomputed to, and what failed in it."""

    start: int
    stop: int
    digests: bytes = b""  # the leaf hashes of the rows found, in seq order, 32 bytes each
    missing: list[tuple[int, int]] = field(default_factory=list)  # [low, high) without a row
    failures: list[tuple[str, str]] = field(default_factory=list)
    erasures: list[tuple[int, int, int | None]] = field(default_factory=list)
    erased: int = 0

    @property
    def found(self) -> int:
        """Return how many rows the range held."""
        return len(self.digests) // 32

    def found_below(self, size: int) -> int:
        """Return how many rows of the range have a seq below `size`."""
        gone = sum(max(0, min(high, size) - low) for low, high in self.missing if low < size)
        return max(0, min(size, self.stop) - self.start - gone)


def check_rows(rows, start: int, stop: int) -> RangeResult:
    """Check the rows of range_sql for [start, stop); return the leaf hashes and the failures."""
    result = RangeResult(start, stop)
    digests = []
    failures = result.failures
    sha256 = hashlib.sha256
    expected = start
    for row in rows:
        seq, stored, entry_id = row[0], bytes(row[1]), row[2]
        entry = row[3 : 3 + WIDTH]
        has_body, content, erasure_id = row[3 + WIDTH :]
        if seq != expected:
            result.missing.append((expected, seq))
            expected = seq
        if entry[0] is None:
            failures.append(("entry_missing", f"seq {seq}: its entry #{entry_id} is missing"))
            digest = stored
        else:
            digest = fast_leaf_hash(seq, entry)
            if digest != stored:
                digest = entry_leaf_hash(seq, entry)  # the reference encoder decides
            if digest != stored:
                failures.append(
                    (
                        "entry_changed",
                        f"seq {seq} (entry #{entry_id}): the entry does not match the leaf "
                        "recorded when it was sequenced (changed, renumbered or swapped)",
                    )
                )
            body_digest = entry[-1]
            if content is not None:
                if sha256(content.encode("utf-8")).hexdigest() != body_digest:
                    failures.append(
                        (
                            "body_changed",
                            f"seq {seq} (entry #{entry_id}): the body does not match its digest",
                        )
                    )
            elif has_body:
                result.erased += 1
                result.erasures.append((seq, entry_id, erasure_id))
            elif body_digest:
                failures.append(
                    ("body_missing", f"seq {seq} (entry #{entry_id}): its body was deleted")
                )
        digests.append(digest)
        expected += 1
    if expected < stop:
        result.missing.append((expected, stop))
    result.digests = b"".join(digests)
    return result


_worker_connection = None


def check_range_in_worker(params: dict, snapshot: str, start: int, stop: int) -> RangeResult:
    """Check [start, stop) on this worker process's own connection, in the exported snapshot."""
    global _worker_connection
    import psycopg

    if _worker_connection is None or _worker_connection.closed:
        _worker_connection = psycopg.connect(**params, autocommit=True)
        for setting in SESSION_SETTINGS:
            _worker_connection.execute(f"SET {setting}")
    conn = _worker_connection
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        low_id, high_id = conn.execute(ID_BOUNDS_SQL, [start, stop]).fetchone()
        copy_sql = pg_copy_sql(start, stop, low_id, high_id)
        with conn.cursor() as cursor, cursor.copy(copy_sql) as copy:
            copy.set_types(PG_TYPES)
            return check_rows(copy.rows(), start, stop)
