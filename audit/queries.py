"""Reading the audit trail: typed report criteria (filtered by audit.filters) and the exports."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from datetime import datetime

from django.db.models import QuerySet

from audit.models import AuditEntry

EXPORT_FIELDS = (
    "id",
    "seq",
    "created_at",
    "actor_kind",
    "actor_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "run_id",
    "step_id",
    "request_id",
    "decision",
    "body_digest",
)


@dataclass(frozen=True)
class AuditFilter:
    """What a report asks for; empty fields do not filter."""

    actor: str = ""
    actor_kind: str = ""
    agent: str = ""
    action: str = ""
    target_type: str = ""
    target_id: str = ""
    run_id: str = ""
    request_id: str = ""
    since: datetime | None = None
    until: datetime | None = None
    seq_min: int | None = None
    seq_max: int | None = None

    def is_empty(self) -> bool:
        """Tell whether the filter selects everything."""
        return not any(getattr(self, f.name) for f in fields(self))

    def as_query(self) -> dict:
        """Return the non-empty criteria as strings, for a query string."""
        return {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in asdict(self).items()
            if value or value == 0
        }


def entry_listing() -> QuerySet[AuditEntry]:
    """Return every entry, newest first, with its sequence number: what the report lists."""
    return AuditEntry.objects.select_related("leaf").order_by("-created_at", "-id")


def search_entries(criteria: AuditFilter | None = None) -> QuerySet[AuditEntry]:
    """Return the entries matching a report filter, newest first, with their sequence numbers."""
    from audit.filters import AuditEntryFilter

    criteria = criteria or AuditFilter()
    return AuditEntryFilter(criteria.as_query(), queryset=entry_listing()).qs


def export_row(entry: AuditEntry) -> dict:
    """Return one entry as a flat dict for CSV and JSON exports."""
    leaf = entry.leaf if _has_leaf(entry) else None
    row = {name: getattr(entry, name) for name in EXPORT_FIELDS if name != "seq"}
    row["seq"] = leaf.seq if leaf is not None else None
    row["created_at"] = entry.created_at.isoformat()
    row["decision"] = json.loads(entry.decision) if entry.decision else None
    return {name: row[name] for name in EXPORT_FIELDS}


def _has_leaf(entry: AuditEntry) -> bool:
    """Tell whether an entry has been sequenced (without raising when it has not)."""
    try:
        return entry.leaf is not None
    except AuditEntry.leaf.RelatedObjectDoesNotExist:
        return False


class _Echo:
    """A file-like object whose write returns what it was given (for streaming CSV)."""

    def write(self, value):
        """Return the value written."""
        return value


def iter_csv(queryset: QuerySet[AuditEntry]) -> Iterator[str]:
    """Yield a CSV export of the entries, header first, a chunk of rows at a time."""
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_FIELDS)
    for entry in queryset.iterator(chunk_size=2000):
        row = export_row(entry)
        row["decision"] = json.dumps(row["decision"]) if row["decision"] is not None else ""
        yield writer.writerow([row[name] for name in EXPORT_FIELDS])


def iter_json(queryset: QuerySet[AuditEntry]) -> Iterator[str]:
    """Yield a JSON array export of the entries, a row at a time."""
    yield "["
    first = True
    for entry in queryset.iterator(chunk_size=2000):
        yield ("" if first else ",") + "\n" + json.dumps(export_row(entry), ensure_ascii=False)
        first = False
    yield "\n]\n"
