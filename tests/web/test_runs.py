"""The run inspector: the runs list and a run's page through the authorisation matrix, their
filters and cursor pages, what a waiting run says it waits for, the actions (confirmed,
audited, not offered when not permitted), escaped model output, and bounded query counts."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents.models import ModelCall, ToolInvocation
from audit import clock
from audit import services as audit
from audit.actors import SYSTEM
from audit.models import AuditEntry
from governance import services as governance
from orchestrator import engine, inspector
from orchestrator import services as workflows
from orchestrator.models import (
    RunEvent,
    RunStatus,
    SavedRunView,
    StepRun,
    StepStatus,
    WorkflowRun,
)
from orchestrator.steptypes import StepType, register_step_type
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for

PEOPLE = ["gina", "alice", "bob", "maya", "integration", "agent", "oscar"]
# Who sees the company's run (maya's payments run): a status, or "+" for 200.
RUN_PAGE = {
    "gina": "+",  # governance admin: every run
    "alice": "4",  # approver: the workflow, not its runs
    "bob": "4",
    "maya": "+",  # manager: every run, read-only
    "integration": "L",  # view on runs, but no session: the web app is for people
    "agent": "L",  # view on this one run, the same
    "oscar": "4",  # nobody
}
# Who may cancel it: "+" cancelled, "3" forbidden (403), "4" hidden (404).
CANCEL = {
    "gina": "+",
    "alice": "4",
    "bob": "4",
    "maya": "+",  # she started it, and may still start payments runs: she operates it
    "integration": "L",
    "agent": "L",
    "oscar": "4",
}
STATUS = {"+": 200, "3": 403, "4": 404, "L": 302}


class Breaks(StepType):
    """A step that fails for good, the first time and every time."""

    name = "inspector_breaks"
    writes_database = False

    def execute(self, ctx):
        return ctx.fail("Broken", "it <b>broke</b>", retryable=False)


register_step_type(Breaks())

FAILING = {
    "steps": [
        {"id": "first", "type": "noop"},
        {
            "id": "boom",
            "type": "inspector_breaks",
            "depends_on": ["first"],
            "retry": {"max_attempts": 1},
        },
    ]
}


def _refusals(user) -> int:
    return AuditEntry.objects.filter(action="governance.access_denied", actor_id=user.pk).count()


@pytest.mark.parametrize("name", PEOPLE)
def test_the_run_page_and_list_through_the_matrix(company, name):
    person = fresh(getattr(company, name))
    client = client_for(person)
    before = _refusals(person)
    page = client.get(reverse("runs:detail", args=[company.run.pk]))
    assert page.status_code == STATUS[RUN_PAGE[name]], name
    assert _refusals(person) == before + (RUN_PAGE[name] in "34")
    listing = client.get(reverse("runs:list"))
    if RUN_PAGE[name] == "L":
        assert listing.status_code == 302 and listing["Location"].startswith("/login/")
        return
    assert listing.status_code == 200
    shown = [run.pk for run in listing.context["rows"]]
    assert shown == ([company.run.pk] if RUN_PAGE[name] == "+" else [])


@pytest.mark.parametrize("name", PEOPLE)
def test_cancelling_through_the_matrix_is_confirmed_and_audited(company, name):
    person = fresh(getattr(company, name))
    client = client_for(person)
    url = reverse("runs:action", args=[company.run.pk, "cancel"])
    company.run.refresh_from_db()
    engine.drain()
    run = WorkflowRun.objects.get(pk=company.run.pk)
    if run.is_finished:  # the noop run finished while draining: start one that waits
        run = workflows.start_run(
            company.payments, {}, started_by=company.maya
        )  # still running until drained
        governance.grant(company.agents, "orchestrator.view_workflowrun", run, actor=SYSTEM)
        url = reverse("runs:action", args=[run.pk, "cancel"])
    before = _refusals(person)
    confirm = client.get(url)
    expected = CANCEL[name]
    assert confirm.status_code == STATUS[expected], name
    if expected == "L":
        assert confirm["Location"].startswith("/login/")
    response = client.post(url, {"confirm": "True", "reason": "wrong <b>payee</b>"})
    run.refresh_from_db()
    if expected == "+":
        assert response.status_code == 302
        assert run.status == RunStatus.CANCELLED
        assert AuditEntry.objects.filter(run_id=str(run.pk), actor_id=person.pk).exists()
    else:
        assert response.status_code == STATUS[expected]
        assert run.status != RunStatus.CANCELLED
        assert _refusals(person) == before + (
            2 if expected in "34" else 0
        )  # the confirmation page and the post, once each
    detail = client.get(reverse("runs:detail", args=[run.pk]))
    if detail.status_code == 200:
        offered = detail.context["actions"]
        assert offered["cancel"] == (expected == "+" and not run.is_finished)
        assert (url in detail.content.decode()) == offered["cancel"]


def test_filters_sort_and_cursor_pages_are_in_the_link(company, monkeypatch):
    from orchestrator.views import runs

    monkeypatch.setattr(runs, "PAGE_SIZE", 2)
    for key in ("A-1", "A-2", "B-1"):
        workflows.start_run(company.payments, {}, started_by=company.maya, business_key=key)
    client = client_for(fresh(company.gina))
    first = client.get(reverse("runs:list"), {"workflow": "payments", "sort": "created"})
    rows = first.context["rows"]
    assert [run.pk for run in rows] == sorted(run.pk for run in rows)
    assert len(rows) == 2 and first.context["next_cursor"]
    second = client.get(
        reverse("runs:list"),
        {"workflow": "payments", "sort": "created", "cursor": first.context["next_cursor"]},
    )
    assert [run.pk for run in second.context["rows"]][0] > rows[-1].pk
    keyed = client.get(reverse("runs:list"), {"business_key": "B-1"})
    assert [run.business_key for run in keyed.context["rows"]] == ["B-1"]
    assert "business_key=B-1" in keyed.context["query"]
    bad = client.get(reverse("runs:list"), {"cursor": "not-a-cursor", "version": "x"})
    assert bad.status_code == 200  # an unknown cursor is the first page; a bad field says so


def test_failed_at_step_and_version_filters_and_a_retry_from_the_page(company):
    flaky = workflows.create_workflow(slug="flaky", name="Flaky", definition=FAILING, actor=SYSTEM)
    run = workflows.start_run(flaky, {}, started_by=company.gina)
    engine.drain()
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    client = client_for(fresh(company.gina))
    failed = client.get(reverse("runs:list"), {"failed_step": "boom", "version": "1"})
    assert [r.pk for r in failed.context["rows"]] == [run.pk]
    assert client.get(reverse("runs:list"), {"failed_step": "first"}).context["rows"] == []
    step = StepRun.objects.get(run=run, step_id="boom")
    page = client.get(reverse("runs:detail", args=[run.pk]), {"step": step.pk})
    retry_url = reverse("runs:retry", args=[run.pk, step.pk])
    assert retry_url in page.content.decode()
    assert client.get(retry_url).status_code == 200  # the confirmation
    assert client.post(retry_url, {"confirm": "True"}).status_code == 302
    step.refresh_from_db()
    assert step.status != StepStatus.FAILED or step.attempt > 1
    assert AuditEntry.objects.filter(run_id=str(run.pk), actor_id=company.gina.pk).exists()
    # maya sees the failed step but is not offered the retry, and is refused it (403, audited)
    maya = client_for(fresh(company.maya))
    assert (
        retry_url
        not in maya.get(reverse("runs:detail", args=[run.pk]), {"step": step.pk}).content.decode()
    )
    assert maya.post(retry_url, {"confirm": "True"}).status_code == 403


def test_why_a_run_waits_on_a_signal_and_a_timer(company):
    waiting = workflows.create_workflow(
        slug="waiting",
        name="Waiting",
        definition={
            "steps": [
                {"id": "nap", "type": "sleep", "duration": "1h"},
                {"id": "review", "type": "wait", "signal": "reviewed", "timeout": "1d"},
            ]
        },
        actor=SYSTEM,
    )
    run = workflows.start_run(waiting, {}, started_by=company.gina)
    engine.drain()
    client = client_for(fresh(company.gina))
    page = client.get(reverse("runs:detail", args=[run.pk]))
    kinds = sorted(wait["kind"] for wait in page.context["waits"])
    assert kinds == ["signal", "timer"]
    text = page.content.decode()
    assert "waits for the signal <code>reviewed</code>" in text
    assert "waits for a timer that fires" in text


def _agent_turns(run, step):
    """Record a model call and a denied tool call for a step, as the agent loop does."""
    key = f"{step.idempotency_key}:call-1"
    call = ModelCall.objects.create(
        agent_slug="payments-bot",
        provider="scripted",
        model="m1",
        key=key,
        run_id=run.pk,
        step_id=step.step_id,
        input_tokens=12,
        output_tokens=7,
        cost=Decimal("0.00012"),
        latency_ms=42,
        created_at=clock.now(),
    )
    audit.record(
        action="agents.model.called",
        actor=SYSTEM,
        run_id=run.pk,
        step_id=step.step_id,
        body={
            "prompt": [{"role": "user", "content": "<script>window.pwned = 1</script> pay?"}],
            "response": {"content": "<img src=x onerror=alert(1)>"},
            "key": key,
        },
    )
    ToolInvocation.objects.create(
        agent_slug="payments-bot",
        caller_name="payments-bot",
        tool="payments.refund",
        arguments={"amount": 20, "note": "<script>alert(2)</script>"},
        arguments_digest="ab" * 32,
        verdict="deny",
        stage="policy",
        reason="refunds over 10 are denied",
        policy="payments",
        policy_version=3,
        policy_rule=77,
        key=f"{key}:tool-1",
        run_id=run.pk,
        step_id=step.step_id,
        created_at=clock.now() + dt.timedelta(seconds=1),
    )
    return call


def test_an_agent_steps_conversation_is_escaped_and_opening_a_body_is_recorded(company):
    governance.grant(company.admins, "agents.view_agent", actor=SYSTEM)
    engine.drain()
    step = StepRun.objects.get(run=company.run, step_id="only")
    StepRun.objects.filter(pk=step.pk).update(step_type="agent")
    call = _agent_turns(company.run, step)
    client = client_for(fresh(company.gina))
    panel = client.get(reverse("runs:step", args=[company.run.pk, step.pk]), HTTP_HX_REQUEST="true")
    text = panel.content.decode()
    assert "Denied" in text and "payments v3" in text and "#77" in text and "ab" * 32 in text
    assert "refunds over 10 are denied" in text
    assert "<script>alert(2)</script>" not in text and "&lt;script&gt;alert(2)" in text
    url = reverse("runs:model-call", args=[company.run.pk, call.pk])
    assert "window.pwned" not in client.get(url).content.decode()  # not opened by a GET
    opened = client.post(url).content.decode()
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in opened
    assert "<script>window.pwned" not in opened and "<img src=x" not in opened
    record = AuditEntry.objects.get(action="agents.model.body_opened")
    assert record.actor_id == company.gina.pk and record.target_id == str(call.pk)
    # maya may see the run, not the agent: the conversation is not hers to read
    maya = client_for(fresh(company.maya))
    before = _refusals(company.maya)
    assert maya.get(url).status_code == 404
    assert maya.post(url).status_code == 404
    assert _refusals(company.maya) == before + 2
    assert not AuditEntry.objects.filter(
        action="agents.model.body_opened", actor_id=company.maya.pk
    ).exists()


def test_saved_views_are_each_persons_own(company):
    gina, maya = client_for(fresh(company.gina)), client_for(fresh(company.maya))
    gina.post(reverse("runs:save-view"), {"name": "failed", "query": "status=failed"})
    view = SavedRunView.objects.get(owner=company.gina)
    assert view.query == "status=failed"
    page = gina.get(reverse("runs:list"))
    assert [v.name for v in page.context["saved_views"]] == ["failed"]
    assert list(maya.get(reverse("runs:list")).context["saved_views"]) == []
    assert maya.post(reverse("runs:delete-view", args=[view.pk])).status_code == 404
    assert gina.post(reverse("runs:delete-view", args=[view.pk])).status_code == 302
    assert not SavedRunView.objects.exists()


def _queries(client, url, **params) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url, params).status_code == 200
    return len(captured)


def test_the_runs_list_costs_the_same_queries_for_3_or_30_runs(company):
    client = client_for(fresh(company.gina))
    for _ in range(2):
        workflows.start_run(company.payments, {}, started_by=company.maya)
    few = _queries(client, reverse("runs:list"))
    for _ in range(27):
        workflows.start_run(company.payments, {}, started_by=company.maya)
    assert _queries(client, reverse("runs:list")) == few


def test_the_run_page_costs_the_same_queries_for_a_small_and_a_wide_run(company):
    wide = workflows.create_workflow(
        slug="wide",
        name="Wide",
        definition={
            "steps": [
                {"id": "list", "type": "set", "value": {"items": list(range(3))}},
                {
                    "id": "each",
                    "type": "noop",
                    "foreach": "steps.list.output.items",
                    "depends_on": ["list"],
                },
            ]
        },
        actor=SYSTEM,
    )
    client = client_for(fresh(company.gina))
    small = workflows.start_run(wide, {}, started_by=company.gina)
    engine.drain()
    few = _queries(client, reverse("runs:detail", args=[small.pk]))
    bigger = workflows.create_workflow(
        slug="wider",
        name="Wider",
        definition={
            "steps": [
                {"id": "list", "type": "set", "value": {"items": list(range(120))}},
                *[{"id": f"s{n}", "type": "noop", "depends_on": ["list"]} for n in range(60)],
                {
                    "id": "each",
                    "type": "noop",
                    "foreach": "steps.list.output.items",
                    "depends_on": ["list"],
                },
            ]
        },
        actor=SYSTEM,
    )
    large = workflows.start_run(bigger, {}, started_by=company.gina)
    engine.drain()
    page = client.get(reverse("runs:detail", args=[large.pk]))
    assert len(page.context["steps"]) == 50 and page.context["steps_next"]
    assert len(page.context["events"]) == 50 and page.context["events_next"]
    assert _queries(client, reverse("runs:detail", args=[large.pk])) == few


@pytest.mark.parametrize(("name", "status"), [("gina", 200), ("maya", 200), ("oscar", 404)])
def test_every_part_of_a_run_page_follows_the_run(company, name, status):
    engine.drain()
    step = StepRun.objects.get(run=company.run, step_id="only")
    event = company.run.events.first()
    pk = company.run.pk
    client = client_for(fresh(getattr(company, name)))
    parts = [
        reverse("runs:header", args=[pk]),
        reverse("runs:graph", args=[pk]),
        reverse("runs:steps", args=[pk]),
        reverse("runs:events", args=[pk]),
        reverse("runs:event", args=[pk, event.pk]),
        # Those who operate the run (gina; maya, who started it) are offered the retry page.
        reverse("runs:retry", args=[pk, step.pk]) if name not in ("gina", "maya") else None,
    ]
    for url in filter(None, parts):
        expected = 403 if url.endswith("/retry/") and status == 200 else status
        assert client.get(url).status_code == expected, url
    panel = client.get(reverse("runs:step", args=[pk, step.pk]), HTTP_HX_REQUEST="true")
    assert panel.status_code == status
    row = client.get(reverse("runs:row", args=[pk]))
    assert (f'id="run-{pk}"' in row.content.decode()) == (status == 200)  # gone when hidden


def test_an_action_the_runs_state_does_not_allow_is_said_plainly_and_not_taken(company):
    waiting = workflows.create_workflow(
        slug="held",
        name="Held",
        definition={"steps": [{"id": "hold", "type": "wait", "signal": "go"}]},
        actor=SYSTEM,
    )
    run = workflows.start_run(waiting, {}, started_by=company.gina)
    engine.drain()
    client = client_for(fresh(company.gina))
    response = client.get(reverse("runs:action", args=[run.pk, "resume"]), follow=True)
    assert "cannot be resumed now" in response.content.decode()
    pause = reverse("runs:action", args=[run.pk, "pause"])
    assert client.post(pause, {"confirm": "True"}).status_code == 302
    run.refresh_from_db()
    assert run.status == RunStatus.PAUSED
    page = client.get(reverse("runs:detail", args=[run.pk]))
    assert page.context["actions"]["resume"] and not page.context["actions"]["pause"]
    signal = reverse("runs:action", args=[run.pk, "signal"])
    bad = client.post(signal, {"confirm": "True", "name": "go", "payload": "[1"})
    assert bad.status_code == 200 and "Not valid JSON" in bad.content.decode()


def test_why_a_run_waits_on_an_approval_names_who_may_decide_and_who_may_not(company):
    waiting = workflows.create_workflow(
        slug="asks",
        name="Asks",
        definition={"steps": [{"id": "ask", "type": "wait", "signal": "placeholder"}]},
        actor=SYSTEM,
    )
    run = workflows.start_run(waiting, {}, started_by=company.gina)
    engine.drain()
    step = StepRun.objects.get(run=run, step_id="ask")
    request = governance.request_approval(
        action="tool.refund",
        approval_rule=company.rule,
        arguments={"amount": 5},
        target=company.payments,
        requested_by=company.agent,
        run_initiator=company.alice,
        accountable_owner=company.maya,
        run_id=run.pk,
        step_run_id=step.pk,
        step_id="ask",
    )
    StepRun.objects.filter(pk=step.pk).update(wait_signal=request.signal_name)
    hidden = client_for(fresh(company.gina)).get(reverse("runs:detail", args=[run.pk]))
    assert hidden.context["waits"][0]["visible"] is False  # the request is not gina's to see
    assert "which you may not see" in hidden.content.decode()
    governance.grant(company.admins, "governance.view_approvalrequest", actor=SYSTEM)
    page = client_for(fresh(company.gina)).get(reverse("runs:detail", args=[run.pk]))
    (wait,) = page.context["waits"]
    assert wait["kind"] == "approval" and wait["request"] == request
    deciders = wait["deciders"]
    assert deciders["roles"] == ["Approvers"] and deciders["may"] == ["bob"]
    excluded = {person["name"]: person["code"] for person in deciders["excluded"]}
    assert excluded == {
        "alice": "run_initiator",
        "payments-agent": "not_a_person",
        "maya": "accountable_owner",
    }
    assert wait["next_hop"]["role"] == "Managers"
    text = page.content.decode()
    assert "started the run that asks" in text and "escalates to Managers" in text


class RowsRead:
    """Count the rows each statement returns (an execute wrapper), beside the statements."""

    def __init__(self):
        self.reads: list[tuple[int, str]] = []

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        rowcount = context["cursor"].rowcount
        if sql.lstrip().upper().startswith("SELECT") and rowcount and rowcount > 0:
            self.reads.append((rowcount, sql))
        return result


@pytest.mark.postgres
def test_a_run_of_1000_steps_and_10000_events_renders_its_first_screen_without_reading_them(
    company,
):
    steps = [{"id": "root", "type": "noop"}] + [
        {"id": f"s{n:04}", "type": "noop", "depends_on": ["root"]} for n in range(999)
    ]
    big = workflows.create_workflow(
        slug="big", name="Big", definition={"steps": steps}, actor=SYSTEM
    )
    run = workflows.start_run(big, {}, started_by=company.gina)
    rows = list(StepRun.objects.filter(run=run).order_by("id"))
    assert len(rows) == 1000
    # Test setup, not the engine: ten events per step, the steps done, in three statements.
    now = clock.now()
    StepRun.objects.filter(run=run).update(
        status=StepStatus.SUCCEEDED, attempt=1, output={"big": "x" * 500}
    )
    WorkflowRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, finished_at=now)
    RunEvent.objects.bulk_create(
        [
            RunEvent(
                run=run,
                step_run=row,
                step_id=row.step_id,
                attempt=1,
                kind=kind,
                data={"n": n, "padding": "y" * 200},
                created_at=now + dt.timedelta(milliseconds=n),
            )
            for row in rows
            for n, kind in enumerate(["step_started", "step_succeeded"] * 5)
        ],
        batch_size=2000,
    )
    assert RunEvent.objects.filter(run=run).count() >= 10_000
    client = client_for(fresh(company.gina))
    counter = RowsRead()
    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(counter):
        page = client.get(reverse("runs:detail", args=[run.pk]))
    assert page.status_code == 200
    assert len(page.context["steps"]) == 50 and len(page.context["events"]) == 50
    # The graph reads one small row per definition step (to draw each node's state); nothing
    # else reads more than a page's worth, and no statement reads the events of all steps.
    graph_reads = [n for n, sql in counter.reads if n > 1000]
    assert graph_reads == [], graph_reads
    largest = sorted(counter.reads, reverse=True)
    assert largest[0][0] <= 1000 and largest[1][0] <= inspector.TIMELINE_EVENTS, [
        (n, sql[:120]) for n, sql in largest[:3]
    ]
    assert sum(n for n, _ in counter.reads) < 1000 + 50 * 10 + 500, largest[:5]
    # The graph draws a bounded part of the 1,000 steps and folds the rest into a node a layer.
    graph = page.context["graph"]
    assert len(graph["nodes"]) <= inspector.GRAPH_NODES + 2
    assert graph["hidden"] == 1000 - sum(1 for node in graph["nodes"] if not node.hidden)
    assert "+987 more steps" in page.content.decode()
    # The same statements as a small run's page (no statement per step or per event).
    small = workflows.start_run(company.payments, {}, started_by=company.gina)
    engine.drain()
    with CaptureQueriesContext(connection) as small_queries:
        client.get(reverse("runs:detail", args=[small.pk]))
    assert len(captured) == len(small_queries)


def test_a_large_graph_draws_the_steps_needing_a_look_first_and_folds_the_rest():
    steps = [{"id": "root", "type": "noop"}] + [
        {"id": f"s{n:02}", "type": "noop", "depends_on": ["root"]} for n in range(30)
    ]
    nodes = {}
    for step in steps:
        node = inspector.Node(step["id"], step["type"], step.get("depends_on", []))
        node.layer = 0 if step["id"] == "root" else 1
        node.status = StepStatus.SUCCEEDED
        nodes[node.id] = node
    nodes["s29"].status = StepStatus.FAILED
    drawn, shown_as = inspector._drawn(nodes)
    second = [node for node in drawn if node.layer == 1]
    assert len(second) == inspector.GRAPH_PER_LAYER + 1  # twelve and one fold
    assert "s29" in [node.id for node in second]  # the failed one is drawn, not folded
    fold = second[-1]
    assert fold.hidden == 30 - inspector.GRAPH_PER_LAYER and fold.status == StepStatus.SUCCEEDED
    assert shown_as["s28"] is fold and shown_as["s29"].id == "s29"


def test_the_graph_shapes_are_escaped_svg_with_links_folds_and_items():
    from collections import Counter

    from orchestrator.templatetags.run_graph import graph_shapes

    retried = inspector.Node("pay<&>", "tool", [], status="failed", step_pk=7, attempt=3)
    retried.url = "/runs/1/steps/7/"
    retried.folded = Counter({"succeeded": 2, "failed": 1})
    waiting = inspector.Node("a-very-long-step-identifier", "noop", [], layer=1)
    folded = inspector.Node("+1", "more", [], layer=1, row=1, status="failed", hidden=4)
    folded.folded = Counter({"failed": 1, "succeeded": 3})
    edge = {"x1": 1, "y1": 2, "x2": 3, "y2": 4, "mid": 5, "done": True}
    html = graph_shapes(
        {"nodes": [retried, waiting, folded], "edges": [edge], "node_w": 150, "node_h": 56}
    )
    assert '<path class="edge done" d="M 1 2 C 5 2, 5 4, 3 4" marker-end="url(#arrow)"/>' in html
    assert (
        '<a href="/runs/1/steps/7/" hx-get="/runs/1/steps/7/" hx-target="#step-panel" '
        'class="node-link" data-step="7">' in html
    )
    assert '<g class="node state-failed" id="node-pay&lt;&amp;&gt;">' in html
    assert "<title>pay&lt;&amp;&gt; (tool): failed, attempt 3</title>" in html
    assert "tool · failed · try 3</text>" in html and "2/3 items done, 1 failed</text>" in html
    assert 'class="node-id">a-very-long-step-id…</text>' in html
    assert html.count("<a ") == 2  # the waiting step has no row yet: no link
    assert '<g class="node more state-failed" id="node-more-1">' in html
    assert "<title>4 more steps: 1 failed, 3 succeeded</title>" in html
    assert "+4 more steps</text>" in html and "3/4 done, 1 failed</text>" in html
