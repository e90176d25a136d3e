"""Time audit proofs in-process on a kept, seeded benchmark trail: stored nodes against leaves.

    BENCH_DATABASE_URL=postgres://root@127.0.0.1:5432/steward_bench_x \\
        python bench/proofs.py [--samples 200] [--leaves-samples 3] [--sizes 1000000,3000000]

Reads the trail bench/web.py seeded and kept (--keep); migrates it, and fills in its tree nodes
first when they lag (audit_build_nodes, timed). For each tree size asked for (default: the
newest checkpoint's, and 1,000,000 / 3,000,000 below it) it times audit.proofs.inclusion for
random leaves and audit.proofs.consistency from random older sizes, both from the stored nodes
(with the queries each takes), and the inclusion proof the old way (every leaf hash up to the
size, forced by saying the nodes do not cover it) for a few leaves. The checkpoints of the
smaller sizes are unsaved AuditCheckpoint objects whose root is the one the stored nodes give
(what proofs read of a checkpoint is its size and root). One JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR.parent), str(BENCH_DIR)]


def percentiles(samples: list[float]) -> dict:
    """Return n, p50, p95 and max of millisecond samples."""
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 3),
        "max_ms": round(ordered[-1], 3),
    }


def main() -> None:
    """Measure and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--leaves-samples", type=int, default=3, help="0: skip the old way")
    parser.add_argument("--sizes", default="1000000,3000000")
    args = parser.parse_args()
    load_before = os.getloadavg()
    from engine import _prepare_environment

    _prepare_environment()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from audit import proofs, services
    from audit.models import AuditCheckpoint, AuditTreeState
    from audit.nodes import frontier_at

    result: dict = {}
    state = AuditTreeState.objects.get()
    if state.nodes_size < state.size:
        began = time.perf_counter()
        services.build_tree_nodes()
        result["build_nodes_s"] = round(time.perf_counter() - began, 1)
    newest = AuditCheckpoint.objects.order_by("-id").first()
    sizes = sorted({int(s) for s in args.sizes.split(",") if 0 < int(s) < newest.tree_size})
    chooser = random.Random(14)
    for size in [*sizes, newest.tree_size]:
        if size == newest.tree_size:
            checkpoint = newest
        else:
            root = frontier_at(size).root().hex()
            checkpoint = AuditCheckpoint(pk=size, tree_size=size, root_hash=root)
        figures: dict = {}
        timings, queries = [], set()
        for _ in range(args.samples):
            seq = chooser.randrange(size)
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                proofs.inclusion(seq, checkpoint)
                timings.append((time.perf_counter() - began) * 1000)
            queries.add(len(captured))
        figures["inclusion, stored nodes"] = {**percentiles(timings), "queries": sorted(queries)}
        timings, queries = [], set()
        for _ in range(args.samples):
            old_size = chooser.randrange(1, size)
            old = AuditCheckpoint(
                pk=old_size, tree_size=old_size, root_hash=frontier_at(old_size).root().hex()
            )
            with CaptureQueriesContext(connection) as captured:
                began = time.perf_counter()
                proofs.consistency(old, checkpoint)
                timings.append((time.perf_counter() - began) * 1000)
            queries.add(len(captured))
        figures["consistency, stored nodes"] = {**percentiles(timings), "queries": sorted(queries)}
        if args.leaves_samples:
            covered = proofs.nodes_cover
            proofs.nodes_cover = lambda size: False
            timings = []
            try:
                for _ in range(args.leaves_samples):
                    began = time.perf_counter()
                    proofs.inclusion(chooser.randrange(size), checkpoint)
                    timings.append((time.perf_counter() - began) * 1000)
            finally:
                proofs.nodes_cover = covered
            figures["inclusion, every leaf (before)"] = percentiles(timings)
        result[f"tree of {size:,}"] = figures
        print(f"tree of {size:,}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
