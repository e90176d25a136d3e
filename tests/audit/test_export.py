"""audit_export writes a bundle that the offline verifier (no Django, no database) accepts,
and rejects once anything in it is changed."""

import json
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from audit import services
from audit.evidence import verify_bundle
from audit.models import AuditEntry
from tests.audit.conftest import seal

pytestmark = pytest.mark.django_db(transaction=True)
SCRIPT = settings.BASE_DIR / "scripts" / "verify_evidence.py"


def _offline(path) -> subprocess.CompletedProcess:
    """Run the standalone verifier on a bundle file, without Django settings."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )


@pytest.fixture
def run_entries(staff):
    """Entries of one run (one with a body later erased) among others, sequenced and signed."""
    services.record_many([{"action": f"noise{i}"} for i in range(9)])
    entries = [
        services.record(action="step.done", run_id="r-7", step_id=str(i), body={"out": i * 1.5})
        for i in range(5)
    ]
    services.erase_body(entries[2], actor=staff, reason="personal data")
    seal()
    return entries


def test_exported_run_verifies_offline(run_entries, tmp_path):
    path = tmp_path / "bundle.json"
    call_command("audit_export", "--run", "r-7", "-o", str(path))
    bundle = json.loads(path.read_text())
    assert bundle["format"] == "steward-evidence/1"
    assert len(bundle["entries"]) == 5
    assert verify_bundle(bundle) == []
    erased = [e for e in bundle["entries"] if e["leaf"]["entry_id"] == run_entries[2].pk][0]
    assert erased["body"] is None and erased["leaf"]["body_digest"]
    result = _offline(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK: 5 entries verified")


def test_changed_bundle_fails_offline_naming_the_entry(run_entries, tmp_path):
    path = tmp_path / "bundle.json"
    call_command("audit_export", "--entry", str(run_entries[0].pk), "-o", str(path))
    bundle = json.loads(path.read_text())
    entry = bundle["entries"][0]
    entry["body"]["out"] = 99
    entry["leaf"]["action"] = "step.undone"
    path.write_text(json.dumps(bundle))
    result = _offline(path)
    assert result.returncode == 1
    seq = entry["seq"]
    assert f"entry seq={seq}: leaf does not match its inclusion proof" in result.stdout
    assert f"entry seq={seq}: body digest mismatch" in result.stdout


def test_export_signs_a_checkpoint_covering_new_entries(run_entries, tmp_path):
    late = services.record(action="late", body={"x": 1})
    path = tmp_path / "late.json"
    call_command("audit_export", "--entry", str(late.pk), "-o", str(path))
    bundle = json.loads(path.read_text())
    assert bundle["checkpoint"]["tree_size"] == AuditEntry.objects.count()
    assert verify_bundle(bundle) == []


def test_export_of_nothing_is_an_error():
    with pytest.raises(CommandError, match="no entries chosen"):
        call_command("audit_export", "--run", "no-such-run")
