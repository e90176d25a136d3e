"""The demo that `make run` seeds: people, incident workflows and runs in every state.

Each part is a small function so later issues can add their own (roles, agents, approvals).
Everything is idempotent: users are created once, a workflow gets a new version only when its
definition changed, runs are started with fixed idempotency keys, and a signal is sent only if
the run has not received it yet. Writes go through the orchestrator's services.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission

from orchestrator import services
from orchestrator.definitions import definition_digest, load_definition
from orchestrator.models import RunSignal, Workflow, WorkflowRun


@dataclass(frozen=True)
class DemoUser:
    """A demo login: its password is public, so the demo refuses to seed outside DEBUG."""

    username: str
    password: str
    role: str
    superuser: bool = False


DEMO_USERS = [
    DemoUser("admin", "admin-demo", "superuser: sees and changes everything", superuser=True),
    DemoUser("alice", "alice-demo", "on-call engineer (staff, read-only for now)"),
    DemoUser("bob", "bob-demo", "incident commander (staff, read-only for now)"),
    DemoUser("carol", "carol-demo", "auditor (staff, read-only for now)"),
]

VIEWERS_GROUP = "Demo viewers"
VIEWED_APPS = ["orchestrator", "agents", "audit"]

TRIAGE = """
description: Look up a service, probe its hosts, tell its owners, and restart what is down.
input_schema:
  type: object
  required: [incident, service]
  properties:
    incident: {type: string}
    service: {type: string}
defaults:
  retry: {max_attempts: 3, initial_interval: 1s, backoff_multiplier: 2, max_interval: 30s}
  timeout: 1m
steps:
  - id: lookup
    type: tool
    tool: incident.lookup_service
    args: {service: "{{ input.service }}"}
  # Two parallel branches after the lookup: probe the hosts, and acknowledge the incident.
  - id: health
    type: tool
    tool: incident.check_health
    depends_on: [lookup]
    args: {hosts: "{{ steps.lookup.hosts }}"}
  - id: acknowledge
    type: tool
    tool: incident.post_update
    depends_on: [lookup]
    args:
      incident: "{{ input.incident }}"
      channel: "#{{ steps.lookup.team }}"
      message: "Investigating {{ input.service }}; runbook: {{ steps.lookup.runbook }}"
  - id: restart
    type: tool
    tool: incident.restart_service
    depends_on: [health]
    when: steps.health.unhealthy | length > 0
    args: {service: "{{ input.service }}", hosts: "{{ steps.health.unhealthy }}"}
    retry: {max_attempts: 4, initial_interval: 2s}
  # Dynamic fan-out: one update per owner, joined when the branches above are done.
  - id: notify_owners
    type: tool
    tool: incident.post_update
    depends_on: [health, acknowledge]
    foreach: steps.lookup.owners
    args:
      incident: "{{ input.incident }}"
      channel: "@{{ item }}"
      message: >-
        {{ input.service }}: {{ steps.health.healthy }} of {{ steps.lookup.hosts | length }}
        hosts healthy
  - id: summary
    type: set
    depends_on: [restart, notify_owners]
    value:
      unhealthy: "{{ steps.health.unhealthy }}"
      restarted: "{{ steps.restart.restarted if steps.restart else [] }}"
      notified: "{{ steps.notify_owners | length }}"
output:
  incident: "{{ input.incident }}"
  service: "{{ input.service }}"
  summary: "{{ steps.summary }}"
"""

POSTMORTEM = """
description: Resolve an incident, let it cool down, then wait for a reviewer's sign-off.
input_schema:
  type: object
  required: [incident]
  properties:
    incident: {type: string}
    cooldown: {type: [string, number], description: "How long to wait before the review"}
steps:
  - id: resolve
    type: tool
    tool: incident.post_update
    args:
      incident: "{{ input.incident }}"
      channel: "#incidents"
      message: "{{ input.incident }} is resolved; postmortem review follows."
  - id: cool_down
    type: sleep
    depends_on: [resolve]
    duration: "{{ input.cooldown | default('2m') }}"
  - id: review
    type: wait
    depends_on: [cool_down]
    signal: postmortem_reviewed
    timeout: 1d
    on_timeout: continue
    timeout_output: {approved: false, reviewer: null}
  - id: publish
    type: tool
    tool: incident.post_update
    depends_on: [review]
    when: steps.review.approved
    args:
      incident: "{{ input.incident }}"
      channel: "#incidents"
      message: "Postmortem of {{ input.incident }} approved by {{ steps.review.reviewer }}."
output:
  incident: "{{ input.incident }}"
  approved: "{{ steps.review.approved }}"
"""

DEMO_WORKFLOWS = [
    ("incident-triage", "Incident triage", TRIAGE),
    ("incident-postmortem", "Incident postmortem", POSTMORTEM),
]


@dataclass(frozen=True)
class DemoRun:
    """A run the demo starts, and the signal (if any) it is sent at once."""

    key: str
    workflow: str
    input: dict[str, Any]
    started_by: str
    signal: tuple[str, dict[str, Any]] | None = None
    story: str = ""


DEMO_RUNS = [
    DemoRun(
        "demo:INC-1001",
        "incident-triage",
        {"incident": "INC-1001", "service": "checkout"},
        "alice",
        story="completes: one host is down, its restart fails once and is retried",
    ),
    DemoRun(
        "demo:INC-1002",
        "incident-triage",
        {"incident": "INC-1002", "service": "search"},
        "alice",
        story="completes: every host is healthy, so the restart is skipped",
    ),
    DemoRun(
        "demo:INC-0998:postmortem",
        "incident-postmortem",
        {"incident": "INC-0998", "cooldown": "10s"},
        "bob",
        signal=("postmortem_reviewed", {"approved": True, "reviewer": "carol"}),
        story="completes after 10 s: its signal arrived before the step that waits for it",
    ),
    DemoRun(
        "demo:INC-0999:postmortem",
        "incident-postmortem",
        {"incident": "INC-0999", "cooldown": "5s"},
        "bob",
        story="waits for the signal postmortem_reviewed (times out after a day)",
    ),
    DemoRun(
        "demo:INC-1000:postmortem",
        "incident-postmortem",
        {"incident": "INC-1000", "cooldown": "10m"},
        "bob",
        story="sleeps for 10 minutes, then waits for its review",
    ),
]


def ensure_users() -> dict[str, Any]:
    """Create the demo logins once; staff get view rights through the demo viewers group."""
    User = get_user_model()
    viewers = ensure_viewers_group()
    users = {}
    for spec in DEMO_USERS:
        user = User.objects.filter(username=spec.username).first()
        if user is None:
            if spec.superuser:
                user = User.objects.create_superuser(spec.username, "", spec.password)
            else:
                user = User.objects.create_user(spec.username, "", spec.password, is_staff=True)
                user.groups.add(viewers)
        users[spec.username] = user
    return users


def ensure_viewers_group() -> Group:
    """Return the group that may view (not change) the orchestrator, agents and audit models."""
    group, _ = Group.objects.get_or_create(name=VIEWERS_GROUP)
    group.permissions.add(
        *Permission.objects.filter(
            content_type__app_label__in=VIEWED_APPS, codename__startswith="view_"
        )
    )
    return group


def ensure_workflow(slug: str, name: str, text: str, actor) -> Workflow:
    """Create the workflow, or publish a new version when its definition changed."""
    definition = load_definition(text)
    description = definition.get("description", "")
    workflow = Workflow.objects.filter(slug=slug).first()
    if workflow is None:
        return services.create_workflow(
            slug=slug, name=name, description=description, definition=definition, actor=actor
        )
    latest = workflow.latest_version()
    if latest is None or latest.digest != definition_digest(definition):
        services.publish_version(workflow, definition, actor=actor, note="demo definition updated")
    return workflow


def ensure_workflows(actor) -> dict[str, Workflow]:
    """Create or update every demo workflow."""
    return {slug: ensure_workflow(slug, name, text, actor) for slug, name, text in DEMO_WORKFLOWS}


def ensure_run(spec: DemoRun, users: dict[str, Any]) -> WorkflowRun:
    """Start a demo run once (by its idempotency key) and send its signal once."""
    run = services.start_run(
        spec.workflow,
        spec.input,
        started_by=users.get(spec.started_by),
        trigger="demo",
        business_key=spec.input.get("incident", ""),
        idempotency_key=spec.key,
    )
    if spec.signal is not None:
        name, payload = spec.signal
        if not run.is_finished and not RunSignal.objects.filter(run=run, name=name).exists():
            services.send_signal(run, name, payload, sent_by=users.get(payload.get("reviewer")))
    return run


def ensure_runs(users: dict[str, Any]) -> list[WorkflowRun]:
    """Start every demo run."""
    return [ensure_run(spec, users) for spec in DEMO_RUNS]


def seed() -> dict[str, Any]:
    """Seed the whole demo and return what it holds."""
    users = ensure_users()
    workflows = ensure_workflows(users["admin"])
    runs = ensure_runs(users)
    return {"users": users, "workflows": workflows, "runs": runs}
