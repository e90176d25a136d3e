"""What live pages read: the event cursor, the events after it that a person may see, pruning.

The cursor is (txid, id): the top-level transaction that wrote an event and the event's id.
Ids commit out of order (id 7 may commit after id 9), so a cursor on ids alone would skip 7.
As the audit sequencer does (audit/sequencer.py), a read takes, in the same statement, a
horizon: the oldest transaction of this database still open in the statement's snapshot
(`pg_current_snapshot()`, leaving out those pg_stat_activity shows in other databases), else
the snapshot's xmax. Every transaction of this database below the horizon has ended, and one
that has not yet got an id will get one above it. Events with txid below the
horizon are therefore final: nothing can ever appear before them again, so the cursor may move
past them. Events above the horizon that this statement already sees (committed while an older
transaction is still open somewhere) are delivered at once as "early" events, but the cursor
stays put until they are final; a consumer remembers which early events it sent and does not
send them again. A long transaction elsewhere thus never delays a page, and the cursor never
skips an event. Deliveries are at least once (after a reconnect an early event may come
again); pages re-read by id, so a repeat costs a request and changes nothing.

SQLite (the laptop demo) has one writer at a time, so ids commit in order there: every event
it sees is final and the cursor is (0, id).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.models import Q

from governance.actions.webhooks import EVENT_TYPES
from governance.models import ApprovalRequest, LiveEvent
from governance.permissions import restricted

ZERO = (0, 0)
DEFAULTS = {
    "POLL_SECONDS": 2.0,  # a consumer re-reads the table this often (the nudge's safety net)
    "BATCH": 200,  # events read at a time
    "KEEP_HOURS": 24.0,  # older events are pruned (a page away longer reloads)
}

# The horizon of this database: the oldest transaction still open in the statement's snapshot
# (or its xmax when none is), leaving out the transactions that pg_stat_activity shows running
# in another database of the cluster (they cannot write this table; another application's idle
# transaction would otherwise hold every page back). A transaction open at the snapshot but
# gone from pg_stat_activity by the time it is read is kept in: it only holds the horizon back
# for this one read.
_PG_HORIZON = """
    WITH snapshot AS (SELECT pg_current_snapshot() AS taken),
    elsewhere AS (
        SELECT backend_xid::text::bigint AS xid FROM pg_stat_activity
        WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()
    )
    SELECT LEAST(
        (SELECT pg_snapshot_xmax(taken)::text::bigint FROM snapshot),
        (SELECT min(open::text::bigint) FROM snapshot, pg_snapshot_xip(taken) AS open
         WHERE mod(open::text::bigint, 4294967296) NOT IN (SELECT xid FROM elsewhere))
    )
"""
# The events after a cursor, and, read in the same statement (the same snapshot), the last
# final event of any type: when fewer than a batch match, every final event up to it has been
# looked at, so a consumer may move past those it does not follow (they may be many: the
# engine's run events, for an inbox) instead of scanning them again on every read.
_PG_AFTER = f"""
    WITH horizon AS MATERIALIZED (SELECT ({_PG_HORIZON}) AS h)
    (SELECT id, txid, event_type, target_type, target_id, txid < (SELECT h FROM horizon)
     FROM governance_liveevent
     WHERE (txid, id) > (%s, %s) AND event_type = ANY(%s) {{targets}}
     ORDER BY txid, id
     LIMIT %s)
    UNION ALL
    (SELECT id, txid, '', '', '', true
     FROM governance_liveevent
     WHERE txid < (SELECT h FROM horizon)
     ORDER BY txid DESC, id DESC
     LIMIT 1)
"""
_PG_HEAD = f"""
    SELECT txid, id FROM governance_liveevent
    WHERE txid < ({_PG_HORIZON})
    ORDER BY txid DESC, id DESC
    LIMIT 1
"""


def setting(name: str) -> float:
    """Return a live setting (STEWARD_LIVE_<name>) or its default."""
    return getattr(settings, f"STEWARD_LIVE_{name}", DEFAULTS[name])


# --- what higher apps add: event types of their own, and facts a message carries ----------------

# Live-only event types (no webhook carries them), registered by the app that announces them:
# governance never imports it (orchestrator.receivers registers the run's).
_LIVE_ONLY: dict[str, str] = {}
# Per target type (app_label.model), a function (user, ids) -> {id: {field: value}} adding
# small facts about the person and the object to its messages, as "decidable" for approvals.
_EXTRAS: dict[str, Callable[[object, set[str]], dict[str, dict]]] = {}


def register_event_type(name: str, label: str) -> None:
    """Let live pages follow an event type no webhook carries ("topic.what")."""
    if name.count(".") != 1 or name in EVENT_TYPES:
        raise ValueError(f"a live-only event type is 'topic.what' and no webhook's: {name!r}")
    _LIVE_ONLY[name] = label


def is_live_only(name: str) -> bool:
    """Tell whether an event type is followed by live pages only (not sent to webhooks)."""
    return name in _LIVE_ONLY


def event_types() -> list[str]:
    """Return every event type a live page may follow: the webhooks' and the live-only ones."""
    return [*EVENT_TYPES, *_LIVE_ONLY]


def topics() -> list[str]:
    """Return the topics a page may ask for (the part of an event type before its dot)."""
    return sorted({name.partition(".")[0] for name in event_types()})


def register_extra(target_type: str, facts: Callable[[object, set[str]], dict[str, dict]]):
    """Have messages about objects of `target_type` carry what `facts(user, ids)` says."""
    _EXTRAS[target_type] = facts


def extras(user, rows: list[Row]) -> dict[tuple[str, str], dict]:
    """Return the registered facts about the objects of `rows`, for `user`, by target."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        if row.target_type in _EXTRAS:
            wanted.setdefault(row.target_type, set()).add(row.target_id)
    found = {}
    for label, ids in wanted.items():
        for target_id, facts in _EXTRAS[label](user, ids).items():
            found[(label, target_id)] = facts
    return found


def format_cursor(cursor: tuple[int, int]) -> str:
    """Return a cursor as the client keeps it: "txid.id"."""
    return f"{cursor[0]}.{cursor[1]}"


def parse_cursor(text) -> tuple[int, int] | None:
    """Return the cursor a client sent ("txid.id"), or None when it is not one."""
    if not isinstance(text, str) or text.count(".") != 1:
        return None
    txid, _, pk = text.partition(".")
    if not (txid.isdigit() and pk.isdigit()) or len(text) > 41:
        return None
    return int(txid), int(pk)


def head() -> tuple[int, int]:
    """Return the cursor of the last final event: a page rendered now reflects all up to it."""
    if connection.vendor != "postgresql":
        last = LiveEvent.objects.order_by("-id").values_list("id", flat=True).first()
        return (0, last) if last else ZERO
    with connection.cursor() as cursor:
        cursor.execute(_PG_HEAD)
        row = cursor.fetchone()
    return (row[0], row[1]) if row else ZERO


def still_known(cursor: tuple[int, int]) -> bool:
    """Tell whether a client's cursor can be caught up from (its event has not been pruned)."""
    if cursor == ZERO:
        return True
    return LiveEvent.objects.filter(txid=cursor[0], pk=cursor[1]).exists()


@dataclass(frozen=True)
class Row:
    """An event as a consumer reads it: ids, type, and whether the cursor may pass it."""

    pk: int
    txid: int
    event_type: str
    target_type: str
    target_id: str
    final: bool

    @property
    def cursor(self) -> tuple[int, int]:
        """This event's place in the order."""
        return (self.txid, self.pk)


@dataclass(frozen=True)
class Batch:
    """What one read found: the events, and the last final event of any type it looked past."""

    rows: list[Row]
    head: tuple[int, int] | None  # None: the read cannot say (SQLite)


def read_after(
    cursor: tuple[int, int],
    event_types: list[str],
    limit: int | None = None,
    only: dict[str, list[str]] | None = None,
) -> Batch:
    """Return the committed events after a cursor, of the given types, final ones first.

    `only` narrows topics to some objects: {"run": ["42"]} keeps of the run events those about
    run 42 (a run's page), and the other topics whole.
    """
    limit = int(limit or setting("BATCH"))
    narrowed = [
        ([name for name in event_types if name.partition(".")[0] == topic], list(ids))
        for topic, ids in (only or {}).items()
    ]
    if connection.vendor != "postgresql":
        rows = LiveEvent.objects.filter(pk__gt=cursor[1], event_type__in=event_types)
        for types, ids in narrowed:
            rows = rows.filter(~Q(event_type__in=types) | Q(target_id__in=ids))
        rows = rows.order_by("id").values_list(
            "id", "txid", "event_type", "target_type", "target_id"
        )[:limit]
        return Batch([Row(*values, final=True) for values in rows], None)
    params: list = [cursor[0], cursor[1], list(event_types)]
    clauses = ""
    for types, ids in narrowed:
        clauses += " AND (event_type <> ALL(%s) OR target_id = ANY(%s))"
        params += [types, ids]
    with connection.cursor() as db:
        db.execute(_PG_AFTER.format(targets=clauses), [*params, limit])
        found = db.fetchall()
    rows = [Row(*values) for values in found if values[2]]
    heads = [(values[1], values[0]) for values in found if not values[2]]
    return Batch(rows, heads[0] if heads else None)


def visible_targets(user, rows: list[Row]) -> set[tuple[str, str]]:
    """Return the (target_type, target_id) of `rows` that `user` may view now, via restrict()."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        wanted.setdefault(row.target_type, set()).add(row.target_id)
    seen = set()
    for label, ids in wanted.items():
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            continue
        for pk in restricted(user, model, "view").filter(pk__in=ids).values_list("pk", flat=True):
            seen.add((label, str(pk)))
    return seen


APPROVAL = ApprovalRequest._meta.label_lower


def _decidable(user, ids: set[str]) -> dict[str, dict]:
    """Say, for each approval request of `ids`, whether `user` may decide it now."""
    queryset = ApprovalRequest.objects.filter(pk__in=ids).restrict(user, "decide")
    decidable = {str(pk) for pk in queryset.values_list("pk", flat=True)}
    return {target_id: {"decidable": target_id in decidable} for target_id in ids}


register_extra(APPROVAL, _decidable)
