"""The sequencer: gap-free sequence numbers and an incremental Merkle tree over committed entries.

Writers only INSERT entries, in any order and in parallel, and their ids are not committed in
order: id 7 may commit after id 9, so a watermark on ids would lose id 7. The sequencer therefore
numbers an entry only once its inserting transaction is over for everyone:

PostgreSQL. Each entry stores the top-level id of the transaction that inserted it
(`txid`, default pg_current_xact_id(), added by migration 0002). In one statement the sequencer
takes as its horizon the oldest transaction still running in this database (the snapshot's
xmin, less the transactions pg_stat_activity places in other databases; `_PG_HORIZON`): every
transaction of this database with an id below the horizon has committed or aborted, and one that
has not yet got an id will get one above it.
So the set of entries with txid < horizon is final and fully visible to this statement; the
sequencer numbers them in (txid, id) order and remembers the last (txid, id) as its cursor. The
next run takes (txid, id) > cursor and txid < the new horizon: nothing can ever appear at or
below the cursor again, so no entry is skipped and none is numbered twice. A long-running
transaction holds the horizon back, which delays (never loses) what committed after it.
One sequencer runs at a time: pg_try_advisory_xact_lock, released by the transaction's end, also
when the process is killed.

SQLite (the laptop demo). SQLite has one writer at a time, and the sequencer's own transaction
takes the write lock at BEGIN (settings: transaction_mode IMMEDIATE). An id is assigned inside a
write transaction that holds that lock until it commits, so ids commit in order and every row
the sequencer can see is committed: a cursor on id is correct there.

Each batch commits its leaves, the tree nodes they complete (audit/nodes.py), the Merkle
frontier and the cursor in one transaction, so a sequencer killed mid-batch loses nothing and a
restarted one resumes where the last commit left. On a trail sequenced before nodes were kept,
each batch also fills in the nodes of up to nodes.FILL_LEAVES older leaves.
"""

from __future__ import annotations

import base64
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from audit import keys, nodes
from audit.evidence import checkpoint_message, key_id_for
from audit.evidence import sign_checkpoint as sign_message
from audit.leaves import ENTRY_COLUMNS, format_time, pg_leaf_time, sequencing_leaf_hash
from audit.merkle import Frontier
from audit.models import AuditCheckpoint, AuditEntry, AuditLeaf, AuditTreeState

# pg_try_advisory_xact_lock key: "audit" sequencer (any constant unique to this use).
LOCK_KEY = 0x5374_6577_4175_64

_COLUMNS = ", ".join(ENTRY_COLUMNS)
# The server writes the time in the leaf's form: Python neither parses nor formats it.
_PG_COLUMNS = ", ".join(
    pg_leaf_time(name) if name == "created_at" else name for name in ENTRY_COLUMNS
)
# The horizon: the oldest transaction still running that could belong to this database, or, with
# none, the next transaction id to be given. Transaction ids are cluster-wide, so the snapshot's
# xmin also counts the transactions of every other database on the server, and one long
# transaction there (a report, a migration, another application) held Steward's trail unsealed.
# A running transaction is left out only when pg_stat_activity shows it on a backend of another
# database; one it does not show (ended meanwhile, prepared, a subtransaction, a session the role
# may not see) still counts, so the horizon is never later than the snapshot allows.
# pg_stat_activity.backend_xid is the 32-bit xid: the xid8's low 32 bits.
_PG_HORIZON = """
    COALESCE(
        (SELECT min(running::text::bigint)
         FROM pg_snapshot_xip(pg_current_snapshot()) AS running
         WHERE running::text::bigint %% 4294967296 NOT IN (
             SELECT backend_xid::text::bigint FROM pg_stat_activity
             WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()
         )),
        pg_snapshot_xmax(pg_current_snapshot())::text::bigint
    )
"""
_PG_PENDING = f"""
    SELECT txid, {_PG_COLUMNS} FROM audit_auditentry
    WHERE (txid, id) > (%s, %s)
      AND txid < {_PG_HORIZON}
    ORDER BY txid, id
    LIMIT %s
"""
_SQLITE_PENDING = f"""
    SELECT 0, {_COLUMNS} FROM audit_auditentry WHERE id > %s ORDER BY id LIMIT %s
"""


def _try_lock() -> bool:
    """Take the sequencer lock for this transaction (PostgreSQL); False when another holds it."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _state() -> AuditTreeState:
    """Return the tree state row, locked for this transaction."""
    state = AuditTreeState.objects.select_for_update().filter(pk=1).first()
    if state is None:
        state = AuditTreeState.objects.create(pk=1)
    return state


def _pending(state: AuditTreeState, limit: int) -> list[tuple]:
    """Return up to `limit` committed, unsequenced entries as (txid, *ENTRY_COLUMNS) rows."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_PG_PENDING, [state.cursor_txid, state.cursor_id, limit])
        else:
            cursor.execute(_SQLITE_PENDING, [state.cursor_id, limit])
        return cursor.fetchall()


def sequence_batch(batch_size: int = 5000) -> int | None:
    """Sequence one batch in one transaction; return its size, or None if another sequencer runs."""
    with transaction.atomic():
        if not _try_lock():
            return None
        state = _state()
        filled = nodes.fill_missing(state) if state.nodes_size < state.size else 0
        rows = _pending(state, batch_size)
        if not rows:
            if filled:
                state.save(update_fields=["nodes_size"])
            return 0
        frontier = Frontier.load(state.frontier, state.size)
        now = timezone.now()
        leaves = [
            (seq, row[1], sequencing_leaf_hash(seq, row[1:]), now)
            for seq, row in enumerate(rows, start=state.size)
        ]
        digests = [leaf[2] for leaf in leaves]
        _insert_leaves(leaves)
        if state.nodes_size == state.size:
            nodes.insert_nodes(frontier.extend_with_nodes(digests, nodes.MIN_LEVEL))
            state.nodes_size += len(rows)
        else:  # an older trail whose nodes are still being filled in: fill_missing will
            frontier.extend(digests)
        state.size += len(rows)
        state.frontier = frontier.dump()
        state.root_hash = frontier.root().hex()
        state.cursor_txid, state.cursor_id = rows[-1][0], rows[-1][1]
        state.updated_at = now
        state.save()
        return len(rows)


def build_nodes(*, batch_leaves: int | None = None, progress=None) -> int:
    """Fill in every tree node an older trail lacks, one transaction per batch; return leaves."""
    total = 0
    while True:
        with transaction.atomic():
            if not _try_lock():
                raise RuntimeError("another sequencer holds the lock: try again")
            state = _state()
            filled = nodes.fill_missing(state, batch_leaves)
            if not filled:
                return total
            state.save(update_fields=["nodes_size"])
        total += filled
        if progress is not None:
            progress(state.nodes_size, state.size)


def next_unsequenced_at():
    """Return when the next entry the sequencer will number was written (None: caught up).

    The first entry after the cursor in the sequencer's own order ((txid, id) on PostgreSQL,
    by its index; id on SQLite): its age is how far the sequencer lags.
    """
    state = AuditTreeState.objects.filter(pk=1).first()
    cursor_txid, cursor_id = (state.cursor_txid, state.cursor_id) if state else (0, 0)
    if connection.vendor != "postgresql":
        entries = AuditEntry.objects.filter(id__gt=cursor_id).order_by("id")
        return entries.values_list("created_at", flat=True).first()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT created_at FROM audit_auditentry WHERE (txid, id) > (%s, %s)"
            " ORDER BY txid, id LIMIT 1",
            [cursor_txid, cursor_id],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _insert_leaves(leaves: list[tuple]) -> None:
    """Insert the batch's (seq, entry_id, leaf_hash, sequenced_at) rows: one COPY on PostgreSQL."""
    if connection.vendor != "postgresql":
        AuditLeaf.objects.bulk_create(
            [AuditLeaf(seq=s, entry_id=e, leaf_hash=h, sequenced_at=t) for s, e, h, t in leaves],
            batch_size=2000,
        )
        return
    connection.ensure_connection()
    with (
        connection.connection.cursor() as cursor,
        cursor.copy(
            "COPY audit_auditleaf (seq, entry_id, leaf_hash, sequenced_at) FROM STDIN"
        ) as copy,
    ):
        for leaf in leaves:
            copy.write_row(leaf)


def run_sequencer(*, batch_size: int = 5000, max_batches: int | None = None) -> int:
    """Sequence batches until none is left (or max_batches); return how many entries."""
    total = 0
    batches = 0
    while max_batches is None or batches < max_batches:
        count = sequence_batch(batch_size)
        if count is None:
            break
        total += count
        batches += 1
        if count < batch_size:
            break
    return total


def make_checkpoint(*, force: bool = False, min_interval: float | None = None):
    """Sign a checkpoint of the tree when it grew (or when forced) and one is due."""
    if min_interval is None:
        min_interval = settings.AUDIT_CHECKPOINT_SECONDS
    with transaction.atomic():
        if not _try_lock():
            return None
        state = AuditTreeState.objects.filter(pk=1).first()
        size = state.size if state else 0
        root = state.root_hash if state and state.root_hash else Frontier.empty_root().hex()
        last = AuditCheckpoint.objects.order_by("-id").first()
        now = timezone.now()
        if last is not None and not force:
            if last.tree_size == size:
                return None
            if now - last.created_at < timedelta(seconds=min_interval):
                return None
        if last is not None and now <= last.created_at:
            now = last.created_at + timedelta(microseconds=1)
        key = keys.signing_key()
        key_id = key_id_for(keys.public_key_bytes(key))
        timestamp = format_time(now)
        signature = sign_message(key, checkpoint_message(size, root, timestamp, key_id))
        if isinstance(signature, bytes):
            signature = base64.b64encode(signature).decode()
        return AuditCheckpoint.objects.create(
            tree_size=size,
            root_hash=root,
            timestamp=timestamp,
            key_id=key_id,
            signature=signature,
            created_at=now,
        )
