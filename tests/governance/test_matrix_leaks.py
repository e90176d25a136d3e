"""No back door around restrict(): every model, admin page, choice list, filter, autocomplete,
raw-id popup and export shows a person only what restricted() lets them see.

Most tests work in the seeded demo (its principals: admin, grace, alice, bob, dave, carol,
oscar); oscar, the outsider (a staff login with no role), must not see a single name.
"""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.test import Client, RequestFactory
from django.urls import reverse
from simple_history.models import HistoricalChanges

from agents.models import Agent, ModelCall, ToolInvocation
from audit import clock
from audit.models import AuditEntry
from governance import services as governance
from governance.models import Role
from governance.permissions import restricted, visible_people
from orchestrator import demo, engine
from orchestrator.models import EffectJournal, RunEvent, StepRun, Workflow, WorkflowRun

User = get_user_model()
DEMO_PRINCIPALS = ["admin", "grace", "alice", "bob", "dave", "carol", "oscar"]
STEWARD_APPS = ("audit", "governance", "agents", "orchestrator")


@pytest.fixture(autouse=True)
def _debug_on(settings):
    """The demo seeds only on DEBUG instances (pytest-django turns DEBUG off)."""
    settings.DEBUG = True


@pytest.fixture
def seeded(db):
    """The demo, seeded and run until its runs wait (steps, events, journals, audit entries)."""
    with clock.frozen(seed=3):
        demo.seed()
        engine.drain()
    return {name: User.objects.get(username=name) for name in DEMO_PRINCIPALS}


def client_for(user) -> Client:
    """Return a client signed in as `user`."""
    client = Client()
    client.force_login(user)
    return client


def request_for(user):
    """Return an admin request made by `user`."""
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def _is_history(model) -> bool:
    """Tell whether a model is simple-history's copy of another (shown through its original)."""
    return issubclass(model, HistoricalChanges) or model.__name__.startswith("Historical")


def _names_outsiders_must_not_see() -> set[str]:
    """The names in the demo: other people, roles, agents, workflows, tools' owners."""
    names = {u.username for u in User.objects.exclude(username__in=["admin", "oscar"])}
    names |= set(Role.objects.values_list("name", flat=True))
    names |= set(Agent.objects.values_list("name", flat=True))
    names |= set(Workflow.objects.values_list("name", flat=True))
    return {name for name in names if len(name) > 3}


# --- every model, every admin ----------------------------------------------------------------


def test_every_model_of_steward_has_a_restricted_queryset():
    """A model added later without restrict() fails here (its history copies are shown only
    through the original's history page, which checks the original)."""
    missing = []
    for model in apps.get_models():
        if model._meta.app_label not in STEWARD_APPS or _is_history(model):
            continue
        queryset = model._default_manager.all()
        restrict = getattr(queryset, "restrict", None)
        if not callable(restrict) or not restrict(AnonymousUser(), "view").query.is_empty():
            missing.append(model._meta.label)
    assert missing == []


def check_every_registered_admin_lists_only_what_restricted_allows(seeded):
    """Each admin's queryset (its changelist, change pages, autocomplete and raw-id popup all
    start from it) is within restricted() for every demo principal; oscar's is empty."""
    leaks = []
    for name, user in seeded.items():
        request = request_for(user)
        for model, model_admin in admin.site._registry.items():
            listed = set(model_admin.get_queryset(request).values_list("pk", flat=True))
            allowed = set(restricted(user, model).values_list("pk", flat=True))
            if not listed <= allowed:
                leaks.append((name, model._meta.label, len(listed - allowed)))
            if name == "oscar" and listed - {user.pk if model is User else None}:
                leaks.append((name, model._meta.label, len(listed)))
    assert leaks == []


def check_parts_follow_their_whole(seeded, role, watcher, run):
    """A run's steps, events and journals, an agent's calls: seen exactly with the run or agent."""
    bob = seeded["bob"]
    for model in (StepRun, RunEvent, EffectJournal):
        runs = set(model.objects.restrict(watcher).values_list("run_id", flat=True))
        assert runs == {run.pk}, model
        assert model.objects.restrict(bob).count() == model.objects.count(), model
    assert not ModelCall.objects.restrict(watcher).exists()
    agent = Agent.objects.filter(model_calls__isnull=False).first()
    governance.grant(role, "agents.view_agent", agent, actor=None)
    for model in (ModelCall, ToolInvocation):
        agents = set(model.objects.restrict(watcher).values_list("agent_id", flat=True))
        assert agents <= {agent.pk}, model
    assert ModelCall.objects.restrict(watcher).exists()
    assert not AuditEntry.objects.restrict(watcher).exists()  # the trail is not run by run


# --- oscar sees no names ---------------------------------------------------------------------


def _relations():
    """Every (source model, relation field) of a registered admin that the autocomplete serves."""
    for model in admin.site._registry:
        for field in model._meta.get_fields():
            if not (field.is_relation and field.concrete) or field.related_model is None:
                continue
            if admin.site.is_registered(field.related_model):
                target = admin.site.get_model_admin(field.related_model)
                if target.search_fields:
                    yield model, field


def check_the_outsider_sees_no_names_anywhere(seeded):
    """Changelists, raw-id popups, autocomplete JSON, the audit report and exports, the
    delegation form: nothing names another person, a role, an agent or a workflow."""
    oscar = seeded["oscar"]
    client = client_for(oscar)
    names = _names_outsiders_must_not_see()
    seen = []

    def check(label, response):
        if response.status_code in (302, 403, 404):
            return
        text = response.content.decode()
        found = sorted(name for name in names if name in text)
        if found:
            seen.append((label, found))

    for model in admin.site._registry:
        opts = model._meta
        changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
        check(changelist, client.get(changelist))
        check(f"{changelist} popup", client.get(changelist, {"_popup": 1, "_to_field": "id"}))
    for model, field in _relations():
        query = {
            "app_label": model._meta.app_label,
            "model_name": model._meta.model_name,
            "field_name": field.name,
            "term": "",
        }
        check(
            f"autocomplete {model.__name__}.{field.name}", client.get("/admin/autocomplete/", query)
        )
    for url in ("audit:report", "audit:export-csv", "audit:export-json"):
        check(url, client.get(reverse(url)))
    assert seen == []
    assert client.get(reverse("admin:governance_delegation_add")).status_code == 403
    refused = AuditEntry.objects.filter(
        action="governance.access_denied", actor_id=oscar.pk, target_type="governance.delegation"
    )
    assert refused.exists()
    assert list(visible_people(oscar)) == [oscar]


def check_the_delegation_form_offers_only_whom_the_person_may_see(seeded):
    """alice delegates her own approvals, for her role, to people she may see."""
    alice = seeded["alice"]
    form = client_for(alice).get(reverse("admin:governance_delegation_add")).context["adminform"]
    fields = form.form.fields
    assert list(fields["delegator"].queryset) == [alice]
    assert set(fields["delegate"].queryset) <= set(visible_people(alice))
    assert "bob" not in {u.username for u in fields["delegate"].queryset}
    assert {role.name for role in fields["role"].queryset} == {demo.ON_CALL}
    grace = seeded["grace"]
    form = client_for(grace).get(reverse("admin:governance_delegation_add")).context["adminform"]
    people = {u.username for u in form.form.fields["delegator"].queryset}
    assert {"alice", "bob", "dave", "carol", "oscar"} <= people
    assert "incident-monitor" not in {u.username for u in form.form.fields["delegate"].queryset}


def check_the_journals_step_autocomplete_offers_only_steps_of_visible_runs(watcher, run):
    """The autocomplete of a journal's step and run, and the step list's workflow filter."""
    client = client_for(watcher)
    query = {"app_label": "orchestrator", "model_name": "effectjournal", "term": ""}
    for field in ("step_run", "run"):
        response = client.get("/admin/autocomplete/", {**query, "field_name": field})
        assert response.status_code == 200
        ids = {int(row["id"]) for row in response.json()["results"]}
        model = StepRun if field == "step_run" else WorkflowRun
        assert ids and ids == set(model.objects.restrict(watcher).values_list("pk", flat=True))
        assert {model.objects.get(pk=pk).pk for pk in ids} <= (
            set(run.steps.values_list("pk", flat=True)) if field == "step_run" else {run.pk}
        )
    # The step list's filter on workflows names none the watcher may not view.
    steps = client.get(reverse("admin:orchestrator_steprun_changelist"))
    assert steps.status_code == 200
    for workflow in Workflow.objects.all():
        assert workflow.name not in steps.content.decode(), workflow


# --- the matrix over the demo's principals ---------------------------------------------------

PAGES = {
    "runs": WorkflowRun,
    "steps": StepRun,
    "events": RunEvent,
    "journal": EffectJournal,
    "model calls": ModelCall,
    "tool calls": ToolInvocation,
    "audit": AuditEntry,
    "roles": Role,
    "users": User,
}
# "all" every row, "none" a 403 or an empty list, "self" only themselves, "some" part of them;
# then whom the delegation form offers as delegates, and the form's status.
ALL = dict.fromkeys(PAGES, "all")
READER = {**ALL, "audit": "none", "roles": "none", "users": "none"}
MATRIX = {
    "admin": {**ALL, "people": "all", "delegate": 200},
    "grace": {**ALL, "users": "none", "people": "all", "delegate": 200},
    "alice": {**READER, "people": "some", "delegate": 200},
    "bob": {**READER, "people": "some", "delegate": 200},
    "dave": {**READER, "people": "some", "delegate": 200},
    "carol": {**ALL, "users": "none", "people": "all", "delegate": 200},
    "oscar": {**dict.fromkeys(PAGES, "none"), "people": "none", "delegate": 403},
}


def _seen(client, user, model) -> str:
    """Say how much of a model's admin list `user` sees: all, none, self or some."""
    opts = model._meta
    response = client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    if response.status_code == 403:
        return "none"
    assert response.status_code == 200, (user, model)
    rows = set(response.context["cl"].queryset.values_list("pk", flat=True))
    total = set(model._default_manager.values_list("pk", flat=True))
    if not rows:
        return "none"
    if rows == total:
        return "all"
    return "self" if rows == {user.pk} else "some"


def _people(client) -> str:
    """Say whom the delegation form offers as delegates: every person, colleagues, or none."""
    response = client.get(reverse("admin:governance_delegation_add"))
    if response.status_code != 200:
        return "none"
    offered = set(response.context["adminform"].form.fields["delegate"].queryset)
    persons = {u for u in User.objects.all() if governance.is_person(u)}
    return "all" if offered == persons else "some"


def check_what_each_demo_principal_sees_through_the_admin(seeded):
    """The matrix: what each demo principal's admin lists hold, whom the delegation form
    offers them, and whether they may open it."""
    got = {}
    for name, user in seeded.items():
        client = client_for(user)
        row = {column: _seen(client, user, model) for column, model in PAGES.items()}
        row["people"] = _people(client)
        row["delegate"] = client.get(reverse("admin:governance_delegation_add")).status_code
        got[name] = row
    assert got == MATRIX


# --- the tests (each seeds the demo once: seeding is the slow part) ---------------------------


def test_in_the_demo_every_admin_page_shows_only_what_restricted_allows(seeded):
    check_every_registered_admin_lists_only_what_restricted_allows(seeded)
    check_what_each_demo_principal_sees_through_the_admin(seeded)
    check_the_outsider_sees_no_names_anywhere(seeded)
    check_the_delegation_form_offers_only_whom_the_person_may_see(seeded)


def test_a_viewer_of_one_run_sees_its_parts_and_nothing_of_the_others(seeded):
    role = governance.create_role(name="Watchers of one run", owner=seeded["admin"])
    watcher = governance.create_person(username="walt", password="pw-walt-123", is_staff=True)
    governance.add_member(role, watcher, actor=None)
    run = WorkflowRun.objects.filter(steps__isnull=False, effects__isnull=False).first()
    governance.grant(role, "orchestrator.view_workflowrun", run, actor=None)
    check_the_journals_step_autocomplete_offers_only_steps_of_visible_runs(watcher, run)
    check_parts_follow_their_whole(seeded, role, watcher, run)


def test_a_roles_page_names_only_the_objects_its_viewer_may_see(company):
    from tests.governance.conftest import fresh

    governance.grant(
        company.approvers, "governance.view_delegation", company.delegation, actor=None
    )
    url = reverse("admin:governance_role_change", args=[company.approvers.pk])
    hidden = str(company.delegation)
    maya = client_for(fresh(company.maya)).get(url)  # views roles, not delegations
    assert maya.status_code == 200
    assert "view_delegation on delegation" in maya.content.decode()
    assert hidden not in maya.content.decode()
    gina = client_for(fresh(company.gina)).get(url)
    assert f"view_delegation on {hidden}" in gina.content.decode()
