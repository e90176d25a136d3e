"""Writes to the audit trail: record entries, erase a body, sequence entries, sign checkpoints.

Every other app writes through record() / record_many(), inside its own transaction, so that an
action and its entry commit or roll back together. Writers never wait on one another: an entry
is a plain INSERT; the order and the Merkle tree come later from the sequencer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from django.db import connections, router, transaction
from django.utils import timezone

from audit import context, limits
from audit.actors import SYSTEM, requires_actor
from audit.db import execute_prepared
from audit.evidence import canonical_json
from audit.leaves import ENTRY_COLUMNS
from audit.models import ActorKind, AuditBody, AuditCheckpoint, AuditEntry

ERASURE_ACTION = "audit.body_erased"
_KINDS = frozenset(ActorKind.values)
_FIELDS = frozenset(
    {
        "action",
        "actor",
        "actor_kind",
        "target",
        "target_type",
        "target_id",
        "target_repr",
        "run_id",
        "step_id",
        "request_id",
        "decision",
        "body",
    }
)


def _clip(value, limit: int) -> str:
    """Return a value as text cut to a column's length."""
    if value is None:
        return ""
    text = value if type(value) is str else str(value)
    if "\x00" in text or not text.isascii():  # a text column holds neither NUL nor surrogates
        text = limits.clean_text(text, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _canonical(value, action: str, part: str) -> bytes:
    """Return a decision's or body's canonical JSON; what it cannot hold is named, with where."""
    try:
        return canonical_json(value)
    except (ValueError, TypeError, RecursionError) as exc:
        why = limits.problem(value, what=part) or f"{part} {exc}"
        raise limits.Unstorable(f"the audit entry {action} cannot be written: {why}") from None


def _values(
    *,
    action: str,
    actor,
    actor_kind: str | None = None,
    target=None,
    target_type: str = "",
    target_id: str = "",
    target_repr: str = "",
    run_id=None,
    step_id=None,
    request_id: str = "",
    decision: dict | None = None,
    body: dict | None = None,
) -> tuple[list, str | None]:
    """Return an entry's column values (ENTRY_COLUMNS without id) and its body's JSON text."""
    if not action:
        raise ValueError("An audit entry needs an action.")
    if actor is None:
        raise TypeError("An audit entry needs an actor: a user, an agent or SYSTEM.")
    if actor is SYSTEM:
        actor_kind = ActorKind.SYSTEM.value
    elif actor_kind is None:
        actor_kind = (
            ActorKind.AGENT.value if getattr(actor, "is_agent", False) else ActorKind.USER.value
        )
    elif actor_kind not in _KINDS:
        raise ValueError(f"actor_kind must be one of {sorted(_KINDS)}, not {actor_kind!r}.")
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or str(target.pk)
        target_repr = target_repr or str(target)
    content = None
    digest = ""
    if body is not None:
        raw = _canonical(body, action, "body")
        digest = hashlib.sha256(raw).hexdigest()
        content = raw.decode("utf-8")
    values = [
        timezone.now(),
        actor.pk,
        _clip(actor.get_username(), 150),
        str(actor_kind),
        action,
        target_type,
        _clip(target_id, 64),
        _clip(target_repr, 200),
        _clip(run_id, 64),
        _clip(step_id, 64),
        _clip(request_id or context.current().request_id, 64),
        _canonical(decision, action, "decision").decode("utf-8") if decision is not None else None,
        digest,
    ]
    return values, content


def _build(**fields) -> tuple[AuditEntry, str | None]:
    """Return an unsaved entry and its body's canonical JSON text (None without a body)."""
    values, content = _values(**fields)
    return AuditEntry(None, *values), content


@requires_actor
def record(
    *,
    action: str,
    actor,
    actor_kind: str | None = None,
    target=None,
    target_type: str = "",
    target_id: str = "",
    target_repr: str = "",
    run_id=None,
    step_id=None,
    request_id: str = "",
    decision: dict | None = None,
    body: dict | None = None,
) -> AuditEntry:
    """Write one entry in the caller's transaction; a failure here aborts the caller's action."""
    values, content = _values(
        action=action,
        actor=actor,
        actor_kind=actor_kind,
        target=target,
        target_type=target_type,
        target_id=target_id,
        target_repr=target_repr,
        run_id=run_id,
        step_id=step_id,
        request_id=request_id,
        decision=decision,
        body=body,
    )
    connection = connections[router.db_for_write(AuditEntry)]
    pk = _insert(connection, values, content)
    entry = AuditEntry(pk, *values)
    entry._state.adding = False
    entry._state.db = connection.alias
    return entry


_INSERT_COLUMNS = [name for name in ENTRY_COLUMNS if name != "id"]
_INSERT_ENTRY = (
    f"INSERT INTO audit_auditentry ({', '.join(_INSERT_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(_INSERT_COLUMNS))}) RETURNING id"
)
_INSERT_BOTH = (
    f"WITH entry AS ({_INSERT_ENTRY}) "
    "INSERT INTO audit_auditbody (entry_id, content) SELECT id, %s FROM entry RETURNING entry_id"
)


def _insert(connection, values: list, content: str | None) -> int:
    """Insert one entry (and its body) in one statement; return its id.

    On PostgreSQL the statement is a prepared statement of the connection (audit/db.py: parsed
    and planned once, then only bound and executed: about a quarter of the server's work per
    entry). The statement is atomic by itself, in the caller's transaction or in its own
    (autocommit); inside the caller's block an error here marks that transaction for rollback.
    """
    if connection.vendor == "postgresql":
        if content is None:
            return execute_prepared(connection, _INSERT_ENTRY, values)[0][0]
        return execute_prepared(connection, _INSERT_BOTH, [*values, content])[0][0]
    values = list(values)
    values[0] = connection.ops.adapt_datetimefield_value(values[0])
    with connection.cursor() as cursor:
        if content is None:
            cursor.execute(_INSERT_ENTRY, values)
            return cursor.fetchone()[0]
        # No savepoint: inside the caller's block an error marks its transaction for rollback.
        with transaction.atomic(using=connection.alias, savepoint=False):
            cursor.execute(_INSERT_ENTRY, values)
            pk = cursor.fetchone()[0]
            cursor.execute(
                "INSERT INTO audit_auditbody (entry_id, content) VALUES (%s, %s)", [pk, content]
            )
            return pk


def record_many(entries: Iterable[dict]) -> list[AuditEntry]:
    """Write several entries (record()'s keyword arguments each) with one insert per table."""
    built = []
    for item in entries:
        unknown = set(item) - _FIELDS
        if unknown:
            raise TypeError(f"record_many: unknown keys {sorted(unknown)}")
        built.append(_values(**item))
    if not built:
        return []
    connection = connections[router.db_for_write(AuditEntry)]
    if connection.vendor == "postgresql":
        ids = _insert_many_postgresql(connection, built)
    else:
        with transaction.atomic(using=connection.alias, savepoint=False):
            ids = [_insert(connection, values, content) for values, content in built]
    saved = []
    for pk, (values, _) in zip(ids, built, strict=True):
        entry = AuditEntry(pk, *values)
        entry._state.adding = False
        entry._state.db = connection.alias
        saved.append(entry)
    return saved


# Entries and bodies in one statement, the rows travelling as one JSON array (one parameter:
# psycopg dumps an array parameter element by element in Python, a JSON text at C speed). The
# rows take their ids from the entries' identity sequence first (`new` is materialized, so each
# row's nextval runs once, in order), then both inserts read them. The ids come back in order.
_CASTS = {"created_at": "timestamptz", "actor_id": "bigint"}
_INSERT_MANY = (
    "WITH new AS (SELECT nextval(pg_get_serial_sequence('audit_auditentry', 'id')) AS id, "
    "r, position FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(r, position)), "
    f"entries AS (INSERT INTO audit_auditentry (id, {', '.join(_INSERT_COLUMNS)}) SELECT id, "
    + ", ".join(
        f"(r->>{index})::{_CASTS[name]}" if name in _CASTS else f"r->>{index}"
        for index, name in enumerate(_INSERT_COLUMNS)
    )
    + " FROM new), "
    "bodies AS (INSERT INTO audit_auditbody (entry_id, content) "
    f"SELECT id, r->>{len(_INSERT_COLUMNS)} FROM new WHERE r->>{len(_INSERT_COLUMNS)} IS NOT NULL) "
    "SELECT id FROM new ORDER BY position"
)


def _insert_many_postgresql(connection, built: list[tuple[list, str | None]]) -> list[int]:
    """Insert entries and their bodies with one prepared statement; return the ids in order."""
    rows = [[values[0].isoformat(), *values[1:], content] for values, content in built]
    payload = json.dumps(rows, ensure_ascii=False)
    return [row[0] for row in execute_prepared(connection, _INSERT_MANY, [payload])]


@requires_actor
@transaction.atomic
def erase_body(entry: AuditEntry, *, actor, reason: str) -> AuditEntry:
    """Erase an entry's body (its personal data), recorded as its own entry; proofs stay valid."""
    if not reason or not reason.strip():
        raise ValueError("An erasure needs a reason.")
    body = AuditBody.objects.select_for_update().filter(entry_id=entry.pk).first()
    if body is None:
        raise ValueError(f"Audit entry #{entry.pk} has no body to erase.")
    if body.content is None:
        raise ValueError(f"The body of audit entry #{entry.pk} is already erased.")
    erasure = record(
        action=ERASURE_ACTION,
        actor=actor,
        target_type="audit.auditentry",
        target_id=str(entry.pk),
        target_repr=str(entry),
        body={"reason": reason, "erased_body_digest": entry.body_digest},
    )
    erased = AuditBody.objects.filter(entry_id=entry.pk, content__isnull=False).update(
        content=None, erased_at=timezone.now(), erasure_entry_id=erasure.pk
    )
    if erased != 1:
        raise RuntimeError(f"The body of audit entry #{entry.pk} was erased concurrently.")
    return erasure


def sequence_pending(*, batch_size: int = 5000, max_batches: int | None = None) -> int:
    """Give committed entries their sequence numbers and Merkle leaves; return how many."""
    from audit.sequencer import run_sequencer

    return run_sequencer(batch_size=batch_size, max_batches=max_batches)


def build_tree_nodes(*, batch_leaves: int = 100_000, progress=None) -> int:
    """Store the tree nodes a trail sequenced before they were kept lacks; return the leaves."""
    from audit.sequencer import build_nodes

    return build_nodes(batch_leaves=batch_leaves, progress=progress)


def sign_checkpoint(*, force: bool = False, min_interval: float | None = None):
    """Sign a checkpoint of the current tree when it grew and one is due; return it or None."""
    from audit.sequencer import make_checkpoint

    return make_checkpoint(force=force, min_interval=min_interval)


def latest_checkpoint() -> AuditCheckpoint | None:
    """Return the newest checkpoint, or None."""
    return AuditCheckpoint.objects.order_by("-id").first()
