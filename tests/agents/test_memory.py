"""Governed shared memory: permissions, optimistic concurrency, audit, retention, legal hold."""

import threading

import pytest
from django.db import connection

from agents import services
from agents.models import Classification, MemoryEntry, MemoryNamespace
from agents.tasks import purge_memory
from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance.actions.common import digest
from governance.permissions import AccessDenied
from tests.agents.conftest import body_of, step_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def incidents(world):
    namespace = services.create_namespace(
        slug="incidents",
        name="Incident knowledge",
        classification=Classification.CONFIDENTIAL,
        retention_seconds=3600,
        actor=SYSTEM,
    )
    services.grant_access(namespace, world.alice, read=True, write=True, actor=SYSTEM)
    services.grant_access(namespace, world.bob, read=True, write=False, actor=SYSTEM)
    return namespace


def test_a_write_states_the_version_it_read_and_a_stale_one_is_a_conflict(world, incidents):
    first = services.write_entry(
        incidents, "db-1", {"state": "degraded"}, expected_version=0, user=world.alice
    )
    assert first["version"] == 1
    second = services.write_entry(
        incidents, "db-1", {"state": "down"}, expected_version=1, user=world.alice
    )
    assert second["version"] == 2
    with pytest.raises(services.MemoryConflict) as caught:
        services.write_entry(
            incidents, "db-1", {"state": "fine"}, expected_version=1, user=world.alice
        )
    assert caught.value.details["current_version"] == 2
    entry = MemoryEntry.objects.get(namespace=incidents, key="db-1")
    assert (entry.value, entry.version) == ({"state": "down"}, 2)  # never silently overwritten
    conflict = AuditEntry.objects.get(action="agents.memory.conflict")
    assert conflict.actor_name == "alice"
    with pytest.raises(services.MemoryConflict):  # a new key must be written at version 0
        services.write_entry(incidents, "db-2", 1, expected_version=3, user=world.alice)


def test_read_and_write_need_their_permission_and_everything_is_audited(world, incidents):
    services.write_entry(incidents, "k", "v", expected_version=0, user=world.alice)
    assert services.read_entry(incidents, "k", user=world.bob)["value"] == "v"
    with pytest.raises(AccessDenied):
        services.write_entry(incidents, "k", "w", expected_version=1, user=world.bob)
    with pytest.raises(AccessDenied):
        services.read_entry(incidents, "k", user=world.oscar)
    services.grant_access(
        incidents, world.approvers, read=True, actor=SYSTEM
    )  # oscar is not an approver
    with pytest.raises(AccessDenied):
        services.read_entry(incidents, "k", user=world.oscar)
    actions = list(
        AuditEntry.objects.filter(target_type="agents.memorynamespace").values_list(
            "action", "actor_name"
        )
    )
    assert ("agents.memory.written", "alice") in actions
    assert ("agents.memory.read", "bob") in actions
    denied = AuditEntry.objects.filter(action="governance.access_denied").values_list(
        "actor_name", flat=True
    )
    assert sorted(denied) == ["bob", "oscar", "oscar"]
    written = AuditEntry.objects.get(action="agents.memory.written")
    body = body_of(written)
    assert "value" not in body and body["value_digest"] == digest("v")  # the digest, not the data


def test_retention_purges_expired_entries_and_audits_the_purge(world, incidents):
    with clock.frozen() as frozen:
        services.write_entry(incidents, "old", 1, expected_version=0, user=world.alice)
        frozen.advance(1800)
        services.write_entry(incidents, "new", 2, expected_version=0, user=world.alice)
        frozen.advance(1801)  # "old" is 3601 s old, "new" 1801 s
        assert services.read_entry(incidents, "old", user=world.alice)["found"] is False
        assert services.purge_expired(actor=SYSTEM) == {"purged": 1, "held": 0, "copies_erased": 0}
    assert list(MemoryEntry.objects.values_list("key", flat=True)) == ["new"]
    purge = AuditEntry.objects.get(action="agents.memory.purged")
    assert purge.actor_kind == "system"
    assert body_of(purge)["entries"] == 1


def test_a_legal_hold_stops_the_purge_until_it_is_lifted(world, incidents):
    with clock.frozen() as frozen:
        services.write_entry(incidents, "evidence", {"x": 1}, expected_version=0, user=world.alice)
        services.set_legal_hold(incidents, True, actor=SYSTEM, reason="litigation 2026-17")
        frozen.advance(7200)
        assert purge_memory()["held"] == 1
        assert MemoryEntry.objects.filter(key="evidence").exists()
        assert services.read_entry(incidents, "evidence", user=world.alice)["found"] is True
        services.set_legal_hold(incidents, False, actor=SYSTEM, reason="case closed")
        assert purge_memory()["purged"] == 1
    assert not MemoryEntry.objects.exists()
    holds = AuditEntry.objects.filter(action="agents.memory.legal_hold").count()
    assert holds == 2


# --- through agents' tools ------------------------------------------------------------------------

WRITER = [
    {
        "when": "turn == 1",
        "tool_calls": [
            {
                "tool": "memory.write",
                "arguments": {
                    "namespace": "run",
                    "key": "finding",
                    "value": "{{ input.finding }}",
                    "expected_version": 0,
                },
            }
        ],
    },
    {"final": {"write": "{{ results[0] }}"}, "confidence": 1},
]
READER = [
    {
        "when": "turn == 1",
        "tool_calls": [
            {"tool": "memory.read", "arguments": {"namespace": "run", "key": "finding"}}
        ],
    },
    {"final": {"read": "{{ results[0] }}"}, "confidence": 1},
]


def test_agents_of_one_run_share_its_namespace(world, make_agent, make_workflow_with):
    make_agent("writer", WRITER, tools=["memory.write"])
    make_agent("reader", READER, tools=["memory.read"])
    run = make_workflow_with(
        [
            {"id": "w", "type": "agent", "agent": "writer", "task": {"finding": "disk full"}},
            {"id": "r", "type": "agent", "agent": "reader", "depends_on": ["w"]},
        ]
    )
    assert run.status == "succeeded", run.error
    read = step_of(run, "r").output["result"]["read"]
    assert read["ok"] and read["result"]["value"] == "disk full"
    assert read["result"]["written_by"] == "writer" and read["result"]["version"] == 1
    namespace = MemoryNamespace.objects.get(slug=f"run-{run.pk}")
    assert namespace.scope == "run" and namespace.run_id == run.pk


def test_a_stale_write_by_an_agent_is_a_conflict_it_can_recover_from(world, make_agent, run_agent):
    rules = [
        {
            "when": "turn == 1",
            "tool_calls": [
                {"tool": "memory.read", "arguments": {"namespace": "shared", "key": "n"}}
            ],
        },
        {
            "when": "turn == 2",
            "tool_calls": [{"tool": "test.bump_shared", "arguments": {}}],
        },
        {
            "when": "turn == 3",
            "tool_calls": [
                {
                    "tool": "memory.write",
                    "arguments": {
                        "namespace": "shared",
                        "key": "n",
                        "value": 100,
                        "expected_version": "{{ history[0].result.version }}",
                    },
                }
            ],
        },
        {
            "when": "turn == 4",
            "tool_calls": [
                {"tool": "memory.read", "arguments": {"namespace": "shared", "key": "n"}}
            ],
        },
        {
            "when": "turn == 5",
            "tool_calls": [
                {
                    "tool": "memory.write",
                    "arguments": {
                        "namespace": "shared",
                        "key": "n",
                        "value": "{{ results[0].result.value + 1 }}",
                        "expected_version": "{{ results[0].result.version }}",
                    },
                }
            ],
        },
        {"final": {"outcomes": "{{ history }}"}, "confidence": 1},
    ]
    agent = make_agent("counter", rules, tools=["memory.read", "memory.write", "test.bump_shared"])
    shared = services.create_namespace(slug="shared", name="Shared", actor=SYSTEM)
    services.grant_access(shared, agent, read=True, write=True, actor=SYSTEM)
    services.write_entry(shared, "n", 1, expected_version=0, user=SYSTEM)
    run = run_agent("counter", {})
    assert run.status == "succeeded", run.error
    outcomes = step_of(run).output["result"]["outcomes"]
    assert outcomes[2]["ok"] is False and outcomes[2]["error"] == "MemoryConflict"
    assert outcomes[4]["ok"] is True and outcomes[4]["result"]["version"] == 3
    entry = MemoryEntry.objects.get(namespace=shared, key="n")
    assert (entry.value, entry.version) == (3, 3)  # 1, bumped to 2 elsewhere, then 2 + 1
    assert AuditEntry.objects.filter(action="agents.memory.conflict").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_version_exactly_one_wins(world):
    namespace = services.create_namespace(slug="race", name="Race", actor=SYSTEM)
    services.write_entry(namespace, "k", 0, expected_version=0, user=SYSTEM)
    barrier = threading.Barrier(8)
    outcomes = []

    def writer(n):
        try:
            barrier.wait()
            services.write_entry(namespace, "k", n, expected_version=1, user=SYSTEM)
            outcomes.append("won")
        except services.MemoryConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    assert MemoryEntry.objects.get(key="k").version == 2


def test_a_workflow_namespace_is_reachable_only_from_runs_of_that_workflow(world, make_agent):
    from orchestrator import engine
    from orchestrator import services as workflows

    rules = [
        {
            "when": "turn == 1",
            "tool_calls": [
                {"tool": "memory.read", "arguments": {"namespace": "wf-notes", "key": "k"}}
            ],
        },
        {"final": {"read": "{{ results[0] }}"}, "confidence": 1},
    ]
    agent = make_agent("notetaker", rules, tools=["memory.read"])
    steps = {"steps": [{"id": "work", "type": "agent", "agent": "notetaker"}]}
    own = workflows.create_workflow(slug="own-wf", name="Own", definition=steps, actor=SYSTEM)
    other = workflows.create_workflow(slug="other-wf", name="Other", definition=steps, actor=SYSTEM)
    notes = services.create_namespace(
        slug="wf-notes",
        name="Notes",
        scope="workflow",
        workflow_id=own.pk,
        actor=SYSTEM,
    )
    services.grant_access(
        notes, agent, read=True, actor=SYSTEM
    )  # the permission alone is not enough
    services.write_entry(notes, "k", "kept", expected_version=0, user=SYSTEM)
    runs = [workflows.start_run(workflow, {}, started_by=SYSTEM) for workflow in (own, other)]
    engine.drain()
    for run in runs:
        run.refresh_from_db()
    allowed = step_of(runs[0]).output["result"]["read"]
    assert allowed["ok"] is True and allowed["result"]["value"] == "kept"
    refused = step_of(runs[1]).output["result"]["read"]
    assert refused["refused"] is True and refused["stage"] == "permission"
    assert "only from runs of that workflow" in refused["reason"]
