"""record(), record_many() and erase_body(): what an entry holds, and that it shares the
caller's transaction."""

import contextlib

import pytest
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction

from audit import limits, services
from audit.actors import SYSTEM
from audit.context import acting_as
from audit.evidence import body_digest
from audit.models import AuditBody, AuditEntry


@pytest.mark.django_db
def test_record_copies_actor_and_target(user):
    group = Group.objects.create(name="ops")
    entry = services.record(
        action="group.renamed",
        actor=user,
        target=group,
        run_id=12,
        step_id=34,
        request_id="req-1",
        decision={"allowed": True, "policy": "p1"},
        body={"old": "ops", "new": "ops-eu"},
    )
    entry.refresh_from_db()
    assert (entry.actor_id, entry.actor_name, entry.actor_kind) == (user.pk, "alice", "user")
    assert (entry.target_type, entry.target_id, entry.target_repr) == (
        "auth.group",
        str(group.pk),
        "ops",
    )
    assert (entry.run_id, entry.step_id, entry.request_id) == ("12", "34", "req-1")
    assert entry.decision == '{"allowed":true,"policy":"p1"}'  # canonical JSON text
    assert entry.body_digest == body_digest({"old": "ops", "new": "ops-eu"})
    assert AuditBody.objects.get(entry=entry).content == '{"new":"ops-eu","old":"ops"}'


@pytest.mark.django_db
def test_actor_kind_defaults(user):
    user.is_agent = True
    system = services.record(action="tick", actor=SYSTEM)
    agent = services.record(action="think", actor=user)
    forced = services.record(action="think", actor=user, actor_kind="user")
    assert (system.actor_kind, system.actor_id, system.actor_name) == ("system", None, "system")
    assert agent.actor_kind == "agent"
    assert forced.actor_kind == "user"
    with pytest.raises(ValueError, match="actor_kind"):
        services.record(action="x", actor_kind="robot", actor=user)
    with pytest.raises(ValueError, match="action"):
        services.record(action="", actor=SYSTEM)


@pytest.mark.django_db
def test_request_id_comes_from_the_context_when_not_given():
    with acting_as(None, request_id="ctx-42"):
        implicit = services.record(action="a", actor=SYSTEM)
        explicit = services.record(action="b", request_id="given", actor=SYSTEM)
    assert (implicit.request_id, explicit.request_id) == ("ctx-42", "given")


@pytest.mark.django_db
def test_large_body_fits():
    prompt = "x" * 5_000_000
    entry = services.record(action="agent.prompt", body={"prompt": prompt}, actor=SYSTEM)
    assert len(AuditBody.objects.get(entry=entry).content) > 5_000_000
    assert entry.body_digest == body_digest({"prompt": prompt})


@pytest.mark.django_db
def test_record_many_writes_all_in_order(user):
    saved = services.record_many(
        [
            {"action": "step.started", "run_id": 1, "step_id": 1, "actor": SYSTEM},
            {
                "action": "step.succeeded",
                "run_id": 1,
                "step_id": 1,
                "body": {"out": 1},
                "actor": SYSTEM,
            },
            {"action": "run.succeeded", "run_id": 1, "actor": user},
        ]
    )
    assert [e.action for e in saved] == ["step.started", "step.succeeded", "run.succeeded"]
    assert all(e.pk for e in saved)
    assert AuditEntry.objects.filter(run_id="1").count() == 3
    assert AuditBody.objects.filter(entry__in=saved).count() == 1
    assert AuditBody.objects.get(entry__in=saved).entry_id == saved[1].pk  # the right entry's
    stored = AuditEntry.objects.in_bulk([e.pk for e in saved])
    assert [stored[e.pk].action for e in saved] == [e.action for e in saved]
    assert saved[2].actor_name == "alice"
    assert (saved[0].actor_kind, saved[0].actor_name) == ("system", "system")
    with pytest.raises(TypeError, match="actor"):
        services.record_many([{"action": "nobody"}])
    with pytest.raises(TypeError, match="actor"):
        services.record_many([{"action": "nobody", "actor": None}])
    with pytest.raises(TypeError, match="colour"):
        services.record_many([{"action": "x", "colour": "red"}])
    assert services.record_many([]) == []


@pytest.mark.django_db
def test_record_many_stores_every_value_exactly_as_record_does(user):
    """The batch travels as one JSON text: quotes, backslashes, non-ASCII and times survive."""
    tricky = 'qu"ote \\ back\\slash \u00e9t\u00e9 \U0001f600 tab\t new\nline {"json": [1]}'
    fields = {
        "action": "odd.values",
        "actor": user,
        "target_type": "x.y",
        "target_id": tricky[:64],
        "target_repr": tricky,
        "run_id": "7",
        "step_id": tricky[:64],
        "request_id": "r",
        "decision": {"why": tricky},
        "body": {"text": tricky, "n": 1.5, "none": None},
    }
    one = services.record(**fields)
    many = services.record_many([fields, {**fields, "body": None}])
    columns = ["created_at", "actor_id", "actor_name", "actor_kind", "action", "target_type"]
    columns += ["target_id", "target_repr", "run_id", "step_id", "request_id", "decision"]
    columns += ["body_digest"]
    stored = AuditEntry.objects.in_bulk([one.pk] + [entry.pk for entry in many])
    for entry in [one, *many]:
        assert [getattr(stored[entry.pk], name) for name in columns] == [
            getattr(entry, name) for name in columns
        ]
    assert stored[many[0].pk].target_repr == tricky
    assert AuditBody.objects.get(entry_id=many[0].pk).content == (
        AuditBody.objects.get(entry_id=one.pk).content
    )
    assert not AuditBody.objects.filter(entry_id=many[1].pk).exists()


@pytest.mark.django_db(transaction=True)
def test_rolled_back_action_leaves_no_entry():
    with pytest.raises(RuntimeError), transaction.atomic():
        Group.objects.create(name="doomed")
        services.record(
            action="group.created", target_type="auth.group", body={"n": 1}, actor=SYSTEM
        )
        services.record_many([{"action": "more", "actor": SYSTEM}])
        raise RuntimeError("the action fails after its audit entries were written")
    assert not Group.objects.filter(name="doomed").exists()
    assert not AuditEntry.objects.filter(action__in=["group.created", "more"]).exists()
    assert not AuditBody.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_failing_audit_write_aborts_the_action_even_when_the_error_is_swallowed():
    with transaction.atomic():
        Group.objects.create(name="half-done")
        # varchar(100): PostgreSQL refuses the insert. A careless caller that swallows the
        # error still cannot commit its action without its entry.
        with contextlib.suppress(DatabaseError):
            services.record(action="a" * 101, actor=SYSTEM)
    assert not Group.objects.filter(name="half-done").exists()
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_audit_write_that_cannot_be_encoded_aborts_the_action():
    refused = 'audit entry x cannot be written: body\\["not json"\\] is of type object'
    with pytest.raises(limits.Unstorable, match=refused), transaction.atomic():
        Group.objects.create(name="half-done")
        services.record(action="x", body={"not json": object()}, actor=SYSTEM)
    assert not Group.objects.filter(name="half-done").exists()
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_erase_body_keeps_the_digest_and_records_the_erasure(user, staff):
    entry = services.record(action="agent.prompt", actor=user, body={"email": "a@example.com"})
    erasure = services.erase_body(entry, actor=staff, reason="GDPR request 7")
    body = AuditBody.objects.get(entry=entry)
    assert body.content is None and body.erased_at and body.erasure_entry_id == erasure.pk
    entry.refresh_from_db()
    assert entry.body_digest == body_digest({"email": "a@example.com"})
    assert (erasure.action, erasure.target_id, erasure.actor_name) == (
        services.ERASURE_ACTION,
        str(entry.pk),
        "root-admin",
    )
    with pytest.raises(ValueError, match="already erased"):
        services.erase_body(entry, actor=staff, reason="again")
    with pytest.raises(ValueError, match="reason"):
        services.erase_body(erasure, actor=staff, reason=" ")
    bodiless = services.record(action="nothing", actor=SYSTEM)
    with pytest.raises(ValueError, match="no body"):
        services.erase_body(bodiless, actor=staff, reason="r")


@pytest.mark.postgres
def test_record_uses_prepared_inserts_and_prepares_nothing_else(user):
    for n in range(3):
        services.record(action="prepared.entry", target_id=str(n), actor=SYSTEM)
        services.record(action="prepared.with_body", body={"n": n}, actor=SYSTEM)
    for _ in range(10):  # Django's own queries, well past psycopg's usual threshold of 5
        list(AuditEntry.objects.filter(action="prepared.entry"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE from_sql = false")
        statements = [row[0] for row in cursor.fetchall()]
    assert statements, "record() did not prepare its insert"
    audit_inserts = ("INSERT INTO audit_auditentry", "INSERT INTO audit_auditbody", "WITH entry AS")
    assert all(s.startswith(audit_inserts) for s in statements), statements
    assert AuditEntry.objects.filter(action__startswith="prepared.").count() == 6
