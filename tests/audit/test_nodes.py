"""The stored tree nodes: what the sequencer writes, the proofs built from them, and tampering.

Every proof from stored nodes must be byte for byte the one MerkleTree builds over all the leaves
(and verify with the RFC verifiers), for any tree size and leaf; a proof must read a number of
queries that does not grow with the trail; a changed, deleted or invented node must be refused
by the proof and named by audit_verify; an older trail's nodes are filled in, lazily or at once.
"""

from __future__ import annotations

import io
import random

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext

from audit import nodes, proofs, sequencer, services
from audit.actors import SYSTEM
from audit.merkle import (
    Frontier,
    MerkleTree,
    fold_subtrees,
    perfect_subtrees,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from audit.models import AuditCheckpoint, AuditLeaf, AuditNode, AuditTreeState
from audit.verification import verify_log
from tests.audit.conftest import attacker, sequence_all

pytestmark = pytest.mark.django_db(transaction=True)


# --- the arithmetic, no database -------------------------------------------------------------


def all_nodes(leaves: list[bytes], min_level: int) -> set[tuple[int, int, bytes]]:
    """Return every perfect subtree of level >= min_level over the leaves, by the RFC's MTH."""
    found = set()
    level = min_level
    while (1 << level) <= len(leaves):
        width = 1 << level
        for position in range(len(leaves) // width):
            found.add(
                (level, position, root_hash(leaves[position * width : (position + 1) * width]))
            )
        level += 1
    return found


@pytest.mark.django_db(transaction=False)
def test_extend_with_nodes_yields_every_perfect_subtree_once_across_any_split():
    chooser = random.Random(5)
    leaves = [bytes([i % 256, i // 256]) * 16 for i in range(700)]
    for min_level in (1, 4):
        frontier = Frontier()
        collected = []
        done = 0
        while done < len(leaves):
            step = chooser.randint(1, 37)
            collected += frontier.extend_with_nodes(leaves[done : done + step], min_level)
            done += step
            assert frontier.root() == root_hash(leaves[: frontier.size])
        assert len(collected) == len(set(collected))
        assert set(collected) == all_nodes(leaves, min_level)


@pytest.mark.django_db(transaction=False)
def test_perfect_subtrees_fold_to_the_rfc_root_of_every_range_a_proof_asks_for():
    leaves = [bytes([i]) * 32 for i in range(130)]
    for size in range(1, 131):
        pieces = perfect_subtrees(0, size)
        assert [1 << level for level, _ in pieces] == [
            1 << bit for bit in reversed(range(size.bit_length())) if size >> bit & 1
        ]
        roots = [root_hash(leaves[s : s + (1 << lv)]) for lv, s in pieces]
        assert fold_subtrees(roots) == root_hash(leaves[:size])
    # A right-edge subtree, as inclusion and consistency proofs ask for: [64, 100).
    roots = [root_hash(leaves[s : s + (1 << lv)]) for lv, s in perfect_subtrees(64, 100)]
    assert fold_subtrees(roots) == root_hash(leaves[64:100])


# --- helpers over a real trail -----------------------------------------------------------------


def grow(count: int, batch_size: int = 5000) -> None:
    """Record `count` entries and sequence them in batches of `batch_size`."""
    services.record_many(
        [{"actor": SYSTEM, "action": f"demo.{i % 7}", "target_id": str(i)} for i in range(count)]
    )
    sequence_all_in(batch_size)


def sequence_all_in(batch_size: int) -> None:
    """Sequence every committed entry in batches of `batch_size`."""
    sequencer.run_sequencer(batch_size=batch_size)
    sequence_all()


def stored_leaves() -> list[bytes]:
    """Return every stored leaf hash in seq order."""
    return [bytes(h) for h in AuditLeaf.objects.order_by("seq").values_list("leaf_hash", flat=True)]


def stored_nodes() -> set[tuple[int, int, bytes]]:
    """Return every stored node."""
    return {
        (lv, p, bytes(h)) for lv, p, h in AuditNode.objects.values_list("level", "position", "hash")
    }


def checkpoint_of(size: int, leaves: list[bytes], pk: int = 0) -> AuditCheckpoint:
    """Return an unsaved checkpoint of the first `size` leaves: what proofs read of one."""
    return AuditCheckpoint(pk=pk or size, tree_size=size, root_hash=root_hash(leaves[:size]).hex())


# --- what the sequencer stores -----------------------------------------------------------------


def test_sequencing_in_batches_that_split_subtrees_stores_exactly_the_trees_nodes():
    grow(300, batch_size=7)  # 7 is prime: batches end inside subtrees of every level
    leaves = stored_leaves()
    assert len(leaves) == 300
    assert stored_nodes() == all_nodes(leaves, nodes.MIN_LEVEL)
    state = AuditTreeState.objects.get()
    assert (state.size, state.nodes_size) == (300, 300)
    assert verify_log().ok


def test_a_batch_that_fails_leaves_neither_leaves_nor_nodes(monkeypatch):
    grow(20)
    before = (stored_leaves(), stored_nodes())
    services.record_many([{"actor": SYSTEM, "action": "late"} for _ in range(30)])
    real_insert = nodes.insert_nodes

    def insert_then_die(rows):
        real_insert(rows)
        raise RuntimeError("killed after the nodes were written")

    monkeypatch.setattr(nodes, "insert_nodes", insert_then_die)
    with pytest.raises(RuntimeError):
        sequencer.sequence_batch()
    assert (stored_leaves(), stored_nodes()) == before
    assert AuditTreeState.objects.get().nodes_size == 20
    monkeypatch.setattr(nodes, "insert_nodes", real_insert)
    sequence_all()
    assert stored_nodes() == all_nodes(stored_leaves(), nodes.MIN_LEVEL)


# --- proofs equal MerkleTree's ---------------------------------------------------------------


def test_proofs_from_stored_nodes_equal_merkle_trees_for_every_size_to_300():
    grow(300, batch_size=64)
    leaves = stored_leaves()
    chooser = random.Random(300)
    for size in range(1, 301):
        tree = MerkleTree(leaves[:size])
        checkpoint = checkpoint_of(size, leaves)
        root = tree.root()
        indices = (
            range(size) if size <= 32 else {0, size - 1, size // 2, *chooser.sample(range(size), 6)}
        )
        for index in indices:
            proof = proofs.inclusion(index, checkpoint)
            assert proof == tree.inclusion_proof(index), (size, index)
            assert verify_inclusion(leaves[index], index, size, proof, root)
        olds = (
            range(size + 1)
            if size <= 32
            else {0, 1, size - 1, size, *chooser.sample(range(size), 6)}
        )
        for old_size in olds:
            old = checkpoint_of(old_size, leaves, pk=100_000 + old_size)
            proof = proofs.consistency(old, checkpoint)
            assert proof == tree.consistency_proof(old_size), (old_size, size)
            assert verify_consistency(old_size, size, bytes.fromhex(old.root_hash), root, proof)


def test_proofs_from_stored_nodes_equal_merkle_trees_at_random_larger_sizes():
    grow(3000, batch_size=1000)
    leaves = stored_leaves()
    chooser = random.Random(3000)
    for size in [1024, 2048, 2999, 3000, *chooser.sample(range(301, 3000), 8)]:
        tree = MerkleTree(leaves[:size])
        checkpoint = checkpoint_of(size, leaves)
        for index in chooser.sample(range(size), 10):
            assert proofs.inclusion(index, checkpoint) == tree.inclusion_proof(index)
        for old_size in chooser.sample(range(1, size), 5):
            old = checkpoint_of(old_size, leaves, pk=100_000 + old_size)
            assert proofs.consistency(old, checkpoint) == tree.consistency_proof(old_size)


def test_a_proofs_query_count_does_not_grow_with_the_trail():
    counts = []
    for more in (40, 400, 2500):
        grow(more)
        leaves = stored_leaves()
        size = len(leaves)
        checkpoint = checkpoint_of(size, leaves)
        old = checkpoint_of(size // 3, leaves, pk=100_000)
        with CaptureQueriesContext(connection) as inclusion:
            proofs.inclusion(size // 2 + 1, checkpoint)
        with CaptureQueriesContext(connection) as consistency:
            proofs.consistency(old, checkpoint)
        counts.append((size, len(inclusion), len(consistency)))
        assert not any("ORDER BY seq" in q["sql"] for q in inclusion.captured_queries)
    assert {(i, c) for _, i, c in counts} == {(3, 3)}, counts


# --- tampering ---------------------------------------------------------------------------------


def _node_on_the_path(leaves: list[bytes], index: int) -> tuple[int, int]:
    """Return a stored node the inclusion proof of `index` uses as a sibling (level >= 4)."""
    size = len(leaves)
    tree = nodes.StoredTree(size)
    asked = []

    def note(low, high):
        asked.append((low, high))
        return tree.need(low, high)

    proofs.inclusion_path(index, size, note)
    for low, high in asked:
        level = (high - low).bit_length() - 1
        if high - low == 1 << level and level >= nodes.MIN_LEVEL:
            return level, low >> level
    raise AssertionError("no stored node on the path")


def test_a_changed_node_is_refused_by_the_proof_and_named_by_audit_verify():
    grow(100)
    services.sign_checkpoint(force=True)
    checkpoint = AuditCheckpoint.objects.get()
    leaves = stored_leaves()
    level, position = _node_on_the_path(leaves, 70)  # the sibling [0, 64) of leaf 70
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditnode SET hash = %s WHERE level = %s AND position = %s",
            [b"\x07" * 32, level, position],
        )
    with pytest.raises(proofs.ProofUnavailable, match="audit_verify"):
        proofs.inclusion(70, checkpoint)
    failures = [(f.code, f.message) for f in verify_log().failures]
    assert failures == [
        (
            "node_changed",
            f"tree node level {level} position {position} (seq {position << level}.."
            f"{((position + 1) << level) - 1}) differs from the one recomputed from the entries: "
            "a proof built from it would not reach the signed root",
        )
    ]


def test_a_changed_node_off_the_right_edge_is_refused_by_the_proof_of_a_leaf_it_covers():
    grow(100)
    services.sign_checkpoint(force=True)
    checkpoint = AuditCheckpoint.objects.get()
    # [16, 32) is inside the left subtree [0, 64): not on the right edge, so only the proofs
    # that use it (leaves 0..15 and 32..63) can notice, and they must.
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditnode SET hash = %s WHERE level = 4 AND position = 1", [b"\1" * 32]
        )
    with pytest.raises(proofs.ProofUnavailable):
        proofs.inclusion(3, checkpoint)
    assert proofs.inclusion(20, checkpoint) == MerkleTree(stored_leaves()).inclusion_proof(20)


def test_a_deleted_node_and_an_invented_one_are_named():
    grow(100)
    services.sign_checkpoint(force=True)
    checkpoint = AuditCheckpoint.objects.get()
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditnode WHERE level = 6 AND position = 0")
        cursor.execute(
            "INSERT INTO audit_auditnode (level, position, hash) VALUES (4, 50, %s)", [b"\2" * 32]
        )
    with pytest.raises(proofs.ProofUnavailable, match="missing"):
        proofs.inclusion(99, checkpoint)
    codes = sorted(f.code for f in verify_log().failures)
    assert codes == ["node_missing", "node_stray"]


@pytest.mark.postgres
def test_the_nodes_are_append_only():
    grow(40)
    for sql in (
        "UPDATE audit_auditnode SET hash = hash",
        "DELETE FROM audit_auditnode",
        "TRUNCATE audit_auditnode",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only|is refused"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            _as_application_role(cursor)
            cursor.execute(sql)


def _as_application_role(cursor) -> None:
    """Act, in this transaction, as a non-superuser role with every privilege on the nodes."""
    cursor.execute("CREATE ROLE audit_nodes_app NOSUPERUSER NOLOGIN")
    cursor.execute("GRANT ALL ON audit_auditnode TO audit_nodes_app")
    cursor.execute("SET LOCAL ROLE audit_nodes_app")


# --- an older trail ----------------------------------------------------------------------------


def _forget_nodes() -> None:
    """Make the trail look sequenced before nodes were kept (migration 0007 on an older log)."""
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditnode")
    AuditTreeState.objects.filter(pk=1).update(nodes_size=0)


def test_an_older_trail_proves_from_its_leaves_until_audit_build_nodes_fills_its_nodes():
    grow(260)
    services.sign_checkpoint(force=True)
    checkpoint = AuditCheckpoint.objects.get()
    expected = stored_nodes()
    _forget_nodes()
    tree = MerkleTree(stored_leaves())
    assert proofs.inclusion(200, checkpoint) == tree.inclusion_proof(200)  # from the leaves
    assert verify_log().ok
    out, err = io.StringIO(), io.StringIO()
    call_command("audit_build_nodes", "--batch-leaves", "50", stdout=out, stderr=err)
    assert "stored the nodes of 260 leaves" in out.getvalue()
    assert "nodes stored for 50 of 260 leaves" in err.getvalue()
    assert stored_nodes() == expected
    assert AuditTreeState.objects.get().nodes_size == 260
    with CaptureQueriesContext(connection) as queries:
        assert proofs.inclusion(200, checkpoint) == tree.inclusion_proof(200)
    assert len(queries) == 3
    assert verify_log().ok


def test_the_sequencer_fills_an_older_trails_nodes_lazily(monkeypatch):
    grow(150)
    _forget_nodes()
    monkeypatch.setattr(nodes, "FILL_LEAVES", 40)
    services.record_many([{"actor": SYSTEM, "action": "later"} for _ in range(30)])
    sequence_all_in(batch_size=10)  # new leaves arrive while older nodes are still missing
    for _ in range(10):  # idle batches go on filling
        sequencer.sequence_batch()
    state = AuditTreeState.objects.get()
    assert (state.size, state.nodes_size) == (180, 180)
    assert stored_nodes() == all_nodes(stored_leaves(), nodes.MIN_LEVEL)
    assert verify_log().ok
