"""The Merkle tree's stored nodes: written by the sequencer, read by proofs in O(log n).

A node is the hash of a perfect subtree, 2**level leaves from leaf position * 2**level (RFC 6962
/ RFC 9162 tree shape, hashed as audit/merkle.py does). The sequencer stores every node of a
level >= MIN_LEVEL in the transaction of the leaf that completes it, so the stored nodes cover
the first `AuditTreeState.nodes_size` leaves exactly, and a sequencer killed mid-batch leaves
neither leaves nor nodes of that batch behind.

Any subtree a proof of a tree of n leaves asks for, the incomplete ones of the right edge
included, is a run of perfect subtrees (merkle.perfect_subtrees): those of MIN_LEVEL and above
are read from the nodes, the smaller ones (fewer than 2**MIN_LEVEL leaves in all per subtree)
are hashed from the leaves. So a proof reads at most about 2 log2(n) nodes and a few dozen
leaves, in two queries, whatever n. Levels below MIN_LEVEL are not stored: they would be
seven eighths of the rows for a saving of a few hundred microseconds per proof.

A trail sequenced before nodes were kept has nodes_size below its size; `fill_missing` stores
the missing nodes from the stored leaves, a bounded number of leaves per call (the sequencer
calls it on each batch; `manage.py audit_build_nodes` loops it). audit_verify recomputes every
node from the entries and compares.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from audit.merkle import EMPTY_ROOT, Frontier, fold_subtrees, perfect_subtrees, root_hash
from audit.models import AuditNode, AuditTreeState

MIN_LEVEL = 4  # subtrees of 16 leaves and up: about n / 8 rows for n leaves
FILL_LEAVES = 100_000  # leaves whose nodes one sequencer batch fills in on an older trail


class NodesMissing(Exception):
    """A stored node or leaf a proof needs is not there: the log is not what was signed."""


def insert_nodes(nodes: list[tuple[int, int, bytes]]) -> None:
    """Insert (level, position, hash) rows: one COPY on PostgreSQL."""
    if not nodes:
        return
    if connection.vendor != "postgresql":
        AuditNode.objects.bulk_create(
            [AuditNode(level=lv, position=p, hash=h) for lv, p, h in nodes], batch_size=2000
        )
        return
    connection.ensure_connection()
    with (
        connection.connection.cursor() as cursor,
        cursor.copy("COPY audit_auditnode (level, position, hash) FROM STDIN") as copy,
    ):
        for node in nodes:
            copy.write_row(node)


class StoredTree:
    """The stored nodes and leaves that some proofs over the first `size` leaves need.

    `need(low, high)` names a subtree (as the RFC's proofs ask for them), `fetch()` reads what
    all of them need in at most two queries, then `subtree_root(low, high)` hashes each.
    """

    def __init__(self, size: int):
        self.size = size
        self._node_keys: set[tuple[int, int]] = set()
        self._leaf_ranges: list[tuple[int, int]] = []
        self._nodes: dict[tuple[int, int], bytes] = {}
        self._leaves: dict[int, bytes] = {}

    def need(self, low: int, high: int) -> bytes:
        """Note that subtree [low, high) will be asked for; return a placeholder hash."""
        if not 0 <= low < high <= self.size:
            raise ValueError(f"subtree [{low}, {high}) is outside a tree of {self.size}")
        for level, start in perfect_subtrees(low, high):
            if level >= MIN_LEVEL:
                self._node_keys.add((level, start >> level))
            else:
                self._leaf_ranges.append((start, start + (1 << level)))
        return EMPTY_ROOT

    def need_leaf(self, seq: int) -> None:
        """Note that the leaf hash at `seq` will be asked for."""
        self._leaf_ranges.append((seq, seq + 1))

    def fetch(self) -> None:
        """Read every node and leaf noted so far; raise NodesMissing when one is not stored."""
        keys = sorted(self._node_keys - self._nodes.keys())
        if keys:
            where = " OR ".join(["(level = %s AND position = %s)"] * len(keys))
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT level, position, hash FROM audit_auditnode WHERE {where}",
                    [value for key in keys for value in key],
                )
                self._nodes.update(((lv, p), bytes(h)) for lv, p, h in cursor.fetchall())
            missing = [key for key in keys if key not in self._nodes]
            if missing:
                level, position = missing[0]
                raise NodesMissing(
                    f"{len(missing)} stored tree nodes are missing (the first: level {level}, "
                    f"position {position}): the log was changed; run audit_verify"
                )
        ranges = _merged(
            r for r in self._leaf_ranges if not all(s in self._leaves for s in range(*r))
        )
        if ranges:
            where = " OR ".join(["(seq >= %s AND seq < %s)"] * len(ranges))
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT seq, leaf_hash FROM audit_auditleaf WHERE {where}",
                    [bound for pair in ranges for bound in pair],
                )
                self._leaves.update((seq, bytes(h)) for seq, h in cursor.fetchall())
            wanted = sum(high - low for low, high in ranges)
            found = sum(
                1 for low, high in ranges for seq in range(low, high) if seq in self._leaves
            )
            if found != wanted:
                raise NodesMissing(
                    f"{wanted - found} leaves a proof needs are missing: the log was changed; "
                    "run audit_verify"
                )
        self._node_keys.clear()
        self._leaf_ranges.clear()

    def leaf(self, seq: int) -> bytes:
        """Return a fetched leaf hash."""
        return self._leaves[seq]

    def subtree_root(self, low: int, high: int) -> bytes:
        """Return MTH(D[low:high]) from the fetched nodes and leaves."""
        roots = []
        for level, start in perfect_subtrees(low, high):
            if level >= MIN_LEVEL:
                roots.append(self._nodes[(level, start >> level)])
            else:
                leaves = self._leaves
                roots.append(root_hash([leaves[s] for s in range(start, start + (1 << level))]))
        return fold_subtrees(roots)

    def root(self) -> bytes:
        """Return the root of the tree of `size` leaves (needs need(0, size) fetched)."""
        return self.subtree_root(0, self.size) if self.size else EMPTY_ROOT


def _merged(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return half-open ranges sorted, with overlapping and touching ones joined."""
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return [(low, high) for low, high in merged]


def frontier_at(size: int) -> Frontier:
    """Return the Merkle frontier at `size` leaves, from stored nodes (size <= nodes_size)."""
    tree = StoredTree(size)
    pieces = perfect_subtrees(0, size)
    for level, start in pieces:
        tree.need(start, start + (1 << level))
    tree.fetch()
    hashes = [tree.subtree_root(start, start + (1 << level)) for level, start in pieces]
    return Frontier.load(hashes, size)


def leaf_hashes_between(low: int, high: int) -> list[bytes]:
    """Return the stored leaf hashes of seq low..high-1, refusing a range with gaps."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq, leaf_hash FROM audit_auditleaf WHERE seq >= %s AND seq < %s ORDER BY seq",
            [low, high],
        )
        rows = cursor.fetchall()
    if len(rows) != high - low:
        raise NodesMissing(
            f"the log holds {len(rows)} of the leaves {low}..{high - 1}: run audit_verify"
        )
    return [bytes(digest) for _, digest in rows]


def fill_missing(state: AuditTreeState, limit: int | None = None) -> int:
    """Store the nodes of up to `limit` (FILL_LEAVES) leaves past nodes_size; return how many.

    For a trail sequenced before nodes were kept. The caller holds the sequencer's lock and the
    state row and saves the state in the same transaction.
    """
    start = state.nodes_size
    stop = min(state.size, start + (FILL_LEAVES if limit is None else limit))
    if stop <= start:
        return 0
    frontier = frontier_at(start)
    insert_nodes(frontier.extend_with_nodes(leaf_hashes_between(start, stop), MIN_LEVEL))
    state.nodes_size = stop
    return stop - start
