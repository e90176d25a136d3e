"""manage.py audit_erase_body: a body erased with a reason, recorded as its own entry, and every
proof (the log's, an exported bundle's, a consistency proof from before) still valid."""

import io
import json
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from audit import services
from audit.actors import SYSTEM
from audit.evidence import verify_bundle
from audit.models import AuditBody, AuditEntry
from audit.services import ERASURE_ACTION
from tests.audit.conftest import seal

pytestmark = pytest.mark.django_db(transaction=True)
SCRIPT = settings.BASE_DIR / "scripts" / "verify_evidence.py"


def _command(*args) -> str:
    """Run audit_erase_body; return what it printed."""
    out = io.StringIO()
    call_command("audit_erase_body", *args, stdout=out)
    return out.getvalue()


def test_erasure_by_command_keeps_every_proof_valid(staff, tmp_path):
    entries = [
        services.record(
            action="customer.contacted", body={"email": f"p{i}@example.com"}, actor=SYSTEM
        )
        for i in range(6)
    ]
    seal()
    kept = tmp_path / "before.json"
    call_command("audit_export", "--entry", str(entries[3].pk), "-o", str(kept))
    before = json.loads(kept.read_text())

    printed = _command(
        "--entry", str(entries[3].pk), "--reason", "GDPR art. 17", "--by", staff.username
    )
    erasure = AuditEntry.objects.get(action=ERASURE_ACTION)
    assert printed.strip() == (
        f"erased the body of audit entry #{entries[3].pk}; the erasure is entry #{erasure.pk}"
    )
    body = AuditBody.objects.get(entry=entries[3])
    assert body.content is None and body.erasure_entry_id == erasure.pk
    assert erasure.actor_name == staff.username and erasure.target_id == str(entries[3].pk)
    assert json.loads(erasure.body_row.content)["reason"] == "GDPR art. 17"
    seal()

    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    assert out.getvalue().startswith(f"OK: {AuditEntry.objects.count()} entries"), out.getvalue()
    assert "1 erased bodies" in out.getvalue()

    after = tmp_path / "after.json"
    call_command(
        "audit_export",
        "--entry",
        str(entries[3].pk),
        "--since-checkpoint",
        str(kept),
        "-o",
        str(after),
    )
    bundle = json.loads(after.read_text())
    assert bundle["entries"][0]["body"] is None
    assert bundle["entries"][0]["leaf"] == before["entries"][0]["leaf"]  # the same leaf
    assert verify_bundle(bundle) == []
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(after), "--since-checkpoint", str(kept)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_erase_command_refuses_what_it_cannot_do():
    plain = services.record(action="no.body", actor=SYSTEM)
    with_body = services.record(action="with.body", body={"x": 1}, actor=SYSTEM)
    with pytest.raises(CommandError, match="no audit entry #999999"):
        _command("--entry", "999999", "--reason", "r", "--system")
    with pytest.raises(CommandError, match="has no body to erase"):
        _command("--entry", str(plain.pk), "--reason", "r", "--system")
    with pytest.raises(CommandError, match="needs a reason"):
        _command("--entry", str(with_body.pk), "--reason", "  ", "--system")
    with pytest.raises(CommandError, match="no user 'nobody'"):
        _command("--entry", str(with_body.pk), "--reason", "r", "--by", "nobody")
    with pytest.raises(CommandError, match="--by USERNAME .* or --system"):
        _command("--entry", str(with_body.pk), "--reason", "r")
    _command("--entry", str(with_body.pk), "--reason", "r", "--system")
    with pytest.raises(CommandError, match="already erased"):
        _command("--entry", str(with_body.pk), "--reason", "again", "--system")
    erasure = AuditEntry.objects.get(action=ERASURE_ACTION)
    assert (erasure.actor_kind, erasure.actor_name) == ("system", "system")
    assert AuditEntry.objects.filter(action=ERASURE_ACTION).count() == 1
