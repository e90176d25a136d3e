"""Store the Merkle tree nodes of a trail sequenced before nodes were kept (docs/audit.md)."""

import time

from django.core.management.base import BaseCommand

from audit import services


class Command(BaseCommand):
    help = (
        "Fill in the stored Merkle tree nodes an older trail lacks, so that its proofs read "
        "O(log n) hashes. The sequencer does the same lazily; this does it at once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-leaves",
            type=int,
            default=100_000,
            help="Leaves whose nodes one transaction stores.",
        )
        parser.add_argument("--quiet", action="store_true", help="No progress output.")

    def handle(self, *args, batch_leaves, quiet, **options):
        started = time.monotonic()

        def progress(done, total):
            if not quiet:
                self.stderr.write(f"nodes stored for {done:,} of {total:,} leaves")

        leaves = services.build_tree_nodes(batch_leaves=max(1, batch_leaves), progress=progress)
        self.stdout.write(
            f"stored the nodes of {leaves:,} leaves in {time.monotonic() - started:.1f} s"
        )
