"""Merkle tree arithmetic of RFC 6962 / RFC 9162 (Certificate Transparency), stdlib only.

The tree over n leaves is the RFC's: a leaf hashes as SHA-256(0x00 || data), an inner node as
SHA-256(0x01 || left || right), the empty tree as SHA-256(""), and a tree of n > 1 leaves splits
at k, the largest power of two below n, into a perfect left subtree of k leaves and the rest.
The two prefixes keep a leaf from ever passing for an inner node (a second-preimage defence).

Three ways in, by what the caller holds:
* the functions (`root_hash`, `inclusion_proof`, `consistency_proof`) take the whole list of
  leaf hashes and do O(n) work per call: right for one proof or one root;
* `MerkleTree` keeps every node of one tree (about 2n hashes) so that each further proof
  costs O(log n): right for an export of many entries against one checkpoint;
* `Frontier` keeps only the O(log n) roots of the perfect subtrees that make up the tree so
  far: appends are amortised O(1), the root is available at any size, and its state fits in a
  JSON column, so the sequencer can persist it and resume. `extend_with_nodes` also hands back
  each perfect subtree completed on the way, which the sequencer stores (audit/nodes.py);
* `inclusion_path` / `consistency_path` build the RFC's proofs from any source of subtree roots,
  and `perfect_subtrees` / `fold_subtrees` say which perfect subtrees make up one of the
  subtrees they ask for, and hash it from their roots: proofs from stored nodes.

Verification follows RFC 9162 2.1.3.2 (inclusion) and 2.1.4.2 (consistency) step by step. This
module imports nothing of Django: the offline verifier loads it by path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256

SubtreeRoot = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 hash of a leaf: SHA-256(0x00 || data)."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 hash of an inner node: SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _split(size: int) -> int:
    """Return the largest power of two strictly smaller than `size` (size >= 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    """Hash one level of the tree into the level above it.

    Pairing left to right and carrying an odd last node up unchanged builds exactly the RFC's
    left-balanced tree: a node at height h covers leaves [j*2^h, min((j+1)*2^h, n)), which is
    the RFC split of that range.
    """
    parents = [
        _sha256(NODE_PREFIX + left + right).digest()
        for left, right in zip(level[0::2], level[1::2], strict=False)
    ]
    if len(level) & 1:
        parents.append(level[-1])
    return parents


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash (MTH) of a list of leaf hashes; SHA-256("") when empty."""
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def _inclusion_path(index: int, size: int, subtree_root: SubtreeRoot) -> list[bytes]:
    """Return PATH(index, D[0:size]) of RFC 6962 2.1.1, asking `subtree_root` for siblings."""
    siblings = []
    low, high = 0, size
    while high - low > 1:
        middle = low + _split(high - low)
        if index < middle:
            siblings.append(subtree_root(middle, high))
            high = middle
        else:
            siblings.append(subtree_root(low, middle))
            low = middle
    # The RFC lists the sibling nearest the leaf first; the walk above went root first.
    siblings.reverse()
    return siblings


def _consistency_path(old_size: int, size: int, subtree_root: SubtreeRoot) -> list[bytes]:
    """Return PROOF(old_size, D[0:size]) of RFC 6962 2.1.2, asking `subtree_root` for nodes."""
    if old_size in (0, size):
        return []
    nodes = []
    low, high, remaining = 0, size, old_size
    old_tree_is_a_node = True
    while remaining != high - low:
        middle = low + _split(high - low)
        if remaining <= middle - low:
            nodes.append(subtree_root(middle, high))
            high = middle
        else:
            nodes.append(subtree_root(low, middle))
            remaining -= middle - low
            low = middle
            old_tree_is_a_node = False
    # SUBPROOF(m, D[m], false): the verifier knows the old root only when the old tree is
    # itself a node of the new one; otherwise the node where the walk stopped must be sent.
    if not old_tree_is_a_node:
        nodes.append(subtree_root(low, high))
    nodes.reverse()
    return nodes


def inclusion_path(index: int, size: int, subtree_root: SubtreeRoot) -> list[bytes]:
    """Return the audit path of leaf `index` in a tree of `size`, `subtree_root(low, high)`
    giving MTH(D[low:high]) of the subtrees it needs (O(log n) calls)."""
    _check_index(index, size)
    return _inclusion_path(index, size, subtree_root)


def consistency_path(old_size: int, size: int, subtree_root: SubtreeRoot) -> list[bytes]:
    """Return the consistency proof from `old_size` to `size`, asking `subtree_root` for nodes."""
    if not 0 <= old_size <= size:
        raise ValueError(f"old size {old_size} is outside 0..{size}")
    return _consistency_path(old_size, size, subtree_root)


def perfect_subtrees(low: int, high: int) -> list[tuple[int, int]]:
    """Return the aligned perfect subtrees (level, first leaf) that tile leaves [low, high).

    Left to right, each as large as its start's alignment allows. For a subtree the RFC's
    proofs use (low a multiple of the power of two at or above high - low) they are the set
    bits of high - low, largest first: the tree's left-balanced shape, so `fold_subtrees`
    of their roots is MTH(D[low:high]).
    """
    pieces = []
    while low < high:
        level = (high - low).bit_length() - 1
        if low:
            level = min(level, (low & -low).bit_length() - 1)
        pieces.append((level, low))
        low += 1 << level
    return pieces


def fold_subtrees(roots: Sequence[bytes]) -> bytes:
    """Return a subtree's hash from the roots of its perfect subtrees, as perfect_subtrees lists.

    The right-most subtree is the deepest on the right edge, so the fold runs right to left.
    """
    if not roots:
        return EMPTY_ROOT
    node = roots[-1]
    for left in reversed(roots[:-1]):
        node = _sha256(NODE_PREFIX + left + node).digest()
    return node


def _check_index(index: int, size: int) -> None:
    """Raise ValueError unless 0 <= index < size."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return the audit path of leaf `index` in the tree over `leaf_hashes` (RFC 9162 2.1.3)."""
    _check_index(index, len(leaf_hashes))
    return _inclusion_path(
        index, len(leaf_hashes), lambda low, high: root_hash(leaf_hashes[low:high])
    )


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return the proof that the first `old_size` leaves are a prefix of the whole tree."""
    if not 0 <= old_size <= len(leaf_hashes):
        raise ValueError(f"old size {old_size} is outside 0..{len(leaf_hashes)}")
    return _consistency_path(
        old_size, len(leaf_hashes), lambda low, high: root_hash(leaf_hashes[low:high])
    )


def _is_hash(value: object) -> bool:
    """Tell whether a value is a 32-byte hash."""
    return isinstance(value, bytes | bytearray) and len(value) == HASH_SIZE


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Tell whether `proof` shows `leaf_hash` at `index` in the tree of `size` with `root`."""
    if not (_is_hash(leaf_hash) and _is_hash(root) and all(_is_hash(p) for p in proof)):
        return False
    if not 0 <= index < size:
        return False
    # RFC 9162 2.1.3.2, with fn/sn named for what they are.
    position, last = index, size - 1
    computed = bytes(leaf_hash)
    for sibling in proof:
        if last == 0:
            return False
        if position & 1 or position == last:
            computed = node_hash(sibling, computed)
            if not position & 1:
                while position and not position & 1:
                    position >>= 1
                    last >>= 1
        else:
            computed = node_hash(computed, sibling)
        position >>= 1
        last >>= 1
    return last == 0 and computed == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Tell whether `proof` shows the tree (old_size, old_root) is a prefix of the new one."""
    if not (_is_hash(old_root) and _is_hash(new_root) and all(_is_hash(p) for p in proof)):
        return False
    if not 0 <= old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        # Every tree extends the empty one; the RFC leaves size 0 undefined, so we only insist
        # that the claimed old root really is the empty tree's.
        return not proof and old_root == EMPTY_ROOT
    # RFC 9162 2.1.4.2, steps 1 to 7.
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    old_position, new_position = old_size - 1, new_size - 1
    while old_position & 1:
        old_position >>= 1
        new_position >>= 1
    old_computed = new_computed = bytes(path[0])
    for node in path[1:]:
        if new_position == 0:
            return False
        if old_position & 1 or old_position == new_position:
            old_computed = node_hash(node, old_computed)
            new_computed = node_hash(node, new_computed)
            if not old_position & 1:
                while old_position and not old_position & 1:
                    old_position >>= 1
                    new_position >>= 1
        else:
            new_computed = node_hash(new_computed, node)
        old_position >>= 1
        new_position >>= 1
    return new_position == 0 and old_computed == old_root and new_computed == new_root


class MerkleTree:
    """Every node of one tree, built in O(n), so that each proof against it costs O(log n)."""

    def __init__(self, leaf_hashes: Iterable[bytes]):
        levels = [list(leaf_hashes)]
        while len(levels[-1]) > 1:
            levels.append(_next_level(levels[-1]))
        self._levels = levels

    @property
    def size(self) -> int:
        """Return the number of leaves."""
        return len(self._levels[0])

    def root(self) -> bytes:
        """Return the root hash."""
        return self._levels[-1][0] if self.size else EMPTY_ROOT

    def subtree_root(self, low: int, high: int) -> bytes:
        """Return MTH(D[low:high]) for a subtree the RFC's proofs use, O(1)."""
        height = (high - low - 1).bit_length()
        width = 1 << height
        if low % width == 0 and high == min(low + width, self.size):
            return self._levels[height][low >> height]
        return root_hash(self._levels[0][low:high])

    def inclusion_proof(self, index: int) -> list[bytes]:
        """Return the audit path of leaf `index` (RFC 9162 2.1.3)."""
        _check_index(index, self.size)
        return _inclusion_path(index, self.size, self.subtree_root)

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """Return the proof that the first `old_size` leaves are a prefix of this tree."""
        if not 0 <= old_size <= self.size:
            raise ValueError(f"old size {old_size} is outside 0..{self.size}")
        return _consistency_path(old_size, self.size, self.subtree_root)


class Frontier:
    """The roots of the perfect subtrees that make up a growing tree: its compact range.

    A tree of n leaves is the perfect subtrees given by the set bits of n, largest first, so
    the state is popcount(n) hashes. Appending merges equal-sized subtrees like a binary
    counter carries: n - 1 node hashes for n leaves in all.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._hashes: list[bytes] = []
        self._size = 0

    @classmethod
    def load(cls, hashes: Sequence[str | bytes], size: int) -> Frontier:
        """Return the frontier saved by `dump()` for a tree of `size` leaves."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"a tree size is a non-negative int, not {size!r}")
        decoded = [bytes.fromhex(h) if isinstance(h, str) else bytes(h) for h in hashes]
        if len(decoded) != size.bit_count():
            raise ValueError(
                f"a frontier of size {size} holds {size.bit_count()} hashes, not {len(decoded)}"
            )
        if not all(len(h) == HASH_SIZE for h in decoded):
            raise ValueError("a frontier hash is not 32 bytes")
        frontier = cls()
        frontier._hashes = decoded
        frontier._size = size
        return frontier

    def dump(self) -> list[str]:
        """Return the state as hex strings, largest subtree first (pair it with `size`)."""
        return [h.hex() for h in self._hashes]

    @staticmethod
    def empty_root() -> bytes:
        """Return the root of the empty tree, SHA-256("")."""
        return EMPTY_ROOT

    @property
    def size(self) -> int:
        """Return the number of leaves appended so far."""
        return self._size

    def copy(self) -> Frontier:
        """Return an independent copy."""
        return Frontier.load(list(self._hashes), self._size)

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf hash."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf_hash)}")
        hashes = self._hashes
        node = bytes(leaf_hash)
        carry = self._size
        while carry & 1:
            node = _sha256(NODE_PREFIX + hashes.pop() + node).digest()
            carry >>= 1
        hashes.append(node)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Add leaf hashes in order."""
        # append() inlined: this loop is what audit_verify runs a million times.
        hashes = self._hashes
        sha256, prefix = _sha256, NODE_PREFIX
        size = self._size
        try:
            for digest in leaf_hashes:
                if len(digest) != HASH_SIZE:
                    raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(digest)}")
                node = bytes(digest)
                carry = size
                while carry & 1:
                    node = sha256(prefix + hashes.pop() + node).digest()
                    carry >>= 1
                hashes.append(node)
                size += 1
        finally:
            self._size = size

    def extend_with_nodes(
        self, leaf_hashes: Iterable[bytes], min_level: int = 1
    ) -> list[tuple[int, int, bytes]]:
        """Add leaf hashes in order; return the perfect subtrees completed on the way.

        Each as (level, index, hash): the subtree of 2**level leaves starting at leaf
        index * 2**level, for every level >= min_level (level 0 is the leaves themselves).
        """
        hashes = self._hashes
        sha256, prefix = _sha256, NODE_PREFIX
        size = self._size
        completed = []
        try:
            for digest in leaf_hashes:
                if len(digest) != HASH_SIZE:
                    raise ValueError(f"a leaf hash is {HASH_SIZE} bytes, not {len(digest)}")
                node = bytes(digest)
                carry = size
                level = 0
                while carry & 1:
                    node = sha256(prefix + hashes.pop() + node).digest()
                    carry >>= 1
                    level += 1
                    if level >= min_level:
                        # The leaf at `size` ends the subtree: its low `level` bits are all 1.
                        completed.append((level, size >> level, node))
                hashes.append(node)
                size += 1
        finally:
            self._size = size
        return completed

    def root(self) -> bytes:
        """Return the root hash of the tree so far."""
        return fold_subtrees(self._hashes)
