"""Idempotency-Key on run starts and signals: replay, another body, in flight, expiry, races.

The races run on PostgreSQL with two threads, each with its own connection: the first request
is held inside its transaction (after its run is written, before it commits) until the second
has answered or is seen waiting on a lock.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection, connections

from audit import clock
from orchestrator import engine, tasks
from orchestrator.api.idempotency import fingerprint
from orchestrator.models import IdempotencyKey, RunSignal, WorkflowRun
from tests.governance.test_api_tokens import _problem
from tests.orchestrator.api_world import denials

RUNS = "/api/v1/runs"
START = {"workflow": "payments", "input": {"order": 1}}


def _start(client, body=START, key="order-1", **extra):
    return client.post(RUNS, body, format="json", HTTP_IDEMPOTENCY_KEY=key, **extra)


def _api_runs():
    return WorkflowRun.objects.filter(trigger="api")


@pytest.mark.django_db
class TestOneRequestAtATime:
    def test_the_same_key_and_body_replays_the_first_response(self, world):
        client = world.client("maya")
        first = _start(client)
        assert first.status_code == 201 and "Idempotent-Replayed" not in first
        again = _start(client)
        assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
        assert again.json() == first.json() and again["Location"] == first["Location"]
        assert _api_runs().count() == 1

    def test_the_same_key_with_another_body_is_422(self, world):
        client = world.client("maya")
        _start(client)
        body = _problem(_start(client, {**START, "input": {"order": 2}}), 422)
        assert body["type"].endswith("idempotency/key-reused")
        assert _api_runs().count() == 1

    def test_a_body_beyond_canonical_json_gets_the_services_answer_not_a_500(self, world):
        # An integer past 2**53 has no RFC 8785 form; the fingerprint must not choke on it.
        body = {**START, "input": {"order": 140285428848035872}}
        response = _start(world.client("maya"), body, key="big-number")
        assert response.status_code < 500, response.content
        assert fingerprint(body) == fingerprint(dict(reversed(body.items())))

    def test_the_same_key_on_another_operation_is_422(self, world):
        client = world.client("gina")
        _start(client)
        response = client.post(
            f"/api/v1/runs/{world.running.pk}/signals",
            START,
            format="json",
            HTTP_IDEMPOTENCY_KEY="order-1",
        )
        _problem(response, 422)

    def test_a_key_still_in_flight_is_409(self, world):
        client = world.client("maya")
        now = clock.now()
        IdempotencyKey.objects.create(
            principal=world.user("maya"),
            key="order-1",
            method="POST",
            path=RUNS,
            fingerprint=fingerprint(START),
            created_at=now,
            expires_at=now + dt.timedelta(days=1),
        )
        body = _problem(_start(client), 409)
        assert body["type"].endswith("idempotency/in-flight")
        assert not _api_runs().exists()

    def test_keys_belong_to_their_principal(self, world):
        assert _start(world.client("maya")).status_code == 201
        assert _start(world.client("integration")).status_code == 201
        assert _api_runs().count() == 2

    def test_a_failed_request_frees_its_key(self, world):
        client = world.client("maya")
        _problem(_start(client, {"workflow": "hr-onboarding"}), 403)
        assert not IdempotencyKey.objects.exists()
        assert _start(client).status_code == 201  # another body: the key was free again

    def test_a_refusal_under_a_key_is_audited_once(self, world):
        client = world.client("oscar")
        body = _problem(_start(client), 404)
        denied = world.user("oscar")
        assert [d["request_id"] for d in denials(denied)] == [body["request_id"]]

    def test_a_key_expires(self, world, settings):
        client = world.client("maya")
        with clock.frozen() as frozen:
            assert _start(client).status_code == 201
            frozen.advance(settings.STEWARD_IDEMPOTENCY_TTL + 1)
            again = _start(client, {**START, "input": {"order": 2}})
        assert again.status_code == 201 and "Idempotent-Replayed" not in again
        assert _api_runs().count() == 2

    def test_expired_keys_are_purged_by_the_beat_task_on_the_control_queue(self, world, settings):
        client = world.client("maya")
        entry = settings.CELERY_BEAT_SCHEDULE["orchestrator-idempotency-key-purge"]
        assert entry["task"] == tasks.purge_idempotency_keys.name and entry["schedule"] > 0
        assert settings.CELERY_TASK_ROUTES[entry["task"]]["queue"] == (
            settings.STEWARD_CONTROL_QUEUE
        )
        with clock.frozen() as frozen:
            assert _start(client, key="old").status_code == 201
            frozen.advance(settings.STEWARD_IDEMPOTENCY_TTL - 10)
            assert _start(client, key="young").status_code == 201
            frozen.advance(9)
            assert tasks.purge_idempotency_keys() == 0  # "old" expires in a second
            frozen.advance(1)
            assert tasks.purge_idempotency_keys() == 1
            assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["young"]
            assert tasks.purge_idempotency_keys() == 0  # running it twice changes nothing
            replayed = _start(client, key="young")
        assert replayed["Idempotent-Replayed"] == "true"

    def test_an_abandoned_claim_is_taken_over(self, world, settings):
        now = clock.now()
        IdempotencyKey.objects.create(
            principal=world.user("maya"),
            key="order-1",
            method="POST",
            path=RUNS,
            fingerprint=fingerprint(START),
            created_at=now - dt.timedelta(seconds=settings.STEWARD_IDEMPOTENCY_ABANDONED_AFTER + 1),
            expires_at=now + dt.timedelta(days=1),
        )
        assert _start(world.client("maya")).status_code == 201

    def test_a_signal_under_a_key_is_sent_once(self, world):
        client = world.client("gina")
        url = f"/api/v1/runs/{world.running.pk}/signals"
        responses = [
            client.post(url, {"name": "go"}, format="json", HTTP_IDEMPOTENCY_KEY="sig-1")
            for _ in range(2)
        ]
        assert [r.status_code for r in responses] == [202, 202]
        assert responses[1]["Idempotent-Replayed"] == "true"
        assert RunSignal.objects.filter(run=world.running, name="go").count() == 1

    def test_a_malformed_key_is_refused(self, world):
        body = _problem(_start(world.client("maya"), key="x" * 256), 400)
        assert "Idempotency-Key" in body["errors"]


# --- races -----------------------------------------------------------------------------------


def _others_wait_on_a_lock() -> bool:
    """Tell whether another session of this database waits for a lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0] > 0


def _race(monkeypatch, first, second, *, until_blocked: bool):
    """Run `first` in a thread held after its run is written; `second` meanwhile, here.

    The first is held until the second has answered (until_blocked=False), or until the
    second is seen waiting on the first's lock (True).
    """
    real_start = engine.start_run
    written, answered = threading.Event(), threading.Event()
    holder = threading.local()

    def held_start(*args, **kwargs):
        run = real_start(*args, **kwargs)
        if getattr(holder, "hold", False):
            written.set()
            if until_blocked:
                deadline = time.monotonic() + 10
                while not _others_wait_on_a_lock() and time.monotonic() < deadline:
                    time.sleep(0.01)  # poll for the second request to block; not a backoff
            else:
                answered.wait(10)
        return run

    monkeypatch.setattr(engine, "start_run", held_start)
    results, errors = {}, []

    def run_first():
        holder.hold = True
        try:
            results["first"] = first()
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            written.set()
            connections.close_all()

    thread = threading.Thread(target=run_first)
    thread.start()
    assert written.wait(10)
    try:
        results["second"] = second()
    finally:
        answered.set()
        thread.join(15)
    assert errors == [] and not thread.is_alive()
    return results["first"], results["second"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestRaces:
    def test_two_concurrent_starts_with_one_key_give_one_run(self, world, monkeypatch):
        def start():
            return _start(world.client("maya"))

        first, second = _race(monkeypatch, start, start, until_blocked=False)
        assert first.status_code == 201
        _problem(second, 409)
        assert _api_runs().count() == 1
        replay = _start(world.client("maya"))
        assert replay["Idempotent-Replayed"] == "true" and replay.json() == first.json()

    @pytest.mark.parametrize("policy", ["fail", "use_existing"])
    def test_two_concurrent_starts_with_one_business_key_give_one_open_run(
        self, world, monkeypatch, policy
    ):
        body = {"workflow": "payments", "business_key": "ORD-7", "business_key_policy": policy}

        def start():
            return world.client("maya").post(RUNS, body, format="json")

        first, second = _race(monkeypatch, start, start, until_blocked=True)
        assert first.status_code == 201
        if policy == "fail":
            assert _problem(second, 409)["run_id"] == first.json()["id"]
        else:
            assert second.status_code == 200 and second.json()["id"] == first.json()["id"]
        assert WorkflowRun.objects.filter(business_key="ORD-7").count() == 1

    def test_concurrent_signal_with_start_gives_one_run_with_both_signals(self, world, monkeypatch):
        def start(n):
            body = {
                "workflow": "payments",
                "business_key": "TICKET-3",
                "business_key_policy": "use_existing",
                "signal": {"name": "update", "payload": {"n": n}},
            }
            return lambda: world.client("gina").post(RUNS, body, format="json")

        first, second = _race(monkeypatch, start(1), start(2), until_blocked=True)
        assert (first.status_code, second.status_code) == (201, 200)
        run = WorkflowRun.objects.get(business_key="TICKET-3")
        assert first.json()["id"] == second.json()["id"] == run.pk
        payloads = [s.payload for s in RunSignal.objects.filter(run=run).order_by("id")]
        assert payloads == [{"n": 1}, {"n": 2}]
