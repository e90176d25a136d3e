"""Measure the audit log's hashing at scale and print the figures as one JSON line.

    python bench/merkle.py                # 1,000,000 leaves
    python bench/merkle.py --leaves 100000

What it times, in seconds unless the key says otherwise:
* canonical_json_s / leaf_hash_s: canonical JSON of N leaf-like objects of about 200 bytes,
  and the RFC 6962 leaf hash of those bytes (what audit_verify redoes for every entry);
* root_hash_s: `root_hash` over the N leaf hashes; frontier_s: the same root through
  `Frontier` appends, as the sequencer and audit_verify build it;
* tree_build_s, then per-call microseconds for inclusion and consistency proofs from the built
  `MerkleTree` (the exporter), for `inclusion_proof` over the plain list, and for verification.
Pure Python, no Django, no database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit.evidence import canonical_json
from audit.merkle import (
    Frontier,
    MerkleTree,
    inclusion_proof,
    leaf_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

CHUNK = 50_000
PROOF_SAMPLES = 10_000


def leaf_object(seq: int) -> dict:
    """Return an object shaped like an audit leaf, about 200 bytes as canonical JSON."""
    return {
        "v": 1,
        "seq": seq,
        "entry_id": seq + 1,
        "time": f"2026-11-24T13:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq % 1_000_000:06d}Z",
        "action": "tool.called",
        "target_id": str(seq % 977),
        "decision": None,
        "body_digest": f"{seq:064x}",
    }


def hash_leaves(count: int) -> tuple[list[bytes], dict]:
    """Canonicalise and hash `count` leaf objects in chunks; return the hashes and timings."""
    hashes: list[bytes] = []
    canonical_seconds = hashing_seconds = 0.0
    total_bytes = 0
    for start in range(0, count, CHUNK):
        objects = [leaf_object(seq) for seq in range(start, min(start + CHUNK, count))]
        began = time.perf_counter()
        blobs = [canonical_json(obj) for obj in objects]
        canonical_seconds += time.perf_counter() - began
        began = time.perf_counter()
        hashes.extend([leaf_hash(blob) for blob in blobs])
        hashing_seconds += time.perf_counter() - began
        total_bytes += sum(map(len, blobs))
    return hashes, {
        "leaf_bytes_mean": round(total_bytes / count, 1),
        "canonical_json_s": round(canonical_seconds, 3),
        "leaf_hash_s": round(hashing_seconds, 3),
    }


def timed(function, *args):
    """Return (result, seconds) of one call."""
    began = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - began


def main() -> None:
    """Run the measurements and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    count = parser.parse_args().leaves

    hashes, figures = hash_leaves(count)
    root, root_seconds = timed(root_hash, hashes)

    def through_frontier():
        """Append every leaf hash to a new frontier and return its root."""
        frontier = Frontier()
        frontier.extend(hashes)
        return frontier.root()

    frontier_root, frontier_seconds = timed(through_frontier)
    tree, build_seconds = timed(MerkleTree, hashes)
    assert root == frontier_root == tree.root()

    step = max(1, count // PROOF_SAMPLES)
    indices = range(0, count, step)
    proofs, proof_seconds = timed(lambda: [tree.inclusion_proof(i) for i in indices])
    pairs = list(zip(indices, proofs, strict=True))
    checks, verify_seconds = timed(
        lambda: [verify_inclusion(hashes[i], i, count, proof, root) for i, proof in pairs]
    )
    assert all(checks)
    old_sizes = range(1, count, step)
    consistency, consistency_seconds = timed(
        lambda: [(m, tree.consistency_proof(m)) for m in old_sizes[:1000]]
    )
    old_roots = {m: root_hash(hashes[:m]) for m, _ in consistency[:20]}
    assert all(verify_consistency(m, count, old_roots[m], root, p) for m, p in consistency[:20])
    _, list_proof_seconds = timed(inclusion_proof, hashes, count // 3)

    figures.update(
        {
            "leaves": count,
            "root_hash_s": round(root_seconds, 3),
            "frontier_s": round(frontier_seconds, 3),
            "tree_build_s": round(build_seconds, 3),
            "tree_inclusion_proof_us": round(proof_seconds / len(indices) * 1e6, 1),
            "tree_consistency_proof_us": round(consistency_seconds / len(consistency) * 1e6, 1),
            "verify_inclusion_us": round(verify_seconds / len(indices) * 1e6, 1),
            "list_inclusion_proof_s": round(list_proof_seconds, 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "root": root.hex(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
    )
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
