"""Governed shared memory: namespaces, permissions, optimistic concurrency, retention.

A namespace is scoped to a run, a workflow or a named domain, and has a data classification and
a retention period. Reading needs `agents.read_memorynamespace` and writing
`agents.write_memorynamespace` on the namespace (guardian: per agent, person or role). A write
states the version it read (0: the key must not exist yet, or has expired); a stale write, and
a first write that loses the race to another first write, is refused with a conflict, never
applied. Every read, write, conflict and purge is audited; values themselves
are not copied into the audit log (their digest is), so a purge really removes them. A legal
hold on a namespace stops the purge.

Agents reach memory through tools (`read_for_tool`, `write_for_tool`): their outcomes carry a
reference to the value, never the value, so the tool call's journal, invocation row and audit
entries hold only digests. A read value is held in a `MemoryValueCopy` for the step's
conversation; a model call's audit entry whose prompt or response holds a value is noted as a
copy too. The purge erases every copy whose retention passed: held values are cleared and those
audit bodies erased through the audit trail's own erasure (recorded, proofs intact). The
engine's journal of such a model call holds the response too: the purge announces those calls
(`agents.signals.model_call_values_expired`) and the engine redacts the journals of finished
steps in the same transaction; an unfinished step's calls are tried again by a later purge.

A run's own namespace (`run-<id>`) is created by the control layer when an agent step of that
run starts, and the agents working in the run get read and write on it, by that rule alone.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import IntegrityError, transaction
from guardian.shortcuts import assign_perm

from agents.models import (
    Agent,
    Classification,
    MemoryEntry,
    MemoryNamespace,
    MemoryScope,
    MemoryValueCopy,
)
from agents.signals import model_call_values_expired
from audit import clock
from audit import services as audit
from audit.actors import SYSTEM, as_user, requires_actor
from audit.models import AuditBody, AuditEntry
from governance.actions.common import (
    GovernanceError,
    audited_refusals,
    digest,
    name_of,
    save_governed,
)
from governance.models import Role
from governance.permissions import AccessDenied, can, require

READ = "agents.read_memorynamespace"
WRITE = "agents.write_memorynamespace"
RUN_NAMESPACE_RETENTION = 7 * 24 * 3600


class MemoryConflict(GovernanceError):
    """A write based on a version that is no longer the current one."""

    code = "conflict"


def run_namespace_slug(run_id: int) -> str:
    """Return the slug of a run's own namespace."""
    return f"run-{run_id}"


def _audit(action: str, namespace: MemoryNamespace, *, user, body: dict, run_id=None, step_id=""):
    """Write a memory access to the audit log."""
    audit.record(
        action=action,
        actor=user,
        target=namespace,
        run_id=run_id,
        step_id=step_id or None,
        decision={"classification": namespace.classification},
        body={"namespace": namespace.slug, **body},
    )


@requires_actor
@audited_refusals
def create_namespace(
    *,
    slug: str,
    name: str,
    scope: str = MemoryScope.DOMAIN,
    run_id: int | None = None,
    workflow_id: int | None = None,
    classification: str = Classification.INTERNAL,
    retention_seconds: int | None = None,
    actor,
    reason: str = "",
) -> MemoryNamespace:
    """Create a namespace with its scope, classification and retention."""
    namespace = MemoryNamespace(
        slug=slug,
        name=name,
        scope=scope,
        run_id=run_id,
        workflow_id=workflow_id,
        classification=classification,
        retention_seconds=retention_seconds,
    )
    return save_governed(namespace, actor=actor, reason=reason or "namespace created")


@requires_actor
@audited_refusals
def grant_access(
    namespace: MemoryNamespace,
    grantee,
    *,
    read: bool = True,
    write: bool = False,
    actor,
    reason: str = "",
) -> None:
    """Let an agent, a person or a role read (and write) a namespace."""
    if actor is not SYSTEM:
        require(actor, "change", namespace)
    if isinstance(grantee, Agent):
        holder, label = grantee.user, f"agent {grantee.slug}"
    elif isinstance(grantee, Role):
        holder, label = grantee.group, f"role {grantee.name}"
    else:
        holder, label = grantee, f"user {name_of(grantee)}"
    granted = []
    for wanted, perm in ((read, READ), (write, WRITE)):
        if wanted:
            assign_perm(perm, holder, namespace)
            granted.append(perm.split(".")[1].split("_")[0])
    audit.record(
        action="agents.memory.access_granted",
        actor=actor,
        target=namespace,
        body={"grantee": label, "granted": granted, "reason": reason},
    )


@requires_actor
@audited_refusals
def set_legal_hold(namespace: MemoryNamespace, hold: bool, *, actor, reason: str) -> None:
    """Place or lift a legal hold: while held, nothing in the namespace is purged."""
    if not reason or not reason.strip():
        raise GovernanceError("A legal hold needs a reason.", code="reason")
    namespace.legal_hold = hold
    namespace.legal_hold_reason = reason if hold else ""
    save_governed(namespace, actor=actor, reason=f"legal hold {'placed' if hold else 'lifted'}")
    audit.record(
        action="agents.memory.legal_hold",
        actor=actor,
        target=namespace,
        body={"hold": hold, "reason": reason},
    )


@requires_actor
@transaction.atomic
def ensure_run_namespace(run_id: int, agent: Agent | None = None, *, actor) -> MemoryNamespace:
    """Return a run's own namespace (created on first use); give an agent of the run access."""
    namespace = MemoryNamespace.objects.filter(slug=run_namespace_slug(run_id)).first()
    if namespace is None:
        namespace, created = MemoryNamespace.objects.get_or_create(
            slug=run_namespace_slug(run_id),
            defaults={
                "name": f"Run {run_id}",
                "scope": MemoryScope.RUN,
                "run_id": run_id,
                "classification": Classification.INTERNAL,
                "retention_seconds": RUN_NAMESPACE_RETENTION,
            },
        )
        if created:
            _audit(
                "agents.memory.namespace_created",
                namespace,
                user=actor,
                body={"scope": "run", "rule": "a run's agents share its namespace"},
                run_id=run_id,
            )
    if agent is not None and not can(agent.user, "write", namespace):
        assign_perm(READ, agent.user, namespace)
        assign_perm(WRITE, agent.user, namespace)
        _audit(
            "agents.memory.access_granted",
            namespace,
            user=actor,
            body={"grantee": f"agent {agent.slug}", "granted": ["read", "write"], "rule": "run"},
            run_id=run_id,
        )
    return namespace


def _check(user, action: str, namespace: MemoryNamespace) -> None:
    """Refuse a person or agent without the namespace permission (the system is not checked)."""
    if user is not SYSTEM and not can(user, action, namespace):
        raise AccessDenied(user, action, namespace)


def _entry_json(entry: MemoryEntry | None, key: str) -> dict[str, Any]:
    """Return an entry as the caller sees it."""
    if entry is None:
        return {"key": key, "found": False, "value": None, "version": 0}
    return {
        "key": entry.key,
        "found": True,
        "value": entry.value,
        "version": entry.version,
        "written_by": entry.agent_name or entry.written_by_name,
        "written_at": entry.written_at.isoformat(),
        "run_id": entry.run_id,
    }


@requires_actor
@audited_refusals
def read_entry(
    namespace: MemoryNamespace,
    key: str,
    *,
    user,
    run_id: int | None = None,
    step_id: str = "",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Read a key (an expired entry reads as absent); audited."""
    _check(user, "read", namespace)
    now = now or clock.now()
    entry = MemoryEntry.objects.filter(namespace=namespace, key=key).first()
    if entry is not None and _expired(entry, namespace, now):
        entry = None
    found = _entry_json(entry, key)
    _audit(
        "agents.memory.read",
        namespace,
        user=user,
        body={"key": key, "found": found["found"], "version": found["version"]},
        run_id=run_id,
        step_id=step_id,
    )
    return found


@requires_actor
@audited_refusals
def write_entry(
    namespace: MemoryNamespace,
    key: str,
    value: Any,
    *,
    expected_version: int,
    user,
    agent: Agent | None = None,
    run_id: int | None = None,
    step_id: str = "",
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Write a key if it is still at `expected_version` (0: new key); else refuse a conflict."""
    _check(user, "write", namespace)
    now = now or clock.now()
    entry = MemoryEntry.objects.select_for_update().filter(namespace=namespace, key=key).first()
    if entry is not None and _expired(entry, namespace, now):
        entry.version = 0  # reads as absent, so it is written as a new key (version 1)
    current = entry.version if entry is not None else 0
    if current != expected_version:
        raise _conflict(namespace, key, expected_version, current, user, run_id, step_id)
    expires = (
        now + dt.timedelta(seconds=namespace.retention_seconds)
        if namespace.retention_seconds is not None
        else None
    )
    fields = {
        "value": value,
        "run_id": run_id,
        "step_id": step_id,
        "agent": agent,
        "agent_name": agent.slug if agent is not None else "",
        "written_by": as_user(user),
        "written_by_name": name_of(user),
        "written_at": now,
        "expires_at": expires,
    }
    if entry is None:
        try:
            entry = _insert_first(namespace, key, fields)
        except IntegrityError:
            # Another writer created the key since we looked: the same conflict as a stale write.
            stored = MemoryEntry.objects.filter(namespace=namespace, key=key).first()
            current = stored.version if stored is not None else 0
            raise _conflict(
                namespace, key, expected_version, current, user, run_id, step_id
            ) from None
    else:
        for name, field_value in fields.items():
            setattr(entry, name, field_value)
        entry.version = current + 1
        entry.save()
    _audit(
        "agents.memory.written",
        namespace,
        user=user,
        body={"key": key, "version": entry.version, "value_digest": digest(value)},
        run_id=run_id,
        step_id=step_id,
    )
    return _entry_json(entry, key)


# What a purge counts per namespace: held values cleared, audit bodies erased, model-call
# journal rows redacted, and model calls whose journal was kept for an unfinished step.
_COPY_COUNTS = ("held", "audit_bodies", "journal_rows", "journal_rows_kept")
ERASED = {"erased": "this memory value's retention passed; it was purged"}


def _reference(namespace: MemoryNamespace, key: str, version: int, **extra) -> dict[str, Any]:
    """Return what a tool outcome says about a value: where it is, never what it is."""
    stored = MemoryEntry.objects.filter(namespace=namespace, key=key, version=version)
    expires = stored.values_list("expires_at", flat=True).first()
    return {
        "namespace_id": namespace.pk,
        "key": key,
        "version": version,
        "expires_at": expires.isoformat() if expires is not None else None,
        **extra,
    }


@requires_actor
def read_for_tool(namespace: MemoryNamespace, key: str, *, user, run_id=None, step_id=""):
    """Read for an agent's tool: the value is held in a copy the purge erases, and named."""
    found = read_entry(namespace, key, user=user, run_id=run_id, step_id=step_id)
    if not found["found"]:
        return found
    memory = _reference(namespace, key, found["version"])
    expires = memory["expires_at"]
    copy = MemoryValueCopy.objects.create(
        namespace=namespace,
        key=key,
        version=found["version"],
        expires_at=dt.datetime.fromisoformat(expires) if expires else None,
        value=found["value"],
        run_id=run_id,
        created_at=clock.now(),
    )
    held = {**memory, "held": copy.pk}
    return {**found, "value": {"sha256": digest(found["value"])}, "memory": held}


@requires_actor
def write_for_tool(
    namespace: MemoryNamespace, key: str, value: Any, *, user, **kwargs
) -> dict[str, Any]:
    """Write for an agent's tool: the outcome names the version written, not the value."""
    written = write_entry(namespace, key, value, user=user, **kwargs)
    return {
        **written,
        "value": {"sha256": digest(value)},
        "memory": _reference(namespace, key, written["version"]),
    }


def held_value(memory: dict[str, Any]) -> Any:
    """Return the value a tool outcome refers to (or the erasure notice once purged)."""
    copy = MemoryValueCopy.objects.filter(pk=memory.get("held")).first()
    if copy is None or copy.erased_at is not None:
        return ERASED
    return copy.value


def note_audited_copies(audit_entry_id: int, values: list[dict[str, Any]], *, run_id=None):
    """Note that an audit entry's body holds these memory values (its purge erases the body)."""
    seen = set()
    for memory in values:
        ident = (memory["namespace_id"], memory["key"], memory["version"])
        if ident in seen:
            continue
        seen.add(ident)
        expires = memory.get("expires_at")
        MemoryValueCopy.objects.create(
            namespace_id=memory["namespace_id"],
            key=memory["key"],
            version=memory["version"],
            expires_at=dt.datetime.fromisoformat(expires) if expires else None,
            audit_entry_id=audit_entry_id,
            run_id=run_id,
            created_at=clock.now(),
        )


def _erase_copies(now: dt.datetime, limit: int, actor) -> dict[int, dict[str, int]]:
    """Erase copies whose value's retention passed (no legal hold): per namespace, how many.

    A model call's copy is done only once the engine's journal of that call is redacted too; a
    call whose step is unfinished keeps its journal (the step resumes from it), so its copy stays
    open and a later purge tries again (its audit body is already erased by then).
    """
    copies = list(
        MemoryValueCopy.objects.filter(
            expires_at__lte=now, erased_at__isnull=True, namespace__legal_hold=False
        )
        .select_for_update(skip_locked=True)
        .order_by("expires_at")[:limit]
    )
    counts: dict[int, dict[str, int]] = {}
    model_calls: dict[int, int | None] = {}
    namespace_of_call: dict[int, int] = {}
    for copy in copies:
        tally = counts.setdefault(copy.namespace_id, dict.fromkeys(_COPY_COUNTS, 0))
        if copy.audit_entry_id is None:
            tally["held"] += 1
            continue
        if copy.audit_entry_id in model_calls:
            continue
        model_calls[copy.audit_entry_id] = copy.run_id
        namespace_of_call[copy.audit_entry_id] = copy.namespace_id
        still_there = AuditBody.objects.filter(
            entry_id=copy.audit_entry_id, content__isnull=False
        ).exists()
        if still_there:
            audit.erase_body(
                AuditEntry.objects.get(pk=copy.audit_entry_id),
                actor=actor,
                reason=f"memory retention: {copy.namespace.slug}/{copy.key} v{copy.version} "
                "expired",
            )
            tally["audit_bodies"] += 1
    kept: set[int] = set()
    if model_calls:
        for _, answer in model_call_values_expired.send(
            sender=MemoryValueCopy, model_calls=model_calls
        ):
            kept.update(answer.get("kept", ()))
            for entry_id, rows in answer.get("redacted", {}).items():
                counts[namespace_of_call[entry_id]]["journal_rows"] += rows
        for entry_id in kept:
            counts[namespace_of_call[entry_id]]["journal_rows_kept"] += 1
    done = [copy.pk for copy in copies if copy.audit_entry_id not in kept]
    MemoryValueCopy.objects.filter(pk__in=done).update(value=None, erased_at=now)
    return counts


def _expired(entry: MemoryEntry, namespace: MemoryNamespace, now: dt.datetime) -> bool:
    """Tell whether an entry has expired (and so reads as absent): never under a legal hold."""
    return entry.expires_at is not None and entry.expires_at <= now and not namespace.legal_hold


def _insert_first(namespace: MemoryNamespace, key: str, fields: dict) -> MemoryEntry:
    """Create a key's first version in a savepoint (a concurrent first write fails it alone)."""
    with transaction.atomic():
        return MemoryEntry.objects.create(namespace=namespace, key=key, version=1, **fields)


def _conflict(namespace, key, expected_version, current, user, run_id, step_id) -> MemoryConflict:
    """Return the conflict refusing a stale write, with the audit entry it leaves."""
    conflict = MemoryConflict(
        f"{namespace.slug}/{key} is at version {current}, not {expected_version}: read it "
        "again and write on top of what is there now.",
        current_version=current,
    )
    conflict.audit_entry = {
        "action": "agents.memory.conflict",
        "actor": user,
        "target": namespace,
        "run_id": run_id,
        "step_id": step_id or None,
        "body": {
            "namespace": namespace.slug,
            "key": key,
            "expected_version": expected_version,
            "current_version": current,
        },
    }
    return conflict


@requires_actor
@transaction.atomic
def purge_expired(*, actor, now: dt.datetime | None = None, limit: int = 5000) -> dict[str, int]:
    """Delete expired entries of namespaces without a legal hold; audit each namespace's purge."""
    now = now or clock.now()
    expired = MemoryEntry.objects.filter(expires_at__lte=now)
    held = expired.filter(namespace__legal_hold=True).count()
    rows = list(
        expired.filter(namespace__legal_hold=False)
        .select_for_update(skip_locked=True)
        .order_by("expires_at")
        .values_list("pk", "namespace_id", "key", "version")[:limit]
    )
    by_namespace: dict[int, list[tuple[str, int]]] = {}
    for _, namespace_id, key, version in rows:
        by_namespace.setdefault(namespace_id, []).append((key, version))
    MemoryEntry.objects.filter(pk__in=[row[0] for row in rows]).delete()
    copies = _erase_copies(now, limit, actor)
    for namespace in MemoryNamespace.objects.filter(pk__in=set(by_namespace) | set(copies)):
        keys = by_namespace.get(namespace.pk, [])
        erased = copies.get(namespace.pk, dict.fromkeys(_COPY_COUNTS, 0))
        if not keys and not (erased["held"] or erased["audit_bodies"] or erased["journal_rows"]):
            continue  # only calls still waiting for their step: nothing was purged this time
        _audit(
            "agents.memory.purged",
            namespace,
            user=actor,
            body={
                "entries": len(keys),
                "keys": [{"key": key, "version": version} for key, version in keys[:500]],
                "held_copies_erased": erased["held"],
                "audit_bodies_erased": erased["audit_bodies"],
                "journal_rows_redacted": erased["journal_rows"],
                "journal_rows_kept_for_unfinished_steps": erased["journal_rows_kept"],
                "retention_seconds": namespace.retention_seconds,
                "purged_at": now.isoformat(),
            },
            run_id=namespace.run_id,
        )
    return {
        "purged": len(rows),
        "held": held,
        "copies_erased": sum(c["held"] + c["audit_bodies"] for c in copies.values()),
    }
