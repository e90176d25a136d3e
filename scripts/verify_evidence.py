#!/usr/bin/env python3
"""Check a Steward evidence bundle offline: no Django, no database, no network.

    python scripts/verify_evidence.py bundle.json [--since-checkpoint kept.json]

Prints "OK: N entries verified against checkpoint size S root R" and exits 0, or prints each
problem found and exits 1. A bundle exported with `audit_export --since-checkpoint` also carries a
consistency proof from that older checkpoint to its own; it is always checked. Give the older
checkpoint you kept yourself (a checkpoint JSON, or an earlier bundle) with --since-checkpoint,
and the bundle must prove that its checkpoint extends exactly that one.

Needs Python 3.11+ and the `cryptography` package, and this file's
checkout for audit/evidence.py and audit/merkle.py. The bundle format is described in
audit/evidence.py. The key in a bundle only shows the bundle is consistent with itself: compare
the printed key id with the one you trust.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run as a plain script from any directory: import the two modules from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audit.evidence import load_bundle, verify_bundle


def main(argv: list[str] | None = None) -> int:
    """Verify the bundle named on the command line; return the exit status."""
    parser = argparse.ArgumentParser(description="Verify a Steward evidence bundle offline.")
    parser.add_argument("bundle", help="path of the bundle JSON file, or - for standard input")
    parser.add_argument(
        "--since-checkpoint",
        metavar="FILE",
        help="an older checkpoint you kept (JSON, or an earlier bundle holding one)",
    )
    args = parser.parse_args(argv)
    since = None
    if args.since_checkpoint:
        try:
            since = load_bundle(Path(args.since_checkpoint).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            print(f"FAILED: cannot read {args.since_checkpoint}: {exc}")
            return 1
        if isinstance(since, dict) and isinstance(since.get("checkpoint"), dict):
            since = since["checkpoint"]
    try:
        if args.bundle == "-":
            text = sys.stdin.read()
        else:
            text = Path(args.bundle).read_text(encoding="utf-8")
        bundle = load_bundle(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        print(f"FAILED: cannot read {args.bundle}: {exc}")
        return 1
    problems = verify_bundle(bundle, since=since)
    if problems:
        for problem in problems:
            print(problem)
        print(f"FAILED: {len(problems)} problem(s)")
        return 1
    checkpoint = bundle["checkpoint"]
    print(
        f"OK: {len(bundle['entries'])} entries verified against checkpoint size "
        f"{checkpoint['tree_size']} root {checkpoint['root_hash']} "
        f"(key id {checkpoint['key_id']}, signed {checkpoint['timestamp']})"
    )
    consistency = bundle.get("consistency")
    if consistency is not None:
        old = consistency["old_checkpoint"]
        kept = " (the one you kept)" if since is not None else ""
        print(
            f"OK: checkpoint size {checkpoint['tree_size']} extends the older checkpoint size "
            f"{old['tree_size']} root {old['root_hash']}{kept}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
