"""Cursor pages for the web pages: keyset pagination over (a sort field, id), no COUNT(*).

A cursor names the last row shown (its sort value and id), so the next page is an index range
scan however deep it is, and rows added meanwhile never shift a page. Shared by the run
inspector's lists and the audit report (the lowest app, so every app's pages may use it).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

from django.db.models import Q, QuerySet


def encode_cursor(value: Any, pk: int) -> str:
    """Return the opaque cursor of a row (its sort value and id)."""
    if isinstance(value, dt.datetime):
        value = {"t": value.isoformat()}
    raw = json.dumps([value, pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[Any, int] | None:
    """Return the (value, id) a cursor names; None for no cursor or one this code did not write."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, pk = json.loads(raw)
        if isinstance(value, dict):
            value = dt.datetime.fromisoformat(value["t"])
        if not isinstance(pk, int) or isinstance(pk, bool) or not 0 <= pk < 2**63:
            return None
        return value, pk
    except (ValueError, TypeError, KeyError):
        return None


def keyset_page(
    queryset: QuerySet, field: str, *, descending: bool, cursor: str | None, size: int
) -> tuple[list, str | None]:
    """Return one page of rows ordered by (field, id) after `cursor`, and the next cursor."""
    sign = "-" if descending else ""
    queryset = queryset.order_by(f"{sign}{field}", f"{sign}pk")
    after = decode_cursor(cursor)
    if after is not None:
        value, pk = after
        op = "lt" if descending else "gt"
        if field in ("pk", "id"):
            queryset = queryset.filter(**{f"pk__{op}": pk})
        else:
            queryset = queryset.filter(
                Q(**{f"{field}__{op}": value}) | Q(**{field: value, f"pk__{op}": pk})
            )
    rows = list(queryset[: size + 1])
    if len(rows) <= size:
        return rows, None
    rows = rows[:size]
    last = rows[-1]
    return rows, encode_cursor(getattr(last, field) if field not in ("pk", "id") else 0, last.pk)
