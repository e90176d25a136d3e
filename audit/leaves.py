"""What a Merkle leaf commits to: an entry's fields, its sequence number and its body's digest.

The sequencer, audit_verify, the admin and audit_export all build leaves here, from the same
columns read back from the database, so that they hash exactly the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from audit.evidence import canonical_json
from audit.merkle import leaf_hash

# The entry columns a leaf is built from, in the order raw queries select them.
ENTRY_COLUMNS = (
    "id",
    "created_at",
    "actor_id",
    "actor_name",
    "actor_kind",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "run_id",
    "step_id",
    "request_id",
    "decision",
    "body_digest",
)

LEAF_VERSION = 1


def format_time(value) -> str:
    """Return a timestamp as UTC ISO 8601 with microseconds and a Z."""
    if isinstance(value, str):
        if len(value) == 27 and value[10] == "T" and value[-1] == "Z":
            return value  # already in this form (PostgreSQL's to_char in the verifier)
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def leaf_dict(seq: int, row: tuple) -> dict:
    """Return the leaf of an entry at `seq`, from its columns in ENTRY_COLUMNS order."""
    (
        entry_id,
        created_at,
        actor_id,
        actor_name,
        actor_kind,
        action,
        target_type,
        target_id,
        target_repr,
        run_id,
        step_id,
        request_id,
        decision,
        body_digest,
    ) = row
    if isinstance(decision, str):
        decision = json.loads(decision)
    return {
        "v": LEAF_VERSION,
        "seq": seq,
        "entry_id": entry_id,
        "time": format_time(created_at),
        "actor_id": actor_id,
        "actor_name": actor_name,
        "actor_kind": actor_kind,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "target_repr": target_repr,
        "run_id": run_id,
        "step_id": step_id,
        "request_id": request_id,
        "decision": decision,
        "body_digest": body_digest,
    }


def leaf_bytes(seq: int, row: tuple) -> bytes:
    """Return the canonical JSON bytes of an entry's leaf."""
    return canonical_json(leaf_dict(seq, row))


def entry_leaf_hash(seq: int, row: tuple) -> bytes:
    """Return the RFC 6962 leaf hash of an entry at `seq`."""
    return leaf_hash(leaf_bytes(seq, row))


# The fast encoder: what canonical_json does for a leaf, without its per-value checks. A leaf
# holds only ints below 2**53 (ids, seq), strings read from the database and the decision,
# which is stored as canonical JSON text and spliced in as it is. The verifier uses it and, on a
# mismatch, recomputes with canonical_json before reporting anything; the sequencer always uses
# canonical_json. tests/audit/test_leaves.py checks the two agree.
_FAST = json.JSONEncoder(ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"))
_SPLICE = "\x00decision\x00"
_SPLICED = json.dumps(_SPLICE)
_sha256 = hashlib.sha256


def fast_leaf_hash(seq: int, row: tuple) -> bytes:
    """Return entry_leaf_hash(seq, row) faster, for rows whose decision is text or None."""
    decision = row[12]
    leaf = {
        "v": LEAF_VERSION,
        "seq": seq,
        "entry_id": row[0],
        "time": format_time(row[1]),
        "actor_id": row[2],
        "actor_name": row[3],
        "actor_kind": row[4],
        "action": row[5],
        "target_type": row[6],
        "target_id": row[7],
        "target_repr": row[8],
        "run_id": row[9],
        "step_id": row[10],
        "request_id": row[11],
        "decision": None if decision is None else _SPLICE,
        "body_digest": row[13],
    }
    text = _FAST.encode(leaf)
    if decision is not None:
        text = text.replace(_SPLICED, decision, 1)
    return _sha256(b"\x00" + text.encode("utf-8")).digest()


def entry_row(entry) -> tuple:
    """Return a model instance's columns in ENTRY_COLUMNS order."""
    return tuple(getattr(entry, name) for name in ENTRY_COLUMNS)
