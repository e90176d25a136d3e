"""Recompute the audit trail and check it against its signed checkpoints; exit 1 naming failures."""

import os
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from audit import clock
from audit.export import ExportError, read_checkpoint_file
from audit.models import AuditVerification
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
            help="A checkpoint kept outside the database (JSON, or an evidence bundle): the log "
            "must extend it, shown by a consistency proof from it to the log's current tree.",
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
        began = clock.now()
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
        # The trail's health page shows the last full verification and its result.
        AuditVerification.objects.create(
            started_at=began,
            finished_at=clock.now(),
            ok=result.ok,
            size=result.size,
            checkpoints=result.checkpoints,
            external=len(external),
            erased=result.erased,
            pending=result.pending,
            root_hash=result.root_hash,
            failures=[str(failure) for failure in result.failures[:50]],
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
        """Read a checkpoint kept outside the database (a bare one or a bundle holding one)."""
        try:
            return read_checkpoint_file(path)
        except ExportError as exc:
            raise CommandError(str(exc)) from exc
