"""audit_export writes a bundle that the offline verifier (no Django, no database) accepts,
and rejects once anything in it is changed."""

import base64
import json
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from audit import services
from audit.actors import SYSTEM
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
    services.record_many([{"actor": SYSTEM, "action": f"noise{i}"} for i in range(9)])
    entries = [
        services.record(
            action="step.done", run_id="r-7", step_id=str(i), body={"out": i * 1.5}, actor=SYSTEM
        )
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
    late = services.record(action="late", body={"x": 1}, actor=SYSTEM)
    path = tmp_path / "late.json"
    call_command("audit_export", "--entry", str(late.pk), "-o", str(path))
    bundle = json.loads(path.read_text())
    assert bundle["checkpoint"]["tree_size"] == AuditEntry.objects.count()
    assert verify_bundle(bundle) == []


def test_export_of_nothing_is_an_error():
    with pytest.raises(CommandError, match="no entries chosen"):
        call_command("audit_export", "--run", "no-such-run")


def _offline_since(path, kept) -> subprocess.CompletedProcess:
    """Run the standalone verifier on a bundle, with an older checkpoint the reader kept."""
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--since-checkpoint", str(kept)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )


def _signed(tree_size: int, root_hex: str, timestamp: str) -> dict:
    """Return a checkpoint signed with the test key (the key the log's checkpoints use)."""
    from audit import keys
    from audit.evidence import checkpoint_message, key_id_for, sign_checkpoint

    key = keys.signing_key()
    key_id = key_id_for(keys.public_key_bytes(key))
    signature = sign_checkpoint(key, checkpoint_message(tree_size, root_hex, timestamp, key_id))
    return {
        "tree_size": tree_size,
        "root_hash": root_hex,
        "timestamp": timestamp,
        "key_id": key_id,
        "signature": base64.b64encode(signature).decode(),
    }


@pytest.fixture
def kept_then_grown(run_entries, tmp_path):
    """A checkpoint the reader kept (as a bundle file), then a log grown well past it."""
    kept = tmp_path / "kept.json"
    call_command("audit_export", "--entry", str(run_entries[0].pk), "-o", str(kept))
    services.record_many(
        [{"actor": SYSTEM, "action": f"later{i}", "body": {"i": i}} for i in range(23)]
    )
    late = services.record(action="late.step", run_id="r-8", actor=SYSTEM)
    seal()
    return kept, late


def test_bundle_proves_it_extends_the_kept_checkpoint(kept_then_grown, tmp_path):
    kept, late = kept_then_grown
    old = json.loads(kept.read_text())["checkpoint"]
    path = tmp_path / "bundle.json"
    call_command("audit_export", "--run", "r-8", "--since-checkpoint", str(kept), "-o", str(path))
    bundle = json.loads(path.read_text())
    assert bundle["consistency"]["old_checkpoint"] == old
    assert bundle["checkpoint"]["tree_size"] > old["tree_size"]
    assert bundle["consistency"]["proof"]  # a real proof, not the trivial equal-size case
    assert verify_bundle(bundle) == []
    result = _offline_since(path, kept)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"extends the older checkpoint size {old['tree_size']} root {old['root_hash']} "
        "(the one you kept)"
    ) in result.stdout


def test_forged_or_mismatched_old_root_fails(kept_then_grown, tmp_path):
    kept, _ = kept_then_grown
    old = json.loads(kept.read_text())["checkpoint"]
    path = tmp_path / "bundle.json"
    call_command("audit_export", "--run", "r-8", "--since-checkpoint", str(kept), "-o", str(path))
    bundle = json.loads(path.read_text())

    # 1. The old root changed in the bundle: its signature and the proof both fail.
    forged = json.loads(json.dumps(bundle))
    forged["consistency"]["old_checkpoint"]["root_hash"] = "0" * 64
    problems = verify_bundle(forged)
    assert "consistency: old checkpoint: bad signature" in problems
    assert any("does not extend the old checkpoint" in p for p in problems)

    # 2. A validly signed checkpoint of another history (same size, other root): the
    #    signature holds, the consistency proof does not.
    other = _signed(old["tree_size"], "ab" * 32, "2030-01-01T00:00:00.000000Z")
    swapped = json.loads(json.dumps(bundle))
    swapped["consistency"]["old_checkpoint"] = other
    problems = verify_bundle(swapped)
    assert problems == [
        f"consistency: the tree of size {bundle['checkpoint']['tree_size']} does not extend "
        f"the old checkpoint (size {old['tree_size']}, root {'ab' * 32}): the proof does not "
        "verify"
    ]
    # 3. The same bundle read against the checkpoint its reader really kept: named offline.
    path.write_text(json.dumps(swapped))
    result = _offline_since(path, kept)
    assert result.returncode == 1
    assert "the bundle's proof starts from another checkpoint" in result.stdout

    # 4. The exporter refuses to prove that the log extends a checkpoint it does not extend.
    other_file = tmp_path / "other.json"
    other_file.write_text(json.dumps(other))
    with pytest.raises(CommandError, match="the log does not extend the older checkpoint"):
        call_command("audit_export", "--run", "r-8", "--since-checkpoint", str(other_file))


def test_kept_checkpoint_without_a_proof_in_the_bundle_fails_offline(kept_then_grown, tmp_path):
    kept, late = kept_then_grown
    path = tmp_path / "bundle.json"
    call_command("audit_export", "--entry", str(late.pk), "-o", str(path))
    result = _offline_since(path, kept)
    assert result.returncode == 1
    assert "the bundle has no consistency proof from it" in result.stdout
