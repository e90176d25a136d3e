"""Parallel writer processes and a sequencer killed with SIGKILL and restarted: every committed
entry ends up with exactly one sequence number, with no gap, and the log verifies."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from audit.models import AuditEntry, AuditLeaf
from audit.verification import verify_log
from tests.audit.conftest import TEST_KEY, seal

ROOT = Path(settings.BASE_DIR)
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]


def _env() -> dict:
    """Return the environment of a child process: the test database and the test key."""
    db = connection.settings_dict
    url = f"postgres://{db['USER'] or 'root'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return {
        **os.environ,
        "DATABASE_URL": f"{url}/{db['NAME']}",
        "AUDIT_SIGNING_KEY": TEST_KEY,
        "AUDIT_CHECKPOINT_SECONDS": "0.2",
        "STEWARD_FIND_SERVICES": "0",
        "LOG_LEVEL": "WARNING",
    }


def _sequencer() -> subprocess.Popen:
    """Start a looping sequencer process."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "audit_sequence", "--loop", "--interval", "0.02"]
        + ["--batch-size", "37"],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_parallel_writers_and_a_killed_sequencer_leave_no_gap_and_no_duplicate():
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.audit.writer_process", f"w{i}", "3000", str(per)],
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, per in enumerate([1, 1, 3, 7])
    ]
    sequencers = [_sequencer(), _sequencer()]  # two at once: the advisory lock serialises them
    kills = 0
    rng = random.Random(7)
    while any(w.poll() is None for w in writers):
        time.sleep(rng.uniform(0.5, 1.2))
        victim = rng.randrange(len(sequencers))
        sequencers[victim].send_signal(signal.SIGKILL)
        sequencers[victim].wait()
        kills += 1
        sequencers[victim] = _sequencer()
    committed = 0
    for writer in writers:
        out, err = writer.communicate()
        assert writer.returncode == 0, err
        committed += int(out.strip())
    for sequencer in sequencers:
        sequencer.send_signal(signal.SIGKILL)
        sequencer.wait()
    assert kills >= 3

    sequenced_before = AuditLeaf.objects.count()
    seal()  # the last restart, run here

    assert 0 < sequenced_before <= committed
    assert AuditEntry.objects.count() == committed
    seqs = list(AuditLeaf.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(committed)), "a gap or a duplicate sequence number"
    assert AuditLeaf.objects.values("entry").distinct().count() == committed
    assert not AuditEntry.objects.filter(leaf__isnull=True).exists()
    result = verify_log()
    assert result.ok, [str(f) for f in result.failures]
    assert result.size == committed and result.checkpoints >= 1
