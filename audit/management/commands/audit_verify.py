"""Recompute the audit trail and check it against its signed checkpoints; exit 1 naming failures."""

import json
import os
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from audit.verification import verify_log


class Command(BaseCommand):
    help = (
        "Verify the audit trail: sequence numbers, entries, bodies, Merkle roots and checkpoint "
        "signatures. Exits non-zero and names each failure."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--checkpoint",
            action="append",
            default=[],
            metavar="FILE",
            help="A checkpoint kept outside the database (JSON, or an evidence bundle).",
        )
        parser.add_argument("--quiet", action="store_true", help="No progress output.")
        parser.add_argument(
            "--workers",
            type=int,
            default=os.cpu_count() or 1,
            help="Processes that recompute the entries of a large log (default: one per core).",
        )

    def handle(self, *args, checkpoint, quiet, workers, **options):
        external = [self._load(path) for path in checkpoint]
        started = time.monotonic()
        last = [0.0]

        def progress(done, total):
            now = time.monotonic()
            if quiet or (now - last[0] < 1.0 and done < total):
                return
            last[0] = now
            share = f" ({100 * done / total:.0f}%)" if total else ""
            self.stderr.write(f"verified {done:,} of {total:,} entries{share}")

        result = verify_log(external=external, progress=progress, workers=max(1, workers))
        elapsed = time.monotonic() - started
        summary = (
            f"{result.size:,} entries, {result.checkpoints} checkpoints, {len(external)} "
            f"external, {result.erased} erased bodies, {result.pending} pending; "
            f"root {result.root_hash}; {elapsed:.1f} s"
        )
        if result.ok:
            self.stdout.write(f"OK: {summary}")
            return
        for failure in result.failures:
            self.stdout.write(f"FAIL {failure}")
        self.stdout.write(f"FAILED: {len(result.failures)} problem(s); {summary}")
        sys.exit(1)

    @staticmethod
    def _load(path: str) -> dict:
        """Read a checkpoint from a JSON file (a bare checkpoint or a bundle holding one)."""
        try:
            with open(path) as handle:
                data = json.load(handle)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read checkpoint {path}: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("checkpoint"), dict):
            data = data["checkpoint"]
        required = {"tree_size", "root_hash", "timestamp", "key_id", "signature"}
        if not isinstance(data, dict) or not required <= set(data):
            raise CommandError(f"{path} is not a checkpoint: it needs {sorted(required)}")
        return data
