"""Reading proofs out of the stored log: an entry's inclusion proof, a consistency proof.

Proofs are built from the leaf hashes stored when the entries were sequenced, over the first
`tree_size` leaves of the checkpoint they are checked against: O(n) to read and hash, n the
checkpoint's size (about 32 MB and a second per million leaves). Nothing here writes: a caller
that wants a newer checkpoint waits for the sequencer and the signer (docs/audit.md).
"""

from __future__ import annotations

from django.db import connection

from audit.merkle import MerkleTree
from audit.models import AuditCheckpoint


class ProofUnavailable(Exception):
    """The stored leaves cannot give the proof asked for: the log is not what was signed."""


def leaf_hashes(size: int) -> list[bytes]:
    """Return the stored leaf hashes of the first `size` leaves, refusing a log with gaps."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT seq, leaf_hash FROM audit_auditleaf WHERE seq < %s ORDER BY seq", [size]
        )
        rows = cursor.fetchall()
    if len(rows) != size or (rows and rows[-1][0] != size - 1):
        raise ProofUnavailable(
            f"the log holds {len(rows)} of the {size} leaves of the checkpoint: run audit_verify"
        )
    return [bytes(digest) for _, digest in rows]


def signed_tree(checkpoint: AuditCheckpoint) -> MerkleTree:
    """Return the tree over a checkpoint's leaves, refusing one whose root is not the signed one."""
    tree = MerkleTree(leaf_hashes(checkpoint.tree_size))
    if tree.root().hex() != checkpoint.root_hash:
        raise ProofUnavailable(
            f"the stored leaves do not reach the signed root of checkpoint #{checkpoint.pk} "
            f"(size {checkpoint.tree_size}): the log was changed after it was signed; "
            "run audit_verify"
        )
    return tree


def inclusion(seq: int, checkpoint: AuditCheckpoint) -> list[bytes]:
    """Return the inclusion proof of the leaf at `seq` in the tree a checkpoint signed."""
    if not 0 <= seq < checkpoint.tree_size:
        raise ValueError(f"seq {seq} is outside checkpoint #{checkpoint.pk}")
    return signed_tree(checkpoint).inclusion_proof(seq)


def consistency(old: AuditCheckpoint, new: AuditCheckpoint) -> list[bytes]:
    """Return the proof that the tree of `new` extends the tree of `old` (RFC 9162 2.1.4)."""
    if old.tree_size > new.tree_size:
        raise ValueError(f"checkpoint #{old.pk} is larger than checkpoint #{new.pk}")
    tree = signed_tree(new)
    if old.tree_size and tree_root(tree, old.tree_size) != old.root_hash:
        raise ProofUnavailable(
            f"the stored leaves do not reach the signed root of checkpoint #{old.pk} "
            f"(size {old.tree_size}): the log was changed after it was signed; run audit_verify"
        )
    return tree.consistency_proof(old.tree_size)


def tree_root(tree: MerkleTree, size: int) -> str:
    """Return the hex root of the first `size` leaves of a tree."""
    return tree.subtree_root(0, size).hex() if size else MerkleTree([]).root().hex()
