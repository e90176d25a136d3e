"""Run the audit sequencer once, or in a loop (the demo's and the benchmark's sequencer)."""

import time

from django.core.management.base import BaseCommand

from audit import services


class Command(BaseCommand):
    help = "Give committed audit entries their sequence numbers and sign checkpoints."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="Keep running until stopped.")
        parser.add_argument(
            "--interval", type=float, default=1.0, help="Seconds between runs in a loop."
        )
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument(
            "--no-checkpoint", action="store_true", help="Sequence only; sign no checkpoint."
        )

    def handle(self, *args, loop, interval, batch_size, no_checkpoint, **options):
        while True:
            count = services.sequence_pending(batch_size=batch_size)
            checkpoint = None if no_checkpoint else services.sign_checkpoint()
            if count or checkpoint or not loop:
                line = f"sequenced {count} entries"
                if checkpoint is not None:
                    line += f"; checkpoint #{checkpoint.pk} at size {checkpoint.tree_size}"
                self.stdout.write(line)
            if not loop:
                return
            if count < batch_size:
                time.sleep(interval)
