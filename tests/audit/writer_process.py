"""A writer process for the concurrency test: records entries through the service layer.

Usage: python -m tests.audit.writer_process NAME COUNT PER_TRANSACTION
Some transactions stay open a while (so commits land out of id order) and some roll back (so
their ids and xids never commit). Prints how many entries it committed.
"""

import os
import random
import sys
import time

from audit.actors import SYSTEM


def main() -> None:
    """Record COUNT entries in transactions of PER_TRANSACTION, some slow, some rolled back."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "orchestrator.settings")
    import django

    django.setup()
    from django.db import transaction

    from audit import services

    name, count, per_transaction = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    committed = 0
    for start in range(0, count, per_transaction):
        size = min(per_transaction, count - start)
        try:
            with transaction.atomic():
                for offset in range(size):
                    services.record(
                        action="concurrency.write",
                        target_id=f"{name}-{start + offset}",
                        run_id=name,
                        body={"n": start + offset} if offset % 2 else None,
                        actor=SYSTEM,
                    )
                if random.random() < 0.1:
                    time.sleep(random.random() * 0.05)
                if random.random() < 0.05:
                    raise RuntimeError("roll back")
        except RuntimeError:
            continue
        committed += size
    print(committed)


if __name__ == "__main__":
    main()
