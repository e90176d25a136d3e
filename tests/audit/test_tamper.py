"""Tampering with the audit trail, each kind caught by audit_verify with the exact place named.

The attacker has write access to the database (the triggers are disabled for it, as a table
owner could); what they cannot do is sign a checkpoint with the key kept outside it.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.db import connection

from audit import services, verification
from audit.actors import SYSTEM
from audit.evidence import checkpoint_message, key_id_for, sign_checkpoint
from audit.keys import public_key_bytes
from audit.leaves import ENTRY_COLUMNS, entry_leaf_hash
from audit.merkle import Frontier
from audit.models import AuditCheckpoint, AuditLeaf, AuditTreeState
from tests.audit.conftest import attacker, seal

pytestmark = pytest.mark.django_db(transaction=True)


def verify_with_progress(*args) -> tuple[int, str, str]:
    """Run audit_verify; return its exit code, its output and its progress (stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("audit_verify", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def verify(*args) -> tuple[int, str]:
    """Run audit_verify; return its exit code and output."""
    code, output, _ = verify_with_progress(*args)
    return code, output


def fill(count: int = 20) -> list:
    """Record `count` entries (every third with a body), sequence them, sign a checkpoint."""
    entries = [
        services.record(
            action=f"demo.action{i}",
            target_type="demo.thing",
            target_id=str(i),
            run_id="run-1",
            body={"n": i, "text": f"body {i}"} if i % 3 == 0 else None,
            actor=SYSTEM,
        )
        for i in range(count)
    ]
    seal()
    return entries


def entry_at(seq: int) -> int:
    """Return the id of the entry at `seq`."""
    return AuditLeaf.objects.get(seq=seq).entry_id


def test_clean_log_verifies_with_progress(monkeypatch):
    monkeypatch.setattr(verification, "CHUNK", 8)  # three ranges: progress after each
    fill()
    code, output, progress = verify_with_progress()
    assert code == 0, output
    assert output.startswith("OK: 20 entries, 1 checkpoints")
    lines = progress.splitlines()
    # The first range always reports (the throttle starts open); the last line is the total.
    assert lines[0] == "verified 8 of 20 entries (40%)"
    assert lines[-1] == "verified 20 of 20 entries (100%)"
    code, output, progress = verify_with_progress("--quiet")
    assert code == 0 and progress == ""


@pytest.mark.postgres
@pytest.mark.parametrize("workers", [1, 2])
def test_ranges_checked_in_worker_processes_name_the_same_failures(monkeypatch, workers):
    """Ranges of 4 seqs, checked here or by 2 processes: a gap across ranges is named once."""
    monkeypatch.setattr(verification, "CHUNK", 4)
    monkeypatch.setattr(verification, "PARALLEL_MIN", 0)
    ranges_in_workers = []
    parallel = verification._parallel_results

    def spy(count):
        ranges_in_workers.append(count)
        return parallel(count)

    monkeypatch.setattr(verification, "_parallel_results", spy)
    fill()
    clean = verification.verify_log(workers=workers)
    assert clean.ok, clean.failures
    assert clean.root_hash == AuditTreeState.objects.get().root_hash
    changed = entry_at(13)
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditleaf WHERE seq IN (7, 8)")
        cursor.execute("UPDATE audit_auditentry SET action = 'forged' WHERE id = %s", [changed])
    result = verification.verify_log(workers=workers)
    codes = [failure.code for failure in result.failures]
    assert codes.count("gap") == 1
    messages = [str(failure) for failure in result.failures]
    assert "gap: sequence numbers 7..8 are missing (deleted entries); seq 9 follows seq 6" in (
        messages
    )
    assert any(m.startswith(f"entry_changed: seq 13 (entry #{changed})") for m in messages)
    assert "root_mismatch" in codes
    assert ranges_in_workers == ([2, 2] if workers == 2 else [])


def test_changed_byte_of_an_entry_is_named():
    fill()
    victim = entry_at(7)
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditentry SET action = 'X' || substr(action, 2) WHERE id = %s",
            [victim],
        )
    code, output = verify()
    assert code == 1
    assert f"FAIL entry_changed: seq 7 (entry #{victim}): the entry does not match" in output
    assert "root_mismatch: checkpoint #" in output


def test_changed_byte_of_a_body_is_named():
    fill()
    victim = entry_at(6)
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditbody SET content = replace(content, 'body 6', 'body 7') "
            "WHERE entry_id = %s",
            [victim],
        )
    code, output = verify()
    assert code == 1
    assert f"FAIL body_changed: seq 6 (entry #{victim}): the body does not match" in output


def test_deleted_entry_is_named_as_a_gap():
    fill()
    victim = entry_at(11)
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditleaf WHERE seq = 11")
        cursor.execute("DELETE FROM audit_auditbody WHERE entry_id = %s", [victim])
        cursor.execute("DELETE FROM audit_auditentry WHERE id = %s", [victim])
    code, output = verify()
    assert code == 1
    assert "FAIL gap: sequence numbers 11..11 are missing" in output
    assert "root_mismatch" in output


def test_deleted_entry_row_under_its_leaf_is_named():
    fill()
    victim = entry_at(4)
    with attacker() as cursor:  # the leaf holds no foreign key (migration 0005) to stop this
        cursor.execute("DELETE FROM audit_auditentry WHERE id = %s", [victim])
    code, output = verify()
    assert code == 1
    assert f"FAIL entry_missing: seq 4: its entry #{victim} is missing" in output


def test_swapped_entries_are_both_named():
    fill()
    first, second = entry_at(3), entry_at(5)
    with attacker() as cursor:
        cursor.execute("UPDATE audit_auditleaf SET seq = -1 WHERE seq = 3")
        cursor.execute("UPDATE audit_auditleaf SET seq = 3 WHERE seq = 5")
        cursor.execute("UPDATE audit_auditleaf SET seq = 5 WHERE seq = -1")
    code, output = verify()
    assert code == 1
    assert f"FAIL entry_changed: seq 3 (entry #{second})" in output
    assert f"FAIL entry_changed: seq 5 (entry #{first})" in output


def _truncate_tail(keep: int) -> None:
    """Delete every entry from seq `keep` on and reset the sequencer to the shorter tree.

    The tree nodes those entries completed go too, as a thorough attacker would remove them.
    """
    victims = list(AuditLeaf.objects.filter(seq__gte=keep).values_list("entry_id", flat=True))
    frontier = Frontier()
    for digest in AuditLeaf.objects.filter(seq__lt=keep).order_by("seq"):
        frontier.append(bytes(digest.leaf_hash))
    last = AuditLeaf.objects.get(seq=keep - 1).entry_id
    txid = 0
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT txid FROM audit_auditentry WHERE id = %s", [last])
            txid = cursor.fetchone()[0]
    placeholders = ", ".join(["%s"] * len(victims))
    with attacker() as cursor:
        cursor.execute(f"DELETE FROM audit_auditleaf WHERE seq >= {keep}")
        cursor.execute(f"DELETE FROM audit_auditbody WHERE entry_id IN ({placeholders})", victims)
        cursor.execute(f"DELETE FROM audit_auditentry WHERE id IN ({placeholders})", victims)
        cursor.execute(f"DELETE FROM audit_auditnode WHERE ((position + 1) << level) > {keep}")
    AuditTreeState.objects.filter(pk=1).update(
        size=keep,
        nodes_size=keep,
        frontier=frontier.dump(),
        root_hash=frontier.root().hex(),
        cursor_txid=txid,
        cursor_id=last,
    )


def test_truncated_tail_with_reset_sequencer_is_a_rollback_below_the_checkpoint():
    fill()
    checkpoint = AuditCheckpoint.objects.get()
    _truncate_tail(15)
    code, output = verify()
    assert code == 1
    assert (
        f"FAIL rollback: checkpoint #{checkpoint.pk} (size 20, {checkpoint.timestamp}) was signed "
        "over 20 entries but the log holds only 15: entries seq 15..19 were removed"
    ) in output


def test_truncation_hidden_from_the_database_is_caught_by_an_external_checkpoint(tmp_path):
    fill()
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps(AuditCheckpoint.objects.get().as_dict()))
    _truncate_tail(15)
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditcheckpoint")
    services.record(action="after.the.rollback", actor=SYSTEM)
    seal()  # the rewritten log gets fresh, validly signed checkpoints of its own
    assert verify()[0] == 0  # the database alone cannot tell
    services.record_many([{"actor": SYSTEM, "action": f"more{i}"} for i in range(4)])
    seal()  # 20 entries again, but not the same ones
    code, output = verify("--checkpoint", str(kept))
    assert code == 1
    assert (
        "FAIL not_extended: external checkpoint 1 (size 20): the consistency proof from its "
        "size 20 to the log's 20 entries does not verify against its signed root"
    ) in output


def test_external_checkpoint_above_the_log_is_a_rollback(tmp_path):
    fill()
    kept = tmp_path / "bundle.json"
    kept.write_text(json.dumps({"checkpoint": AuditCheckpoint.objects.get().as_dict()}))
    assert verify("--checkpoint", str(kept))[0] == 0
    _truncate_tail(12)
    with attacker() as cursor:
        cursor.execute("DELETE FROM audit_auditcheckpoint")
    code, output = verify("--checkpoint", str(kept))
    assert code == 1
    assert "FAIL rollback: external checkpoint 1 (size 20) was signed over 20 entries" in output


def test_forged_checkpoint_is_named():
    fill()
    real = AuditCheckpoint.objects.get()
    with attacker() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditcheckpoint "
            "(tree_size, root_hash, timestamp, key_id, signature, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            [
                25,
                "ab" * 32,
                "2999-01-01T00:00:00.000000Z",
                real.key_id,
                real.signature,
                real.created_at,
            ],
        )
    forged = AuditCheckpoint.objects.order_by("-id").first()
    code, output = verify()
    assert code == 1
    assert f"FAIL bad_signature: checkpoint #{forged.pk} (size 25" in output


def test_replayed_checkpoint_is_named():
    fill(5)
    first = AuditCheckpoint.objects.get()
    services.record_many([{"actor": SYSTEM, "action": f"later{i}"} for i in range(5)])
    seal()
    AuditCheckpoint.objects.create(**{**first.as_dict(), "created_at": first.created_at})
    replayed = AuditCheckpoint.objects.order_by("-id").first()
    code, output = verify()
    assert code == 1
    assert f"FAIL checkpoint_replayed: checkpoint #{replayed.pk} (size 5" in output
    assert f"is a replay of checkpoint #{first.pk}" in output


def _signed_by(key: Ed25519PrivateKey, key_id: str, tree_size: int, root: str) -> dict:
    """Return a checkpoint signed with `key`, claiming `key_id`."""
    timestamp = "2999-01-01T00:00:00.000000Z"
    signature = sign_checkpoint(key, checkpoint_message(tree_size, root, timestamp, key_id))
    if isinstance(signature, bytes):
        signature = base64.b64encode(signature).decode()
    return {
        "tree_size": tree_size,
        "root_hash": root,
        "timestamp": timestamp,
        "key_id": key_id,
        "signature": signature,
    }


def test_checkpoint_signed_with_the_wrong_key_is_named():
    fill()
    real = AuditCheckpoint.objects.get()
    other = Ed25519PrivateKey.generate()
    other_id = key_id_for(public_key_bytes(other))
    wrong = AuditCheckpoint.objects.create(**_signed_by(other, other_id, 20, real.root_hash))
    posing = AuditCheckpoint.objects.create(
        **{
            **_signed_by(other, real.key_id, 20, real.root_hash),
            "timestamp": "2999-01-02T00:00:00.000000Z",
        }
    )
    code, output = verify()
    assert code == 1
    assert (
        f"FAIL checkpoint_wrong_key: checkpoint #{wrong.pk} (size 20, "
        f"2999-01-01T00:00:00.000000Z): signed by key {other_id!r}, not by the configured key"
    ) in output
    assert f"FAIL bad_signature: checkpoint #{posing.pk}" in output


def test_rewritten_entry_and_leaf_hash_is_caught_by_the_signed_root():
    fill(10)
    services.record_many([{"actor": SYSTEM, "action": f"second{i}"} for i in range(10)])
    seal()
    first, second = AuditCheckpoint.objects.order_by("id")
    victim = entry_at(13)
    with attacker() as cursor:
        cursor.execute("UPDATE audit_auditentry SET action = 'rewritten' WHERE id = %s", [victim])
        columns = ", ".join(ENTRY_COLUMNS)
        cursor.execute(f"SELECT {columns} FROM audit_auditentry WHERE id = %s", [victim])
        forged = entry_leaf_hash(13, cursor.fetchone())
        cursor.execute("UPDATE audit_auditleaf SET leaf_hash = %s WHERE seq = 13", [forged])
    code, output = verify()
    assert code == 1
    assert "entry_changed" not in output
    assert (
        f"FAIL root_mismatch: checkpoint #{second.pk} (size 20, {second.timestamp}): the log's "
        "root at size 20 differs from the signed root: entries in seq 10..19 were changed"
    ) in output
    assert f"checkpoint #{first.pk} " not in output.split("root_mismatch")[1]


def test_erasure_keeps_every_proof_valid(staff):
    entries = fill()
    services.erase_body(entries[3], actor=staff, reason="data subject request")
    seal()
    code, output = verify()
    assert code == 0, output
    assert "1 erased bodies" in output


def test_erasure_without_an_erasure_entry_is_named():
    entries = fill()
    unrelated = entries[1]
    with connection.cursor() as cursor:  # the trigger allows this shape of update
        cursor.execute(
            "UPDATE audit_auditbody SET content = NULL, erased_at = %s, erasure_entry_id = %s "
            "WHERE entry_id = %s",
            [unrelated.created_at, unrelated.pk, entries[9].pk],
        )
    code, output = verify()
    assert code == 1
    assert f"FAIL erasure_unrecorded: seq 9 (entry #{entries[9].pk})" in output


@pytest.mark.postgres
def test_entry_committed_below_the_cursor_without_a_number_is_named():
    fill()
    state = AuditTreeState.objects.get()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditentry (created_at, actor_kind, action, actor_name, "
            "target_type, target_id, target_repr, run_id, step_id, request_id, body_digest, txid)"
            " VALUES (now(), 'system', 'smuggled', '', '', '', '', '', '', '', '', %s) "
            "RETURNING id",
            [state.cursor_txid - 1],
        )
        smuggled = cursor.fetchone()[0]
    services.sequence_pending()  # it never gets a number: it sits below the cursor
    services.sign_checkpoint(force=True)
    code, output = verify()
    assert code == 1
    assert "FAIL unsequenced: 1 committed entries were passed over" in output
    assert f"#{smuggled}" in output


def test_log_grown_since_an_external_checkpoint_extends_it_by_a_consistency_proof(tmp_path):
    fill(13)
    kept = tmp_path / "checkpoint.json"
    kept.write_text(json.dumps(AuditCheckpoint.objects.get().as_dict()))
    services.record_many([{"actor": SYSTEM, "action": f"later{i}"} for i in range(9)])
    seal()
    code, output = verify("--checkpoint", str(kept))
    assert code == 0, output
    assert "1 external" in output
    # Rewrite an entry the external checkpoint covers, and everything stored that hashes it:
    # leaf hash, the sequencer's state, the database's own checkpoints (re-signed by no one).
    victim = entry_at(5)
    with attacker() as cursor:
        cursor.execute("UPDATE audit_auditentry SET target_repr = 'x' WHERE id = %s", [victim])
        cursor.execute(
            f"SELECT {', '.join(ENTRY_COLUMNS)} FROM audit_auditentry WHERE id = %s", [victim]
        )
        row = cursor.fetchone()
        cursor.execute(
            "UPDATE audit_auditleaf SET leaf_hash = %s WHERE seq = 5", [entry_leaf_hash(5, row)]
        )
        cursor.execute("DELETE FROM audit_auditcheckpoint")
    code, output = verify("--checkpoint", str(kept))
    assert code == 1
    assert (
        "FAIL not_extended: external checkpoint 1 (size 13): the consistency proof from its "
        "size 13 to the log's 22 entries does not verify"
    ) in output
