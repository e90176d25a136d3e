"""The read-only admin, the report page and its exports: staff only, filtered by the one query
service, with each entry's verification status."""

import csv
import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from audit import services
from audit.actors import SYSTEM
from audit.models import AuditEntry
from audit.queries import AuditFilter, search_entries

pytestmark = pytest.mark.django_db


@pytest.fixture
def entries(user):
    """A few entries of two runs, by a user, an agent and the system."""
    services.record(action="run.started", actor=user, run_id="r1")
    services.record(action="agent.prompt", actor=user, actor_kind="agent", run_id="r1")
    services.record(action="run.started", run_id="r2", body={"input": 1}, actor=SYSTEM)
    return AuditEntry.objects.filter(run_id__in=["r1", "r2"])


def test_query_service_filters(entries):
    assert search_entries(AuditFilter(run_id="r1")).count() == 2
    assert search_entries(AuditFilter(actor="alice")).count() == 2
    assert search_entries(AuditFilter(agent="alice")).get().action == "agent.prompt"
    assert search_entries(AuditFilter(action="run.*")).count() == 2
    assert search_entries(AuditFilter(actor_kind="system", run_id="r2")).count() == 1


def test_admin_is_read_only_and_shows_status(client, staff, entries):
    client.force_login(staff)
    listing = client.get(reverse("admin:audit_auditentry_changelist") + "?run_id=r1")
    assert listing.status_code == 200
    assert b"pending" in listing.content  # not sequenced yet inside this test's transaction
    assert client.get(reverse("admin:audit_auditentry_add")).status_code == 403
    entry = entries.first()
    detail = client.get(reverse("admin:audit_auditentry_change", args=[entry.pk]))
    assert detail.status_code == 200 and b"Save" not in detail.content
    delete = client.post(reverse("admin:audit_auditentry_delete", args=[entry.pk]), {"post": 1})
    assert delete.status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


REPORT_URLS = ("audit:report", "audit:export-csv", "audit:export-json")


def _person(username: str, *, staff: bool, may_view: bool):
    """Return a user, staff or not, holding audit.view_auditentry or not."""
    person = get_user_model().objects.create_user(username, password="pw-12345678", is_staff=staff)
    if may_view:
        person.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    return person


def test_report_and_exports_send_anonymous_visitors_to_login(client, entries):
    for name in REPORT_URLS:
        response = client.get(reverse(name))
        assert response.status_code == 302 and "login" in response["Location"]


@pytest.mark.parametrize(
    ("staff", "may_view"), [(False, False), (True, False), (False, True)], ids=str
)
def test_report_and_exports_refuse_who_the_admin_would_refuse(client, entries, staff, may_view):
    client.force_login(_person("outsider", staff=staff, may_view=may_view))
    for name in REPORT_URLS:
        assert client.get(reverse(name)).status_code == 403, name
    listing = client.get(reverse("admin:audit_auditentry_changelist"))
    assert listing.status_code in (302, 403)  # the admin refuses them as well


def test_staff_with_the_view_permission_reads_report_and_exports(client, entries):
    client.force_login(_person("auditor", staff=True, may_view=True))
    for name in REPORT_URLS:
        assert client.get(reverse(name)).status_code == 200, name
    assert client.get(reverse("admin:audit_auditentry_changelist")).status_code == 200


def test_report_page_filters(client, staff, entries):
    client.force_login(staff)
    response = client.get(reverse("audit:report"), {"run_id": "r1"})
    assert response.status_code == 200
    assert len(response.context["rows"]) == 2 and response.context["next_cursor"] is None
    assert b"agent.prompt" in response.content


def test_csv_and_json_exports(client, staff, entries):
    client.force_login(staff)
    response = client.get(reverse("audit:export-csv"), {"run_id": "r1"})
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert sorted(row["action"] for row in rows) == ["agent.prompt", "run.started"]
    response = client.get(reverse("audit:export-json"), {"action": "run.*"})
    data = json.loads(b"".join(response.streaming_content))
    assert sorted(row["run_id"] for row in data) == ["r1", "r2"]
    assert client.get(reverse("audit:export-json"), {"since": "nonsense"}).status_code == 400


@pytest.mark.django_db(transaction=True)
def test_admin_says_what_it_checked_and_proves_inclusion_in_the_signed_root(
    client, staff, monkeypatch
):
    from audit import admin as audit_admin
    from tests.audit.conftest import attacker, seal

    monkeypatch.setattr(audit_admin, "_signed_cache", (0.0, None))
    first = services.record(action="proved.one", body={"x": 1}, actor=SYSTEM)
    second = services.record(action="proved.two", actor=SYSTEM)
    seal()
    checkpoint = services.latest_checkpoint()
    client.force_login(staff)
    listing = client.get(reverse("admin:audit_auditentry_changelist"))
    assert b"Entry vs. its leaf" in listing.content and b"Signed checkpoint" in listing.content
    assert b"matches leaf" in listing.content
    assert f"in #{checkpoint.pk}".encode() in listing.content
    page = client.get(reverse("admin:audit_auditentry_change", args=[first.pk]))
    assert b"its inclusion proof verifies against the signed root" in page.content

    # Rewrite the other entry's stored leaf hash: each entry still matches its own leaf, but
    # the stored leaves no longer reach the signed root, and the entry's page says so.
    with attacker() as cursor:
        cursor.execute(
            "UPDATE audit_auditleaf SET leaf_hash = %s WHERE entry_id = %s", [b"\0" * 32, second.pk]
        )
    page = client.get(reverse("admin:audit_auditentry_change", args=[first.pk]))
    assert b"matches leaf" in page.content
    assert b"FAILED: the stored leaves do not reach the signed root" in page.content


@pytest.mark.postgres
@pytest.mark.parametrize("action", ["run.started", "run.*"])
def test_one_action_index_serves_exact_actions_and_prefixes(entries, action):
    from django.db import connection

    sql, params = search_entries(AuditFilter(action=action)).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a few rows: force the planner's hand
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "audit_action_idx" in plan


def test_the_trail_is_read_whole_by_holders_of_the_permission_and_not_at_all_by_others(entries):
    reader = _person("reader", staff=True, may_view=True)
    runs_only = _person("runs-only", staff=True, may_view=False)
    runs_only.user_permissions.add(Permission.objects.get(codename="view_workflowrun"))
    assert set(AuditEntry.objects.restrict(reader)) == set(AuditEntry.objects.all())
    assert not AuditEntry.objects.restrict(runs_only).exists()  # not "entries of my runs"
    body = AuditEntry.objects.get(run_id="r2").body_row
    assert type(body).objects.restrict(reader).filter(pk=body.pk).exists()  # follows its entry
    assert not type(body).objects.restrict(runs_only).exists()
