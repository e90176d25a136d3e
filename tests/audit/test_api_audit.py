"""The audit API: who reads the trail, entries with proofs that verify on their own, checkpoints,
consistency proofs and evidence bundles, the report's filters, and query counts.

Proofs need sequenced entries and signed checkpoints, and the sequencer numbers only committed
entries, so these tests commit (transaction=True).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from audit import keys, merkle
from audit import services as audit
from audit.actors import SYSTEM
from audit.models import AuditCheckpoint, AuditEntry
from governance import services
from tests.audit.conftest import TEST_KEY, seal, sequence_all
from tests.governance.conftest import _no_publishing, company, fresh  # noqa: F401
from tests.governance.test_api_tokens import _problem, bearer

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
ENTRIES = "/api/v1/audit/entries"
LATEST = "/api/v1/audit/checkpoints/latest"
CONSISTENCY = "/api/v1/audit/consistency"
EVIDENCE = "/api/v1/audit/evidence"
AUDIT_READING = ("audit.view_auditentry", "audit.view_auditcheckpoint")


@pytest.fixture
def auditors(company):  # noqa: F811 (the governance suite's fixture)
    """The governance admins and the integrations (a SIEM, say) read the whole trail."""
    for role in (company.admins, company.integrations):
        for permission in AUDIT_READING:
            services.grant(role, permission, actor=SYSTEM)
    return company


@pytest.fixture
def trail(auditors):
    """Entries of two runs by a person, an agent and the system, sequenced and signed."""
    org = auditors
    audit.record(action="run.started", actor=org.maya, run_id="r1", request_id="req-1")
    audit.record(
        action="agent.prompt",
        actor=org.agent,
        actor_kind="agent",
        run_id="r1",
        body={"prompt": "pay invoice 7"},
    )
    audit.record(
        action="approval.decided",
        actor=org.alice,
        target_type="orchestrator.workflowrun",
        target_id="r1",
        run_id="r1",
        request_id="req-2",
        body={"decision": "approve"},
    )
    audit.record(action="run.started", actor=SYSTEM, run_id="r2", body={"input": 1})
    seal()
    return org


def as_user(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def pages(client, url, params=None) -> list[dict]:
    """Read every page of a list, following the cursor."""
    response = client.get(url, params or {})
    assert response.status_code == 200, response.content
    rows = list(response.json()["results"])
    while response.json()["next"]:
        response = client.get(response.json()["next"])
        assert response.status_code == 200
        rows += response.json()["results"]
    return rows


def refusals() -> int:
    return AuditEntry.objects.filter(action="governance.access_denied").count()


# --- who reads the trail ------------------------------------------------------------------

# + reads everything; 0 an empty list; 4 a 404, the refusal audited once.
MATRIX = {
    "gina": ("+", "+", "+", "+", "+"),
    "alice": ("0", "4", "4", "4", "4"),
    "bob": ("0", "4", "4", "4", "4"),
    "maya": ("0", "4", "4", "4", "4"),
    "integration": ("+", "+", "+", "+", "+"),
    "agent": ("0", "4", "4", "4", "4"),
    "oscar": ("0", "4", "4", "4", "4"),
}


def client_for(org, who: str) -> APIClient:
    """The way each principal calls: people by session, the integration by its token, and the
    agent, which has neither (agents act only through the engine), forced in to show that even
    then it reads nothing."""
    user = fresh(getattr(org, who))
    if who == "integration":
        for action in ("view", "add", "change"):
            services.grant(org.admins, f"governance.{action}_apitoken", actor=SYSTEM)
        return bearer(services.issue_token(user, actor=fresh(org.gina), name="SIEM")[1])
    if who == "agent":
        client = APIClient()
        client.force_authenticate(user)
        return client
    return as_user(user)


@pytest.mark.parametrize("who", MATRIX)
def test_the_trail_is_read_whole_by_its_readers_and_not_at_all_by_others(trail, who):
    user = fresh(getattr(trail, who))
    client = client_for(trail, who)
    entry = AuditEntry.objects.get(action="agent.prompt")
    checkpoint = AuditCheckpoint.objects.order_by("-id").first()
    listing, one, latest, consistency, evidence = MATRIX[who]
    response = client.get(ENTRIES)
    assert response.status_code == 200
    assert bool(response.json()["results"]) == (listing == "+")
    for expected, url in [
        (one, f"{ENTRIES}/{entry.pk}"),
        (latest, LATEST),
        (latest, f"/api/v1/audit/checkpoints/{checkpoint.pk}"),
        (consistency, f"{CONSISTENCY}?from={checkpoint.pk}&to={checkpoint.pk}"),
        (evidence, f"{EVIDENCE}?run=r1"),
    ]:
        before = refusals()
        response = client.get(url)
        if expected == "+":
            assert response.status_code == 200, (url, response.content)
            assert refusals() == before
        else:
            body = _problem(response, 404)
            denied = AuditEntry.objects.filter(action="governance.access_denied").order_by("-id")
            assert refusals() == before + 1, url
            assert denied[0].actor_id == user.pk and denied[0].request_id == body["request_id"]


def test_a_reader_asking_for_what_is_not_there_gets_a_404_that_is_no_refusal(trail):
    client = as_user(fresh(trail.gina))
    before = refusals()
    _problem(client.get(f"{ENTRIES}/987654321"), 404)
    _problem(client.get("/api/v1/audit/checkpoints/987654321"), 404)
    _problem(client.get(f"{EVIDENCE}?run=no-such-run"), 404)
    _problem(client.get(f"{ENTRIES}/{2**70}"), 404)  # beyond a bigint: still only a 404
    assert refusals() == before


def test_tokens_read_the_trail_and_expired_or_revoked_ones_are_401(trail):
    from audit import clock

    for action in ("view", "add", "change"):
        services.grant(trail.admins, f"governance.{action}_apitoken", actor=SYSTEM)
    issuer = fresh(trail.gina)
    row, token = services.issue_token(trail.integration, actor=issuer, name="SIEM", read_only=True)
    assert len(pages(bearer(token), ENTRIES)) >= 4
    assert bearer(token).get(LATEST).status_code == 200
    with clock.frozen() as frozen:
        _, short = services.issue_token(
            trail.integration,
            actor=issuer,
            name="short",
            expires_at=clock.now() + dt.timedelta(minutes=5),
        )
        frozen.advance(301)
        _problem(bearer(short).get(ENTRIES), 401)
    services.revoke_token(row, actor=issuer, reason="rotated")
    _problem(bearer(token).get(ENTRIES), 401)
    _problem(APIClient().get(ENTRIES), 401)


# --- proofs -------------------------------------------------------------------------------


def _independent_inclusion_root(leaf: bytes, index: int, size: int, path: list[bytes]) -> bytes:
    """Recompute a root from a leaf hash and its audit path (RFC 9162 2.1.3.2), from scratch."""
    fn, sn, r = index, size - 1, leaf
    for p in path:
        assert sn != 0
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    assert sn == 0
    return r


def _verify_signature(checkpoint: dict) -> None:
    """Check a checkpoint's Ed25519 signature with the key this test configured."""
    public = keys.parse_private_key(TEST_KEY).public_key()
    message = (
        f"steward-checkpoint/1\n{checkpoint['key_id']}\n{checkpoint['tree_size']}\n"
        f"{checkpoint['root_hash']}\n{checkpoint['timestamp']}\n"
    ).encode()
    public.verify(base64.b64decode(checkpoint["signature"]), message)  # raises when it fails
    assert base64.b64decode(checkpoint["public_key"]) == keys.public_key_bytes(public)


def test_an_entry_proof_from_the_api_verifies_on_its_own(trail):
    entry = AuditEntry.objects.get(action="approval.decided")
    body = as_user(fresh(trail.gina)).get(f"{ENTRIES}/{entry.pk}").json()
    assert body["status"] == "covered" and body["covered"] is True
    assert body["body"] == {"decision": "approve"} and body["erased"] is None
    leaf_bytes = json.dumps(
        body["leaf"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()
    leaf = hashlib.sha256(b"\x00" + leaf_bytes).digest()
    assert leaf.hex() == body["leaf_hash"] and body["leaf"]["seq"] == body["seq"]
    assert body["leaf"]["body_digest"] == body["body_digest"]
    canonical_body = json.dumps(body["body"], sort_keys=True, separators=(",", ":")).encode()
    assert hashlib.sha256(canonical_body).hexdigest() == body["body_digest"]
    checkpoint = body["checkpoint"]
    path = [bytes.fromhex(node) for node in body["inclusion_proof"]]
    root = _independent_inclusion_root(leaf, body["seq"], checkpoint["tree_size"], path)
    assert root.hex() == checkpoint["root_hash"]
    _verify_signature(checkpoint)
    # A changed byte of the signed checkpoint does not verify.
    forged = dict(checkpoint, tree_size=checkpoint["tree_size"] + 1)
    with pytest.raises(InvalidSignature):
        _verify_signature(forged)
    assert isinstance(keys.parse_private_key(TEST_KEY).public_key(), Ed25519PublicKey)


def test_an_entry_is_proven_against_a_checkpoint_the_caller_kept(trail):
    client = as_user(fresh(trail.gina))
    entry = AuditEntry.objects.get(action="agent.prompt")
    old = AuditCheckpoint.objects.order_by("-id").first()
    audit.record(action="later.one", actor=SYSTEM)
    seal()
    newest = client.get(f"{ENTRIES}/{entry.pk}").json()
    kept = client.get(f"{ENTRIES}/{entry.pk}", {"checkpoint": old.pk}).json()
    assert newest["checkpoint"]["id"] != old.pk and kept["checkpoint"]["id"] == old.pk
    for proven in (newest, kept):
        size, root = proven["checkpoint"]["tree_size"], proven["checkpoint"]["root_hash"]
        path = [bytes.fromhex(node) for node in proven["inclusion_proof"]]
        leaf = bytes.fromhex(proven["leaf_hash"])
        assert merkle.verify_inclusion(leaf, proven["seq"], size, path, bytes.fromhex(root))


def test_an_entry_no_checkpoint_covers_yet_says_so(trail):
    client = as_user(fresh(trail.gina))
    pending = audit.record(action="fresh.entry", actor=SYSTEM, body={"n": 1})
    body = client.get(f"{ENTRIES}/{pending.pk}").json()
    assert body["status"] == "pending" and body["seq"] is None and body["covered"] is False
    assert body["checkpoint"] is None and body["inclusion_proof"] is None
    assert body["leaf"] is None and body["body"] == {"n": 1}
    assert pending.pk not in {row["id"] for row in pages(client, ENTRIES)}  # listed once numbered
    sequence_all()
    body = client.get(f"{ENTRIES}/{pending.pk}").json()
    assert body["status"] == "sequenced" and body["seq"] is not None
    assert body["covered"] is False and body["checkpoint"] is None
    assert pending.pk in {row["id"] for row in pages(client, ENTRIES)}
    audit.sign_checkpoint(force=True)
    assert client.get(f"{ENTRIES}/{pending.pk}").json()["status"] == "covered"


def test_an_erased_body_is_gone_and_its_proof_still_verifies(trail):
    client = as_user(fresh(trail.gina))
    entry = AuditEntry.objects.get(action="agent.prompt")
    erasure = audit.erase_body(entry, actor=fresh(trail.gina), reason="GDPR request 42")
    seal()
    body = client.get(f"{ENTRIES}/{entry.pk}").json()
    assert body["body"] is None
    assert body["erased"]["erasure_entry_id"] == erasure.pk
    assert body["erased"]["reason"] == "GDPR request 42" and body["erased"]["erased_at"]
    assert body["body_digest"] and body["leaf"]["body_digest"] == body["body_digest"]
    checkpoint = body["checkpoint"]
    assert merkle.verify_inclusion(
        bytes.fromhex(body["leaf_hash"]),
        body["seq"],
        checkpoint["tree_size"],
        [bytes.fromhex(node) for node in body["inclusion_proof"]],
        bytes.fromhex(checkpoint["root_hash"]),
    )


def test_a_consistency_proof_shows_the_newer_checkpoint_extends_the_older(trail):
    client = as_user(fresh(trail.gina))
    old = AuditCheckpoint.objects.order_by("-id").first()
    for n in range(5):
        audit.record(action="later.entry", actor=SYSTEM, body={"n": n})
    seal()
    new = AuditCheckpoint.objects.order_by("-id").first()
    latest = client.get(LATEST).json()
    assert latest["id"] == new.pk and latest["tree_size"] == new.tree_size
    _verify_signature(latest)
    for query in ({"from": old.pk, "to": new.pk}, {"from_size": old.tree_size}):
        body = client.get(CONSISTENCY, query).json()
        assert body["old"]["id"] == old.pk and body["new"]["id"] == new.pk
        proof = [bytes.fromhex(node) for node in body["proof"]]
        assert merkle.verify_consistency(
            old.tree_size,
            new.tree_size,
            bytes.fromhex(old.root_hash),
            bytes.fromhex(new.root_hash),
            proof,
        )
    backwards = _problem(client.get(CONSISTENCY, {"from": new.pk, "to": old.pk}), 400)
    assert "from" in backwards["errors"]
    neither = _problem(client.get(CONSISTENCY), 400)
    assert "from" in neither["errors"]
    _problem(client.get(CONSISTENCY, {"from_size": old.tree_size + 1}), 404)


def test_a_log_changed_after_it_was_signed_cannot_prove_anything(trail):
    from tests.audit.conftest import attacker

    client = as_user(fresh(trail.gina))
    entry = AuditEntry.objects.get(action="agent.prompt")
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditleaf SET leaf_hash = %s WHERE entry_id = %s", [b"\0" * 32, entry.pk]
        )
    body = _problem(client.get(f"{ENTRIES}/{entry.pk}"), 409)
    assert "audit_verify" in body["detail"]
    size = AuditCheckpoint.objects.get().tree_size
    _problem(client.get(CONSISTENCY, {"from_size": size}), 409)


def test_a_runs_evidence_bundle_downloads_and_verifies_offline(trail, tmp_path):
    client = as_user(fresh(trail.gina))
    late = audit.record(action="run.finished", actor=SYSTEM, run_id="r1")
    response = client.get(EVIDENCE, {"run": "r1"})
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="evidence-run-r1.json"'
    bundle = response.json()
    assert {e["leaf"]["action"] for e in bundle["entries"]} == {
        "run.started",
        "agent.prompt",
        "approval.decided",
    }
    assert bundle["not_covered"] == [late.pk]
    path = tmp_path / "r1.json"
    path.write_bytes(response.content)
    checked = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "verify_evidence.py"), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.startswith("OK: 3 entries verified")
    _problem(client.get(EVIDENCE), 400)


# --- the report's filters -----------------------------------------------------------------


FILTERS = [
    {},
    {"run_id": "r1"},
    {"actor": "maya"},
    {"actor_kind": "agent"},
    {"agent": "payments-agent"},
    {"action": "run.*"},
    {"action": "run.started"},
    {"target_type": "orchestrator.workflowrun", "target_id": "r1"},
    {"request_id": "req-2"},
    {"seq_min": 3, "seq_max": 30},
]


def test_the_api_filters_as_the_report_page_does(trail):
    first = AuditEntry.objects.filter(action="run.started", run_id="r1").get()
    FILTERS.append({"since": first.created_at.isoformat()})
    FILTERS.append({"until": first.created_at.isoformat(), "action": "governance.*"})
    client = as_user(fresh(trail.gina))
    seal()  # the login's own entry too: the API lists sequenced entries, the report all
    for query in FILTERS:
        response = client.get(reverse("audit:export-json"), query)
        assert response.status_code == 200, query
        report = {row["id"] for row in json.loads(b"".join(response.streaming_content))}
        api = {row["id"] for row in pages(client, ENTRIES, {**query, "page_size": 500})}
        assert api == report, query
        assert report or query.get("until"), query
    bad = _problem(client.get(ENTRIES, {"since": "nonsense", "seq_min": -1}), 400)
    assert set(bad["errors"]) == {"since", "seq_min"}
    newest_first = client.get(ENTRIES, {"ordering": "-seq"}).json()["results"]
    assert [row["seq"] for row in newest_first] == sorted(
        (row["seq"] for row in newest_first), reverse=True
    )


def test_listing_entries_costs_the_same_queries_for_any_page_size(trail):
    client = as_user(fresh(trail.gina))

    def cost(limit: int) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(ENTRIES, {"page_size": limit})
        assert len(response.json()["results"]) == limit
        return len(queries)

    small = cost(2)
    for n in range(30):
        audit.record(action="bulk.entry", actor=SYSTEM, body={"n": n})
    sequence_all()
    assert cost(30) == small
    assert small <= 6


def test_a_time_in_any_utc_offset_filters_and_one_out_of_range_is_400(trail):
    # Python takes offsets up to ±23:59, PostgreSQL only ±15:59: the filter sends UTC (was 500).
    client = as_user(fresh(trail.gina))
    seal()
    newest = AuditEntry.objects.latest("created_at").created_at
    far_east = dt.timezone(dt.timedelta(hours=17, minutes=45))
    later = (newest + dt.timedelta(hours=1)).astimezone(far_east).isoformat()
    assert client.get(ENTRIES, {"since": later}).json()["results"] == []
    assert client.get(ENTRIES, {"until": later}).json()["results"]
    nowhere = client.get(ENTRIES, {"since": "0001-01-01T00:00:00+10:00"})
    assert "since" in _problem(nowhere, 400)["errors"]


def test_a_cursor_the_api_did_not_write_is_a_400(trail):
    body = _problem(as_user(fresh(trail.gina)).get(ENTRIES, {"cursor": "kept"}), 400)
    assert "cursor" in body["errors"]
