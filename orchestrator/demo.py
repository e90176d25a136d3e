"""The demo that `make run` seeds: a small company, its governance, scripted agents and runs.

The parts, each a small function:
* people and roles (governance): a governance admin, an on-call engineer, an incident commander
  who approves, a manager who takes escalations, an auditor and an outsider, each role with an
  accountable owner, model permissions and object permissions on the workflows it approves;
* policies: production restarts and production changes need an incident commander's approval,
  scaling a service beyond 10 replicas is denied;
* scripted agents (the offline `scripted` provider: rules, not a model) for incident management:
  monitoring, triage, remediation, communications, and a coordinator that delegates to them;
* workflows and runs: two tool workflows, an agent workflow, and a change workflow with an
  `approval` step, started so that runs finish, wait for a signal, sleep, get a tool call denied,
  and wait for the incident commander's approval (tool steps pass the same policy check as
  agents: INC-1001's restart of checkout waits for bob);
* workflow versions are governed configuration: grace (a governance admin) proposes each
  version, and it goes live once a second governance admin (admin) approves it under the
  approval rule `workflow-versions`; one proposal of grace's waits for that approval, with
  its diff against the live version (it drops production-change's approval step).

Everything is idempotent: what exists is found by its name or slug and left alone (a workflow
gets a new version, an agent a new script, only when its definition changed), runs are started
with fixed idempotency keys, and a signal is sent only if the run has not received it yet. Every
write goes through the services of governance, agents and the orchestrator.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from agents import services as agents
from agents.models import Agent, ModelProvider, ProviderKind, Tool
from audit import clock
from audit.actors import SYSTEM
from governance import services as governance
from governance.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalRule,
    ApprovalSeen,
    ApprovalStatus,
    Escalation,
    EscalationStatus,
    Policy,
    PolicyRule,
    Role,
)
from orchestrator import kpis, services
from orchestrator.definitions import definition_digest, load_definition
from orchestrator.models import (
    EventKind,
    ManualBaseline,
    RunEvent,
    RunSignal,
    RunStatus,
    StepRun,
    StepStatus,
    VersionStatus,
    Workflow,
    WorkflowRun,
)

SEED_REASON = "demo seed"

# --- people and roles ----------------------------------------------------------------------------

GOVERNANCE_ADMINS = "Governance admins"
ON_CALL = "On-call engineers"
INCIDENT_COMMANDERS = "Incident commanders"
MANAGERS = "Managers"  # governance's default escalation role (STEWARD_ESCALATION_ROLE)
AUDITORS = "Auditors"


@dataclass(frozen=True)
class DemoUser:
    """A demo login: its password is public, so the demo refuses to seed outside DEBUG."""

    username: str
    password: str
    role: str
    superuser: bool = False
    roles: tuple[str, ...] = ()
    first_name: str = ""


DEMO_USERS = [
    DemoUser(
        "admin",
        "admin-demo",
        "superuser: sees and changes everything; approves grace's workflow versions",
        superuser=True,
        roles=(GOVERNANCE_ADMINS,),
    ),
    DemoUser(
        "grace",
        "grace-demo",
        "governance admin: roles, policies, approval rules, delegations; proposes workflow "
        "versions",
        roles=(GOVERNANCE_ADMINS,),
        first_name="Grace",
    ),
    DemoUser(
        "alice",
        "alice-demo",
        "on-call engineer: starts the incidents, owns the ops agents",
        roles=(ON_CALL,),
        first_name="Alice",
    ),
    DemoUser(
        "bob",
        "bob-demo",
        "incident commander: approves production changes (3 requests wait)",
        roles=(INCIDENT_COMMANDERS,),
        first_name="Bob",
    ),
    DemoUser(
        "dave",
        "dave-demo",
        "manager: reviews postmortems, takes escalations and approvals left for a day",
        roles=(MANAGERS,),
        first_name="Dave",
    ),
    DemoUser(
        "carol",
        "carol-demo",
        "auditor: reads runs, agents, governance and the audit log",
        roles=(AUDITORS,),
        first_name="Carol",
    ),
    DemoUser("oscar", "oscar-demo", "outsider: staff login with no role, sees nothing"),
]

# Models whose rows governance admins manage (the governed records of the governance app).
GOVERNANCE_MODELS = [
    "role",
    "principal",
    "policy",
    "policyrule",
    "approvalrule",
    "escalationlevel",
    "delegation",
    "apitoken",
]


@dataclass(frozen=True)
class DemoRole:
    """A role of the demo company: what it is for, who answers for it, what it may do."""

    name: str
    description: str
    owner: str
    view_apps: tuple[str, ...] = ()
    permissions: tuple[str, ...] = ()
    # Model-level view permissions left out: the role holds them on some rows only (guardian).
    except_views: tuple[str, ...] = ()
    # Object permissions (guardian) on single workflows, by slug: (permission, workflow).
    on_workflows: tuple[tuple[str, str], ...] = ()


DEMO_ROLES = [
    DemoRole(
        GOVERNANCE_ADMINS,
        "Run governance: roles, members, policies, approval rules and delegations.",
        owner="admin",
        view_apps=("orchestrator", "agents", "governance", "audit"),
        permissions=(
            *(
                f"governance.{action}_{model}"
                for model in GOVERNANCE_MODELS
                for action in ("add", "change", "delete")
            ),
            # Workflows are governed configuration: governance admins create them and propose
            # versions (another of them approves each), and may exempt one from that approval.
            "orchestrator.add_workflow",
            "orchestrator.publish_workflow",
            "orchestrator.exempt_workflow",
            # ... and declare the manual baselines the KPI page compares against.
            *(f"orchestrator.{action}_manualbaseline" for action in ("add", "change", "delete")),
        ),
    ),
    DemoRole(
        ON_CALL,
        "Respond to incidents: start incident runs and follow the agents' work.",
        owner="dave",
        view_apps=("orchestrator", "agents"),
        # Starting a run needs `change` on its workflow: on these three only.
        on_workflows=tuple(
            ("orchestrator.change_workflow", slug)
            for slug in ("incident-triage", "incident-response", "production-change")
        ),
    ),
    DemoRole(
        INCIDENT_COMMANDERS,
        "Lead incidents; approve restarts and changes in production.",
        owner="dave",
        view_apps=("orchestrator", "agents"),
        permissions=("governance.view_approvalrequest",),
        except_views=("orchestrator.view_workflow",),
        # An approver must see what they approve for (the approval's target is the workflow);
        # incident commanders also start postmortems.
        on_workflows=(
            ("orchestrator.view_workflow", "incident-response"),
            ("orchestrator.view_workflow", "production-change"),
            ("orchestrator.view_workflow", "incident-postmortem"),
            ("orchestrator.change_workflow", "incident-postmortem"),
        ),
    ),
    DemoRole(
        MANAGERS,
        "Engineering managers: take escalations, and approvals left undecided for a day.",
        owner="grace",
        view_apps=("orchestrator", "agents"),
        permissions=(
            "governance.view_approvalrequest",
            "governance.view_escalation",
            "governance.resolve_escalation",
            # Managers steer runs: send their signals (a postmortem review), pause, cancel.
            "orchestrator.change_workflowrun",
        ),
    ),
    DemoRole(
        AUDITORS,
        "Read everything that happened: runs, agents, governance records and the audit log.",
        owner="grace",
        view_apps=("orchestrator", "agents", "governance", "audit"),
    ),
]

# --- approvals and policies ----------------------------------------------------------------------

APPROVAL_RULE = "incident-commander"
APPROVAL_SLA_SECONDS = 24 * 3600  # a day for bob, then a day for the managers; then it expires
VERSION_RULE = "workflow-versions"  # settings.STEWARD_VERSION_APPROVAL_RULE
VERSION_SLA_SECONDS = 7 * 24 * 3600
VERSION_AUTHOR = "grace"  # proposes every demo workflow version ...
VERSION_APPROVER = "admin"  # ... and admin, a second governance admin, approves it


@dataclass(frozen=True)
class DemoRule:
    """A policy rule of the demo."""

    name: str
    action: str
    condition: str
    effect: str
    reason: str
    risk: str = "medium"
    approval_rule: str = ""
    position: int = 10


@dataclass(frozen=True)
class DemoPolicy:
    """A policy of the demo and its rules."""

    slug: str
    name: str
    description: str
    priority: int
    rules: tuple[DemoRule, ...]


DEMO_POLICIES = [
    DemoPolicy(
        "production-changes",
        "Production changes",
        "Restarts and changes of production services need an incident commander's approval.",
        priority=10,
        rules=(
            DemoRule(
                "Production restarts need an incident commander",
                action="tool.incident.restart_service",
                # The tool resolves its arguments against the service catalogue first: the
                # environment is the catalogue's, whatever the service's spelling or hosts.
                condition="arguments.environment == 'production'",
                effect="require_approval",
                reason="restarting a production service needs an incident commander's approval",
                risk="high",
                approval_rule=APPROVAL_RULE,
                position=10,
            ),
            DemoRule(
                "Production changes need an incident commander",
                action="change.*",
                condition="arguments.environment == 'production'",
                effect="require_approval",
                reason="a change in production needs an incident commander's approval",
                risk="high",
                approval_rule=APPROVAL_RULE,
                position=20,
            ),
        ),
    ),
    DemoPolicy(
        "capacity-limits",
        "Capacity limits",
        "Scaling beyond the capacity plan is refused to everyone, agents included.",
        priority=20,
        rules=(
            DemoRule(
                "No scaling beyond 10 replicas",
                action="tool.incident.scale_service",
                condition="arguments.replicas > 10",
                effect="deny",
                reason="scaling beyond 10 replicas needs a capacity review; ask for 10 or fewer",
                risk="medium",
            ),
        ),
    ),
]

# --- tools and scripted agents -------------------------------------------------------------------

PROVIDER_SLUG = "scripted-demo"
PROVIDER_NAME = "Scripted demo rules (no model)"
SCRIPTED = "Scripted demo agent, no real model: it answers from fixed rules. "

# Tools the demo agents use, and what an admin set on them.
DEMO_TOOLS: dict[str, dict[str, Any]] = {
    "incident.lookup_service": {"enabled": True},
    "incident.check_health": {"enabled": True},
    "incident.restart_service": {"enabled": True, "risk": "high"},
    "incident.scale_service": {"enabled": True},
    "incident.post_update": {"enabled": True},
    "delegate": {"enabled": True},
}

MONITOR_RULES = [
    {
        "when": "turn == 1",
        "tool_calls": [
            {"tool": "incident.lookup_service", "arguments": {"service": "{{ input.service }}"}}
        ],
    },
    {
        "when": "turn == 2 and results[0].ok",
        "tool_calls": [
            {
                "tool": "incident.check_health",
                "arguments": {"hosts": "{{ results[0].result.hosts }}"},
            }
        ],
    },
    {
        "when": "turn == 3 and results[0].ok",
        "final": {
            "service": "{{ input.service }}",
            "tier": "{{ history[0].result.tier }}",
            "hosts": "{{ history[0].result.hosts | length }}",
            "unhealthy": "{{ results[0].result.unhealthy }}",
        },
        "confidence": 0.95,
    },
    {
        "final": {"service": "{{ input.service }}", "tier": 0, "hosts": 0, "unhealthy": []},
        "confidence": 0.2,
    },
]

TRIAGE_RULES = [
    {
        "when": "input.unhealthy | length > 0 and input.tier == 1",
        "final": {
            "severity": "sev1",
            "reason": "{{ input.unhealthy | length }} host(s) of tier-1 service "
            "{{ input.service }} down",
        },
        "confidence": 0.9,
    },
    {
        "when": "input.unhealthy | length > 0 or input.symptom == 'slow'",
        "final": {
            "severity": "sev2",
            "reason": "{{ input.service }} is degraded ({{ input.symptom }}) but serving",
        },
        "confidence": 0.85,
    },
    {
        "final": {
            "severity": "sev3",
            "reason": "every host of {{ input.service }} is healthy; {{ input.symptom }} reported",
        },
        "confidence": 0.8,
    },
]

REMEDIATION_RULES = [
    {
        "when": "turn == 1 and input.unhealthy | length > 0",
        "tool_calls": [
            {
                "tool": "incident.restart_service",
                "arguments": {"service": "{{ input.service }}", "hosts": "{{ input.unhealthy }}"},
            }
        ],
    },
    {
        "when": "turn == 1 and input.symptom == 'slow'",
        "tool_calls": [
            {
                "tool": "incident.scale_service",
                "arguments": {"service": "{{ input.service }}", "replicas": 20},
            }
        ],
    },
    {
        "when": "turn == 1",
        "final": {
            "runbook": [
                "No host is down: watch {{ input.service }}'s error rate for 15 minutes.",
            ],
            "applied": [],
        },
        "confidence": 0.9,
    },
    {
        # Refused by a policy: ask for what the capacity plan allows.
        "when": "turn == 2 and not results[0].ok and results[0].stage == 'policy' "
        "and input.symptom == 'slow'",
        "tool_calls": [
            {
                "tool": "incident.scale_service",
                "arguments": {"service": "{{ input.service }}", "replicas": 10},
            }
        ],
    },
    {
        "when": "results[0].ok and input.symptom == 'slow'",
        "final": {
            "runbook": [
                "Scale {{ input.service }} from {{ results[0].result.previous }} to "
                "{{ results[0].result.replicas }} replicas.",
                "Before going further, a capacity review: "
                "{{ history[0].reason | default('not needed') }}.",
            ],
            "applied": [
                "scaled {{ input.service }} to {{ results[0].result.replicas }} replicas",
            ],
        },
        "confidence": 0.85,
    },
    {
        "when": "results[0].ok",
        "final": {
            "runbook": [
                "Restart {{ input.service }} on {{ input.unhealthy | join(', ') }}.",
                "Check its health again in 5 minutes.",
            ],
            "applied": ["restarted {{ results[0].result.restarted | join(', ') }}"],
        },
        "confidence": 0.9,
    },
    {
        # Rejected, or failed for good: below the threshold, so a person takes over.
        "final": {
            "runbook": [
                "Hand over to a person: {{ results[0].reason | default('the last call failed') }}",
            ],
            "applied": [],
        },
        "confidence": 0.4,
    },
]

COMMS_RULES = [
    {
        "when": "turn == 1",
        "tool_calls": [
            {
                "tool": "incident.post_update",
                "arguments": {
                    "incident": "{{ input.incident }}",
                    "channel": "#status",
                    "message": "{{ input.incident }} ({{ input.severity }}): we are working on "
                    "{{ input.service }}; next update in 30 minutes.",
                },
            }
        ],
    },
    {
        "when": "results[0].ok",
        "final": {"channel": "#status", "message": "{{ results[0].result.message }}"},
        "confidence": 0.95,
    },
    {"final": {"channel": "#status", "message": ""}, "confidence": 0.3},
]

COORDINATOR_RULES = [
    {
        "when": "turn == 1",
        "tool_calls": [
            {
                "tool": "delegate",
                "arguments": {
                    "agent": "incident-monitor",
                    "task": {"incident": "{{ input.incident }}", "service": "{{ input.service }}"},
                },
            }
        ],
    },
    {
        "when": "turn == 2 and results[0].ok",
        "tool_calls": [
            {
                "tool": "delegate",
                "arguments": {
                    "agent": "incident-triage",
                    "task": {
                        "incident": "{{ input.incident }}",
                        "service": "{{ input.service }}",
                        "symptom": "{{ input.symptom }}",
                        "tier": "{{ results[0].result.tier }}",
                        "unhealthy": "{{ results[0].result.unhealthy }}",
                    },
                },
            }
        ],
    },
    {
        # Remediation and communications in parallel, once the severity is known.
        "when": "turn == 3 and results[0].ok",
        "tool_calls": [
            {
                "tool": "delegate",
                "arguments": {
                    "agent": "incident-remediation",
                    "task": {
                        "incident": "{{ input.incident }}",
                        "service": "{{ input.service }}",
                        "symptom": "{{ input.symptom }}",
                        "severity": "{{ results[0].result.severity }}",
                        "unhealthy": "{{ history[0].result.unhealthy }}",
                    },
                },
            },
            {
                "tool": "delegate",
                "arguments": {
                    "agent": "incident-comms",
                    "task": {
                        "incident": "{{ input.incident }}",
                        "service": "{{ input.service }}",
                        "severity": "{{ results[0].result.severity }}",
                    },
                },
            },
        ],
    },
    {
        "when": "turn == 4 and results[0].ok and results[1].ok",
        "final": {
            "incident": "{{ input.incident }}",
            "severity": "{{ history[1].result.severity }}",
            "unhealthy": "{{ history[0].result.unhealthy }}",
            "runbook": "{{ results[0].result.runbook }}",
            "applied": "{{ results[0].result.applied }}",
            "update": "{{ results[1].result.message }}",
        },
        "confidence": 0.9,
    },
    {
        "final": {
            "incident": "{{ input.incident }}",
            "problem": "a specialised agent did not finish; a person takes over",
        },
        "confidence": 0.3,
    },
]

STRING_LIST = {"type": "array", "items": {"type": "string"}}


@dataclass(frozen=True)
class DemoAgent:
    """A scripted agent of the demo, with its accountable owner, tools and output schema."""

    slug: str
    name: str
    owner: str
    mandate: str
    rules: list[dict[str, Any]]
    tools: tuple[str, ...] = ()
    delegates: tuple[str, ...] = ()
    output_schema: dict[str, Any] = field(default_factory=dict)


# Specialists first: a coordinator's delegates must exist before it.
DEMO_AGENTS = [
    DemoAgent(
        "incident-monitor",
        "Monitoring agent (scripted)",
        owner="alice",
        mandate=SCRIPTED + "Look up a service and probe its hosts; report which are down.",
        rules=MONITOR_RULES,
        tools=("incident.lookup_service", "incident.check_health"),
        output_schema={
            "type": "object",
            "required": ["service", "tier", "unhealthy"],
            "properties": {
                "service": {"type": "string"},
                "tier": {"type": "integer"},
                "hosts": {"type": "integer"},
                "unhealthy": STRING_LIST,
            },
        },
    ),
    DemoAgent(
        "incident-triage",
        "Triage agent (scripted)",
        owner="alice",
        mandate=SCRIPTED + "Classify an incident's severity (sev1 to sev3) from what monitoring "
        "found.",
        rules=TRIAGE_RULES,
        output_schema={
            "type": "object",
            "required": ["severity", "reason"],
            "properties": {
                "severity": {"enum": ["sev1", "sev2", "sev3"]},
                "reason": {"type": "string"},
            },
        },
    ),
    DemoAgent(
        "incident-remediation",
        "Remediation agent (scripted)",
        owner="alice",
        mandate=SCRIPTED + "Propose runbook steps and apply them: restart hosts that are down, "
        "scale a slow service. Production restarts need an incident commander's approval.",
        rules=REMEDIATION_RULES,
        tools=("incident.restart_service", "incident.scale_service"),
        output_schema={
            "type": "object",
            "required": ["runbook", "applied"],
            "properties": {"runbook": STRING_LIST, "applied": STRING_LIST},
        },
    ),
    DemoAgent(
        "incident-comms",
        "Communications agent (scripted)",
        owner="dave",
        mandate=SCRIPTED + "Draft and post the status update of an incident.",
        rules=COMMS_RULES,
        tools=("incident.post_update",),
        output_schema={
            "type": "object",
            "required": ["channel", "message"],
            "properties": {"channel": {"type": "string"}, "message": {"type": "string"}},
        },
    ),
    DemoAgent(
        "incident-coordinator",
        "Incident coordinator (scripted)",
        owner="dave",
        mandate=SCRIPTED + "Run an incident: monitoring, then triage, then remediation and "
        "communications in parallel; sum up.",
        rules=COORDINATOR_RULES,
        tools=("delegate",),
        delegates=(
            "incident-monitor",
            "incident-triage",
            "incident-remediation",
            "incident-comms",
        ),
        output_schema={"type": "object", "required": ["incident"]},
    ),
]

# --- workflows -----------------------------------------------------------------------------------

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
# The KPI page's time to acknowledge: from the run's start until its owners are told.
acknowledgement: {step: acknowledge}
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

INCIDENT_RESPONSE = """
description: >-
  An incident handled by scripted agents: the coordinator delegates to the monitoring, triage,
  remediation and communications agents (scripted demo agents, no real model).
input_schema:
  type: object
  required: [incident, service, symptom]
  properties:
    incident: {type: string}
    service: {type: string}
    symptom: {type: string, enum: [down, slow, errors]}
defaults:
  retry: {max_attempts: 3, initial_interval: 1s, backoff_multiplier: 2, max_interval: 30s}
steps:
  - id: coordinate
    type: agent
    agent: incident-coordinator
    task:
      incident: "{{ input.incident }}"
      service: "{{ input.service }}"
      symptom: "{{ input.symptom }}"
    escalate_to: Managers
output:
  incident: "{{ input.incident }}"
  result: "{{ steps.coordinate.result }}"
"""

PRODUCTION_CHANGE = """
description: Restart a service in production once an incident commander approved the change.
input_schema:
  type: object
  required: [change, service, environment, reason]
  properties:
    change: {type: string}
    service: {type: string}
    environment: {type: string, enum: [staging, production]}
    reason: {type: string}
defaults:
  retry: {max_attempts: 3, initial_interval: 1s, backoff_multiplier: 2, max_interval: 30s}
steps:
  - id: lookup
    type: tool
    tool: incident.lookup_service
    args: {service: "{{ input.service }}"}
  # What bob approves is the restart call itself: the same action and the same canonical
  # arguments as the restart step's (the catalogue's service name, hosts and environment, as
  # the tool resolves them), so that step's policy check finds this approval and does not ask a
  # second time.
  - id: approve
    type: approval
    depends_on: [lookup]
    rule: incident-commander
    action: tool.incident.restart_service
    risk: high
    summary: >-
      {{ input.change }}: restart {{ input.service }} in {{ input.environment }} on
      {{ steps.lookup.hosts | join(', ') }}. Why: {{ input.reason }}
    arguments:
      service: "{{ steps.lookup.service }}"
      hosts: "{{ steps.lookup.hosts }}"
      environment: "{{ steps.lookup.environment }}"
  - id: restart
    type: tool
    tool: incident.restart_service
    depends_on: [approve]
    args:
      service: "{{ steps.lookup.service }}"
      hosts: "{{ steps.lookup.hosts }}"
      environment: "{{ steps.lookup.environment }}"
  - id: announce
    type: tool
    tool: incident.post_update
    depends_on: [restart]
    args:
      incident: "{{ input.change }}"
      channel: "#changes"
      message: >-
        {{ input.change }}: {{ input.service }} restarted in {{ input.environment }}, approved by
        {{ steps.approve.decisions | map(attribute='by') | join(', ') }}.
output:
  change: "{{ input.change }}"
  restarted: "{{ steps.restart.restarted }}"
  approved_by: "{{ steps.approve.decisions | map(attribute='by') | list }}"
"""

DEMO_WORKFLOWS = [
    ("incident-triage", "Incident triage", TRIAGE),
    ("incident-postmortem", "Incident postmortem", POSTMORTEM),
    ("incident-response", "Incident response (scripted agents)", INCIDENT_RESPONSE),
    ("production-change", "Production change", PRODUCTION_CHANGE),
]


def _without_approval_step(text: str) -> dict[str, Any]:
    """Return the production change without its approval step (what issue 10's alice did)."""
    definition = load_definition(text)
    steps = [step for step in definition["steps"] if step["id"] != "approve"]
    for step in steps:
        if step["id"] == "restart":
            step["depends_on"] = ["lookup"]
        if step["id"] == "announce":
            step["args"]["message"] = "{{ input.change }}: {{ input.service }} restarted."
    output = {k: v for k, v in definition["output"].items() if k != "approved_by"}
    return {**definition, "steps": steps, "output": output}


# A proposal left waiting for its approval: the inbox shows its diff against the live version.
DEMO_PROPOSAL = (
    "production-change",
    _without_approval_step(PRODUCTION_CHANGE),
    "skip the approval step: restarts are urgent",
)


@dataclass(frozen=True)
class DemoRun:
    """A run the demo starts, and the signal (if any) it is sent at once."""

    key: str
    workflow: str
    input: dict[str, Any]
    started_by: str
    signal: tuple[str, dict[str, Any]] | None = None
    story: str = ""

    @property
    def business_key(self) -> str:
        """Return the incident or change the run is about."""
        return str(self.input.get("incident") or self.input.get("change") or "")


DEMO_RUNS = [
    DemoRun(
        "demo:INC-1001",
        "incident-triage",
        {"incident": "INC-1001", "service": "checkout"},
        "alice",
        story="waits for bob: checkout-2 is down and its restart in production needs an "
        "incident commander's approval; approved, it fails once and is retried",
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
        signal=("postmortem_reviewed", {"approved": True, "reviewer": "dave"}),
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
    DemoRun(
        "demo:INC-2001",
        "incident-response",
        {"incident": "INC-2001", "service": "search", "symptom": "errors"},
        "alice",
        story="agents finish: every host healthy, sev3, nothing to restart, update posted",
    ),
    DemoRun(
        "demo:INC-2002",
        "incident-response",
        {"incident": "INC-2002", "service": "checkout", "symptom": "down"},
        "alice",
        story="agents wait: restarting checkout-2 needs an incident commander (bob) to approve",
    ),
    DemoRun(
        "demo:INC-2003",
        "incident-response",
        {"incident": "INC-2003", "service": "billing", "symptom": "slow"},
        "alice",
        story="agents finish after a denial: 20 replicas refused by policy, scaled to 10",
    ),
    DemoRun(
        "demo:CHG-3001",
        "production-change",
        {
            "change": "CHG-3001",
            "service": "billing",
            "environment": "production",
            "reason": "apply the new TLS certificate",
        },
        "alice",
        story="waits at its approval step for an incident commander (bob); the restart it "
        "approves then runs without asking again",
    ),
]

# --- seeding -------------------------------------------------------------------------------------


def ensure_users() -> dict[str, Any]:
    """Create the demo logins once, each a governance principal (a person)."""
    User = get_user_model()
    users = {}
    for spec in DEMO_USERS:
        user = User.objects.filter(username=spec.username).first()
        if user is None and spec.superuser:
            # Governance has no service for superusers: Django's own creates it, then the
            # principal is added like any person's.
            user = User.objects.create_superuser(spec.username, "", spec.password)
        elif user is None:
            user = governance.create_person(
                username=spec.username,
                password=spec.password,
                first_name=spec.first_name,
                is_staff=True,
                actor=SYSTEM,
            )
        governance.ensure_principal(user, actor=SYSTEM)
        users[spec.username] = user
    return users


def view_permissions(apps: tuple[str, ...], leave_out: tuple[str, ...] = ()) -> list[str]:
    """Return 'app.view_model' for every model of these apps, less those left out."""
    names = Permission.objects.filter(
        content_type__app_label__in=apps, codename__startswith="view_"
    ).values_list("content_type__app_label", "codename")
    return sorted(
        f"{app}.{codename}" for app, codename in names if f"{app}.{codename}" not in leave_out
    )


def ensure_roles(users: dict[str, Any]) -> dict[str, Role]:
    """Create the roles once, give them their members and model-level permissions."""
    admin = users["admin"]
    roles = {}
    for spec in DEMO_ROLES:
        role = Role.objects.filter(name=spec.name).first()
        if role is None:
            role = governance.create_role(
                name=spec.name,
                description=spec.description,
                owner=users[spec.owner],
                actor=admin,
                reason=SEED_REASON,
            )
        members = [users[u.username] for u in DEMO_USERS if spec.name in u.roles]
        current = set(role.group.user_set.values_list("pk", flat=True))
        if not {member.pk for member in members} <= current:
            for member in members:
                if member.pk not in current:
                    # As the system: a membership admin gave admin would not count (nobody
                    # decides under a power they granted themselves).
                    governance.add_member(role, member, actor=SYSTEM, reason=SEED_REASON)
        held = {
            f"{app}.{codename}"
            for app, codename in role.group.permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        wanted = [*view_permissions(spec.view_apps, spec.except_views), *spec.permissions]
        for perm in wanted:
            if perm not in held:
                governance.grant(role, perm, actor=SYSTEM, reason=SEED_REASON)
        roles[spec.name] = role
    return roles


def ensure_approval_rule(roles: dict[str, Role], admin) -> ApprovalRule:
    """Create the incident commanders' approval rule, escalating to the managers after a day."""
    rule = ApprovalRule.objects.filter(slug=APPROVAL_RULE).first()
    if rule is None:
        rule = governance.create_approval_rule(
            slug=APPROVAL_RULE,
            name="Incident commander approval",
            description="One incident commander approves; after a day the managers may.",
            role=roles[INCIDENT_COMMANDERS],
            approvals_required=1,
            sla_seconds=APPROVAL_SLA_SECONDS,
            escalation=[roles[MANAGERS]],
            actor=admin,
            reason=SEED_REASON,
        )
    return rule


def _rule_fields(spec: DemoRule) -> dict[str, Any]:
    """Return the fields of a policy rule as the demo defines it."""
    approval_rule = (
        ApprovalRule.objects.get(slug=spec.approval_rule) if spec.approval_rule else None
    )
    return {
        "position": spec.position,
        "action": spec.action,
        "condition": spec.condition,
        "effect": spec.effect,
        "reason": spec.reason,
        "risk": spec.risk,
        "approval_rule": approval_rule,
    }


def ensure_policies(admin) -> dict[str, Policy]:
    """Create the policies once; save a rule (a new policy version) only when it changed."""
    policies = {}
    for spec in DEMO_POLICIES:
        policy = Policy.objects.filter(slug=spec.slug).first()
        if policy is None:
            policy = governance.create_policy(
                slug=spec.slug,
                name=spec.name,
                description=spec.description,
                priority=spec.priority,
                actor=admin,
                reason=SEED_REASON,
            )
        for rule_spec in spec.rules:
            fields = _rule_fields(rule_spec)
            rule = PolicyRule.objects.filter(policy=policy, name=rule_spec.name).first()
            if rule is not None and all(getattr(rule, k) == v for k, v in fields.items()):
                continue
            rule = rule or PolicyRule(policy=policy, name=rule_spec.name)
            for name, value in fields.items():
                setattr(rule, name, value)
            governance.save_rule(rule, actor=admin, reason=SEED_REASON)
        policy.refresh_from_db()
        policies[spec.slug] = policy
    return policies


def ensure_tools(admin) -> dict[str, Tool]:
    """Mirror the registered tools, then enable the demo's (and set their risk) once."""
    agents.sync_tools(actor=SYSTEM)
    tools = {}
    for name, wanted in DEMO_TOOLS.items():
        tool = Tool.objects.get(name=name)
        changes = {k: v for k, v in wanted.items() if getattr(tool, k) != v}
        if changes:
            tool = agents.update_tool(tool, actor=admin, reason=SEED_REASON, **changes)
        tools[name] = tool
    return tools


def ensure_agents(users: dict[str, Any]) -> dict[str, Agent]:
    """Create the scripted agents once; a changed script or schema updates the agent."""
    admin = users["admin"]
    provider = ModelProvider.objects.filter(slug=PROVIDER_SLUG).first()
    if provider is None:
        provider = agents.create_provider(
            slug=PROVIDER_SLUG,
            name=PROVIDER_NAME,
            kind=ProviderKind.SCRIPTED,
            actor=admin,
            reason=SEED_REASON,
        )
    created: dict[str, Agent] = {}
    for spec in DEMO_AGENTS:
        script = {"rules": spec.rules}
        agent = Agent.objects.filter(slug=spec.slug).first()
        if agent is None:
            agent = agents.create_agent(
                slug=spec.slug,
                name=spec.name,
                mandate=spec.mandate,
                owner=users[spec.owner],
                provider=provider,
                model="rules",
                script=script,
                tools=list(spec.tools),
                delegates=[created[slug] for slug in spec.delegates],
                output_schema=spec.output_schema,
                actor=admin,
                reason=SEED_REASON,
            )
        else:
            wanted = {
                "name": spec.name,
                "mandate": spec.mandate,
                "script": script,
                "output_schema": spec.output_schema,
            }
            changes = {k: v for k, v in wanted.items() if getattr(agent, k) != v}
            if changes:
                agent = agents.update_agent(
                    agent, actor=admin, reason="demo script updated", **changes
                )
        created[spec.slug] = agent
    return created


def ensure_version_rule(roles: dict[str, Role], admin) -> ApprovalRule:
    """Create the rule that says who approves workflow versions: one governance admin."""
    rule = ApprovalRule.objects.filter(slug=VERSION_RULE).first()
    if rule is None:
        rule = governance.create_approval_rule(
            slug=VERSION_RULE,
            name="Workflow version approval",
            description="A governance admin other than the author approves each new version of "
            "a workflow before it goes live.",
            role=roles[GOVERNANCE_ADMINS],
            approvals_required=1,
            sla_seconds=VERSION_SLA_SECONDS,
            actor=admin,
            reason=SEED_REASON,
        )
    return rule


def _approve(version, approver) -> None:
    """Approve a proposed version as the second governance admin; it goes live."""
    if version.status != VersionStatus.PROPOSED:
        return
    governance.decide_approval(
        version.approval_request_id,
        user=approver,
        decision="approve",
        comment="demo seed: diff reviewed",
    )


def ensure_workflow(slug: str, name: str, text: str, author, approver) -> Workflow:
    """Create the workflow, or propose a new version when its definition changed; approve it."""
    definition = load_definition(text)
    description = definition.get("description", "")
    wanted = definition_digest(definition)
    workflow = Workflow.objects.filter(slug=slug).first()
    if workflow is None:
        workflow = services.create_workflow(
            slug=slug, name=name, description=description, definition=definition, actor=author
        )
    live = workflow.live_version
    if live is None or live.digest != wanted:
        proposed = workflow.versions.filter(digest=wanted, status=VersionStatus.PROPOSED).first()
        if proposed is None:
            proposed = services.publish_version(
                workflow, definition, actor=author, note="demo definition updated"
            )
        _approve(proposed, approver)
        workflow.refresh_from_db()
    return workflow


def ensure_workflows(users: dict[str, Any]) -> dict[str, Workflow]:
    """Create or update every demo workflow: grace proposes, admin approves."""
    # Reloaded: the permissions the roles just gave them are not in a cached user's set.
    User = get_user_model()
    author = User.objects.get(pk=users[VERSION_AUTHOR].pk)
    approver = User.objects.get(pk=users[VERSION_APPROVER].pk)
    return {
        slug: ensure_workflow(slug, name, text, author, approver)
        for slug, name, text in DEMO_WORKFLOWS
    }


def ensure_proposal(workflows: dict[str, Workflow], users: dict[str, Any]):
    """Leave grace's proposal waiting for a second governance admin, once."""
    slug, definition, note = DEMO_PROPOSAL
    workflow = workflows[slug]
    existing = workflow.versions.filter(digest=definition_digest(definition)).first()
    if existing is not None:
        return existing
    return services.publish_version(workflow, definition, actor=users[VERSION_AUTHOR], note=note)


def ensure_workflow_permissions(
    roles: dict[str, Role], workflows: dict[str, Workflow], admin
) -> None:
    """Give roles their object permissions on single workflows (guardian)."""
    for spec in DEMO_ROLES:
        for perm, slug in spec.on_workflows:
            role, workflow = roles[spec.name], workflows[slug]
            action = perm.split(".", 1)[1].removesuffix("_workflow")
            if not governance.role_grants(role, action, workflow):
                governance.grant(role, perm, workflow, actor=admin)


def ensure_run(spec: DemoRun, users: dict[str, Any]) -> WorkflowRun:
    """Start a demo run once (by its idempotency key) and send its signal once."""
    run = services.start_run(
        spec.workflow,
        spec.input,
        started_by=users[spec.started_by],
        trigger="demo",
        business_key=spec.business_key,
        idempotency_key=spec.key,
    )
    if spec.signal is not None:
        name, payload = spec.signal
        if not run.is_finished and not RunSignal.objects.filter(run=run, name=name).exists():
            reviewer = users[payload["reviewer"]] if "reviewer" in payload else SYSTEM
            services.send_signal(run, name, payload, sent_by=reviewer)
    return run


def ensure_runs(users: dict[str, Any]) -> list[WorkflowRun]:
    """Start every demo run."""
    return [ensure_run(spec, users) for spec in DEMO_RUNS]


# --- weeks of incident history, for the KPI page ------------------------------------------------

HISTORY_TRIGGER = "demo-history"
TRIAGE_BASELINE = {
    "ack_seconds": 15 * 60,
    "target_ack_seconds": 5 * 60,
    "manual_runs_per_week": 45,
    "source": "Demo figures: on-call review before Steward, median time from page to the first "
    "message to the service's owners over 212 incidents acknowledged by hand (ITSM export); "
    "target from the incident policy.",
}


def ensure_baseline(workflows: dict[str, Workflow], admin) -> None:
    """Declare incident triage's manual baseline once (as grace's fellow governance admin)."""
    triage = workflows["incident-triage"]
    if not ManualBaseline.objects.filter(workflow=triage).exists():
        services.declare_manual_baseline(triage, **TRIAGE_BASELINE, actor=admin, reason=SEED_REASON)


def ensure_history(workflows: dict[str, Workflow], users: dict[str, Any], days: int) -> int:
    """Record `days` of past incident-triage runs once, then rebuild the KPI rollups from them.

    They are history imported as rows (bulk, trigger `demo-history`), not replayed through the
    engine: finished runs with their steps, the acknowledgement events, the failures, the
    escalations of failed restarts, and the incident commander's approvals of restarts (seen,
    then decided). The rollups are then recomputed from them (`kpis.rebuild`, audited).
    """
    if days <= 0 or WorkflowRun.objects.filter(trigger=HISTORY_TRIGGER).exists():
        return 0
    triage = workflows["incident-triage"]
    runs, plans = _history_runs(triage, users["alice"], days)
    WorkflowRun.objects.bulk_create(runs, 1000)
    steps, events, escalations, approvals = [], [], [], []
    for run, plan in zip(runs, plans, strict=True):
        _history_rows(run, plan, steps, events, escalations, approvals)
    StepRun.objects.bulk_create(steps, 2000)
    RunEvent.objects.bulk_create(events, 2000)
    Escalation.objects.bulk_create(escalations, 1000)
    _history_approvals(approvals, users["bob"])
    kpis.rebuild(actor=SYSTEM)
    return len(runs)


def _history_runs(triage: Workflow, alice, days: int) -> tuple[list, list]:
    """Return the past runs (unsaved) and, for each, the plan of what happened in it."""
    rng = random.Random(15)
    today = clock.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    runs, plans = [], []
    for back in range(days, 0, -1):
        day = today - dt.timedelta(days=back)
        # Orchestration got better as the weeks went: the acknowledgement comes sooner.
        pace = 0.8 + 0.5 * back / days
        for _ in range(rng.randint(4, 9)):
            start = day + dt.timedelta(seconds=rng.randint(0, 86_000))
            lookup = rng.uniform(4, 25)
            plan = {
                "start": start,
                "lookup": lookup,
                "ack": lookup + rng.lognormvariate(4.3, 0.45) * pace,
                "health": lookup + rng.uniform(8, 40),
                "restart": rng.random() < 0.3,
                "fails_at": None,
                "decide_wait": rng.uniform(60, 1500),
                "deciding": rng.uniform(30, 400),
            }
            chance = rng.random()
            if chance < 0.03:
                plan["fails_at"] = "health"
            elif plan["restart"] and chance < 0.12:
                plan["fails_at"] = "restart"
            plan["escalated"] = plan["fails_at"] == "restart" and rng.random() < 0.7
            end = plan["ack"] + rng.uniform(5, 30)
            if plan["restart"]:
                end += plan["decide_wait"] + plan["deciding"] + rng.uniform(20, 90)
            plan["end"] = start + dt.timedelta(seconds=max(end, plan["health"] + 5))
            plans.append(plan)
    version = triage.live_version
    for index, plan in enumerate(plans, start=1):
        failed = plan["fails_at"] is not None
        runs.append(
            WorkflowRun(
                workflow=triage,
                version=version,
                status=RunStatus.FAILED if failed else RunStatus.SUCCEEDED,
                input={"incident": f"INC-H{index:04d}", "service": "checkout"},
                error={"type": "ToolError", "message": f"{plan['fails_at']} failed"}
                if failed
                else None,
                started_by=alice,
                started_by_name=alice.username,
                trigger=HISTORY_TRIGGER,
                business_key=f"INC-H{index:04d}",
                created_at=plan["start"],
                updated_at=plan["end"],
                finished_at=plan["end"],
            )
        )
    return runs, plans


def _history_rows(run, plan, steps, events, escalations, approvals) -> None:
    """Add the steps, events, escalation and approval of one past run to the lists."""
    start = plan["start"]

    def at(seconds: float) -> dt.datetime:
        return start + dt.timedelta(seconds=seconds)

    def step(step_id: str, began: float, ended: float, failed: bool = False) -> None:
        error = {"type": "ToolError", "message": f"{step_id} failed"} if failed else None
        steps.append(
            StepRun(
                run=run,
                step_id=step_id,
                step_type="tool" if step_id != "summary" else "set",
                status=StepStatus.FAILED if failed else StepStatus.SUCCEEDED,
                attempt=3 if failed else 1,
                error=error,
                created_at=at(began),
                started_at=at(began),
                finished_at=at(ended),
            )
        )
        events.append(
            RunEvent(
                run=run,
                step_id=step_id,
                attempt=3 if failed else 1,
                kind=EventKind.STEP_FAILED if failed else EventKind.STEP_SUCCEEDED,
                created_at=at(ended),
            )
        )

    events.append(RunEvent(run=run, kind=EventKind.RUN_STARTED, created_at=start))
    step("lookup", 0, plan["lookup"])
    step("acknowledge", plan["lookup"], plan["ack"])
    step("health", plan["lookup"], plan["health"], failed=plan["fails_at"] == "health")
    if plan["fails_at"] != "health":
        if plan["restart"]:
            asked = plan["health"]
            seen = asked + plan["decide_wait"]
            decided = seen + plan["deciding"]
            approvals.append((run, at(asked), at(seen), at(decided)))
            ended = (run.finished_at - start).total_seconds()
            step("restart", plan["health"], ended - 2, failed=plan["fails_at"] == "restart")
            if plan["escalated"]:
                escalations.append(
                    Escalation(
                        reason="step_failed",
                        summary=f"restart failed after its retries in {run.business_key}",
                        run_id=run.pk,
                        step_id="restart",
                        status=EscalationStatus.RESOLVED,
                        resolution="stop",
                        created_at=at(ended - 1),
                        resolved_at=at(ended),
                    )
                )
        if plan["fails_at"] is None:
            ended = (run.finished_at - start).total_seconds()
            step("notify_owners", plan["health"], ended - 1)
            step("summary", ended - 1, ended)
    kind = EventKind.RUN_FAILED if plan["fails_at"] else EventKind.RUN_SUCCEEDED
    events.append(RunEvent(run=run, kind=kind, created_at=run.finished_at))


def _history_approvals(approvals: list, bob) -> None:
    """Record the past restart approvals: asked, first opened by bob, then approved by him."""
    rule = ApprovalRule.objects.get(slug=APPROVAL_RULE)
    role = rule.role
    requests = [
        ApprovalRequest(
            status=ApprovalStatus.APPROVED,
            action="tool.incident.restart_service",
            summary=f"restart checkout for {run.business_key}",
            arguments={"service": "checkout"},
            arguments_digest=governance.digest({"service": "checkout"}),
            risk="high",
            run_id=run.pk,
            step_id="restart",
            approval_rule=rule,
            role=role,
            chain=[role.pk],
            sla_seconds=rule.sla_seconds,
            created_at=asked,
            due_at=asked + dt.timedelta(seconds=rule.sla_seconds),
            expires_at=asked + dt.timedelta(seconds=2 * rule.sla_seconds),
            decided_at=decided,
        )
        for run, asked, _, decided in approvals
    ]
    ApprovalRequest.objects.bulk_create(requests, 1000)
    ApprovalSeen.objects.bulk_create(
        [
            ApprovalSeen(request=request, seen_by=bob, seen_by_name=bob.username, seen_at=seen)
            for request, (_, _, seen, _) in zip(requests, approvals, strict=True)
        ],
        1000,
    )
    ApprovalDecision.objects.bulk_create(
        [
            ApprovalDecision(
                request=request,
                decision="approve",
                comment="restart approved",
                decided_by=bob,
                decided_by_name=bob.username,
                role=role,
                role_name=role.name,
                arguments_digest=request.arguments_digest,
                decided_at=decided,
            )
            for request, (_, _, _, decided) in zip(requests, approvals, strict=True)
        ],
        1000,
    )


def seed(*, history_days: int = 0) -> dict[str, Any]:
    """Seed the whole demo (with `history_days` of past incidents) and return what it holds."""
    users = ensure_users()
    admin = users["admin"]
    roles = ensure_roles(users)
    approval_rule = ensure_approval_rule(roles, admin)
    version_rule = ensure_version_rule(roles, admin)
    policies = ensure_policies(admin)
    tools = ensure_tools(admin)
    demo_agents = ensure_agents(users)
    workflows = ensure_workflows(users)
    ensure_workflow_permissions(roles, workflows, admin)
    ensure_baseline(workflows, admin)
    history = ensure_history(workflows, users, history_days)
    runs = ensure_runs(users)
    proposal = ensure_proposal(workflows, users)
    return {
        "users": users,
        "roles": roles,
        "approval_rule": approval_rule,
        "version_rule": version_rule,
        "proposal": proposal,
        "policies": policies,
        "tools": tools,
        "agents": demo_agents,
        "workflows": workflows,
        "runs": runs,
        "history": history,
    }
