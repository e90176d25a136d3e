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
_DECISION = ENTRY_COLUMNS.index("decision")


def format_time(value) -> str:
    """Return a timestamp as UTC ISO 8601 with microseconds and a Z."""
    if isinstance(value, str):
        if len(value) == 27 and value[10] == "T" and value[-1] == "Z":
            return value  # already in this form (PostgreSQL's to_char in the verifier)
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def pg_leaf_time(column: str) -> str:
    """Return PostgreSQL's expression for a time column in the form format_time() passes on."""
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


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


# The fast encoder: what canonical_json writes for a leaf, as one format string in the leaf's
# sorted key order. A leaf holds only ints (ids, seq), None, strings read from the database
# (escaped by the json module's C string encoder, which writes exactly what RFC 8785 asks for
# with ensure_ascii off) and the decision, which is stored as canonical JSON text and spliced in
# as it is. Anything else goes to the reference encoder. The verifier uses it and, on a
# mismatch, recomputes with canonical_json before reporting anything; the sequencer uses it
# through sequencing_leaf_hash, which writes the decision canonically first.
# tests/audit/test_leaves.py checks that both agree with the reference.
_LEAF_FORMAT = (
    '{"action":%s,"actor_id":%s,"actor_kind":%s,"actor_name":%s,"body_digest":%s,'
    '"decision":%s,"entry_id":%d,"request_id":%s,"run_id":%s,"seq":%d,"step_id":%s,'
    '"target_id":%s,"target_repr":%s,"target_type":%s,"time":%s,"v":' + str(LEAF_VERSION) + "}"
)
_escape = json.encoder.encode_basestring
_sha256 = hashlib.sha256


def fast_leaf_hash(seq: int, row: tuple) -> bytes:
    """Return entry_leaf_hash(seq, row) faster, for rows whose decision is text or None."""
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
    if (
        type(seq) is not int
        or type(entry_id) is not int
        or not (actor_id is None or type(actor_id) is int)
        or not (decision is None or type(decision) is str)
    ):
        return entry_leaf_hash(seq, row)
    try:
        text = _LEAF_FORMAT % (
            _escape(action),
            "null" if actor_id is None else actor_id,
            _escape(actor_kind),
            _escape(actor_name),
            _escape(body_digest),
            "null" if decision is None else decision,
            entry_id,
            _escape(request_id),
            _escape(run_id),
            seq,
            _escape(step_id),
            _escape(target_id),
            _escape(target_repr),
            _escape(target_type),
            _escape(format_time(created_at)),
        )
        data = text.encode("utf-8")
    except (TypeError, UnicodeEncodeError):
        return entry_leaf_hash(seq, row)  # not a str where one belongs: the reference decides
    return _sha256(b"\x00" + data).digest()


def sequencing_leaf_hash(seq: int, row: tuple) -> bytes:
    """Return entry_leaf_hash(seq, row) by the fast encoder, exact for any decision text.

    The fast encoder splices the stored decision as it is; the reference parses it and writes it
    canonically. Writing the decision canonically first makes the two agree whatever the text
    holds, so the sequencer, which fixes every leaf for good, never depends on record() having
    stored canonical text.
    """
    decision = row[_DECISION]
    if type(decision) is str:
        decision = canonical_json(json.loads(decision)).decode("utf-8")
        row = (*row[:_DECISION], decision, *row[_DECISION + 1 :])
    return fast_leaf_hash(seq, row)


def entry_row(entry) -> tuple:
    """Return a model instance's columns in ENTRY_COLUMNS order."""
    return tuple(getattr(entry, name) for name in ENTRY_COLUMNS)
