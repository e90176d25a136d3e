"""The workflows and runs API through the authorisation matrix, its filters and its pages.

Every endpoint, for each caller with a token (tests/orchestrator/api_world.py): "+" it answers
2xx and does what it says, "3" it is refused 403, "4" 404; each refusal is audited once as
`governance.access_denied` under the response's request id. Who holds what is the governance
company's (tests/governance/conftest.py): gina everything; alice views `payments`; maya views
every workflow and run and changes `payments` (starts its runs); the integration views and
changes `payments` and views every run; oscar holds nothing. Who may start runs of a workflow
may signal its runs; only who may change a run, or started it, operates it (cancel, pause,
resume, retry): the world's runs were started by the system.
"""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from governance.permissions import can
from orchestrator import engine, services
from orchestrator.api import views
from orchestrator.models import RunSignal, RunStatus, StepRun, WorkflowRun, WorkflowVersion
from tests.governance.conftest import NOOP
from tests.governance.test_api_tokens import _problem
from tests.orchestrator import testtools  # noqa: F401  (registers test.flaky)
from tests.orchestrator.api_world import CALLERS, WAITING, denials

pytestmark = pytest.mark.django_db


def _endpoints(w):
    """Each endpoint: (how to call it as a client, what shows it happened)."""
    keyed, running, paused, failed = w.keyed, w.running, w.paused, w.failed
    return {
        "workflow": (lambda c: c.get("/api/v1/workflows/payments"), None),
        "versions": (lambda c: c.get("/api/v1/workflows/payments/versions"), None),
        "version": (lambda c: c.get("/api/v1/workflows/payments/versions/1"), None),
        "publish": (
            lambda c: c.post(
                "/api/v1/workflows/payments/versions",
                {"definition": NOOP, "note": "matrix"},
                format="json",
            ),
            lambda: WorkflowVersion.objects.filter(note="matrix").exists(),
        ),
        "start": (
            lambda c: c.post("/api/v1/runs", {"workflow": "payments"}, format="json"),
            lambda: WorkflowRun.objects.filter(trigger="api").exists(),
        ),
        "run": (lambda c: c.get(f"/api/v1/runs/{running.pk}"), None),
        "events": (lambda c: c.get(f"/api/v1/runs/{running.pk}/events"), None),
        "cancel": (
            lambda c: c.post(f"/api/v1/runs/{running.pk}/cancel", {"reason": "m"}, format="json"),
            lambda: WorkflowRun.objects.get(pk=running.pk).status == RunStatus.CANCELLED,
        ),
        "pause": (
            lambda c: c.post(f"/api/v1/runs/{running.pk}/pause"),
            lambda: WorkflowRun.objects.get(pk=running.pk).status == RunStatus.PAUSED,
        ),
        "resume": (
            lambda c: c.post(f"/api/v1/runs/{paused.pk}/resume"),
            lambda: WorkflowRun.objects.get(pk=paused.pk).status == RunStatus.RUNNING,
        ),
        "retry": (
            lambda c: c.post(f"/api/v1/runs/{failed.pk}/steps/{w.failed_step.pk}/retry"),
            lambda: StepRun.objects.get(pk=w.failed_step.pk).status != "failed",
        ),
        "signal": (
            lambda c: c.post(
                f"/api/v1/runs/{running.pk}/signals", {"name": "go", "payload": 1}, format="json"
            ),
            lambda: RunSignal.objects.filter(run=running, name="go").exists(),
        ),
        "correlate": (
            lambda c: c.post(
                "/api/v1/workflows/payments/signals",
                {"business_key": "INV-1", "name": "go"},
                format="json",
            ),
            lambda: RunSignal.objects.filter(run=keyed, name="go").exists(),
        ),
        "hidden-workflow": (lambda c: c.get("/api/v1/workflows/hr-onboarding"), None),
    }


ENDPOINTS = [
    "workflow",
    "versions",
    "version",
    "publish",
    "start",
    "run",
    "events",
    "cancel",
    "pause",
    "resume",
    "retry",
    "signal",
    "correlate",
    "hidden-workflow",
]
# caller: outcome per endpoint, in the order of ENDPOINTS.
EXPECTED = {
    "gina": "++++++++++++++",
    "alice": "+++33444444444",
    "maya": "+++3+++3333+++",
    "integration": "+++3+++3333++4",
    "oscar": "44444444444444",
}


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_endpoint_through_the_matrix(world, caller, endpoint):
    expected = EXPECTED[caller][ENDPOINTS.index(endpoint)]
    call, happened = _endpoints(world)[endpoint]
    assert happened is None or not happened()
    response = call(world.client(caller))
    code = response.status_code
    got = {403: "3", 404: "4"}.get(code, "+" if 200 <= code < 300 else "?")
    assert got == expected, f"{caller} {endpoint}: {response.status_code} {response.content}"
    refusals = denials(world.user(caller))
    if got == "+":
        assert refusals == []
        assert happened is None or happened()
        return
    body = _problem(response, response.status_code)
    assert happened is None or not happened()
    assert len(refusals) == 1, f"{caller} {endpoint}: {refusals}"
    assert refusals[0]["outcome"] == {"3": "forbidden", "4": "not_found"}[got]
    assert refusals[0]["request_id"] == body["request_id"] == response["X-Request-ID"]


WRITES = ["publish", "start", "cancel", "pause", "resume", "retry", "signal", "correlate"]


@pytest.mark.parametrize("endpoint", WRITES)
def test_a_read_only_token_is_refused_every_write(world, endpoint):
    gina = world.user("gina")
    _, token = governance.issue_token(gina, actor=gina, name="ro", read_only=True)
    world.tokens["gina-ro"] = token
    call, happened = _endpoints(world)[endpoint]
    body = _problem(call(world.client("gina-ro")), 403)
    assert "read-only" in body["detail"] and not happened()
    refusal = AuditEntry.objects.get(
        action="governance.access_denied", request_id=body["request_id"]
    )
    assert "read-only token" in refusal.body_row.content


def test_a_revoked_token_is_401_on_runs(world):
    gina = world.user("gina")
    row, token = governance.issue_token(gina, actor=gina, name="soon revoked")
    governance.revoke_token(row, actor=gina, reason="rotated")
    world.tokens["revoked"] = token
    _problem(world.client("revoked").get("/api/v1/runs"), 401)
    _problem(world.client("revoked").post("/api/v1/runs", {"workflow": "payments"}), 401)


def test_workflow_lists_hold_only_what_each_caller_sees(world):
    seen = {
        caller: [w["slug"] for w in world.client(caller).get("/api/v1/workflows").json()["results"]]
        for caller in CALLERS
    }
    assert seen == {
        "gina": ["hr-onboarding", "payments"],
        "alice": ["payments"],
        "maya": ["hr-onboarding", "payments"],
        "integration": ["payments"],
        "oscar": [],
    }


def test_run_lists_hold_only_what_each_caller_sees(world):
    everything = WorkflowRun.objects.count()
    counts = {
        caller: len(world.client(caller).get("/api/v1/runs").json()["results"])
        for caller in CALLERS
    }
    assert counts == {
        "gina": everything,
        "alice": 0,
        "maya": everything,
        "integration": everything,
        "oscar": 0,
    }


def test_a_version_reads_with_its_definition_status_and_digest(world):
    body = world.client("maya").get("/api/v1/workflows/payments/versions/1").json()
    version = WorkflowVersion.objects.get(workflow=world.company.payments, number=1)
    assert body["definition"] == NOOP and body["status"] == "approved"
    assert body["digest"] == version.digest
    listed = world.client("maya").get("/api/v1/workflows/payments/versions").json()["results"]
    assert [v["number"] for v in listed] == [4, 3, 2, 1] and "definition" not in listed[0]


def test_a_version_that_needs_approval_is_proposed_with_202(world):
    response = world.client("gina").post(
        "/api/v1/workflows/payments/versions", {"definition": WAITING}, format="json"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "proposed" and body["approval_request"]
    assert response["Location"].endswith(f"/versions/{body['number']}")


def test_a_version_of_an_exempt_workflow_goes_live_with_201(world):
    services.update_workflow(world.company.payments, actor=SYSTEM, version_approval_required=False)
    response = world.client("gina").post(
        "/api/v1/workflows/payments/versions", {"definition": WAITING}, format="json"
    )
    assert response.status_code == 201 and response.json()["status"] == "approved"


def test_an_invalid_definition_is_422_naming_the_step_and_field(world):
    definition = {"steps": [{"id": "only", "type": "noop"}, {"id": "nap", "type": "sleep"}]}
    response = world.client("gina").post(
        "/api/v1/workflows/payments/versions", {"definition": definition}, format="json"
    )
    body = _problem(response, 422)
    assert any(key.startswith("definition.steps.nap") for key in body["errors"]), body
    text = "definition: [not yaml"
    body = _problem(
        world.client("gina").post(
            "/api/v1/workflows/payments/versions", {"definition": text}, format="json"
        ),
        422,
    )
    assert "definition" in body["errors"]


def test_a_start_answers_201_with_the_run_and_its_location(world):
    response = world.client("integration").post(
        "/api/v1/runs", {"workflow": "payments", "input": {"order": 7}}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    run = WorkflowRun.objects.get(pk=body["id"])
    assert run.input == {"order": 7} and run.started_by == world.user("integration")
    assert body["workflow"] == "payments" and body["status"] == "running"
    assert response["Location"] == f"/api/v1/runs/{run.pk}"


def test_an_input_against_the_schema_is_422_with_errors(world):
    definition = {
        "input_schema": {
            "type": "object",
            "required": ["amount"],
            "properties": {"amount": {"type": "number"}},
        },
        "steps": [{"id": "only", "type": "noop"}],
    }
    services.publish_version(world.company.payments, definition, actor=SYSTEM)
    response = world.client("maya").post(
        "/api/v1/runs", {"workflow": "payments", "input": {"amount": "lots"}}, format="json"
    )
    body = _problem(response, 422)
    assert body["errors"]["input"] == ["amount: 'lots' is not of type 'number'"]
    assert not WorkflowRun.objects.filter(trigger="api").exists()


def test_the_audit_entries_of_a_start_carry_its_request_id(world):
    response = world.client("maya").post(
        "/api/v1/runs",
        {"workflow": "payments", "business_key": "ORD-9"},
        format="json",
        HTTP_X_REQUEST_ID="crm-start-77",
    )
    assert response.status_code == 201 and response["X-Request-ID"] == "crm-start-77"
    run = WorkflowRun.objects.get(pk=response.json()["id"])
    assert run.request_id == "crm-start-77"
    written = list(
        AuditEntry.objects.filter(request_id="crm-start-77").values_list("action", "actor_name")
    )
    assert ("engine.run_started", "maya") in written
    assert all(actor == "maya" for _, actor in written), written


# --- business keys ---------------------------------------------------------------------------


def test_a_second_start_with_an_open_business_key_fails_naming_the_run(world):
    response = world.client("gina").post(
        "/api/v1/runs", {"workflow": "payments", "business_key": "INV-1"}, format="json"
    )
    body = _problem(response, 409)
    assert body["run_id"] == world.keyed.pk and str(world.keyed.pk) in body["detail"]
    assert body["type"].endswith("refused/business_key_conflict")
    assert WorkflowRun.objects.filter(business_key="INV-1").count() == 1


def test_use_existing_answers_200_with_the_open_run_and_signals_it(world):
    response = world.client("gina").post(
        "/api/v1/runs",
        {
            "workflow": "payments",
            "business_key": "INV-1",
            "business_key_policy": "use_existing",
            "signal": {"name": "go", "payload": {"approved": True}},
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    assert response.json()["id"] == world.keyed.pk
    assert RunSignal.objects.get(run=world.keyed, name="go").payload == {"approved": True}
    assert WorkflowRun.objects.filter(business_key="INV-1").count() == 1


def test_a_closed_run_frees_its_business_key(world):
    services.cancel_run(world.keyed, actor=SYSTEM, reason="done")
    response = world.client("gina").post(
        "/api/v1/runs", {"workflow": "payments", "business_key": "INV-1"}, format="json"
    )
    assert response.status_code == 201
    assert WorkflowRun.objects.filter(business_key="INV-1").count() == 2


def test_signal_with_start_delivers_the_signal_to_the_new_run(world):
    services.publish_version(world.company.payments, WAITING, actor=SYSTEM)
    response = world.client("maya").post(
        "/api/v1/runs",
        {"workflow": "payments", "business_key": "NEW-1", "signal": {"name": "go", "payload": 5}},
        format="json",
    )
    assert response.status_code == 201, response.content
    run = WorkflowRun.objects.get(pk=response.json()["id"])
    engine.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.steps.get().output == 5


@pytest.mark.parametrize("endpoint", ["start", "run", "correlate"])
def test_reserved_signal_names_are_409_and_change_nothing(world, endpoint):
    client = world.client("gina")
    runs = WorkflowRun.objects.count()
    if endpoint == "start":
        response = client.post(
            "/api/v1/runs",
            {"workflow": "payments", "signal": {"name": "approval:1"}},
            format="json",
        )
    elif endpoint == "run":
        response = client.post(
            f"/api/v1/runs/{world.running.pk}/signals", {"name": "approval:1"}, format="json"
        )
    else:
        response = client.post(
            "/api/v1/workflows/payments/signals",
            {"business_key": "INV-1", "name": "escalation:3"},
            format="json",
        )
    body = _problem(response, 409)
    assert "reserved" in body["detail"]
    assert WorkflowRun.objects.count() == runs
    assert not RunSignal.objects.filter(name__contains=":").exists()


def test_a_signal_by_an_unknown_business_key_is_404_and_audited(world):
    response = world.client("gina").post(
        "/api/v1/workflows/payments/signals",
        {"business_key": "NOPE", "name": "go"},
        format="json",
    )
    body = _problem(response, 404)
    refusal = denials(world.user("gina"))
    assert len(refusal) == 1 and refusal[0]["request_id"] == body["request_id"]


def test_a_signal_to_a_finished_run_is_409(world):
    services.cancel_run(world.running, actor=SYSTEM)
    response = world.client("gina").post(
        f"/api/v1/runs/{world.running.pk}/signals", {"name": "go"}, format="json"
    )
    _problem(response, 409)


def test_a_step_of_another_run_is_not_found(world):
    response = world.client("gina").post(
        f"/api/v1/runs/{world.running.pk}/steps/{world.failed_step.pk}/retry"
    )
    _problem(response, 404)
    assert StepRun.objects.get(pk=world.failed_step.pk).status == "failed"


# --- the run's detail and history ----------------------------------------------------------


def test_a_run_reads_with_its_steps_and_its_history(world):
    body = world.client("maya").get(f"/api/v1/runs/{world.failed.pk}").json()
    assert body["status"] == "failed" and [s["step_id"] for s in body["steps"]] == ["call"]
    assert body["steps"][0]["error"]["type"] == "FatalToolError"
    events = world.client("maya").get(f"/api/v1/runs/{world.failed.pk}/events").json()
    kinds = [event["kind"] for event in events["results"]]
    assert kinds[0] == "run_started" and kinds[-1] == "run_failed"


def _follow(client, url: str) -> list[int]:
    """Return the ids of every page's results, following the `next` cursors."""
    seen: list[int] = []
    while url:
        page = client.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url = page["next"]
    return seen


def test_history_pages_follow_their_cursor(world, monkeypatch):
    monkeypatch.setattr(views._InOrder, "page_size", 2)
    seen = _follow(world.client("maya"), f"/api/v1/runs/{world.failed.pk}/events")
    assert seen == list(world.failed.events.order_by("id").values_list("pk", flat=True))
    assert len(seen) > 2


# --- filters and pages -----------------------------------------------------------------------


def _ids(client, **params):
    return [run["id"] for run in client.get("/api/v1/runs", params).json()["results"]]


def test_runs_filter_by_workflow_status_key_starter_and_time(world):
    client = world.client("gina")
    hr = services.start_run(world.company.hr, {}, started_by=world.user("gina"))
    assert _ids(client, workflow="hr-onboarding") == [hr.pk]
    assert _ids(client, status="failed") == [world.failed.pk]
    assert set(_ids(client, status=["failed", "paused"])) == {world.failed.pk, world.paused.pk}
    assert _ids(client, business_key="INV-1") == [world.keyed.pk]
    assert _ids(client, started_by="gina") == [hr.pk]
    assert _ids(client, started_by="maya") == [world.company.run.pk]
    assert _ids(client, created_after=hr.created_at.isoformat()) == [hr.pk]
    assert hr.pk not in _ids(client, created_before=hr.created_at.isoformat())
    _problem(client.get("/api/v1/runs", {"waiting_on": "nothing"}), 400)


def test_runs_filter_by_version_agent_and_failed_step(world):
    from agents.models import ModelCall, ToolInvocation
    from audit import clock

    client = world.client("gina")
    assert world.failed.pk in _ids(client, version=world.failed.version.number)
    assert _ids(client, version=99) == []
    failed_step = world.failed.steps.filter(status="failed").first()
    assert _ids(client, failed_step=failed_step.step_id) == [world.failed.pk]
    assert _ids(client, failed_step="no-such-step") == []
    ModelCall.objects.create(
        agent_slug="triage",
        provider="p",
        model="m",
        key="k1",
        run_id=world.keyed.pk,
        created_at=clock.now(),
    )
    ToolInvocation.objects.create(
        agent_slug="fixer",
        tool="t",
        verdict="deny",
        stage="policy",
        key="k2",
        run_id=world.running.pk,
        created_at=clock.now(),
    )
    assert _ids(client, agent="triage") == [world.keyed.pk]
    assert _ids(client, agent="fixer") == [world.running.pk]
    assert _ids(client, agent="nobody") == []


def test_runs_filter_by_what_they_wait_on(world):
    client = world.client("gina")
    waiting = {world.running.pk, world.paused.pk, world.keyed.pk}
    assert set(_ids(client, waiting_on="signal")) == waiting
    services.publish_version(
        world.company.payments,
        {"steps": [{"id": "nap", "type": "sleep", "duration": 3600}]},
        actor=SYSTEM,
    )
    sleeper = services.start_run(world.company.payments, {}, started_by=SYSTEM)
    engine.drain()
    assert _ids(client, waiting_on="timer") == [sleeper.pk]
    step = world.running.steps.get()
    StepRun.objects.filter(pk=step.pk).update(wait_signal="approval:99")
    assert _ids(client, waiting_on="approval") == [world.running.pk]
    StepRun.objects.filter(pk=step.pk).update(wait_signal="escalation:5")
    assert _ids(client, waiting_on="escalation") == [world.running.pk]
    StepRun.objects.filter(pk=step.pk).update(
        wait_signal="", wake_at=None, error={"awaiting": {"escalation": 5}}
    )
    assert _ids(client, waiting_on="escalation") == [world.running.pk]
    assert world.running.pk not in _ids(client, waiting_on="signal")


def test_run_pages_are_newest_first_and_follow_their_cursor(world, monkeypatch):
    monkeypatch.setattr(views._Newest, "page_size", 3)
    for _ in range(5):
        services.start_run(world.company.payments, {}, started_by=SYSTEM)
    expected = list(WorkflowRun.objects.order_by("-created_at", "-id").values_list("pk", flat=True))
    assert _follow(world.client("gina"), "/api/v1/runs") == expected
    assert _follow(world.client("gina"), "/api/v1/runs?status=running") == [
        pk for pk in expected if WorkflowRun.objects.get(pk=pk).status == "running"
    ]


@pytest.mark.parametrize(
    "url",
    ["/api/v1/runs", "/api/v1/runs?waiting_on=signal&status=running", "/api/v1/workflows"],
)
def test_list_queries_do_not_grow_with_the_rows(world, url):
    client = world.client("maya")
    client.get(url)  # warm the token's last-use stamp and the caches

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        return len(queries)

    few = count()
    for index in range(10):
        services.start_run(world.company.payments, {}, started_by=SYSTEM, business_key=f"k{index}")
        services.create_workflow(slug=f"extra-{index}", name="x", definition=NOOP, actor=SYSTEM)
    engine.drain()
    assert count() == few


@pytest.mark.parametrize("query", ["status=failed", "status=failed&status=paused"])
def test_the_status_filter_pages_without_distinct(world, query):
    # DISTINCT over every column sorts all matching runs before the page's LIMIT.
    client = world.client("gina")
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"/api/v1/runs?{query}").status_code == 200
    runs = [q["sql"] for q in queries.captured_queries if "orchestrator_workflowrun" in q["sql"]]
    assert runs and not any("DISTINCT" in sql for sql in runs), runs


def test_a_runs_detail_reads_in_a_fixed_number_of_queries(world):
    client = world.client("maya")
    url = f"/api/v1/runs/{world.failed.pk}"
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    assert len(queries) <= 12, [q["sql"] for q in queries.captured_queries]


def test_a_time_in_any_utc_offset_filters_runs_and_one_out_of_range_is_400(world):
    # Python takes offsets up to ±23:59, PostgreSQL only ±15:59: the filter sends UTC (was 500).
    client = world.client("gina")
    everything = WorkflowRun.objects.count()
    newest = WorkflowRun.objects.latest("created_at").created_at
    later = (newest + timedelta(hours=1)).astimezone(timezone(timedelta(hours=17, minutes=45)))
    runs = client.get("/api/v1/runs", {"created_before": later.isoformat()})
    assert len(runs.json()["results"]) == everything
    before = client.get("/api/v1/runs", {"created_after": later.isoformat()})
    assert before.json()["results"] == []
    nowhere = client.get("/api/v1/runs", {"created_before": "0001-01-01T00:00:00+10:00"})
    assert "created_before" in _problem(nowhere, 400)["errors"]


def test_a_cursor_the_api_did_not_write_is_a_400_on_runs(world):
    body = _problem(world.client("gina").get("/api/v1/runs", {"cursor": "escalation"}), 400)
    assert "cursor" in body["errors"]


@pytest.mark.django_db(transaction=True)  # the sequencer takes committed entries only
def test_a_runs_evidence_bundle_is_the_audit_apis_through_the_run(world, settings):
    from tests.audit.conftest import TEST_KEY, seal

    settings.AUDIT_SIGNING_KEY, settings.AUDIT_CHECKPOINT_SECONDS = TEST_KEY, 0.0
    for permission in ("audit.view_auditentry", "audit.view_auditcheckpoint"):
        governance.grant(world.company.admins, permission, actor=SYSTEM)
    seal()
    run = world.running
    path = f"/api/v1/runs/{run.pk}/evidence"
    gina = world.client("gina")
    response = gina.get(path)
    assert response.status_code == 200, response.content
    assert response["Content-Disposition"] == f'attachment; filename="evidence-run-{run.pk}.json"'
    bundle = response.json()
    assert bundle["entries"] and bundle["not_covered"] == []
    assert bundle == gina.get("/api/v1/audit/evidence", {"run": str(run.pk)}).json()
    # A run the caller may not see is 404, audited once under the request's id.
    hidden = _problem(world.client("oscar").get(path), 404)
    refusals = denials(world.user("oscar"))
    assert [r["request_id"] for r in refusals] == [hidden["request_id"]]
    # One the caller sees, without the right to read the audit trail, is 404 too.
    _problem(world.client("maya").get(path), 404)
    _problem(gina.get("/api/v1/runs/999999/evidence"), 404)


def test_the_principal_that_started_a_run_operates_it_while_it_may_start_runs(world):
    services.publish_version(world.company.payments, WAITING, actor=SYSTEM)
    integration = world.client("integration")
    started = integration.post("/api/v1/runs", {"workflow": "payments"}, format="json")
    assert started.status_code == 201, started.content
    path = f"/api/v1/runs/{started.json()['id']}"
    assert integration.post(f"{path}/pause").status_code == 200
    assert integration.post(f"{path}/resume").status_code == 200
    signalled = integration.post(f"{path}/signals", {"name": "note"}, format="json")
    assert signalled.status_code == 202
    # Another principal who may start payments runs signals it, but does not operate it.
    maya = world.client("maya")
    assert maya.post(f"{path}/signals", {"name": "note"}, format="json").status_code == 202
    _problem(maya.post(f"{path}/pause"), 403)
    assert len(denials(world.user("maya"))) == 1
    # Without `change` on the workflow any more, the starter no longer operates its run.
    governance.revoke(
        world.company.integrations,
        "orchestrator.change_workflow",
        world.company.payments,
        actor=SYSTEM,
    )
    _problem(integration.post(f"{path}/cancel", {"reason": "x"}, format="json"), 403)
    _problem(integration.post(f"{path}/signals", {"name": "note"}, format="json"), 403)
    assert WorkflowRun.objects.get(pk=started.json()["id"]).status == RunStatus.RUNNING
    assert len(denials(world.user("integration"))) == 2
    cancelled = world.client("gina").post(f"{path}/cancel", {"reason": "x"}, format="json")
    assert cancelled.status_code == 200


def test_who_may_signal_is_one_rule_for_lists_and_single_runs(world):
    integration, alice = world.user("integration"), world.user("alice")
    signalable = set(WorkflowRun.objects.restrict(integration, "signal"))
    assert signalable == set(WorkflowRun.objects.filter(workflow=world.company.payments))
    assert all(can(integration, "signal", run) for run in signalable)
    assert list(WorkflowRun.objects.restrict(alice, "signal")) == []
    assert not can(alice, "signal", world.running)


def test_start_run_takes_the_business_keys_lock_and_applies_a_policy_only_when_asked(world):
    payments, maya = world.company.payments, world.user("maya")
    with CaptureQueriesContext(connection) as queries:
        again = services.start_run(payments, {}, started_by=maya, business_key="INV-1")
    assert any("pg_advisory_xact_lock" in q["sql"] for q in queries.captured_queries)
    assert again.pk != world.keyed.pk  # no policy: a deliberate second open run
    with pytest.raises(services.BusinessKeyConflict):
        services.start_run(
            payments, {}, started_by=maya, business_key="INV-1", business_key_policy="fail"
        )
    same = services.start_run(
        payments, {}, started_by=maya, business_key="INV-1", business_key_policy="use_existing"
    )
    assert same.pk == again.pk  # the newest open run holding the key
    keyed = services.start_run(
        payments, {}, started_by=maya, business_key="INV-2", idempotency_key="k-2"
    )
    replayed = services.start_run(
        payments,
        {},
        started_by=maya,
        business_key="INV-2",
        business_key_policy="fail",
        idempotency_key="k-2",
    )
    assert replayed.pk == keyed.pk  # a replayed idempotency key wins over the conflict rule
