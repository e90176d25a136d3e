"""Every public service function takes its actor as a required keyword; None is no actor.

A public service function is every function whose name does not start with `_` defined in
`<app>/services.py` or `<app>/actions/*.py` of each Steward app, plus the engine's public
operations (ENGINE_OPERATIONS). Each must name its actor in a required keyword-only parameter
(audit.actors.ACTOR_PARAMETERS) and refuse `None` for it with a TypeError, before it does
anything. Only the functions in TAKE_NO_ACTOR are exempt, each for the reason given there.
"""

import importlib
import inspect
from pathlib import Path

import pytest

from audit.actors import ACTOR_PARAMETERS, SYSTEM, actor_parameter, as_user

ROOT = Path(__file__).resolve().parents[2]
APPS = ("audit", "governance", "agents", "orchestrator")
ENGINE_OPERATIONS = (
    "start_run",
    "send_signal",
    "cancel_run",
    "pause_run",
    "resume_run",
    "retry_step",
    "resolve_parked_step",
)

# Functions that take no actor by nature, each with the reason.
TAKE_NO_ACTOR = {
    # Pure helpers: a key, a digest, a parse, a check of a value.
    "agents.actions.enforcement.recordable",
    "agents.actions.enforcement.refusal",
    "agents.actions.enforcement.as_decided",
    "agents.actions.enforcement.describe_decision",
    "agents.actions.memory.run_namespace_slug",
    "agents.actions.memory.held_value",
    "agents.actions.registry.script_problems",
    "agents.actions.work.updatable_fields",
    "agents.actions.work.record_model",
    "agents.actions.work.delivery_key",
    "agents.actions.work.endpoint_allowed",
    "governance.actions.common.audited_refusals",
    "governance.actions.common.digest",
    "governance.actions.common.name_of",
    "governance.actions.tokens.token_digest",
    "governance.actions.policies.rule_problems",
    "governance.actions.policies.validate_rule",
    "governance.actions.policies.evaluate",
    "governance.actions.approvals.required_approvals",
    "governance.actions.approvals.bulk_class",
    "governance.actions.notifications.request_link",
    "orchestrator.services.authorise",
    "audit.services.record_many",  # entries as record() takes them: each names its actor
    # Finds who acts, from the API token a request presented; refusals are recorded as SYSTEM.
    "governance.actions.tokens.authenticate_token",
    # The actor comes with the work itself: the acting agent (agent_id), or the run's initiator
    # (run.started_by, SYSTEM for a run the system started); for a tool call, its Caller (whose
    # user is the agent's or person's row, or SYSTEM), which as_caller finds from an agent's id.
    "agents.actions.enforcement.as_caller",
    "agents.actions.enforcement.decide_tool_call",
    "agents.actions.enforcement.recheck",
    "agents.actions.enforcement.execute_tool_call",
    "agents.actions.enforcement.record_refused",
    "agents.actions.registry.mark_active",
    "governance.actions.approvals.open_step_approval",
    "governance.actions.approvals.open_step_escalation",
    "governance.actions.escalations.escalate_failed_step",  # the engine's handler: SYSTEM
    # A tool's effect: the call was decided and audited for its actor at the enforcement point.
    "agents.actions.work.http_request",
    # Queues a notification's first delivery attempt; the task delivers it as SYSTEM.
    "agents.actions.work.delivery_dispatcher",
    # Webhook plumbing: a setting, a secret, a delay, a body's encoding and signature, a DNS
    # look-up, a destination check, and the POST itself (made by deliver() for its actor, and
    # by the notifications' delivery), plus the queueing of a delivery's first attempt.
    "governance.actions.webhooks.setting",
    "governance.actions.webhooks.new_secret",
    "governance.actions.webhooks.backoff_seconds",
    "governance.actions.webhooks.encode",
    "governance.actions.webhooks.sign",
    "governance.actions.webhooks.resolve_host",
    "governance.actions.webhooks.check_destination",
    "governance.actions.webhooks.post_signed",
    "governance.actions.webhooks.dispatcher",
    # A request's notices: queued once its opening (audited for its actor) commits; the task
    # sends them as SYSTEM and journals each.
    "governance.actions.notifications.dispatcher",
    "governance.actions.notifications.notify_on_commit",
    "agents.services.post_incident_update",
    # Bookkeeping that follows an act already recorded with its actor: the log's own sequence
    # and checkpoints, copies of an entry just written, journals a memory purge redacts.
    "audit.services.sequence_pending",
    "audit.services.build_tree_nodes",
    "audit.services.sign_checkpoint",
    "agents.actions.memory.note_audited_copies",
    "orchestrator.services.redact_model_call_journals",
    # Readers: they answer a question about what is stored.
    "audit.services.latest_checkpoint",
    "agents.actions.enforcement.standing",
    "governance.actions.approvals.standing_approval",
    "orchestrator.services.version_arguments",
    "governance.actions.approvals.outcome_payload",
    "governance.actions.approvals.approval_applies",
    "governance.actions.approvals.require_approval_for",
    "governance.actions.approvals.pending_for",
    "governance.actions.approvals.eligible_deciders",
    "governance.actions.approvals.policy_escalation_for_step",
    "governance.actions.escalations.default_role",
    "governance.actions.escalations.resolution_payload",
    "governance.actions.runs.holds_open_for_run",
    "governance.actions.policies.actor_facts",
    "governance.actions.policies.target_facts",
    "governance.actions.policies.active_rules",
    "governance.actions.policies.dry_run",
    "governance.actions.principals.principal_of",
    "governance.actions.principals.kind_of",
    "governance.actions.principals.is_person",
    "governance.actions.principals.accountable_owner",
    "governance.actions.roles.roles_of",
    "governance.actions.roles.holds_role",
    "governance.actions.roles.role_grants",
    "governance.actions.roles.can_manage_roles",
    "governance.actions.escalations.run_initiator_of",
    # The one eligibility rule: may this person decide that request or resolve that
    # escalation? It answers for the person asked about and changes nothing.
    "governance.actions.eligibility.approval_eligibility",
    "governance.actions.eligibility.decidable_candidates",
    "governance.actions.eligibility.decidable_requests",
    "governance.actions.eligibility.duty_conflict",
    "governance.actions.eligibility.eligible_deciders",
    "governance.actions.eligibility.escalation_eligibility",
    "governance.actions.eligibility.may_decide",
    "governance.actions.eligibility.opened_by",
    "governance.actions.eligibility.prior_deciders",
    "governance.actions.eligibility.request_target",
    "governance.actions.eligibility.resolvable_escalations",
    "governance.actions.eligibility.self_granted",
    # Policy dry runs: the replay is the system's, for the dry run its requester asked for and
    # that request audited (the task, its resume sweep and its queueing); the rest are pure
    # readers of rules and recorded facts, writing nothing.
    "agents.actions.dryrun.run_dry_run",
    "agents.actions.dryrun.resume_dry_runs",
    "agents.actions.dryrun.dispatcher",
    "agents.actions.dryrun.verdict_under",
    "agents.actions.dryrun.kpi_effect",
    "governance.actions.policies.draft_rules",
    "governance.actions.policies.policy_drafts",
    "governance.actions.policies.replay",
    "governance.actions.policies.rule_snapshot",
    "governance.actions.policies.rules_from_snapshot",
    # Wiring at start-up: the engine registers how governance finds a run's initiator.
    "governance.actions.escalations.register_run_initiator_lookup",
}


def _service_modules() -> list[str]:
    """Name every service module of every app: services.py and actions/*.py."""
    names = []
    for app in APPS:
        if (ROOT / app / "services.py").exists():
            names.append(f"{app}.services")
        for path in sorted((ROOT / app / "actions").glob("*.py")):
            if path.stem != "__init__":
                names.append(f"{app}.actions.{path.stem}")
    return names


def public_service_functions() -> dict[str, object]:
    """Return every public service function by its dotted name."""
    found = {}
    for module_name in _service_modules():
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if (
                not name.startswith("_")
                and inspect.isfunction(value)
                and inspect.unwrap(value).__module__ == module_name
            ):
                found[f"{module_name}.{name}"] = value
    engine = importlib.import_module("orchestrator.engine")
    for name in ENGINE_OPERATIONS:
        found[f"orchestrator.engine.{name}"] = getattr(engine, name)
    return found


FUNCTIONS = public_service_functions()
ACTING = sorted(set(FUNCTIONS) - TAKE_NO_ACTOR)


def test_the_walk_finds_the_service_layer():
    """The walk sees the run operations and the governance actions (it cannot pass empty)."""
    assert "orchestrator.services.start_run" in FUNCTIONS
    assert "orchestrator.engine.retry_step" in FUNCTIONS
    assert "governance.actions.approvals.decide_approval" in FUNCTIONS
    assert len(FUNCTIONS) > 60


def test_the_allow_list_names_only_existing_functions():
    """An exemption for a function that was renamed or removed is dropped, not kept."""
    assert set(FUNCTIONS) >= TAKE_NO_ACTOR


@pytest.mark.parametrize("name", ACTING)
def test_every_public_service_function_requires_its_actor(name):
    """The actor is a required keyword-only parameter: leaving it out is a TypeError."""
    func = FUNCTIONS[name]
    parameter = actor_parameter(func)
    assert parameter in ACTOR_PARAMETERS


def _placeholders(func, actor_name):
    """Return arguments for every required parameter but the actor: objects nothing can use."""
    args, kwargs = [], {}
    for name, parameter in inspect.signature(func).parameters.items():
        if name == actor_name or parameter.default is not inspect.Parameter.empty:
            continue
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            args.append(object())
        elif parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[name] = object()
    return args, kwargs


@pytest.mark.django_db
@pytest.mark.parametrize("name", ACTING)
def test_every_public_service_function_refuses_none_and_a_missing_actor(name):
    """None is no actor, and no actor is an error, before the function touches anything."""
    func = FUNCTIONS[name]
    actor_name = actor_parameter(func)
    args, kwargs = _placeholders(func, actor_name)
    with pytest.raises(TypeError, match="actor"):
        func(*args, **kwargs)
    with pytest.raises(TypeError, match="actor"):
        func(*args, **kwargs, **{actor_name: None})


def test_system_is_no_user():
    """SYSTEM names itself, holds no user row and no permission of its own."""
    from django.contrib.auth import get_user_model

    assert repr(SYSTEM) == str(SYSTEM) == "system"
    assert not isinstance(SYSTEM, get_user_model())
    assert SYSTEM.pk is None and not SYSTEM.is_authenticated
    assert as_user(SYSTEM) is None
    with pytest.raises(TypeError):
        as_user(None)
