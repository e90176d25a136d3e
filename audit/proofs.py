"""Reading proofs out of the stored log: an entry's inclusion proof, a consistency proof.

Proofs are built from the tree nodes the sequencer stored (audit/nodes.py): O(log n) hashes read
in three queries, whatever the checkpoint's size. Each proof is checked against the signed root
of its checkpoint before it is handed out, and the root rebuilt from the stored nodes must be the
signed one, so a changed node or leaf is refused as ProofUnavailable rather than served. A
checkpoint larger than the nodes stored so far (an older trail whose nodes are being filled in)
gets its proof the old way, from every leaf hash up to its size: O(n). Nothing here writes: a
caller that wants a newer checkpoint waits for the sequencer and the signer (docs/audit.md).
"""

from __future__ import annotations

from django.db import connection

from audit.merkle import (
    MerkleTree,
    consistency_path,
    inclusion_path,
    verify_consistency,
    verify_inclusion,
)
from audit.models import AuditCheckpoint, AuditTreeState
from audit.nodes import NodesMissing, StoredTree


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


def _changed(checkpoint: AuditCheckpoint) -> ProofUnavailable:
    """Return the refusal for a log whose stored hashes do not reach a checkpoint's root."""
    return ProofUnavailable(
        f"the stored leaves do not reach the signed root of checkpoint #{checkpoint.pk} "
        f"(size {checkpoint.tree_size}): the log was changed after it was signed; "
        "run audit_verify"
    )


def signed_tree(checkpoint: AuditCheckpoint) -> MerkleTree:
    """Return the tree over a checkpoint's leaves, refusing one whose root is not the signed one."""
    tree = MerkleTree(leaf_hashes(checkpoint.tree_size))
    if tree.root().hex() != checkpoint.root_hash:
        raise _changed(checkpoint)
    return tree


def nodes_cover(size: int) -> bool:
    """Tell whether the stored nodes cover a tree of `size` leaves (else proofs read leaves)."""
    state = AuditTreeState.objects.filter(pk=1).values_list("nodes_size", flat=True).first()
    return state is not None and size <= state


def _stored_tree(checkpoint: AuditCheckpoint, needs) -> StoredTree:
    """Read what `needs(tree)` notes, with the checkpoint's root; refuse a root not signed."""
    tree = StoredTree(checkpoint.tree_size)
    if checkpoint.tree_size:
        tree.need(0, checkpoint.tree_size)
    needs(tree)
    try:
        tree.fetch()
    except NodesMissing as exc:
        raise ProofUnavailable(str(exc)) from None
    if tree.root().hex() != checkpoint.root_hash:
        raise _changed(checkpoint)
    return tree


def inclusion(seq: int, checkpoint: AuditCheckpoint) -> list[bytes]:
    """Return the inclusion proof of the leaf at `seq` in the tree a checkpoint signed."""
    if not 0 <= seq < checkpoint.tree_size:
        raise ValueError(f"seq {seq} is outside checkpoint #{checkpoint.pk}")
    size = checkpoint.tree_size
    if not nodes_cover(size):
        return signed_tree(checkpoint).inclusion_proof(seq)

    def needs(tree: StoredTree) -> None:
        tree.need_leaf(seq)
        inclusion_path(seq, size, tree.need)

    tree = _stored_tree(checkpoint, needs)
    proof = inclusion_path(seq, size, tree.subtree_root)
    root = bytes.fromhex(checkpoint.root_hash)
    if not verify_inclusion(tree.leaf(seq), seq, size, proof, root):
        raise ProofUnavailable(
            f"the stored tree nodes give no proof of seq {seq} that reaches the signed root of "
            f"checkpoint #{checkpoint.pk}: the log was changed after it was signed; "
            "run audit_verify"
        )
    return proof


def consistency(old: AuditCheckpoint, new: AuditCheckpoint) -> list[bytes]:
    """Return the proof that the tree of `new` extends the tree of `old` (RFC 9162 2.1.4)."""
    if old.tree_size > new.tree_size:
        raise ValueError(f"checkpoint #{old.pk} is larger than checkpoint #{new.pk}")
    if not nodes_cover(new.tree_size):
        return _consistency_from_leaves(old, new)

    def needs(tree: StoredTree) -> None:
        if old.tree_size:
            tree.need(0, old.tree_size)
        consistency_path(old.tree_size, new.tree_size, tree.need)

    tree = _stored_tree(new, needs)
    if old.tree_size and tree.subtree_root(0, old.tree_size).hex() != old.root_hash:
        raise _changed(old)
    proof = consistency_path(old.tree_size, new.tree_size, tree.subtree_root)
    if not verify_consistency(
        old.tree_size,
        new.tree_size,
        bytes.fromhex(old.root_hash),
        bytes.fromhex(new.root_hash),
        proof,
    ):
        raise ProofUnavailable(
            f"the stored tree nodes give no proof that checkpoint #{new.pk} extends checkpoint "
            f"#{old.pk}: the log was changed after it was signed; run audit_verify"
        )
    return proof


def _consistency_from_leaves(old: AuditCheckpoint, new: AuditCheckpoint) -> list[bytes]:
    """Return the consistency proof from every leaf hash up to the new size: O(n)."""
    tree = signed_tree(new)
    if old.tree_size and tree_root(tree, old.tree_size) != old.root_hash:
        raise _changed(old)
    return tree.consistency_proof(old.tree_size)


def tree_root(tree: MerkleTree, size: int) -> str:
    """Return the hex root of the first `size` leaves of a tree."""
    return tree.subtree_root(0, size).hex() if size else MerkleTree([]).root().hex()
