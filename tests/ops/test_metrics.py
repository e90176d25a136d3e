"""/metrics: refused without its token or network; parsed by prometheus_client; moves with runs."""

import datetime as dt

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from agents import metrics as agent_metrics
from audit import clock
from audit.actors import SYSTEM
from governance import services as governance
from orchestrator import engine, services
from orchestrator.models import EngineCounter

pytestmark = pytest.mark.django_db
TOKEN = "metrics-secret-123"
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def scrape(settings):
    """Return a function reading /metrics with the token as {(sample name, labels): value}."""
    settings.STEWARD_METRICS_TOKEN = TOKEN
    settings.STEWARD_METRICS_ALLOWED_NETWORKS = []

    def read() -> dict:
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain; version=")
        samples = {}
        for family in text_string_to_metric_families(response.content.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    return read


def value(samples, name, **labels):
    """Return one sample's value (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_off_until_a_token_or_a_network_is_set(settings):
    settings.STEWARD_METRICS_TOKEN = ""
    settings.STEWARD_METRICS_ALLOWED_NETWORKS = []
    response = Client().get("/metrics")
    assert response.status_code == 403 and b"STEWARD_METRICS_TOKEN" in response.content


def test_metrics_need_the_token(settings):
    settings.STEWARD_METRICS_TOKEN = TOKEN
    settings.STEWARD_METRICS_ALLOWED_NETWORKS = []
    assert Client().get("/metrics").status_code == 401
    wrong = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"].startswith("Bearer")
    assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_metrics_answer_an_allowed_network_only(settings):
    settings.STEWARD_METRICS_TOKEN = ""
    settings.STEWARD_METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8", "127.0.0.0/8"]
    assert Client().get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert Client(REMOTE_ADDR="192.168.1.5").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="10.2.3.4").get("/metrics").status_code == 200


def test_the_counters_move_as_runs_move(scrape, make_workflow, django_capture_on_commit_callbacks):
    wf = make_workflow(
        {
            "steps": [
                {"id": "a", "type": "noop"},
                {"id": "nap", "type": "sleep", "duration": "10m", "depends_on": ["a"]},
            ]
        }
    )
    before = scrape()
    with clock.frozen(START) as frozen, django_capture_on_commit_callbacks(execute=True):
        run = services.start_run(wf, started_by=SYSTEM)
        middle = scrape()
        assert value(middle, "steward_runs", status="running") == 1
        assert value(middle, "steward_steps", status="ready") == 1
        engine.drain()
        waiting = scrape()
        assert value(waiting, "steward_steps", status="waiting") == 1
        assert value(waiting, "steward_steps", status="ready") == 0
        frozen.advance(601)
        assert engine.sweep()["timers"] == 1
        engine.drain()
    after = scrape()
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert value(after, "steward_runs", status="succeeded") == 1
    assert value(after, "steward_runs", status="running") == 0
    for kind in ("run_started", "run_succeeded"):
        moved = value(after, "steward_run_events_total", kind=kind) - value(
            before, "steward_run_events_total", kind=kind
        )
        assert moved == 1, kind
    noop_count = (
        "steward_step_duration_seconds_count",
        {"step_type": "noop", "outcome": "complete"},
    )
    assert (
        value(after, noop_count[0], **noop_count[1]) - value(before, noop_count[0], **noop_count[1])
        == 1
    )
    assert value(after, "steward_sweeper_repairs_total", kind="timers") == 1
    assert EngineCounter.objects.get(name="sweeper.timers").value == 1


def test_the_ready_queue_lag_is_the_oldest_ready_steps_age(scrape, make_workflow):
    wf = make_workflow({"steps": [{"id": "a", "type": "noop"}]})
    with clock.frozen(START) as frozen:
        services.start_run(wf, started_by=SYSTEM)
        frozen.advance(42)
        assert value(scrape(), "steward_ready_queue_lag_seconds") == 42
        engine.drain()
        assert value(scrape(), "steward_ready_queue_lag_seconds") == 0


def test_approval_backlog_and_sla_breaches(scrape, company):
    with clock.frozen(START) as frozen:
        governance.request_approval(
            action="tool.refund",
            approval_rule=company.rule,
            arguments={"amount": 900},
            target=company.payments,
            requested_by=company.agent,
        )
        samples = scrape()
        assert value(samples, "steward_approvals_pending") == 1
        assert value(samples, "steward_approvals_overdue") == 0
        frozen.advance(company.rule.sla_seconds + 1)
        assert value(scrape(), "steward_approvals_overdue") == 1


def test_audit_lag_and_checkpoint_age_are_reported(scrape, make_workflow, settings):
    from audit import sequencer
    from audit.models import AuditTreeState
    from tests.audit.conftest import TEST_KEY

    settings.AUDIT_SIGNING_KEY = TEST_KEY
    with clock.frozen() as frozen:  # audit entries carry the real time they were written
        services.start_run(
            make_workflow({"steps": [{"id": "a", "type": "noop"}]}), started_by=SYSTEM
        )
        frozen.advance(120)
        assert 115 < value(scrape(), "steward_audit_sequencer_lag_seconds") <= 120
        # The sequencer numbers committed entries only (this test's never commit): put its
        # cursor past every entry, as a sequencer that caught up leaves it.
        AuditTreeState.objects.update_or_create(
            pk=1, defaults={"cursor_txid": 2**62, "cursor_id": 2**62, "size": 7}
        )
        samples = scrape()
        assert value(samples, "steward_audit_sequencer_lag_seconds") == 0
        assert value(samples, "steward_audit_tree_size") == 7
    assert ("steward_audit_last_checkpoint_age_seconds", ()) not in scrape()
    sequencer.make_checkpoint(force=True)
    assert 0 <= value(scrape(), "steward_audit_last_checkpoint_age_seconds") < 60


def test_model_calls_are_counted_by_provider(scrape):
    before = scrape()
    agent_metrics.observe_reply("openai", 1500.0, attempts=2)
    agent_metrics.observe_failure("openai", attempts=3)
    after = scrape()

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("steward_model_calls_total", provider="openai", outcome="ok") == 1
    assert moved("steward_model_calls_total", provider="openai", outcome="error") == 1
    assert moved("steward_model_call_retries_total", provider="openai") == 3
    # The sum is a float the counter had before plus ours: equal only up to rounding.
    duration = moved("steward_model_call_duration_seconds_sum", provider="openai")
    assert duration == pytest.approx(1.5)
    assert moved("steward_model_call_duration_seconds_bucket", provider="openai", le="2.0") == 1


def test_the_sample_dashboard_reads_only_metrics_that_exist(scrape):
    import json
    import re
    from pathlib import Path

    from django.conf import settings

    agent_metrics.observe_reply("openai", 10.0, attempts=1)  # a labelled family shows once used
    dashboard = json.loads((Path(settings.BASE_DIR) / "docs/grafana-dashboard.json").read_text())
    names = {
        re.sub(r"_(bucket|total|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"steward_[a-z_]+", target["expr"])
    }
    exposed = {re.sub(r"_(bucket|total|count|sum|created)$", "", name) for name, _ in scrape()}
    exposed.add("steward_audit_last_checkpoint_age_seconds")  # absent until the first one
    assert names and names <= exposed, names - exposed
