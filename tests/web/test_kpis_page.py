"""The KPI page: exact figures from runs on an injected clock, the previous period, per-workflow
visibility, SVG charts with tables, CSV exports, links to the runs, and a fixed query count."""

from __future__ import annotations

import csv
import datetime as dt
import io
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit import clock
from audit.actors import SYSTEM
from governance import services as governance
from orchestrator import engine, kpi_report, services
from orchestrator.kpi_report import ALL, Period
from tests.governance.conftest import fresh
from tests.governance.test_admin import client_for
from tests.orchestrator import testtools
from tests.orchestrator.test_kpis import flaky_flow

pytestmark = pytest.mark.django_db
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
PAGE = "/kpis/?days=7&end=2026-03-02"


@pytest.fixture(autouse=True)
def _engine_runs_here(monkeypatch, _tools_enabled_for_db_tests):
    """Steps run in this process (engine.drain); the flaky tool starts with no failure left."""
    monkeypatch.setattr(engine, "publish_on_commit", lambda ids: None)
    testtools.FLAKY_FAILURES.clear()


def history(company):
    """Payments: 30 s ok, 90 s failed in `call`, 10 s cancelled on T0; one 50 s ok a week before."""
    services.publish_version(company.payments, flaky_flow(), actor=SYSTEM)
    payments = company.payments
    with clock.frozen(T0 - dt.timedelta(days=7)) as frozen:
        services.start_run(payments, {"fail": 0}, started_by=company.gina)
        frozen.advance(50)
        engine.drain()
    with clock.frozen(T0) as frozen:
        services.start_run(payments, {"fail": 0}, started_by=company.gina)
        frozen.advance(30)
        engine.drain()
        services.start_run(payments, {"fail": 1}, started_by=company.gina)
        frozen.advance(90)
        engine.drain()
        stopped = services.start_run(payments, {"fail": 0}, started_by=company.gina)
        frozen.advance(10)
        services.cancel_run(stopped, actor=SYSTEM, reason="not needed")


def test_the_report_has_exact_figures_and_the_previous_period(company):
    history(company)
    report = kpi_report.build(
        Period(T0.date() - dt.timedelta(days=6), T0.date()),
        {company.payments.pk: ("payments", "Payments")},
    )
    now, before = report.current[ALL], report.previous[ALL]
    assert (now.started, now.succeeded, now.failed, now.cancelled) == (3, 1, 1, 1)
    assert now.p50 == 30 and now.p95 == pytest.approx(84)  # percentile_cont of 10, 30, 90
    assert (before.started, before.succeeded, before.p50) == (1, 1, 50)
    call = next(step for step in report.steps if step["step_id"] == "call")
    assert (call["finished"], call["failed"], call["errors"]) == (2, 1, [("FatalToolError", 1)])
    assert report.daily[-1][1:] == (1, 1, 1, 3)
    day, ended, p50, p95 = report.daily_durations[-1]
    assert (day, ended, p50) == (T0.date(), 3, 30) and p95 == pytest.approx(84)
    assert report.daily_durations[0][1:] == (0, None, None)


@pytest.mark.postgres
def test_the_python_percentile_is_postgresqls_percentile_cont():
    rng = random.Random(7)
    for size in (1, 2, 5, 17, 100):
        values = sorted(rng.uniform(0, 1000) for _ in range(size))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v),"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY v) FROM unnest(%s::float8[]) v",
                [values],
            )
            p50, p95 = cursor.fetchone()
        assert kpi_report.percentile(values, 0.5) == pytest.approx(p50, abs=1e-9)
        assert kpi_report.percentile(values, 0.95) == pytest.approx(p95, abs=1e-9)


def test_a_manager_sees_the_page_with_charts_tables_and_links(company):
    history(company)
    page = client_for(fresh(company.maya)).get(PAGE)
    assert page.status_code == 200
    html = page.content.decode()
    assert html.count("<svg") == 6 and "<polyline" in html and "<table" in html
    ended = "finished_after=2026-02-24T00%3A00%3A00Z&amp;finished_before=2026-03-03T00%3A00%3A00Z"
    assert f'href="/runs/?workflow=payments&amp;status=failed&amp;{ended}"' in html
    assert (
        f'href="/runs/?workflow=payments&amp;status=failed&amp;failed_step=call&amp;{ended}"'
        in html
    )
    assert "FatalToolError (1)" in html
    cards = {card["label"]: card for card in page.context["cards"]}
    assert cards["Runs started"]["value"] == 3 and cards["Runs started"]["change"] == 2.0
    assert cards["Duration p50"]["value"] == 30 and cards["Duration p50"]["before"] == 50


def test_the_csv_exports_hold_the_tables(company):
    history(company)
    client = client_for(fresh(company.maya))
    response = client.get(PAGE + "&export=workflows")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    payments = next(row for row in rows if row["workflow"] == "payments")
    assert (payments["started"], payments["failed"], payments["p50_seconds"]) == ("3", "1", "30")
    steps = list(csv.DictReader(io.StringIO(client.get(PAGE + "&export=steps").content.decode())))
    assert {"workflow": "payments", "step": "call", "finished": "2", "failed": "1"}.items() <= next(
        row for row in steps if row["step"] == "call"
    ).items()
    durations = client.get(PAGE + "&export=durations").content.decode().splitlines()
    assert (
        durations[0] == "day,ended,p50_seconds,p95_seconds"
        and durations[-1] == "2026-03-02,3,30,84"
    )
    assert client.get(PAGE + "&export=nope").status_code == 404


def test_people_who_are_not_managers_are_refused(company):
    for person in (company.oscar, company.alice):
        assert client_for(fresh(person)).get("/kpis/").status_code == 403


def test_a_manager_sees_only_the_workflows_their_roles_show(company):
    history(company)
    hr_managers = governance.create_role(name="HR managers", owner=company.gina, actor=SYSTEM)
    nina = governance.create_person(username="nina", password="pw-nina-123", actor=SYSTEM)
    governance.add_member(hr_managers, nina, actor=SYSTEM)
    governance.grant(hr_managers, "orchestrator.view_workflowrun", actor=SYSTEM)
    hr = services.get_workflow("hr-onboarding", actor=SYSTEM)
    governance.grant(hr_managers, "orchestrator.view_workflow", hr, actor=SYSTEM)
    client = client_for(fresh(nina))
    page = client.get(PAGE)
    assert page.status_code == 200
    assert [row["slug"] for row in page.context["per_workflow"]] == ["hr-onboarding"]
    assert page.context["cards"][0]["value"] == 0  # payments' runs are not counted
    assert client.get(PAGE + "&workflow=payments").status_code == 404


def test_the_page_costs_the_same_queries_for_one_workflow_or_many(company):
    history(company)
    client = client_for(fresh(company.maya))
    client.get(PAGE)  # warm the session and the navigation's lookups
    with CaptureQueriesContext(connection) as one:
        assert client.get(PAGE + "&workflow=payments").status_code == 200
    for n in range(5):
        slug = f"more-{n}"
        wf = services.create_workflow(slug=slug, name=slug, definition=flaky_flow(), actor=SYSTEM)
        with clock.frozen(T0) as frozen:
            services.start_run(wf, {"fail": n % 2}, started_by=SYSTEM)
            frozen.advance(5 + n)
            engine.drain()
    with CaptureQueriesContext(connection) as many:
        assert client.get(PAGE).status_code == 200
    assert len(many) == len(one), [q["sql"] for q in many.captured_queries]
    # The ceiling holds the page's own reads and the navigation's inbox count (requests and
    # escalations owed, with the decision rule's few reads).
    assert len(many) <= 28, "\n".join(q["sql"][:120] for q in many.captured_queries)


def test_a_baseline_without_acknowledgements_in_the_period_shows_dashes(company):
    """A workflow with a manual baseline and no acknowledged run yet: its row has no figures."""
    services.declare_manual_baseline(
        company.payments, ack_seconds=900, source="ITSM export, 2025", actor=SYSTEM
    )
    page = client_for(fresh(company.maya)).get(PAGE)
    assert page.status_code == 200
    [row] = page.context["acks"]
    assert row["now"] == {} and row["baseline"].ack_seconds == 900
    assert "15 min" in page.content.decode()


@pytest.mark.postgres
def test_duration_percentiles_from_the_histogram_are_percentile_cont_of_every_run(company):
    """Exact on many runs: ties, zero and sub-millisecond durations, bucket edges, two
    workflows, several days, both periods (against percentile_cont over the KpiRunEnd rows)."""
    from orchestrator import kpis
    from orchestrator.models import KpiRunEnd, WorkflowRun

    rng = random.Random(11)
    workflows = {}
    for slug in ("spread-a", "spread-b"):
        wf = services.create_workflow(slug=slug, name=slug, definition=flaky_flow(), actor=SYSTEM)
        workflows[wf.pk] = (slug, slug)
    edge = kpis.DURATION_BOUNDS[120]  # about 32 s: runs just under, on (to the µs) and over it
    runs = []
    for n in range(1500):
        pk = rng.choice(list(workflows))
        ended = T0 - dt.timedelta(days=rng.randrange(14), seconds=rng.randrange(80000))
        seconds = rng.choice(
            [0, 0.0004, 30, 300, rng.uniform(0, 600), rng.lognormvariate(3, 2), edge, edge + 1e-6]
        )
        runs.append(
            WorkflowRun(
                workflow_id=pk,
                version=services.get_workflow(workflows[pk][0], actor=SYSTEM).versions.first(),
                status="succeeded" if n % 3 else "failed",
                created_at=ended - dt.timedelta(seconds=seconds),
                updated_at=ended,
                finished_at=ended,
            )
        )
    WorkflowRun.objects.bulk_create(runs)
    kpis.rebuild(actor=SYSTEM)
    period = Period(T0.date() - dt.timedelta(days=6), T0.date())
    report = kpi_report.build(period, workflows)

    def reference(where: str, params: list) -> tuple:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds),"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds)"
                f" FROM {KpiRunEnd._meta.db_table} WHERE workflow_id = ANY(%s) AND {where}",
                [list(workflows), *params],
            )
            return cursor.fetchone()

    for figures, shown in ((report.current, period), (report.previous, period.previous())):
        for key in (*workflows, ALL):
            ids_where = "" if key == ALL else f" AND workflow_id = {int(key)}"
            count, p50, p95 = reference(
                "finished_at >= %s AND finished_at < %s" + ids_where, [shown.start, shown.end]
            )
            assert count > 50
            assert (figures[key].p50, figures[key].p95) == (p50, p95)
    assert len(report.daily_durations) == 7
    for day, ended, p50, p95 in report.daily_durations:
        assert (ended, p50, p95) == reference("day = %s", [day])
        assert ended > 0
