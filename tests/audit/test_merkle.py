"""RFC 6962 / RFC 9162 Merkle tree: published test vectors, a literal reference, tampering.

The vectors are the Certificate Transparency reference ones (transparency-dev/merkle,
testonly/constants.go and proof/verify_test.go): eight leaves, the root at every size, the
compact ranges, and known inclusion and consistency proofs. No database is used.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    MerkleTree,
    _consistency_path,
    _inclusion_path,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

LEAF_INPUTS = [
    bytes.fromhex(text)
    for text in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]

# testonly/constants.go NodeHashes(): level 0 are the leaf hashes, level 3 the 8-leaf root.
NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]

# testonly/constants.go RootHashes(), indexed by tree size 0..8.
ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# testonly/constants.go CompactTrees(): the frontier at each size, as (level, index) nodes.
COMPACT_TREES = [
    [],
    [(0, 0)],
    [(1, 0)],
    [(1, 0), (0, 2)],
    [(2, 0)],
    [(2, 0), (0, 4)],
    [(2, 0), (1, 2)],
    [(2, 0), (1, 2), (0, 6)],
    [(3, 0)],
]

# proof/verify_test.go inclusionProofs, with its 1-based leaf numbers made 0-based indices.
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# proof/verify_test.go consistencyProofs: (old size, new size, proof).
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

VECTOR_LEAVES = [leaf_hash(data) for data in LEAF_INPUTS]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

# Larger trees for the exhaustive and sampled properties: distinct, reproducible leaves.
MAX_SIZE = 4096
EXHAUSTIVE_SIZE = 256
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(MAX_SIZE)]


def unhex(hashes: list[str]) -> list[bytes]:
    """Decode a list of hex hashes."""
    return [bytes.fromhex(h) for h in hashes]


def flip_bit(value: bytes, bit: int) -> bytes:
    """Return `value` with one bit flipped."""
    changed = bytearray(value)
    changed[bit // 8] ^= 1 << (bit % 8)
    return bytes(changed)


# --- a literal transcription of RFC 6962 2.1, memoised, to check the fast code against ------


@cache
def reference_mth(low: int, high: int) -> bytes:
    """MTH(D[low:high]) over LEAVES, exactly as RFC 6962 2.1 defines it."""
    count = high - low
    if count == 0:
        return hashlib.sha256(b"").digest()
    if count == 1:
        return LEAVES[low]
    split = 1
    while split * 2 < count:
        split *= 2
    return node_hash(reference_mth(low, low + split), reference_mth(low + split, high))


def reference_path(index: int, low: int, high: int) -> list[bytes]:
    """PATH(m, D[low:high]) of RFC 6962 2.1.1."""
    count = high - low
    if count == 1:
        return []
    split = 1
    while split * 2 < count:
        split *= 2
    if index < split:
        return reference_path(index, low, low + split) + [reference_mth(low + split, high)]
    return reference_path(index - split, low + split, high) + [reference_mth(low, low + split)]


def reference_subproof(old: int, low: int, high: int, complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[low:high], b) of RFC 6962 2.1.2."""
    count = high - low
    if old == count:
        return [] if complete else [reference_mth(low, high)]
    split = 1
    while split * 2 < count:
        split *= 2
    if old <= split:
        return reference_subproof(old, low, low + split, complete) + [
            reference_mth(low + split, high)
        ]
    return reference_subproof(old - split, low + split, high, False) + [
        reference_mth(low, low + split)
    ]


@cache
def tree_of(size: int) -> MerkleTree:
    """Return the MerkleTree over the first `size` of LEAVES (shared between tests)."""
    return MerkleTree(LEAVES[:size])


# --- tampering probes, after transparency-dev's corruptInclusionProof / ConsistencyProof ------


def inclusion_probes(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes):
    """Yield (description, arguments) of claims that must not verify."""
    for wrong in (index - 1, index + 1, index ^ 2):
        if wrong != index:
            yield f"index {wrong}", (leaf, wrong, size, proof, root)
    for wrong in (size * 2, size // 2):
        yield f"size {wrong}", (leaf, index, wrong, proof, root)
    yield "wrong leaf", (b"WrongLeaf", index, size, proof, root)
    yield "other leaf", (SOME_HASH, index, size, proof, root)
    yield "empty root", (leaf, index, size, proof, EMPTY_ROOT)
    yield "random root", (leaf, index, size, proof, SOME_HASH)
    yield "trailing garbage", (leaf, index, size, [*proof, b""], root)
    yield "trailing root", (leaf, index, size, [*proof, root], root)
    yield "preceding garbage", (leaf, index, size, [b"", *proof], root)
    yield "preceding root", (leaf, index, size, [root, *proof], root)
    if proof:
        yield "removed component", (leaf, index, size, proof[:-1], root)
    if len(proof) > 1:
        yield "inserted component", (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root)


def assert_inclusion_holds(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes):
    """Check the proof verifies and that no probe, and no flipped bit anywhere, does."""
    assert verify_inclusion(leaf, index, size, proof, root)
    for description, arguments in inclusion_probes(leaf, index, size, proof, root):
        assert not verify_inclusion(*arguments), description
    for position in range(len(proof)):
        for bit in (0, 3, 100, 255):
            changed = [*proof]
            changed[position] = flip_bit(proof[position], bit)
            assert not verify_inclusion(leaf, index, size, changed, root), (position, bit)
    for bit in (0, 3, 100, 255):
        assert not verify_inclusion(flip_bit(leaf, bit), index, size, proof, root)
        assert not verify_inclusion(leaf, index, size, proof, flip_bit(root, bit))


def consistency_probes(old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes]):
    """Yield (description, arguments) of claims that must not verify."""
    for wrong in (old - 1, old + 1, old ^ 2):
        yield f"old size {wrong}", (wrong, new, old_root, new_root, proof)
    for wrong in (new * 2, new // 2):
        yield f"new size {wrong}", (old, wrong, old_root, new_root, proof)
    yield "wrong old root", (old, new, b"WrongRoot", new_root, proof)
    yield "wrong new root", (old, new, old_root, b"WrongRoot", proof)
    yield "other old root", (old, new, SOME_HASH, new_root, proof)
    yield "swapped roots", (old, new, new_root, old_root, proof)
    yield "empty proof", (old, new, old_root, new_root, [])
    yield "trailing garbage", (old, new, old_root, new_root, [*proof, b""])
    yield "trailing old root", (old, new, old_root, new_root, [*proof, old_root])
    yield "trailing new root", (old, new, old_root, new_root, [*proof, new_root])
    yield "preceding garbage", (old, new, old_root, new_root, [b"", *proof])
    yield "preceding old root", (old, new, old_root, new_root, [old_root, *proof])
    yield "preceding new root", (old, new, old_root, new_root, [new_root, *proof])
    yield "preceding proof[0]", (old, new, old_root, new_root, [proof[0], *proof])
    yield "truncated proof", (old, new, old_root, new_root, proof[:-1])


def assert_consistency_holds(old: int, new: int, old_root: bytes, new_root: bytes, proof):
    """Check a non-trivial proof verifies and that no probe, and no flipped bit, does."""
    assert verify_consistency(old, new, old_root, new_root, proof)
    for description, arguments in consistency_probes(old, new, old_root, new_root, proof):
        assert not verify_consistency(*arguments), description
    for position in range(len(proof)):
        for bit in (0, 4, 130, 255):
            changed = [*proof]
            changed[position] = flip_bit(proof[position], bit)
            assert not verify_consistency(old, new, old_root, new_root, changed), (position, bit)
    for bit in (0, 4, 130, 255):
        assert not verify_consistency(old, new, flip_bit(old_root, bit), new_root, proof)
        assert not verify_consistency(old, new, old_root, flip_bit(new_root, bit), proof)


# --- the published vectors --------------------------------------------------------------------


def test_leaf_and_node_hashes_match_the_reference_tree():
    assert [h.hex() for h in VECTOR_LEAVES] == NODE_HASHES[0]
    for level in range(1, 4):
        below = unhex(NODE_HASHES[level - 1])
        for index, expected in enumerate(NODE_HASHES[level]):
            assert node_hash(below[2 * index], below[2 * index + 1]).hex() == expected


@pytest.mark.parametrize("size", range(9))
def test_root_at_every_size_matches_the_reference(size):
    expected = ROOTS[size]
    assert root_hash(VECTOR_LEAVES[:size]).hex() == expected
    assert MerkleTree(VECTOR_LEAVES[:size]).root().hex() == expected
    frontier = Frontier()
    frontier.extend(VECTOR_LEAVES[:size])
    assert frontier.root().hex() == expected
    assert frontier.size == size


def test_empty_tree_root_is_the_hash_of_nothing():
    assert root_hash([]) == hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert Frontier().root() == Frontier.empty_root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(9))
def test_frontier_state_is_the_reference_compact_range(size):
    frontier = Frontier()
    frontier.extend(VECTOR_LEAVES[:size])
    assert frontier.dump() == [NODE_HASHES[level][index] for level, index in COMPACT_TREES[size]]


@pytest.mark.parametrize(("index", "size", "expected"), INCLUSION_VECTORS)
def test_inclusion_vectors(index, size, expected):
    leaves = VECTOR_LEAVES[:size]
    expected_proof = unhex(expected)
    assert inclusion_proof(leaves, index) == expected_proof
    assert MerkleTree(leaves).inclusion_proof(index) == expected_proof
    root = bytes.fromhex(ROOTS[size])
    assert_inclusion_holds(index, size, expected_proof, root, VECTOR_LEAVES[index])


@pytest.mark.parametrize(("old", "new", "expected"), CONSISTENCY_VECTORS)
def test_consistency_vectors(old, new, expected):
    leaves = VECTOR_LEAVES[:new]
    expected_proof = unhex(expected)
    assert consistency_proof(leaves, old) == expected_proof
    assert MerkleTree(leaves).consistency_proof(old) == expected_proof
    old_root, new_root = bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new])
    if expected_proof:
        assert_consistency_holds(old, new, old_root, new_root, expected_proof)
    else:
        assert verify_consistency(old, new, old_root, new_root, expected_proof)


def test_inclusion_with_no_tree_or_index_out_of_range_never_verifies():
    # proof/verify_test.go TestVerifyInclusion probes: (index, size) with no valid leaf.
    for index, size in ((0, 0), (0, 1), (1, 0), (2, 1)):
        assert not verify_inclusion(SOME_HASH, index, size, [], b"")
        assert not verify_inclusion(b"", index, size, [], EMPTY_ROOT)
        if (index, size) != (0, 1):
            assert not verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    assert not verify_inclusion(SOME_HASH, -1, 5, [], SOME_HASH)


def test_single_leaf_tree_proves_its_leaf_with_an_empty_path():
    digest = leaf_hash(b"data")
    assert verify_inclusion(digest, 0, 1, [], digest)
    assert not verify_inclusion(b"", 0, 1, [], digest)
    assert not verify_inclusion(digest, 0, 1, [], b"")


def test_consistency_edge_cases():
    one, two = leaf_hash(b"one"), leaf_hash(b"two")
    # Equal sizes: the same root and nothing to prove.
    assert verify_consistency(1, 1, one, one, [])
    assert not verify_consistency(1, 1, one, two, [])
    assert not verify_consistency(1, 1, one, one, [EMPTY_ROOT])
    # The empty tree is a prefix of every tree; its root is SHA-256("").
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert verify_consistency(0, 1, EMPTY_ROOT, two, [])
    assert not verify_consistency(0, 1, EMPTY_ROOT, two, [EMPTY_ROOT])
    assert not verify_consistency(0, 1, one, two, [])
    # Time travel to the past, and an empty proof for a real extension.
    assert not verify_consistency(1, 0, one, two, [])
    assert not verify_consistency(2, 1, one, two, [])
    assert not verify_consistency(1, 2, one, two, [])
    assert not verify_consistency(-1, 2, one, two, [])


def test_proof_builders_refuse_out_of_range_arguments():
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(VECTOR_LEAVES, 8)
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof([], 0)
    with pytest.raises(ValueError, match="outside"):
        MerkleTree(VECTOR_LEAVES).inclusion_proof(-1)
    with pytest.raises(ValueError, match="outside"):
        consistency_proof(VECTOR_LEAVES, 9)
    with pytest.raises(ValueError, match="outside"):
        MerkleTree(VECTOR_LEAVES).consistency_proof(-1)
    assert consistency_proof(VECTOR_LEAVES, 0) == []
    assert consistency_proof(VECTOR_LEAVES, 8) == []


# --- the fast code equals the RFC's definitions --------------------------------------------


def test_every_root_and_proof_up_to_256_leaves_equals_the_rfc_definition():
    for size in range(1, EXHAUSTIVE_SIZE + 1):
        tree = tree_of(size)
        expected_root = reference_mth(0, size)
        assert tree.root() == expected_root
        for index in range(size):
            expected = reference_path(index, 0, size)
            assert tree.inclusion_proof(index) == expected, (index, size)
        for old in range(1, size):
            expected = reference_subproof(old, 0, size, True)
            assert tree.consistency_proof(old) == expected, (old, size)


def test_list_functions_equal_the_tree_methods():
    for size in (1, 2, 3, 5, 8, 13, 31, 64, 100):
        leaves = LEAVES[:size]
        tree = tree_of(size)
        assert root_hash(leaves) == tree.root()
        for index in range(0, size, 3):
            assert inclusion_proof(leaves, index) == tree.inclusion_proof(index)
        for old in range(0, size + 1, 2):
            assert consistency_proof(leaves, old) == tree.consistency_proof(old)


def test_merkle_tree_subtree_root_of_any_range():
    tree = tree_of(100)
    for low, high in ((0, 100), (64, 100), (96, 100), (3, 9), (10, 11), (50, 77)):
        assert tree.subtree_root(low, high) == reference_mth(low, high)


def test_every_inclusion_proof_up_to_256_leaves_verifies_and_resists_tampering():
    for size in range(1, EXHAUSTIVE_SIZE + 1):
        tree = tree_of(size)
        root = tree.root()
        for index in range(size):
            proof = tree.inclusion_proof(index)
            assert verify_inclusion(LEAVES[index], index, size, proof, root), (index, size)
            if size <= 32:
                assert_inclusion_holds(index, size, proof, root, LEAVES[index])


def test_every_consistency_proof_up_to_256_leaves_verifies_and_resists_tampering():
    for size in range(1, EXHAUSTIVE_SIZE + 1):
        tree = tree_of(size)
        for old in range(1, size + 1):
            old_root = tree_of(old).root()
            proof = tree.consistency_proof(old)
            assert verify_consistency(old, size, old_root, tree.root(), proof), (old, size)
            if old < size <= 32:
                assert_consistency_holds(old, size, old_root, tree.root(), proof)


def test_a_proof_for_one_size_does_not_verify_against_another_sizes_root():
    for size in range(2, 65):
        for index in range(size - 1):
            proof = tree_of(size).inclusion_proof(index)
            for other in (size - 1, size + 1):
                if index < other:
                    other_root = tree_of(other).root()
                    assert not verify_inclusion(LEAVES[index], index, other, proof, other_root)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=MAX_SIZE))
def test_sampled_inclusion_proofs_up_to_4096_leaves(data, size):
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    tree = tree_of(size)
    proof = tree.inclusion_proof(index)
    root = tree.root()
    assert verify_inclusion(LEAVES[index], index, size, proof, root)
    position = data.draw(st.integers(min_value=0, max_value=len(proof)), label="where")
    bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
    if position < len(proof):
        changed = [*proof]
        changed[position] = flip_bit(proof[position], bit)
        assert not verify_inclusion(LEAVES[index], index, size, changed, root)
    assert not verify_inclusion(flip_bit(LEAVES[index], bit), index, size, proof, root)
    assert not verify_inclusion(LEAVES[index], index, size, proof, flip_bit(root, bit))
    if size > 1:
        offset = data.draw(st.integers(min_value=1, max_value=size - 1), label="offset")
        wrong = (index + offset) % size
        assert not verify_inclusion(LEAVES[index], wrong, size, proof, root)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), size=st.integers(min_value=2, max_value=MAX_SIZE))
def test_sampled_consistency_proofs_up_to_4096_leaves(data, size):
    old = data.draw(st.integers(min_value=1, max_value=size - 1), label="old")
    tree = tree_of(size)
    old_root, new_root = reference_mth(0, old), tree.root()
    proof = tree.consistency_proof(old)
    assert verify_consistency(old, size, old_root, new_root, proof)
    position = data.draw(st.integers(min_value=0, max_value=len(proof) - 1), label="where")
    bit = data.draw(st.integers(min_value=0, max_value=255), label="bit")
    changed = [*proof]
    changed[position] = flip_bit(proof[position], bit)
    assert not verify_consistency(old, size, old_root, new_root, changed)
    assert not verify_consistency(old, size, flip_bit(old_root, bit), new_root, proof)
    assert not verify_consistency(old, size, old_root, flip_bit(new_root, bit), proof)
    if size > 2:
        offset = data.draw(st.integers(min_value=1, max_value=size - 2), label="offset")
        wrong_old = (old - 1 + offset) % (size - 1) + 1
        wrong_root = reference_mth(0, wrong_old)
        assert not verify_consistency(wrong_old, size, wrong_root, new_root, proof)


# --- the frontier ---------------------------------------------------------------------------


def test_frontier_root_equals_the_tree_root_at_every_size():
    frontier = Frontier()
    for size in range(1, 1025):
        frontier.append(LEAVES[size - 1])
        assert frontier.root() == reference_mth(0, size), size
        assert len(frontier.dump()) == size.bit_count()


def test_frontier_resumes_from_its_saved_state_at_any_size():
    for stop in range(0, 70):
        first = Frontier()
        first.extend(LEAVES[:stop])
        state = json.loads(json.dumps(first.dump()))  # as a JSON column holds it
        resumed = Frontier.load(state, stop)
        assert resumed.size == stop
        assert resumed.root() == first.root()
        resumed.extend(LEAVES[stop:100])
        assert resumed.root() == reference_mth(0, 100)
        assert resumed.dump() == tree_frontier(100)


def tree_frontier(size: int) -> list[str]:
    """Return the frontier of the first `size` LEAVES, built leaf by leaf."""
    frontier = Frontier()
    for digest in LEAVES[:size]:
        frontier.append(digest)
    return frontier.dump()


def test_frontier_copy_is_independent():
    frontier = Frontier()
    frontier.extend(LEAVES[:5])
    copy = frontier.copy()
    copy.append(LEAVES[5])
    assert frontier.size == 5 and copy.size == 6
    assert frontier.root() == reference_mth(0, 5)


def test_frontier_load_accepts_bytes_and_refuses_inconsistent_state():
    frontier = Frontier()
    frontier.extend(LEAVES[:6])
    as_bytes = [bytes.fromhex(h) for h in frontier.dump()]
    assert Frontier.load(as_bytes, 6).root() == frontier.root()
    with pytest.raises(ValueError, match="holds 2 hashes, not 1"):
        Frontier.load(frontier.dump()[:1], 6)
    with pytest.raises(ValueError, match="holds 1 hashes, not 2"):
        Frontier.load(frontier.dump(), 8)
    with pytest.raises(ValueError, match="32 bytes"):
        Frontier.load(["abcd", frontier.dump()[1]], 6)
    with pytest.raises(ValueError):
        Frontier.load(["not hex" * 9, frontier.dump()[1]], 6)
    with pytest.raises(ValueError, match="non-negative"):
        Frontier.load([], -1)
    with pytest.raises(ValueError, match="non-negative"):
        Frontier.load([], True)


def test_frontier_refuses_a_leaf_hash_of_the_wrong_length():
    frontier = Frontier()
    with pytest.raises(ValueError, match="32 bytes"):
        frontier.append(b"short")
    frontier.extend(LEAVES[:3])
    with pytest.raises(ValueError, match="32 bytes"):
        frontier.extend([LEAVES[3], b"short"])
    # What was added before the bad hash stays consistent.
    assert frontier.size == 4
    assert frontier.root() == reference_mth(0, 4)


# --- exhaustive up to LARGE_EXHAUSTIVE_SIZE: the proof walkers with O(log n) subtree roots -----

LARGE_EXHAUSTIVE_SIZE = 1024


@pytest.mark.slow
def test_every_inclusion_and_consistency_proof_up_to_1024_leaves_verifies():
    """Every (index, size) and every (old, new) up to 1024: built in O(log n), each verified.

    The proofs come from the walkers MerkleTree uses (merkle._inclusion_path and
    _consistency_path) over the memoised RFC definition of a subtree root, so one proof costs
    O(log n) and the ~1.05 million proofs fit in seconds. Each is checked by the verifier, and
    a sample of them against the reference PATH / PROOF of RFC 6962 and against a flipped bit.
    """
    for size in range(1, LARGE_EXHAUSTIVE_SIZE + 1):
        root = reference_mth(0, size)
        for index in range(size):
            proof = _inclusion_path(index, size, reference_mth)
            assert verify_inclusion(LEAVES[index], index, size, proof, root), (index, size)
            if index % 97 == 0:
                assert proof == reference_path(index, 0, size)
                if proof:
                    changed = [*proof]
                    changed[-1] = flip_bit(proof[-1], index % 256)
                    assert not verify_inclusion(LEAVES[index], index, size, changed, root)
        for old in range(1, size):
            proof = _consistency_path(old, size, reference_mth)
            old_root = reference_mth(0, old)
            assert verify_consistency(old, size, old_root, root, proof), (old, size)
            if old % 89 == 0:
                assert proof == reference_subproof(old, 0, size, True)
                changed = [*proof]
                changed[0] = flip_bit(proof[0], old % 256)
                assert not verify_consistency(old, size, old_root, root, changed)
