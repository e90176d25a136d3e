"""Evidence bundles: chosen entries with their inclusion proofs, a signed checkpoint, the key.

A bundle is checked offline by scripts/verify_evidence.py (no Django, no database) with the
same audit/merkle.py and audit/evidence.py this module uses.
"""

from __future__ import annotations

import base64
import json
import time

from django.db import connection

from audit import keys, services
from audit.evidence import canonical_json
from audit.leaves import ENTRY_COLUMNS, leaf_dict
from audit.merkle import MerkleTree, verify_consistency
from audit.models import AuditCheckpoint

BUNDLE_FORMAT = "steward-evidence/1"


class ExportError(Exception):
    """The chosen entries cannot be exported (missing, or not yet sequenced)."""


def _covering_checkpoint(max_seq: int) -> AuditCheckpoint:
    """Return the newest checkpoint covering `max_seq`, sequencing and signing one if needed."""
    checkpoint = services.latest_checkpoint()
    if checkpoint is None or checkpoint.tree_size <= max_seq:
        services.sequence_pending()
        services.sign_checkpoint(force=True)
        checkpoint = services.latest_checkpoint()
    if checkpoint is None or checkpoint.tree_size <= max_seq:
        raise ExportError(f"seq {max_seq} is not covered by a checkpoint yet")
    return checkpoint


def _leaf_hashes(size: int) -> list[bytes]:
    """Return the stored leaf hashes of the first `size` leaves."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq, leaf_hash FROM audit_auditleaf WHERE seq < %s ORDER BY seq", [size]
        )
        rows = cursor.fetchall()
    if len(rows) != size or (rows and rows[-1][0] != size - 1):
        raise ExportError(f"the log holds {len(rows)} of the {size} leaves of the checkpoint")
    return [bytes(digest) for _, digest in rows]


def entry_ids_to_seqs(entry_ids: list[int], *, wait: float = 10.0) -> list[int]:
    """Return the sequence numbers of entries, sequencing pending ones (waiting up to `wait`)."""
    from audit.models import AuditLeaf

    wanted = set(entry_ids)
    deadline = time.monotonic() + wait
    while True:
        leaves = AuditLeaf.objects.filter(entry_id__in=wanted).values_list("entry", "seq")
        found = dict(leaves)
        if len(found) == len(wanted) or time.monotonic() > deadline:
            break
        # A just-committed entry is numbered once every older transaction has ended.
        services.sequence_pending()
        time.sleep(0.1)
    missing = sorted(set(entry_ids) - set(found))
    if missing:
        raise ExportError(f"entries not found or not sequenced yet: {missing[:20]}")
    return sorted(found[i] for i in set(entry_ids))


def _check_since(since: dict) -> int:
    """Check an older checkpoint given by the user (signed by our key); return its size."""
    from audit.verification import check_checkpoint_signature

    try:
        problem = check_checkpoint_signature(since, keys.public_key())
    except (KeyError, TypeError, ValueError) as exc:
        problem = f"malformed ({exc})"
    if problem:
        raise ExportError(f"the older checkpoint does not verify: {problem}")
    return since["tree_size"]


def _consistency(tree: MerkleTree, since: dict) -> dict:
    """Return the consistency proof from the older checkpoint `since` to the tree."""
    old_size = since["tree_size"]
    proof = tree.consistency_proof(old_size)
    if not verify_consistency(
        old_size, tree.size, bytes.fromhex(since["root_hash"]), tree.root(), proof
    ):
        raise ExportError(
            f"the log does not extend the older checkpoint (size {old_size}, root "
            f"{since['root_hash']}): its first {old_size} leaves differ; run audit_verify"
        )
    return {"old_checkpoint": dict(since), "proof": [node.hex() for node in proof]}


def _entry_rows(seqs: list[int]) -> list[tuple]:
    """Return (seq, *ENTRY_COLUMNS, body content) of the entries at `seqs`, by seq."""
    columns = ", ".join(f"e.{name}" for name in ENTRY_COLUMNS)
    placeholders = ", ".join(["%s"] * len(seqs))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT l.seq, {columns}, b.content FROM audit_auditleaf l "
            "JOIN audit_auditentry e ON e.id = l.entry_id "
            "LEFT JOIN audit_auditbody b ON b.entry_id = l.entry_id "
            f"WHERE l.seq IN ({placeholders}) ORDER BY l.seq",
            seqs,
        )
        return cursor.fetchall()


CHECKPOINT_FIELDS = frozenset({"tree_size", "root_hash", "timestamp", "key_id", "signature"})


def read_checkpoint_file(path: str) -> dict:
    """Read a checkpoint kept outside the database: a bare checkpoint, or a bundle holding one."""
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("checkpoint"), dict):
        data = data["checkpoint"]
    if not isinstance(data, dict) or not set(data) >= CHECKPOINT_FIELDS:
        raise ExportError(f"{path} is not a checkpoint: it needs {sorted(CHECKPOINT_FIELDS)}")
    return {name: data[name] for name in CHECKPOINT_FIELDS}


def build_bundle(
    seqs: list[int], *, since: dict | None = None, checkpoint: AuditCheckpoint | None = None
) -> dict:
    """Return an evidence bundle for the entries at `seqs`.

    With `since`, an older checkpoint the reader kept, the bundle also proves that its own
    checkpoint extends that one (a consistency proof); `seqs` may then be empty. With
    `checkpoint`, the bundle is proven against that one (which must cover every seq; `seqs` may
    be empty) instead of the newest, which is sequenced and signed first when it is not enough.
    """
    if not seqs and since is None and checkpoint is None:
        raise ExportError("no entries chosen")
    seqs = sorted(set(seqs))
    needed = seqs[-1] if seqs else -1
    if since is not None:
        needed = max(needed, _check_since(since) - 1)
    if checkpoint is None:
        checkpoint = _covering_checkpoint(needed)
    elif checkpoint.tree_size <= needed:
        raise ExportError(f"seq {needed} is not covered by checkpoint #{checkpoint.pk}")
    tree = MerkleTree(_leaf_hashes(checkpoint.tree_size))
    if tree.root().hex() != checkpoint.root_hash:
        raise ExportError(
            f"the log's leaves do not match checkpoint #{checkpoint.pk}: run audit_verify"
        )
    consistency = _consistency(tree, since) if since is not None else None
    rows = _entry_rows(seqs) if seqs else []
    if len(rows) != len(seqs):
        found = {row[0] for row in rows}
        raise ExportError(f"entries missing at seq {sorted(set(seqs) - found)[:20]}")
    entries = []
    for row in rows:
        seq, entry, content = row[0], row[1:-1], row[-1]
        entries.append(
            {
                "seq": seq,
                "leaf": leaf_dict(seq, entry),
                "body": json.loads(content) if content is not None else None,
                "inclusion_proof": [node.hex() for node in tree.inclusion_proof(seq)],
            }
        )
    bundle = {
        "format": BUNDLE_FORMAT,
        "public_key": base64.b64encode(keys.public_key()).decode(),
        "checkpoint": checkpoint.as_dict(),
        "entries": entries,
    }
    if consistency is not None:
        bundle["consistency"] = consistency
    return bundle


def dump_bundle(bundle: dict) -> str:
    """Return a bundle as indented JSON text."""
    return json.dumps(json.loads(canonical_json(bundle)), indent=2, ensure_ascii=False) + "\n"
