"""Recompute the whole audit trail and name every place where it differs from what was signed.

What is checked, and what a failure names:
* every checkpoint: signed by the configured key, signature valid, time strictly after the one
  before (a replay or a forgery is not), size never below the one before;
* every sequenced entry in seq order: no gap, its entry still there, the leaf recomputed from
  the entry equal to the leaf hash stored when it was sequenced (so a changed entry, a changed
  sequence number or a swap is named by its seq and entry id), its body matching the digest the
  leaf commits to, an erased body backed by a recorded erasure entry;
* the Merkle root recomputed from the entries at the size of each checkpoint equal to the signed
  root (an attacker who also rewrote the stored leaf hashes is caught here, to the range between
  the last matching checkpoint and this one);
* no checkpoint, and no checkpoint kept outside the database, above the log's size (a rollback);
* no committed entry left without a sequence number below the sequencer's cursor.
"""

from __future__ import annotations

import base64
import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import connection

from audit import keys
from audit.evidence import checkpoint_message, key_id_for, verify_checkpoint_signature
from audit.leaves import ENTRY_COLUMNS, entry_leaf_hash, fast_leaf_hash
from audit.merkle import Frontier
from audit.models import AuditCheckpoint, AuditTreeState
from audit.services import ERASURE_ACTION

PAGE = 20_000
PROGRESS_EVERY = 100_000
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


_SELECT = """
    SELECT l.seq, l.leaf_hash, l.entry_id, {columns},
           b.entry_id IS NOT NULL, b.content, b.erasure_entry_id
    FROM audit_auditleaf l
    LEFT JOIN audit_auditentry e ON e.id = l.entry_id
    LEFT JOIN audit_auditbody b ON b.entry_id = l.entry_id
"""
_PG_TIME = "to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
_PG_TYPES = ["int8", "bytea", "int8", "int8", "text", "int8"] + ["text"] * 11
_PG_TYPES += ["bool", "text", "int8"]


def _rows():
    """Yield (seq, leaf_hash, entry_id, *ENTRY_COLUMNS, has_body, content, erasure_id) by seq.

    On PostgreSQL one COPY in binary streams every row (the server formats the time while
    Python hashes); elsewhere pages of a plain query.
    """
    if connection.vendor == "postgresql":
        columns = ", ".join(
            _PG_TIME
            if name == "created_at"
            else f"e.{name}::text"
            if name != "id" and name != "actor_id"
            else f"e.{name}"
            for name in ENTRY_COLUMNS
        )
        sql = _SELECT.format(columns=columns) + " ORDER BY l.seq"
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SET jit = off")  # one long scan: compiling costs more than it saves
        with (
            connection.connection.cursor() as cursor,
            cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT BINARY)") as copy,
        ):
            copy.set_types(_PG_TYPES)
            yield from copy.rows()
        return
    columns = ", ".join(f"e.{name}" for name in ENTRY_COLUMNS)
    sql = _SELECT.format(columns=columns) + " WHERE l.seq > %s ORDER BY l.seq LIMIT %s"
    after_seq = -1
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [after_seq, PAGE])
            rows = cursor.fetchall()
        if not rows:
            return
        yield from rows
        after_seq = rows[-1][0]


def _check_leaves(
    result: VerificationResult,
    roots_wanted: set[int],
    progress: Callable[[int, int], None] | None,
    total: int,
) -> dict[int, bytes]:
    """Recompute every leaf and the tree; return the roots at the sizes asked for."""
    frontier = Frontier()
    roots: dict[int, bytes] = {}
    if 0 in roots_wanted:
        roots[0] = frontier.root()
    erasures: list[tuple[int, int, int | None]] = []
    width = len(ENTRY_COLUMNS)
    append = frontier.append
    sha256 = hashlib.sha256
    expected = 0
    for row in _rows():
        seq, stored, entry_id = row[0], bytes(row[1]), row[2]
        entry = row[3 : 3 + width]
        has_body, content, erasure_id = row[3 + width :]
        if seq != expected:
            result.fail(
                "gap",
                f"sequence numbers {expected}..{seq - 1} are missing (deleted entries); "
                f"seq {seq} follows seq {expected - 1}",
            )
            expected = seq
        if entry[0] is None:
            result.fail("entry_missing", f"seq {seq}: its entry #{entry_id} is missing")
            digest = stored
        else:
            digest = fast_leaf_hash(seq, entry)
            if digest != stored:
                digest = entry_leaf_hash(seq, entry)  # the reference encoder decides
            if digest != stored:
                result.fail(
                    "entry_changed",
                    f"seq {seq} (entry #{entry_id}): the entry does not match the leaf "
                    "recorded when it was sequenced (changed, renumbered or swapped)",
                )
            body_digest = entry[-1]
            if content is not None:
                if sha256(content.encode("utf-8")).hexdigest() != body_digest:
                    result.fail(
                        "body_changed",
                        f"seq {seq} (entry #{entry_id}): the body does not match its digest",
                    )
            elif has_body:
                result.erased += 1
                erasures.append((seq, entry_id, erasure_id))
            elif body_digest:
                result.fail("body_missing", f"seq {seq} (entry #{entry_id}): its body was deleted")
        append(digest)
        expected += 1
        if expected in roots_wanted:
            roots[expected] = frontier.root()
        if progress is not None and not expected % PROGRESS_EVERY:
            progress(expected, total)
    if progress is not None:
        progress(expected, total)
    result.size = expected
    result.root_hash = frontier.root().hex()
    _check_erasures(result, erasures)
    return roots


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


def verify_log(
    *,
    external: list[dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VerificationResult:
    """Verify the whole trail (and checkpoints kept outside the database); return what failed."""
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
    wanted = {c.tree_size for c in trusted} | {c["tree_size"] for _, c in external_ok}
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM audit_auditleaf")
        total = cursor.fetchone()[0]
    roots = _check_leaves(result, wanted, progress, total)
    _duplicates(result)

    by_size: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for checkpoint in trusted:
        by_size[checkpoint.tree_size].append((_describe(checkpoint), checkpoint.root_hash))
    for name, checkpoint in external_ok:
        by_size[checkpoint["tree_size"]].append((name, checkpoint["root_hash"]))
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
    _check_unsequenced(result)
    return result
