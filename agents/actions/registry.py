"""The agent registry: providers, agents (with their service accounts), tools, the kill switch.

Each agent acts through its own service-account user from governance (flagged as an agent,
unable to log in, owned by an accountable person), so the permissions of its roles and its
object permissions are the agent's, checked by the one authorisation path. Changes go through
`save_governed`: the acting user and the reason are set before the save, the actor's right to
make the change is checked, and history and the audit log follow.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.db import transaction
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from agents.models import Agent, AgentStatus, ModelProvider, ProviderKind, Tool
from agents.providers.scripted import RULE_SCHEMA
from agents.tools import registered_tools
from audit import clock
from audit import services as audit
from audit.actors import SYSTEM, requires_actor
from governance import expressions
from governance.actions import events
from governance.actions.common import GovernanceError, audited_refusals, name_of, save_governed
from governance.actions.principals import create_agent_principal, is_person
from governance.actions.roles import add_member, remove_member
from governance.models import Role
from governance.permissions import require

AGENT_USERNAME_PREFIX = "agent."
# The agent's settings that update_agent may change (the admin edits the same ones).
AGENT_SETTINGS = (
    "name",
    "mandate",
    "instructions",
    "model",
    "provider",
    "script",
    "output_schema",
    "confidence_threshold",
    "max_steps",
    "max_tokens",
    "max_cost",
    "max_wall_seconds",
)


class AgentError(GovernanceError):
    """An agent operation refused, with a message for the person who asked."""


# --- providers -----------------------------------------------------------------------------------


@requires_actor
@audited_refusals
def create_provider(
    *,
    slug: str,
    name: str,
    kind: str,
    base_url: str = "",
    api_key: str = "",
    actor,
    reason: str = "",
    **settings: Any,
) -> ModelProvider:
    """Register a model provider; its API key is stored encrypted."""
    from agents import secrets

    provider = ModelProvider(slug=slug, name=name, kind=kind, base_url=base_url, **settings)
    provider.api_key_encrypted = secrets.encrypt(api_key)
    return save_governed(provider, actor=actor, reason=reason or "provider created")


@requires_actor
@audited_refusals
def set_provider_key(provider: ModelProvider, api_key: str, *, actor, reason: str) -> None:
    """Replace (or clear) a provider's API key; the audit says that it changed, never what."""
    from agents import secrets

    if actor is not SYSTEM:
        require(actor, "change", provider)
    provider.api_key_encrypted = secrets.encrypt(api_key)
    ModelProvider.objects.filter(pk=provider.pk).update(
        api_key_encrypted=provider.api_key_encrypted
    )
    audit.record(
        action="agents.modelprovider.key_changed",
        actor=actor,
        target=provider,
        body={"reason": reason, "key_set": bool(api_key)},
    )


@requires_actor
@audited_refusals
def update_provider(provider: ModelProvider, *, actor, reason: str, **fields) -> ModelProvider:
    """Change a provider's endpoint, limits or prices (not its key: see set_provider_key)."""
    for name, value in fields.items():
        if name in {"api_key_encrypted", "slug"}:
            raise TypeError(f"update_provider cannot change {name!r}")
        setattr(provider, name, value)
    return save_governed(provider, actor=actor, reason=reason)


# --- agents --------------------------------------------------------------------------------------


def script_problems(script: Any) -> list[str]:
    """Return what is wrong with a scripted agent's rules (schema, expressions, templates)."""
    if script is None:
        return ["a scripted agent needs its rules"]
    problems = [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(script)'}: {e.message}"
        for e in Draft202012Validator(RULE_SCHEMA).iter_errors(script)
    ]
    if problems:
        return problems
    for index, rule in enumerate(script["rules"]):
        if "when" in rule and (error := expressions.check_expression(rule["when"])):
            problems.append(f"rules/{index}/when: {error}")
        for error in expressions.check_template(rule):
            problems.append(f"rules/{index}: {error}")
        answers = [k for k in ("tool_calls", "final", "text") if k in rule]
        if len(answers) != 1:
            problems.append(f"rules/{index}: give exactly one of tool_calls, final or text")
        if "final" in rule and "confidence" not in rule:
            problems.append(
                f"rules/{index}: a final answer must state its confidence (0 to 1); it is "
                "compared with the agent's threshold"
            )
        if "confidence" in rule and "final" not in rule:
            problems.append(f"rules/{index}: only a final answer has a confidence")
    return problems


def _check(agent: Agent) -> None:
    """Refuse an agent without an accountable person, or with a broken script or schema."""
    if agent.owner is None or not agent.owner.is_active or not is_person(agent.owner):
        raise AgentError(
            "An agent needs an accountable owner who is an active person.", code="owner"
        )
    scripted = agent.provider.kind == ProviderKind.SCRIPTED
    if scripted and (problems := script_problems(agent.script)):
        raise AgentError("The script is invalid: " + "; ".join(problems), code="script")
    try:
        Draft202012Validator.check_schema(agent.output_schema or {})
    except SchemaError as exc:
        raise AgentError(
            f"output_schema is not a JSON Schema: {exc.message}", code="schema"
        ) from exc


@requires_actor
@audited_refusals
def create_agent(
    *,
    slug: str,
    name: str,
    mandate: str,
    owner,
    provider: ModelProvider,
    model: str,
    instructions: str = "",
    script: dict | None = None,
    roles: Iterable[Role] = (),
    tools: Iterable[Tool | str] = (),
    delegates: Iterable[Agent] = (),
    output_schema: dict | None = None,
    confidence_threshold: float = 0.7,
    max_steps: int = 10,
    max_tokens: int = 50_000,
    max_cost: Decimal | str = Decimal("1.00"),
    max_wall_seconds: int = 900,
    actor,
    reason: str = "",
) -> Agent:
    """Create an agent with its service-account principal, roles, tools and delegates."""
    user = create_agent_principal(
        username=f"{AGENT_USERNAME_PREFIX}{slug}",
        owner=owner,
        display_name=name,
        description=mandate,
        actor=actor,
    )
    agent = Agent(
        slug=slug,
        name=name,
        mandate=mandate,
        owner=owner,
        owner_name=name_of(owner),
        user=user,
        provider=provider,
        model=model,
        instructions=instructions,
        script=script,
        output_schema=output_schema or {},
        confidence_threshold=confidence_threshold,
        max_steps=max_steps,
        max_tokens=max_tokens,
        max_cost=Decimal(str(max_cost)),
        max_wall_seconds=max_wall_seconds,
    )
    _check(agent)
    save_governed(agent, actor=actor, reason=reason or "agent created")
    _set_tools(agent, tools)
    if delegates := list(delegates):
        _set_delegates(agent, delegates, actor=actor, reason=reason or "agent created")
    _set_roles(agent, list(roles), actor=actor)
    return agent


@requires_actor
@audited_refusals
def update_agent(agent: Agent, *, actor, reason: str, **fields) -> Agent:
    """Change an agent's description, model, script, schema, threshold or limits."""
    for name, value in fields.items():
        if name not in AGENT_SETTINGS:
            raise TypeError(f"update_agent cannot change {name!r}")
        setattr(agent, name, value)
    _check(agent)
    return save_governed(agent, actor=actor, reason=reason)


@requires_actor
@audited_refusals
def set_owner(agent: Agent, owner, *, actor, reason: str) -> Agent:
    """Make another person accountable for an agent (and its principal)."""
    from governance.actions.principals import set_owner as set_principal_owner

    agent.owner = owner
    agent.owner_name = name_of(owner)
    _check(agent)
    save_governed(agent, actor=actor, reason=reason)
    # The agent's change was authorised above; its principal follows it.
    set_principal_owner(agent.user.principal, owner, actor=SYSTEM, reason=reason)
    return agent


def _set_tools(agent: Agent, tools: Iterable[Tool | str]) -> None:
    """Give an agent exactly these tools (by row or registered name)."""
    rows = []
    for item in tools:
        if isinstance(item, Tool):
            rows.append(item)
            continue
        row = Tool.objects.filter(name=item).first()
        if row is None:
            raise AgentError(f"No tool is called {item!r}; sync the tools first.", code="tool")
        rows.append(row)
    agent.tools.set(rows)


def _set_roles(agent: Agent, roles: list[Role], *, actor) -> None:
    """Make the agent's service account a member of exactly these roles."""
    current = set(agent.roles.all())
    agent.roles.set(roles)
    for role in set(roles) - current:
        add_member(role, agent.user, actor=actor)
    for role in current - set(roles):
        remove_member(role, agent.user, actor=actor)


@requires_actor
@audited_refusals
def set_tools(agent: Agent, tools: Iterable[Tool | str], *, actor, reason: str) -> Agent:
    """Change the tools in an agent's mandate."""
    if actor is not SYSTEM:
        require(actor, "change", agent)
    agent._change_reason = reason
    _set_tools(agent, tools)
    return agent


@requires_actor
@audited_refusals
def set_roles(agent: Agent, roles: Iterable[Role], *, actor, reason: str) -> Agent:
    """Change the roles an agent holds (and so what its principal may touch)."""
    if actor is not SYSTEM:
        require(actor, "change", agent)
    agent._change_reason = reason
    _set_roles(agent, list(roles), actor=actor)
    return agent


@requires_actor
@audited_refusals
def set_delegates(agent: Agent, delegates: Iterable[Agent], *, actor, reason: str) -> Agent:
    """Change the specialised agents a coordinator may delegate to."""
    if actor is not SYSTEM:
        require(actor, "change", agent)
    _set_delegates(agent, list(delegates), actor=actor, reason=reason)
    return agent


def _set_delegates(agent: Agent, delegates: list[Agent], *, actor, reason: str) -> None:
    """Let an agent delegate to exactly these others (never itself); audited."""
    if any(other.pk == agent.pk or other.slug == agent.slug for other in delegates):
        raise AgentError("An agent cannot delegate to itself.", code="delegate_self")
    agent.delegates.set(delegates)
    audit.record(
        action="agents.agent.delegates_changed",
        actor=actor,
        target=agent,
        body={"reason": reason, "delegates": sorted(other.slug for other in delegates)},
    )


@requires_actor
@audited_refusals
def set_status(agent: Agent, status: str, *, actor, reason: str) -> Agent:
    """The kill switch: suspend, quarantine or reactivate; running steps stop at their next call."""
    if status not in AgentStatus.values:
        raise ValueError(f"status must be one of {AgentStatus.values}, not {status!r}")
    if not reason or not reason.strip():
        raise AgentError("Changing an agent's status needs a reason.", code="reason")
    locked = Agent.objects.select_for_update().get(pk=agent.pk)
    previous = locked.status
    locked.status = status
    locked.status_reason = reason
    save_governed(locked, actor=actor, reason=f"status {previous} → {status}: {reason}")
    audit.record(
        action="agents.agent.status_changed",
        actor=actor,
        target=locked,
        body={"from": previous, "to": status, "reason": reason},
    )
    if status == AgentStatus.QUARANTINED and previous != status:
        events.announce(
            "agent.quarantined",
            {"agent": locked.pk, "slug": locked.slug, "from": previous, "reason": reason},
            actor=actor,
            target=locked,
        )
    agent.status, agent.status_reason = locked.status, locked.status_reason
    return locked


def mark_active(agent_id: int) -> None:
    """Note that an agent just acted (the review page finds idle agents from this)."""
    Agent.objects.filter(pk=agent_id).update(last_active_at=clock.now())


# --- tools ---------------------------------------------------------------------------------------


@requires_actor
@transaction.atomic
def sync_tools(*, actor) -> dict[str, int]:
    """Mirror the registry: a Tool row per registered tool (new ones disabled); mark stale ones."""
    specs = registered_tools()
    created = updated = 0
    existing = {tool.name: tool for tool in Tool.objects.all()}
    for name, spec in specs.items():
        row = existing.get(name)
        if row is None:
            row = Tool(
                name=name,
                description=spec.description,
                side_effects=spec.side_effects,
                risk=spec.risk,
                enabled=False,
            )
            save_governed(row, actor=actor, reason="registered by code")
            created += 1
        elif row.side_effects != spec.side_effects or not row.registered:
            row.side_effects = spec.side_effects
            row.registered = True
            save_governed(row, actor=actor, reason="registration changed")
            updated += 1
    for name, row in existing.items():
        if name not in specs and row.registered:
            row.registered = False
            save_governed(row, actor=actor, reason="no longer registered by code")
            updated += 1
    return {"created": created, "updated": updated, "total": len(specs)}


@requires_actor
@audited_refusals
def update_tool(tool: Tool, *, actor, reason: str, **fields) -> Tool:
    """Enable or disable a tool, set its risk, rate limit, approval rule or settings."""
    allowed = {"enabled", "risk", "rate_limit", "rate_window_seconds", "approval_rule", "config"}
    allowed |= {"description"}
    for name, value in fields.items():
        if name not in allowed:
            raise TypeError(f"update_tool cannot change {name!r}")
        setattr(tool, name, value)
    return save_governed(tool, actor=actor, reason=reason)
