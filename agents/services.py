"""The public write API of agents: what views, the admin, commands, tasks and tools call.

The implementations live in agents/actions/ (one module per subject); import from here.
"""

from __future__ import annotations

from agents.actions.dryrun import (
    kpi_effect,
    publish_tested_draft,
    request_dry_run,
    run_dry_run,
)
from agents.actions.enforcement import (
    AgentStopped,
    CallSite,
    TargetRefused,
    ToolVerdict,
    decide_tool_call,
    execute_tool_call,
)
from agents.actions.inspection import open_model_call
from agents.actions.memory import (
    MemoryConflict,
    create_namespace,
    ensure_run_namespace,
    grant_access,
    purge_expired,
    read_entry,
    set_legal_hold,
    write_entry,
)
from agents.actions.registry import (
    AgentError,
    create_agent,
    create_provider,
    script_problems,
    set_delegates,
    set_owner,
    set_provider_key,
    set_roles,
    set_status,
    set_tools,
    sync_tools,
    update_agent,
    update_provider,
    update_tool,
)
from agents.actions.work import (
    comment_on_ticket,
    create_ticket,
    mark_read,
    notify,
    update_ticket,
)
from agents.models import IncidentUpdate
from audit import clock

__all__ = [
    "kpi_effect",
    "publish_tested_draft",
    "request_dry_run",
    "run_dry_run",
    "AgentError",
    "AgentStopped",
    "CallSite",
    "MemoryConflict",
    "TargetRefused",
    "ToolVerdict",
    "comment_on_ticket",
    "create_agent",
    "create_namespace",
    "create_provider",
    "create_ticket",
    "decide_tool_call",
    "ensure_run_namespace",
    "execute_tool_call",
    "grant_access",
    "mark_read",
    "notify",
    "open_model_call",
    "post_incident_update",
    "purge_expired",
    "read_entry",
    "script_problems",
    "set_delegates",
    "set_legal_hold",
    "set_owner",
    "set_provider_key",
    "set_roles",
    "set_status",
    "set_tools",
    "sync_tools",
    "update_agent",
    "update_provider",
    "update_ticket",
    "update_tool",
    "write_entry",
]


def post_incident_update(
    *,
    incident: str,
    channel: str,
    message: str,
    idempotency_key: str,
    run_id: int | None = None,
    step_id: str = "",
) -> IncidentUpdate:
    """Post an incident update once per idempotency key; a repeat returns the first one."""
    update, _ = IncidentUpdate.objects.get_or_create(
        idempotency_key=idempotency_key,
        defaults={
            "incident": incident,
            "channel": channel,
            "message": message,
            "run_id": run_id,
            "step_id": step_id,
            "posted_at": clock.now(),
        },
    )
    return update
