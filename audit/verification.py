"""Recompute the whole audit trail and name every place where it differs from what was signed.

What is checked, and what a failure names:
* every checkpoint: signed by the configured key, signature valid, time strictly after the one
  before (a replay or a forgery is not), size never below the one before;
* every sequenced entry in seq order: no gap, its entry still there, the leaf recomputed from
  the entry equal to the leaf hash stored when it was sequenced (so a changed entry, a changed
  sequence number or a swap is named by its seq and entry id), its body matching the digest the
  leaf commits to, an erased body backed by a recorded erasure entry;
* every stored tree node (audit/nodes.py) equal to the one recomputed from the entries, none
  missing below the size the sequencer says they cover, none beyond it;
* the Merkle root recomputed from the entries at the size of each checkpoint equal to the signed
  root (an attacker who also rewrote the stored leaf hashes is caught here, to the range between
  the last matching checkpoint and this one);
* no checkpoint, and no checkpoint kept outside the database, above the log's size (a rollback);
* no committed entry left without a sequence number below the sequencer's cursor.
"""

from __future__ import annotations

import base64
import multiprocessing
import re
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from django.db import connection

from audit import keys
from audit.evidence import checkpoint_message, key_id_for, verify_checkpoint_signature
from audit.leafcheck import (
    ID_BOUNDS_SQL,
    PG_TYPES,
    SESSION_SETTINGS,
    RangeResult,
    check_range_in_worker,
    check_rows,
    pg_copy_sql,
    range_sql,
)
from audit.merkle import Frontier, consistency_proof, verify_consistency
from audit.models import AuditCheckpoint, AuditTreeState
from audit.nodes import MIN_LEVEL
from audit.services import ERASURE_ACTION

MAX_LISTED = 20


@dataclass
class Failure:
    """One thing that does not verify, with the place it happened."""

    code: str
    message: str

    def __str__(self):
        return f"{self.code}: {self.message}"


@dataclass
class VerificationResult:
    """The outcome of a verification: what was checked and what failed."""

    size: int = 0
    checkpoints: int = 0
    erased: int = 0
    pending: int = 0
    root_hash: str = ""
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Tell whether everything verified."""
        return not self.failures

    def fail(self, code: str, message: str) -> None:
        """Add a failure."""
        self.failures.append(Failure(code, message))


def _signature_bytes(signature: str) -> bytes:
    """Decode a base64 signature, or return b'' when it is not base64."""
    try:
        return base64.b64decode(signature, validate=True)
    except ValueError:
        return b""


def check_checkpoint_signature(checkpoint: dict, public_key: bytes) -> str | None:
    """Return why a checkpoint's signature does not verify with `public_key`, or None."""
    expected_key_id = key_id_for(public_key)
    if checkpoint.get("key_id") != expected_key_id:
        return (
            f"signed by key {checkpoint.get('key_id')!r}, not by the configured key "
            f"{expected_key_id!r}"
        )
    message = checkpoint_message(
        checkpoint["tree_size"], checkpoint["root_hash"], checkpoint["timestamp"], expected_key_id
    )
    signature = _signature_bytes(checkpoint.get("signature", ""))
    if not signature or not verify_checkpoint_signature(public_key, message, signature):
        return "bad signature: its size, root or time is not what the key signed"
    return None


def _describe(checkpoint: AuditCheckpoint) -> str:
    """Name a checkpoint for a failure message."""
    return f"checkpoint #{checkpoint.pk} (size {checkpoint.tree_size}, {checkpoint.timestamp})"


def _check_checkpoints(result: VerificationResult, public_key: bytes) -> list[AuditCheckpoint]:
    """Check every checkpoint's signature and order; return those whose signature verifies."""
    trusted = []
    previous = None
    seen: dict[tuple, int] = {}
    for checkpoint in AuditCheckpoint.objects.order_by("id"):
        result.checkpoints += 1
        name = _describe(checkpoint)
        problem = check_checkpoint_signature(checkpoint.as_dict(), public_key)
        if problem:
            code = "checkpoint_wrong_key" if problem.startswith("signed by") else "bad_signature"
            result.fail(code, f"{name}: {problem}")
            continue
        signed = (checkpoint.tree_size, checkpoint.root_hash, checkpoint.timestamp)
        if signed in seen:
            result.fail("checkpoint_replayed", f"{name} is a replay of checkpoint #{seen[signed]}")
            continue
        seen[signed] = checkpoint.pk
        if previous is not None:
            if checkpoint.timestamp <= previous.timestamp:
                result.fail(
                    "checkpoint_replayed",
                    f"{name} is not later than checkpoint #{previous.pk} ({previous.timestamp}): "
                    "an older signed checkpoint was replayed",
                )
                continue
            if checkpoint.tree_size < previous.tree_size:
                result.fail(
                    "checkpoint_rollback",
                    f"{name} is smaller than checkpoint #{previous.pk} ({previous.tree_size})",
                )
        trusted.append(checkpoint)
        previous = checkpoint
    return trusted


CHUNK = 100_000
PARALLEL_MIN = 200_000
_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f-]+")


def _log_bounds() -> tuple[int, int]:
    """Return (the highest seq + 1, the number of leaves) as committed now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(seq) + 1, 0), COUNT(*) FROM audit_auditleaf")
        bound, count = cursor.fetchone()
    return int(bound), int(count)


def _ranges(bound: int) -> list[tuple[int, int]]:
    """Split [0, bound) into the ranges that are read and checked one at a time."""
    return [(start, min(start + CHUNK, bound)) for start in range(0, bound, CHUNK)]


def _check_range_here(start: int, stop: int) -> RangeResult:
    """Check one range on this process's connection (one binary COPY on PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(ID_BOUNDS_SQL, [start, stop])
        low_id, high_id = cursor.fetchone()
    sql = range_sql(connection.vendor, start, stop, low_id, high_id)
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        with (
            connection.connection.cursor() as cursor,
            cursor.copy(pg_copy_sql(start, stop, low_id, high_id)) as copy,
        ):
            copy.set_types(PG_TYPES)
            return check_rows(copy.rows(), start, stop)
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return check_rows(cursor.fetchall(), start, stop)


def _serial_results(bound: int):
    """Yield the RangeResult of every range, checked in this process; then the log's size."""
    if connection.vendor != "postgresql":
        for start, stop in _ranges(bound):
            yield _check_range_here(start, stop)
        return
    names = [setting.split(" = ")[0] for setting in SESSION_SETTINGS]
    with connection.cursor() as cursor:
        for setting in SESSION_SETTINGS:
            cursor.execute(f"SET {setting}")
    try:
        for start, stop in _ranges(bound):
            yield _check_range_here(start, stop)
    finally:
        with connection.cursor() as cursor:
            for name in names:
                cursor.execute(f"RESET {name}")


def _connection_params() -> dict:
    """Return what a worker process needs to open its own connection to this database."""
    params = connection.get_connection_params()
    return {k: v for k, v in params.items() if isinstance(v, str | int) and k != "cursor_factory"}


def _parallel_results(workers: int):
    """Yield (bound, count) and then every range's RangeResult, checked by worker processes.

    This process holds a REPEATABLE READ transaction on a connection of its own and exports its
    snapshot; each worker imports it, so all ranges read the log as of one moment. Ranges come
    back in order while the workers go on with the next ones.
    """
    import psycopg

    params = _connection_params()
    with psycopg.connect(**params, autocommit=True) as holder, holder.transaction():
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot = holder.execute("SELECT pg_export_snapshot()").fetchone()[0]
        if not _SNAPSHOT_ID.fullmatch(snapshot):
            raise RuntimeError(f"unexpected snapshot id {snapshot!r}")
        bound, count = holder.execute(
            "SELECT COALESCE(MAX(seq) + 1, 0), COUNT(*) FROM audit_auditleaf"
        ).fetchone()
        yield int(bound), int(count)
        # fork: no re-import of the caller's __main__. A child never touches the connections
        # it inherits (it opens its own), and leaves through os._exit, which closes none.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(check_range_in_worker, params, snapshot, start, stop)
                for start, stop in _ranges(int(bound))
            ]
            for future in futures:
                yield future.result()


def _gap_message(low: int, high: int) -> str:
    """Describe the sequence numbers [low, high) that have no leaf."""
    return (
        f"sequence numbers {low}..{high - 1} are missing (deleted entries); "
        f"seq {high} follows seq {low - 1}"
    )


def _check_leaves(
    result: VerificationResult,
    roots_wanted: set[int],
    progress: Callable[[int, int], None] | None,
    workers: int,
    keep: list[bytes] | None = None,
) -> dict[int, bytes]:
    """Recompute every leaf and the tree; return the roots at the sizes asked for.

    With `keep`, every leaf hash is also appended to it, in order (for consistency proofs).
    """
    frontier = Frontier()
    roots: dict[int, bytes] = {}
    if 0 in roots_wanted:
        roots[0] = frontier.root()
    parallel = workers > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block
    if parallel:
        results = _parallel_results(workers)
        bound, total = next(results)
        if bound < PARALLEL_MIN:
            results.close()  # too small to pay for starting processes
            parallel = False
    if not parallel:
        bound, total = _log_bounds()
        results = _serial_results(bound)
    erasures: list[tuple[int, int, int | None]] = []
    nodes_size = _nodes_size()
    gap_seen = False
    gap_start = None  # a run of missing numbers that reached the end of the previous range
    for chunk in results:
        for code, message in chunk.failures:
            result.fail(code, message)
        erasures.extend(chunk.erasures)
        result.erased += chunk.erased
        if gap_start is not None and not (chunk.missing and chunk.missing[0][0] == chunk.start):
            result.fail("gap", _gap_message(gap_start, chunk.start))
            gap_start = None
        for low, high in chunk.missing:
            low = low if gap_start is None else gap_start
            if high == chunk.stop and chunk.stop != bound:
                gap_start = low  # it may go on in the next range
            else:
                result.fail("gap", _gap_message(low, high))
                gap_start = None
        # Roots at the sizes asked for: split the range's hashes where those sizes fall.
        done = 0
        completed = []
        for size in sorted(s for s in roots_wanted if chunk.start < s <= chunk.stop):
            upto = chunk.found_below(size)
            completed += frontier.extend_with_nodes(
                _split_hashes(chunk.digests, done, upto), MIN_LEVEL
            )
            done = upto
            roots[size] = frontier.root()
        completed += frontier.extend_with_nodes(
            _split_hashes(chunk.digests, done, chunk.found), MIN_LEVEL
        )
        # After a gap the recomputed nodes sit at the wrong positions: the gap is the failure.
        if not gap_seen and frontier.size == chunk.stop:
            _check_nodes(result, completed, chunk.start, min(chunk.stop, nodes_size))
        else:
            gap_seen = True
        if keep is not None:
            keep.extend(_split_hashes(chunk.digests, 0, chunk.found))
        if progress is not None and chunk.stop < bound:
            progress(chunk.stop, total)
    if progress is not None:
        progress(total, total)
    result.size = bound
    result.root_hash = frontier.root().hex()
    _check_erasures(result, erasures)
    return roots


def _nodes_size() -> int:
    """Return how many leaves the stored tree nodes cover (AuditTreeState.nodes_size)."""
    state = AuditTreeState.objects.filter(pk=1).values_list("nodes_size", flat=True).first()
    return state or 0


def _check_nodes(
    result: VerificationResult, computed: list[tuple[int, int, bytes]], low: int, high: int
) -> None:
    """Compare the stored nodes that leaves low..high-1 complete with the recomputed ones."""
    expected = {
        (level, position): digest
        for level, position, digest in computed
        if (position + 1) << level <= high
    }
    clauses, params = [], []
    level = MIN_LEVEL
    while (1 << level) <= high:
        first, last = low >> level, (high >> level) - 1
        if first <= last:
            clauses.append("(level = %s AND position BETWEEN %s AND %s)")
            params += [level, first, last]
        level += 1
    stored = {}
    if clauses:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT level, position, hash FROM audit_auditnode WHERE {' OR '.join(clauses)}",
                params,
            )
            stored = {(lv, p): bytes(h) for lv, p, h in cursor.fetchall()}
    for key in sorted(expected.keys() - stored.keys())[:MAX_LISTED]:
        result.fail("node_missing", f"{_node_name(key)} is not stored: it was deleted")
    changed = sorted(k for k in expected.keys() & stored.keys() if expected[k] != stored[k])
    for key in changed[:MAX_LISTED]:
        result.fail(
            "node_changed",
            f"{_node_name(key)} differs from the one recomputed from the entries: a proof "
            "built from it would not reach the signed root",
        )


def _node_name(key: tuple[int, int]) -> str:
    """Name a stored node by the leaves it covers."""
    level, position = key
    first, last = position << level, ((position + 1) << level) - 1
    return f"tree node level {level} position {position} (seq {first}..{last})"


def _check_stray_nodes(result: VerificationResult) -> None:
    """Name stored nodes beyond the leaves the sequencer says they cover (written by no one)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM audit_auditnode n, audit_audittreestate s "
            "WHERE s.id = 1 AND ((n.position + 1) << n.level) > s.nodes_size"
        )
        stray = cursor.fetchone()[0]
    if stray:
        result.fail(
            "node_stray",
            f"{stray} stored tree nodes lie beyond the leaves the sequencer has covered",
        )


def _split_hashes(blob: bytes, low: int, high: int) -> list[bytes]:
    """Return the 32-byte hashes low..high-1 of a blob of concatenated hashes."""
    return [blob[i : i + 32] for i in range(low * 32, high * 32, 32)]


def _check_erasures(result: VerificationResult, erasures: list[tuple[int, int, int | None]]):
    """Check that each erased body is backed by an erasure entry that names it."""
    if not erasures:
        return
    ids = {erasure_id for _, _, erasure_id in erasures if erasure_id is not None}
    found: dict[int, str] = {}
    id_list = sorted(ids)
    with connection.cursor() as cursor:
        for start in range(0, len(id_list), 5000):
            chunk = id_list[start : start + 5000]
            placeholders = ", ".join(["%s"] * len(chunk))
            cursor.execute(
                "SELECT id, target_id FROM audit_auditentry "
                f"WHERE id IN ({placeholders}) AND action = %s",
                [*chunk, ERASURE_ACTION],
            )
            found.update(cursor.fetchall())
    for seq, entry_id, erasure_id in erasures:
        if erasure_id is None or found.get(erasure_id) != str(entry_id):
            result.fail(
                "erasure_unrecorded",
                f"seq {seq} (entry #{entry_id}): the body was erased without an erasure entry",
            )


def _check_unsequenced(result: VerificationResult) -> None:
    """Name committed entries the sequencer passed over without numbering them."""
    state = AuditTreeState.objects.filter(pk=1).first()
    cursor_txid, cursor_id = (state.cursor_txid, state.cursor_id) if state else (0, 0)
    if connection.vendor == "postgresql":
        passed = "(e.txid, e.id) <= (%s, %s)"
        params = [cursor_txid, cursor_id]
    else:
        passed = "e.id <= %s"
        params = [cursor_id]
    sql = f"""
        SELECT e.id, {passed} FROM audit_auditentry e
        LEFT JOIN audit_auditleaf l ON l.entry_id = e.id
        WHERE l.entry_id IS NULL ORDER BY e.id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    skipped = [entry_id for entry_id, behind in rows if behind]
    result.pending = len(rows) - len(skipped)
    if skipped:
        listed = ", ".join(f"#{i}" for i in skipped[:MAX_LISTED])
        more = f" and {len(skipped) - MAX_LISTED} more" if len(skipped) > MAX_LISTED else ""
        result.fail(
            "unsequenced",
            f"{len(skipped)} committed entries were passed over by the sequencer "
            f"without a sequence number: {listed}{more}",
        )
    if state is not None and (
        state.size != result.size or (state.size and state.root_hash != result.root_hash)
    ):
        result.fail(
            "sequencer_state",
            f"the sequencer's state says {state.size} leaves with root "
            f"{state.root_hash[:16]}…, the log recomputes to {result.size} leaves with root "
            f"{result.root_hash[:16]}…",
        )


def _duplicates(result: VerificationResult) -> None:
    """Name entries that hold more than one sequence number."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT entry_id, COUNT(*) FROM audit_auditleaf GROUP BY entry_id "
            "HAVING COUNT(*) > 1 ORDER BY entry_id"
        )
        for entry_id, count in cursor.fetchall()[:MAX_LISTED]:
            result.fail("numbered_twice", f"entry #{entry_id} holds {count} sequence numbers")


def _check_extends(
    result: VerificationResult, name: str, checkpoint: dict, hashes: list[bytes], last_good: int
) -> None:
    """Check with a consistency proof that the log's current tree extends an external checkpoint.

    The proof is built from the leaf hashes just recomputed from the entries and checked with
    the same verify_consistency the offline verifier uses, from the checkpoint's signed root to
    the root recomputed now.
    """
    size = checkpoint["tree_size"]
    if size > result.size:
        result.fail(
            "rollback",
            f"{name} was signed over {size} entries but the log holds only "
            f"{result.size}: entries seq {result.size}..{size - 1} were removed "
            "(rolled back below a published checkpoint)",
        )
        return
    proof = consistency_proof(hashes, size) if size <= len(hashes) else []
    root = bytes.fromhex(result.root_hash)  # the frontier's root over these same hashes
    if not verify_consistency(
        size, len(hashes), bytes.fromhex(checkpoint["root_hash"]), root, proof
    ):
        since = last_good if last_good < size else 0
        result.fail(
            "not_extended",
            f"{name}: the consistency proof from its size {size} to the log's {result.size} "
            f"entries does not verify against its signed root: the log does not extend it "
            f"(entries in seq {since}..{size - 1} were changed, removed or reordered after it "
            "was signed)",
        )


def verify_log(
    *,
    external: list[dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> VerificationResult:
    """Verify the whole trail (and checkpoints kept outside the database); return what failed.

    With `workers` > 1 on PostgreSQL, a large log's entries are recomputed by that many worker
    processes, range by range, all reading one snapshot; the tree is built here.
    """
    result = VerificationResult()
    public_key = keys.public_key()
    trusted = _check_checkpoints(result, public_key)
    external_ok = []
    for index, checkpoint in enumerate(external or [], start=1):
        name = f"external checkpoint {index} (size {checkpoint.get('tree_size')})"
        problem = check_checkpoint_signature(checkpoint, public_key)
        if problem:
            code = "checkpoint_wrong_key" if problem.startswith("signed by") else "bad_signature"
            result.fail(code, f"{name}: {problem}")
        else:
            external_ok.append((name, checkpoint))
    wanted = {c.tree_size for c in trusted}
    hashes: list[bytes] | None = [] if external_ok else None
    roots = _check_leaves(result, wanted, progress, workers, keep=hashes)
    _duplicates(result)

    by_size: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for checkpoint in trusted:
        by_size[checkpoint.tree_size].append((_describe(checkpoint), checkpoint.root_hash))
    last_good = 0
    for size in sorted(by_size):
        for name, root in by_size[size]:
            if size > result.size:
                result.fail(
                    "rollback",
                    f"{name} was signed over {size} entries but the log holds only "
                    f"{result.size}: entries seq {result.size}..{size - 1} were removed "
                    "(rolled back below a published checkpoint)",
                )
            elif roots.get(size, b"").hex() != root:
                result.fail(
                    "root_mismatch",
                    f"{name}: the log's root at size {size} differs from the signed root: "
                    f"entries in seq {last_good}..{size - 1} were changed, removed or "
                    "reordered after it was signed",
                )
            else:
                last_good = max(last_good, size)
    for name, checkpoint in external_ok:
        _check_extends(result, name, checkpoint, hashes or [], last_good)
    _check_unsequenced(result)
    _check_stray_nodes(result)
    return result
