"""Inbound webhooks: good, bad, stale and replayed signatures; a monitoring alert starts a run
and an ITSM update signals it, through the engine, as the endpoint's integration."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from rest_framework.test import APIClient
from standardwebhooks.webhooks import Webhook

from audit import clock
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from orchestrator import engine, inbound
from orchestrator.models import InboundHook, RunSignal, WorkflowRun
from tests.governance.test_api_tokens import _problem

pytestmark = pytest.mark.django_db

TEST_SECRETS_KEY = "J4n2a9tW0m6ZB0e0rY2Xl3QjS8G1t8yW5nq3oXj0f1I="
WAITS = {
    "input_schema": {
        "type": "object",
        "required": ["incident", "service"],
        "properties": {"incident": {"type": "string"}, "service": {"type": "string"}},
    },
    "steps": [{"id": "wait_ticket", "type": "wait", "signal": "ticket_updated", "timeout": "1d"}],
    "output": {"ticket": "{{ steps.wait_ticket }}"},
}


@pytest.fixture(autouse=True)
def _secrets_key(settings):
    from audit import secrets

    settings.STEWARD_SECRETS_KEY = TEST_SECRETS_KEY
    secrets._fernet.cache_clear()


@pytest.fixture
def hooks(db, make_workflow):
    """An integration allowed to run `incident`, an alert endpoint and an ITSM endpoint."""
    owner = governance.create_person(username="olga", actor=SYSTEM)
    monitoring = governance.create_integration_principal(
        username="alertmanager", owner=owner, actor=SYSTEM
    )
    workflow = make_workflow(WAITS, slug="incident")
    role = governance.create_role(name="Monitoring", owner=owner, actor=SYSTEM)
    governance.add_member(role, monitoring, actor=SYSTEM)
    governance.grant(role, "orchestrator.view_workflow", workflow, actor=SYSTEM)
    governance.grant(role, "orchestrator.change_workflow", workflow, actor=SYSTEM)
    governance.grant(role, "orchestrator.view_workflowrun", actor=SYSTEM)
    governance.grant(role, "orchestrator.change_workflowrun", actor=SYSTEM)
    alert, alert_secret = inbound.create_endpoint(
        slug="alerts",
        name="Monitoring alerts",
        principal=monitoring,
        action="start_run",
        workflow=workflow,
        input_mapping={"incident": "/alert/fingerprint", "service": "/alert/labels/service"},
        business_key_pointer="/alert/fingerprint",
        actor=SYSTEM,
    )
    itsm, itsm_secret = inbound.create_endpoint(
        slug="itsm",
        name="ITSM ticket updates",
        principal=monitoring,
        action="send_signal",
        workflow=workflow,
        business_key_pointer="/ticket/incident",
        signal_name="ticket_updated",
        signal_payload_pointer="/ticket",
        actor=SYSTEM,
    )
    return {"alert": (alert, alert_secret), "itsm": (itsm, itsm_secret), "workflow": workflow}


ALERT = {"alert": {"fingerprint": "INC-7", "labels": {"service": "billing"}, "status": "firing"}}


def _post(slug, secret, payload, *, webhook_id=None, at=None, signature=None):
    body = json.dumps(payload)
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = at or clock.now()
    headers = {
        "HTTP_WEBHOOK_ID": webhook_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(int(at.timestamp())),
        "HTTP_WEBHOOK_SIGNATURE": signature
        or Webhook(secret).sign(msg_id=webhook_id, timestamp=at, data=body),
    }
    return APIClient().post(
        f"/api/v1/hooks/{slug}/", body, content_type="application/json", **headers
    )


def test_an_alert_starts_the_incident_run_as_the_integration(hooks):
    endpoint, secret = hooks["alert"]
    response = _post("alerts", secret, ALERT, webhook_id="msg_alert_1")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["replayed"] is False and body["webhook_id"] == "msg_alert_1"
    run = WorkflowRun.objects.get(pk=body["run"])
    assert run.input == {"incident": "INC-7", "service": "billing"}
    assert run.business_key == "INC-7" and run.started_by.username == "alertmanager"
    assert run.trigger == "webhook:alerts"
    received = AuditEntry.objects.get(action="orchestrator.inbound_hook.received")
    assert received.actor_name == "alertmanager" and "msg_alert_1" in received.body_row.content


def test_a_replayed_webhook_id_is_accepted_once(hooks):
    _, secret = hooks["alert"]
    first = _post("alerts", secret, ALERT, webhook_id="msg_same")
    again = _post("alerts", secret, ALERT, webhook_id="msg_same")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == {**first.json(), "replayed": True}
    assert WorkflowRun.objects.count() == 1 and InboundHook.objects.count() == 1


def test_an_itsm_update_signals_the_run_with_its_business_key(hooks, published):
    _, alert_secret = hooks["alert"]
    _, itsm_secret = hooks["itsm"]
    run_id = _post("alerts", alert_secret, ALERT).json()["run"]
    engine.drain()
    update = {"ticket": {"incident": "INC-7", "state": "resolved", "id": "CHG-1"}}
    response = _post("itsm", itsm_secret, update)
    assert response.status_code == 202, response.content
    assert response.json()["run"] == run_id
    signal = RunSignal.objects.get(pk=response.json()["signal"])
    assert signal.name == "ticket_updated" and signal.payload == update["ticket"]
    engine.drain()
    run = WorkflowRun.objects.get(pk=run_id)
    assert run.status == "succeeded" and run.output["ticket"]["state"] == "resolved"


def test_a_signal_for_no_open_run_is_a_422_and_is_not_remembered(hooks):
    _, secret = hooks["itsm"]
    response = _post("itsm", secret, {"ticket": {"incident": "INC-404"}}, webhook_id="msg_x")
    assert "INC-404" in _problem(response, 422)["detail"]
    assert not InboundHook.objects.exists()  # the sender's retry is processed afresh


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ({"signature": "v1,bm90IGEgc2lnbmF0dXJl"}, "No matching signature"),
        # standardwebhooks before 1.3 raised on an unparsable header; 1.3 finds no match
        ({"signature": "garbage"}, ("unreadable", "No matching signature")),
        ({"secret": Webhook.__name__}, "No matching signature"),  # signed with another secret
        ({"at": -301}, "too old"),
        ({"at": 301}, "too new"),
    ],
)
def test_bad_or_stale_signatures_are_401_problems_and_audited(hooks, tamper, why):
    endpoint, secret = hooks["alert"]
    kwargs = {}
    if "signature" in tamper:
        kwargs["signature"] = tamper["signature"]
    if "secret" in tamper:
        secret = "whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlcg=="
    with clock.frozen() as frozen:
        if "at" in tamper:
            kwargs["at"] = frozen.current + dt.timedelta(seconds=tamper["at"])
        response = _post("alerts", secret, ALERT, **kwargs)
    body = _problem(response, 401)
    assert "signature" in body["detail"].lower()
    assert "Webhook-Signature" in response["WWW-Authenticate"]
    refused = AuditEntry.objects.get(action="orchestrator.inbound_hook.refused")
    reasons = why if isinstance(why, tuple) else (why,)
    assert any(reason in refused.body_row.content for reason in reasons)
    assert refused.target_id == str(endpoint.pk)
    assert not WorkflowRun.objects.exists() and not InboundHook.objects.exists()


def test_the_tolerance_follows_the_injected_clock(hooks):
    _, secret = hooks["alert"]
    with clock.frozen() as frozen:
        signed_at = frozen.current
        frozen.advance(299)
        assert _post("alerts", secret, ALERT, at=signed_at).status_code == 202
        frozen.advance(2)
        _problem(_post("alerts", secret, ALERT, at=signed_at), 401)


def test_missing_headers_and_unknown_endpoints(hooks):
    response = APIClient().post("/api/v1/hooks/alerts/", ALERT, format="json")
    _problem(response, 401)
    _, secret = hooks["alert"]
    _problem(_post("nobody", secret, ALERT), 404)


def test_the_endpoint_acts_only_within_its_principals_permissions(hooks):
    endpoint, secret = hooks["alert"]
    governance.revoke(
        governance.roles_of(endpoint.principal)[0],
        "orchestrator.change_workflow",
        hooks["workflow"],
        actor=SYSTEM,
    )
    _problem(_post("alerts", secret, ALERT), 403)
    assert not WorkflowRun.objects.exists()


def test_old_webhook_ids_are_pruned(hooks, settings):
    _, secret = hooks["alert"]
    settings.STEWARD_INBOUND_HOOK_KEEP_DAYS = 7
    _post("alerts", secret, ALERT)
    assert inbound.prune_hooks(actor=SYSTEM, now=clock.now() + dt.timedelta(days=6)) == 0
    assert inbound.prune_hooks(actor=SYSTEM, now=clock.now() + dt.timedelta(days=8)) == 1


def test_a_repeated_alert_joins_the_open_run_of_its_business_key(hooks):
    _, secret = hooks["alert"]
    first = _post("alerts", secret, ALERT, webhook_id="msg_first")
    second = _post("alerts", secret, ALERT, webhook_id="msg_second")
    assert first.status_code == 202 and second.status_code == 202, second.content
    assert second.json()["run"] == first.json()["run"]
    assert WorkflowRun.objects.count() == 1 and InboundHook.objects.count() == 2


def test_an_endpoint_whose_policy_is_fail_refuses_a_second_open_run(hooks):
    endpoint, secret = hooks["alert"]
    type(endpoint).objects.filter(pk=endpoint.pk).update(business_key_policy="fail")
    first = _post("alerts", secret, ALERT, webhook_id="msg_first")
    body = _problem(_post("alerts", secret, ALERT, webhook_id="msg_second"), 409)
    assert body["type"].endswith("refused/business_key_conflict")
    assert body["run_id"] == first.json()["run"]
    assert WorkflowRun.objects.count() == 1
    assert not InboundHook.objects.filter(webhook_id="msg_second").exists()  # its retry runs
