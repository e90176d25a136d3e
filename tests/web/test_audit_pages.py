"""The audit pages outside the admin: the report, an entry with its proof checked (verified,
pending, erased, tampered), a run's evidence bundle, the trail's health; through the matrix."""

from __future__ import annotations

import contextlib
import datetime as dt
import json

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit import services as audit
from audit.actors import SYSTEM
from audit.evidence import load_bundle, verify_bundle
from audit.models import AuditEntry
from governance import services as governance
from tests.audit.conftest import _audit_key, attacker, seal, sequence_all  # noqa: F401
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for

PAGES = ["audit:report", "audit:health"]
# The trail is read whole or not at all: only the auditor (staff with audit.view_auditentry).
READS = {
    "auditor": 200,
    "gina": 403,
    "alice": 403,
    "maya": 403,
    "integration": 302,  # no session for integrations or agents: the API serves them
    "agent": 302,
    "oscar": 403,
}


@pytest.fixture
def auditor(company):
    """oscar, made an auditor: staff holding the audit models' view permissions."""
    role = governance.create_role(name="Auditors", owner=company.gina, actor=SYSTEM)
    for perm in (
        "audit.view_auditentry",
        "audit.view_auditcheckpoint",
        "audit.view_auditverification",
        "audit.view_audittreestate",
    ):
        governance.grant(role, perm, actor=SYSTEM)
    auditor = governance.create_person(
        username="aud", password="pw-aud-12345", is_staff=True, actor=SYSTEM
    )
    governance.add_member(role, auditor, actor=SYSTEM)
    return fresh(auditor)


def _user(company, auditor, name):
    return auditor if name == "auditor" else fresh(getattr(company, name))


@pytest.mark.parametrize("name", list(READS))
def test_the_audit_pages_through_the_matrix(company, auditor, name):
    person = _user(company, auditor, name)
    client = client_for(person)
    entry = audit.record(action="test.thing", actor=SYSTEM, run_id="r1", body={"a": 1})
    refused = AuditEntry.objects.filter(action="governance.access_denied", actor_id=person.pk)
    before = refused.count()
    for url in [*(reverse(name) for name in PAGES), reverse("audit:entry", args=[entry.pk])]:
        response = client.get(url)
        assert response.status_code == READS[name], (name, url)
    assert refused.count() == before + (3 if READS[name] == 403 else 0)


def test_the_report_filters_pages_by_cursor_and_costs_no_query_per_row(company, auditor):
    client = client_for(auditor)
    for n in range(3):
        audit.record(action="test.thing", actor=SYSTEM, run_id="r9", body={"n": n})

    def count():
        with CaptureQueriesContext(connection) as captured:
            response = client.get(reverse("audit:report"), {"run_id": "r9"})
        return response, len(captured)

    response, few = count()
    assert len(response.context["rows"]) == 3
    for n in range(20):
        audit.record(action="test.thing", actor=SYSTEM, run_id="r9", body={"n": n})
    response, many = count()
    assert len(response.context["rows"]) == 23 and many == few
    export = client.get(reverse("audit:export-json"), {"run_id": "r9"})
    assert len(json.loads(b"".join(export.streaming_content))) == 23


def test_an_entry_escapes_its_body_and_says_it_is_pending_before_it_is_sequenced(company, auditor):
    entry = audit.record(
        action="test.thing", actor=SYSTEM, body={"note": "<script>window.pwned=1</script>"}
    )
    page = client_for(auditor).get(reverse("audit:entry", args=[entry.pk]))
    text = page.content.decode()
    assert page.context["check"].state == "pending"
    assert "<script>window.pwned" not in text and "&lt;script&gt;window.pwned" in text


@pytest.mark.django_db(transaction=True)
def test_an_entry_is_verified_against_its_signed_checkpoint_erased_and_bundled(company, auditor):
    entry = audit.record(action="test.thing", actor=SYSTEM, run_id="r7", body={"secret": "x"})
    sequence_all()
    client = client_for(auditor)
    check = client.get(reverse("audit:entry", args=[entry.pk])).context["check"]
    assert check.state in ("not_covered", "verified")  # a checkpoint may not cover it yet
    audit.sign_checkpoint(force=True)
    page = client.get(reverse("audit:entry", args=[entry.pk]))
    assert page.context["check"].state == "verified", page.context["check"].message
    assert "Verified" in page.content.decode()

    bundle = client.get(reverse("audit:evidence"), {"run": "r7"})
    assert bundle.status_code == 200
    assert verify_bundle(load_bundle(bundle.content)) == []
    since = (entry.created_at - dt.timedelta(seconds=1)).isoformat()
    ranged = client.get(reverse("audit:evidence"), {"since": since})  # a time range
    assert ranged.status_code == 200
    assert entry.pk in {e["leaf"]["entry_id"] for e in load_bundle(ranged.content)["entries"]}
    assert client.get(reverse("audit:evidence")).status_code == 400  # nothing chosen

    audit.erase_body(entry, actor=company.gina, reason="subject asked")
    erased = client.get(reverse("audit:entry", args=[entry.pk]))
    assert erased.context["erased"]["reason"] == "subject asked"
    assert "subject asked" in erased.content.decode()
    assert erased.context["check"].state == "verified"  # the digest stays, so the proof holds

    with attacker() as cursor:  # a database owner changes the entry after it was signed
        cursor.execute(
            "UPDATE audit_auditentry SET target_repr = 'changed' WHERE id = %s", [entry.pk]
        )
    tampered = client.get(reverse("audit:entry", args=[entry.pk]))
    assert tampered.context["check"].state == "failed"


@pytest.mark.django_db(transaction=True)
def test_the_health_page_shows_checkpoint_signature_lag_and_last_verification(company, auditor):
    client = client_for(auditor)
    seal()
    audit.record(action="test.unsequenced", actor=SYSTEM)
    health = client.get(reverse("audit:health")).context["health"]
    assert health["signature_ok"] and health["unsequenced"] >= 1 and health["tree_size"] >= 1
    assert health["verification"] is None
    with contextlib.suppress(SystemExit):  # it exits 1 on a failure: either result is shown
        call_command("audit_verify", "--quiet", "--workers", "1")
    health = client.get(reverse("audit:health")).context["health"]
    result = health["verification"]
    assert result.size >= 1 and result.finished_at is not None
    assert "Last full verification" in client.get(reverse("audit:health")).content.decode()


@pytest.mark.django_db(transaction=True)
def test_an_entrys_page_costs_the_same_queries_in_a_small_and_a_larger_trail(company, auditor):
    """The proof is read from the stored tree (one statement for its nodes), not leaf by leaf:
    an entry of a small trail and one of a trail 16 times larger cost the same queries."""
    client = client_for(auditor)

    def queries_for(entry) -> int:
        with CaptureQueriesContext(connection) as captured:
            page = client.get(reverse("audit:entry", args=[entry.pk]))
        assert page.context["check"].state == "verified", page.context["check"].message
        return len(captured)

    early = audit.record(action="test.thing", actor=SYSTEM, body={"n": 0})
    sequence_all()
    audit.sign_checkpoint(force=True)
    queries_for(early)  # warm: the first page also fills this process's caches
    few = queries_for(early)
    for n in range(62):
        audit.record(action="test.thing", actor=SYSTEM, body={"n": n})
    late = audit.record(action="test.thing", actor=SYSTEM, body={"n": "late"})
    sequence_all()
    audit.sign_checkpoint(force=True)
    assert queries_for(late) == few
    assert queries_for(early) == few


@pytest.mark.django_db(transaction=True)
def test_a_reader_of_the_entries_alone_sees_the_lag_counted_from_the_sequencers_cursor(
    company, auditor
):
    """Without view on the tree state, the health still counts from the sequencer's cursor: the
    same unsequenced entries as the auditor's, not a scan of the whole trail from id 0."""
    role = governance.create_role(name="Entry readers", owner=company.gina, actor=SYSTEM)
    governance.grant(role, "audit.view_auditentry", actor=SYSTEM)
    reader = governance.create_person(
        username="entries", password="pw-entries-123", is_staff=True, actor=SYSTEM
    )
    governance.add_member(role, reader, actor=SYSTEM)
    seal()
    audit.record(action="test.unsequenced", actor=SYSTEM)
    mine = client_for(fresh(reader)).get(reverse("audit:health")).context["health"]
    theirs = client_for(auditor).get(reverse("audit:health")).context["health"]
    assert mine["tree_size"] is None and theirs["tree_size"] >= 1  # the state stays theirs
    # Theirs is read after mine, and the pages may write entries of their own meanwhile (the
    # sequencer does not run in between): never fewer, never a count from the trail's start.
    assert 1 <= mine["unsequenced"] <= theirs["unsequenced"] <= mine["unsequenced"] + 2
    with CaptureQueriesContext(connection) as captured:
        client_for(fresh(reader)).get(reverse("audit:health"))
    behind = [q["sql"] for q in captured if "IS NULL" in q["sql"] and "audit_auditleaf" in q["sql"]]
    assert behind and all('"audit_auditentry"."id" > 0 ' not in sql for sql in behind)
