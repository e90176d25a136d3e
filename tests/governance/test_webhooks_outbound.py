"""Outbound webhooks: written in the event's transaction, delivered signed to a real receiver on
127.0.0.1 (which verifies with standardwebhooks), retried with backoff on the frozen clock,
disabled after a 410 or repeated failure, replayable, and never sent to private addresses."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from standardwebhooks.webhooks import Webhook

from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services
from governance.actions import webhooks
from governance.models import WebhookDelivery, WebhookSubscription
from orchestrator import services as workflows
from tests.agents.fake_servers import FakeModelServer, Reply
from tests.governance.conftest import fresh
from tests.governance.test_api_tokens import _problem, bearer, issuer  # noqa: F401

pytestmark = pytest.mark.django_db

TEST_SECRETS_KEY = "J4n2a9tW0m6ZB0e0rY2Xl3QjS8G1t8yW5nq3oXj0f1I="
RUN_EVENTS = ["run.started", "run.succeeded", "run.failed", "run.waiting"]


@pytest.fixture(autouse=True)
def _secrets_key(settings):
    """Subscription secrets are encrypted with a fixed test key."""
    from audit import secrets

    settings.STEWARD_SECRETS_KEY = TEST_SECRETS_KEY
    secrets._fernet.cache_clear()


@pytest.fixture
def receiver(settings):
    """A real HTTP receiver on 127.0.0.1, allowed explicitly (loopback is refused by default)."""
    settings.STEWARD_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.1"]
    server = FakeModelServer(answer=lambda received: Reply({"ok": True}, status=200)).start()
    yield server
    server.stop()


@pytest.fixture
def queued(monkeypatch):
    """The delivery ids handed to a worker after each commit."""
    ids: list[int] = []
    monkeypatch.setattr(webhooks, "dispatcher", ids.extend)
    return ids


@pytest.fixture
def subscribed(company, receiver):
    """The ERP integration subscribed to run events; returns (subscription, secret)."""
    return services.create_subscription(
        owner=company.integration,
        url=f"{receiver.url}/steward/events",
        event_types=RUN_EVENTS,
        actor=SYSTEM,
    )


def _start(company):
    return workflows.start_run(company.payments, {}, started_by=company.integration)


def _deliver_queued(queued):
    while queued:
        webhooks.deliver(queued.pop(0), actor=SYSTEM, due_only=False)


def _verified(received, secret) -> dict:
    """Verify one received request as a subscriber would, with the library."""
    return Webhook(secret).verify(received.raw, received.headers)


def test_a_run_start_is_delivered_signed_and_the_receiver_verifies_it(
    company, subscribed, receiver, queued, django_capture_on_commit_callbacks
):
    subscription, secret = subscribed
    with django_capture_on_commit_callbacks(execute=True):
        run = _start(company)
    assert len(queued) == 1 and not receiver.requests  # the writer made no HTTP call
    _deliver_queued(queued)
    [received] = receiver.requests
    body = _verified(received, secret)
    assert body["type"] == "run.started"
    assert body["data"]["run"] == run.pk and body["data"]["workflow"] == "payments"
    delivery = WebhookDelivery.objects.get(subscription=subscription)
    assert received.headers["webhook-id"] == delivery.webhook_id
    assert delivery.status == "delivered" and delivery.attempts == 1
    assert delivery.last_status_code == 200
    attempted = AuditEntry.objects.get(action="governance.webhook.attempted")
    assert delivery.webhook_id in attempted.body_row.content
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(webhooks.new_secret()).verify(received.raw, received.headers)


def test_the_outbox_row_rolls_back_with_the_event(company, subscribed, queued):
    with pytest.raises(RuntimeError), transaction.atomic():
        _start(company)
        assert WebhookDelivery.objects.count() == 1  # written in the event's transaction
        raise RuntimeError("the request failed after starting the run")
    assert WebhookDelivery.objects.count() == 0
    assert queued == []  # nothing is queued for a transaction that did not commit


def test_a_failed_delivery_is_retried_after_its_backoff_with_the_same_id(
    company, subscribed, receiver, queued, settings, django_capture_on_commit_callbacks
):
    settings.STEWARD_WEBHOOK_BACKOFF_SECONDS = 30
    receiver.push(Reply({"error": "busy"}, status=503), Reply({"error": "busy"}, status=500))
    subscription, secret = subscribed
    with clock.frozen() as frozen:
        with django_capture_on_commit_callbacks(execute=True):
            _start(company)
        _deliver_queued(queued)
        delivery = WebhookDelivery.objects.get()
        assert delivery.status == "pending" and delivery.last_status_code == 503
        frozen.advance(29)
        assert webhooks.deliver_due(actor=SYSTEM) == 0  # the first backoff: 30 s
        frozen.advance(2)
        assert webhooks.deliver_due(actor=SYSTEM) == 1
        frozen.advance(59)
        assert webhooks.deliver_due(actor=SYSTEM) == 0  # the second: 60 s
        frozen.advance(2)
        assert webhooks.deliver_due(actor=SYSTEM) == 1
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 3
    ids = {received.headers["webhook-id"] for received in receiver.requests}
    assert ids == {delivery.webhook_id} and len(receiver.requests) == 3
    for received in receiver.requests:
        _verified(received, secret)  # each attempt is signed with its own timestamp
    subscription.refresh_from_db()
    assert subscription.consecutive_failures == 0


def test_a_delivery_whose_message_was_lost_is_sent_by_the_sweep(
    company, subscribed, receiver, queued
):
    with clock.frozen() as frozen:
        _start(company)  # the commit's message never reaches a worker
        assert webhooks.deliver_due(actor=SYSTEM) == 0  # the first attempt's grace
        frozen.advance(61)
        assert webhooks.deliver_due(actor=SYSTEM) == 1
    assert WebhookDelivery.objects.get().status == "delivered"
    assert webhooks.deliver(WebhookDelivery.objects.get().pk, actor=SYSTEM) is None  # once


def test_a_410_disables_the_subscription(company, subscribed, receiver, queued):
    receiver.push(Reply({}, status=410))
    subscription, _ = subscribed
    _start(company)
    with clock.frozen() as frozen:
        frozen.advance(61)
        webhooks.deliver_due(actor=SYSTEM)
    subscription.refresh_from_db()
    assert not subscription.active and "410" in subscription.disabled_reason
    assert WebhookDelivery.objects.get().status == "failed"
    assert AuditEntry.objects.filter(action="governance.webhook_subscription.disabled").exists()
    _start(company)
    assert WebhookDelivery.objects.count() == 1  # a disabled subscription gets nothing new
    assert len(receiver.requests) == 1


def test_repeated_failures_disable_the_subscription_and_retries_end(
    company, subscribed, receiver, queued, settings
):
    settings.STEWARD_WEBHOOK_MAX_ATTEMPTS = 2
    settings.STEWARD_WEBHOOK_DISABLE_AFTER_FAILURES = 3
    receiver.answer = lambda received: Reply({"error": "down"}, status=500)
    subscription, _ = subscribed
    with clock.frozen() as frozen:
        _start(company)
        _start(company)
        for _ in range(6):
            frozen.advance(3600)
            webhooks.deliver_due(actor=SYSTEM)
    subscription.refresh_from_db()
    assert (
        not subscription.active and "3 failed deliveries in a row" in subscription.disabled_reason
    )
    statuses = sorted(WebhookDelivery.objects.values_list("status", flat=True))
    assert statuses == ["dead", "failed"]  # one ran out of retries; the other found it disabled
    assert len(receiver.requests) == 3


def test_replay_sends_the_payload_again_with_a_new_id(
    company, subscribed, receiver, queued, django_capture_on_commit_callbacks
):
    subscription, secret = subscribed
    with django_capture_on_commit_callbacks(execute=True):
        _start(company)
    _deliver_queued(queued)
    original = WebhookDelivery.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        replay = services.replay_delivery(original, actor=SYSTEM)
    _deliver_queued(queued)
    first, second = receiver.requests
    assert _verified(first, secret) == _verified(second, secret)
    assert second.headers["webhook-id"] == replay.webhook_id != original.webhook_id
    assert WebhookDelivery.objects.get(pk=replay.pk).replay_of_id == original.pk


def test_loopback_is_refused_by_default_and_allowed_by_setting(company, settings):
    settings.STEWARD_WEBHOOK_ALLOWED_HOSTS = []
    for url in ("http://127.0.0.1:8080/hook", "http://[::1]/hook", "http://localhost/hook"):
        with pytest.raises(services.DestinationRefused):
            services.create_subscription(
                owner=company.integration, url=url, event_types=RUN_EVENTS, actor=SYSTEM
            )
    settings.STEWARD_WEBHOOK_ALLOWED_HOSTS = ["127.0.0.0/8"]
    services.create_subscription(
        owner=company.integration,
        url="http://127.0.0.1:8080/hook",
        event_types=RUN_EVENTS,
        actor=SYSTEM,
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",  # the cloud metadata service
        "http://[fe80::1]/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://internal.example/hook",  # a name that resolves to a private address
        "ftp://files.example/hook",
        "http://user:pw@hooks.example/hook",
    ],
)
def test_private_and_link_local_destinations_are_refused(company, monkeypatch, url):
    monkeypatch.setattr(webhooks, "resolve_host", lambda host, port: ["10.9.8.7"])
    with pytest.raises(services.DestinationRefused):
        services.create_subscription(
            owner=company.integration, url=url, event_types=RUN_EVENTS, actor=SYSTEM
        )
    assert not WebhookSubscription.objects.exists()


def test_a_name_that_later_resolves_to_a_private_address_is_refused_at_delivery(
    company, monkeypatch, receiver, queued
):
    answers = {"hooks.example": ["93.184.216.34"]}
    monkeypatch.setattr(webhooks, "resolve_host", lambda host, port: answers[host])
    subscription, _ = services.create_subscription(
        owner=company.integration,
        url="http://hooks.example/steward",
        event_types=RUN_EVENTS,
        actor=SYSTEM,
    )
    answers["hooks.example"] = ["10.0.0.5"]  # DNS rebinding
    _start(company)
    with clock.frozen() as frozen:
        frozen.advance(61)
        webhooks.deliver_due(actor=SYSTEM)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed" and "10.0.0.5 is a private address" in delivery.last_error
    assert delivery.last_status_code is None


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    company, monkeypatch, receiver, queued, settings, django_capture_on_commit_callbacks
):
    port = receiver.httpd.server_address[1]
    settings.STEWARD_WEBHOOK_ALLOWED_HOSTS = ["receiver.test"]
    resolved = []

    def resolve(host, port):
        resolved.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(webhooks, "resolve_host", resolve)
    services.create_subscription(
        owner=company.integration,
        url=f"http://receiver.test:{port}/in",
        event_types=RUN_EVENTS,
        actor=SYSTEM,
    )
    with django_capture_on_commit_callbacks(execute=True):
        _start(company)
    _deliver_queued(queued)
    [received] = receiver.requests
    assert received.headers["Host"] == f"receiver.test:{port}" and received.path == "/in"
    assert resolved == ["receiver.test", "receiver.test"]  # once at creation, once per attempt


def test_events_go_only_to_integrations_that_may_see_them(company, receiver, queued):
    services.create_subscription(
        owner=company.integration,
        url=f"{receiver.url}/in",
        event_types=["approval.requested", "escalation.opened"],
        actor=SYSTEM,
    )
    services.request_approval(
        action="payments.pay", approval_rule=company.rule, requested_by=company.maya
    )
    assert not WebhookDelivery.objects.exists()  # the integration may not see the request
    services.grant(company.integrations, "governance.view_approvalrequest", actor=SYSTEM)
    request = services.request_approval(
        action="payments.pay", approval_rule=company.rule, requested_by=fresh(company.maya)
    )
    delivery = WebhookDelivery.objects.get()
    assert delivery.event_type == "approval.requested"
    assert delivery.payload["data"]["approval"] == request.pk
    assert set(delivery.payload["data"]) <= {
        "approval",
        "action",
        "risk",
        "role",
        "run_id",
        "step_id",
        "due_at",
    }  # ids and small facts, never the arguments


# --- the subscriptions API -----------------------------------------------------------------------

SUBSCRIPTIONS = "/api/v1/webhooks/subscriptions"


@pytest.fixture
def api(company, issuer, receiver):  # noqa: F811
    """Tokens for the integration (which may subscribe), a read-only one, and oscar's."""
    services.grant(company.integrations, "governance.add_webhooksubscription", actor=SYSTEM)
    services.grant(company.admins, "governance.view_webhooksubscription", actor=SYSTEM)
    services.grant(company.admins, "governance.view_principal", actor=SYSTEM)
    _, integration = services.issue_token(company.integration, actor=issuer, name="erp")
    _, read_only = services.issue_token(
        company.integration, actor=issuer, name="erp-ro", read_only=True
    )
    _, oscar = services.issue_token(company.oscar, actor=issuer, name="oscar")
    _, gina = services.issue_token(company.gina, actor=issuer, name="gina")
    return {"integration": integration, "read_only": read_only, "oscar": oscar, "gina": gina}


def _refusals(action: str) -> int:
    return AuditEntry.objects.filter(action=action).count()


def test_an_integration_manages_its_subscriptions_through_the_api(
    company, api, receiver, queued, django_capture_on_commit_callbacks
):
    client = bearer(api["integration"])
    created = client.post(
        SUBSCRIPTIONS,
        {"url": f"{receiver.url}/in", "event_types": ["run.started"]},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["owner"] == "erp-sync" and body["secret"].startswith("whsec_")
    pk = body["id"]
    shown = client.get(f"{SUBSCRIPTIONS}/{pk}").json()
    assert "secret" not in shown and shown["event_types"] == ["run.started"]
    assert [row["id"] for row in client.get(SUBSCRIPTIONS).json()["results"]] == [pk]
    changed = client.patch(
        f"{SUBSCRIPTIONS}/{pk}", {"event_types": ["run.started", "run.failed"]}, format="json"
    )
    assert changed.status_code == 200 and changed.json()["event_types"][1] == "run.failed"
    with django_capture_on_commit_callbacks(execute=True):
        _start(company)
    _deliver_queued(queued)
    Webhook(body["secret"]).verify(receiver.requests[0].raw, receiver.requests[0].headers)
    deliveries = client.get(f"{SUBSCRIPTIONS}/{pk}/deliveries").json()["results"]
    assert [row["status"] for row in deliveries] == ["delivered"]
    replayed = client.post(f"/api/v1/webhooks/deliveries/{deliveries[0]['id']}/replay")
    assert (
        replayed.status_code == 202 and replayed.json()["replay_of"] == deliveries[0]["webhook_id"]
    )
    assert client.delete(f"{SUBSCRIPTIONS}/{pk}").status_code == 204
    assert not WebhookSubscription.objects.exists()


def test_a_private_destination_is_a_422_problem(api):
    response = bearer(api["integration"]).post(
        SUBSCRIPTIONS, {"url": "http://10.0.0.1/in", "event_types": ["run.started"]}, format="json"
    )
    assert "private address" in _problem(response, 422)["detail"]


def test_the_subscriptions_api_through_the_matrix(company, api, receiver, issuer):  # noqa: F811
    subscription, _ = services.create_subscription(
        owner=company.integration,
        url=f"{receiver.url}/in",
        event_types=["run.started"],
        actor=SYSTEM,
    )
    detail = f"{SUBSCRIPTIONS}/{subscription.pk}"
    new = {"url": f"{receiver.url}/x", "event_types": ["run.failed"]}
    # oscar, no role: sees nothing (404, audited), may not subscribe (403, audited).
    oscar = bearer(api["oscar"])
    assert oscar.get(SUBSCRIPTIONS).json()["results"] == []
    before = _refusals("governance.access_denied")
    _problem(oscar.get(detail), 404)
    _problem(oscar.patch(detail, {"active": False}, format="json"), 404)
    _problem(oscar.post(f"/api/v1/webhooks/deliveries/{subscription.pk}/replay"), 404)
    _problem(oscar.post(SUBSCRIPTIONS, new, format="json"), 403)
    assert _refusals("governance.access_denied") == before + 4
    # gina, governance admin with view only: reads, may not change (403, audited).
    gina = bearer(api["gina"])
    assert gina.get(detail).status_code == 200
    before = _refusals("governance.access_denied")
    _problem(gina.patch(detail, {"active": False}, format="json"), 403)
    _problem(gina.delete(detail), 403)
    assert _refusals("governance.access_denied") == before + 2
    # gina may not subscribe on the integration's behalf without change on its principal.
    _problem(gina.post(SUBSCRIPTIONS, {**new, "owner": "erp-sync"}, format="json"), 403)
    # The integration's read-only token reads but never writes.
    read_only = bearer(api["read_only"])
    assert read_only.get(detail).status_code == 200
    _problem(read_only.post(SUBSCRIPTIONS, new, format="json"), 403)
    _problem(read_only.patch(detail, {"active": False}, format="json"), 403)
    # A revoked token is refused outright.
    row = services.authenticate_token(api["oscar"])
    services.revoke_token(row, actor=issuer, reason="left")
    _problem(bearer(api["oscar"]).get(SUBSCRIPTIONS), 401)
    subscription.refresh_from_db()
    assert subscription.active and subscription.url.endswith("/in")


def test_listing_subscriptions_costs_the_same_queries_for_one_or_many(company, api, receiver):
    client = bearer(api["integration"])

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(SUBSCRIPTIONS).status_code == 200
        return len(queries)

    services.create_subscription(
        owner=company.integration, url=f"{receiver.url}/0", event_types=RUN_EVENTS, actor=SYSTEM
    )
    count()  # the token's first use records last_used; later ones within the minute do not
    one = count()
    for index in range(1, 6):
        services.create_subscription(
            owner=company.integration,
            url=f"{receiver.url}/{index}",
            event_types=RUN_EVENTS,
            actor=SYSTEM,
        )
    assert count() == one
