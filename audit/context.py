"""Who is acting and under which request id, carried through a request, task or command.

The auth and admin receivers read the acting user from here (a signal does not say who caused
it); record() uses the request id when its caller gives none, so that one request id ties
together everything a request did.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from audit.actors import SYSTEM


@dataclass(frozen=True)
class AuditContext:
    """The acting user (or None) and the request id of the current unit of work."""

    actor: object | None = None
    request_id: str = ""


_EMPTY = AuditContext()
_current: contextvars.ContextVar[AuditContext | None] = contextvars.ContextVar(
    "audit_context", default=None
)


def current() -> AuditContext:
    """Return the audit context of the current request, task or command."""
    return _current.get() or _EMPTY


def new_request_id() -> str:
    """Return a fresh request id."""
    return uuid.uuid4().hex


@contextmanager
def acting_as(actor=None, *, request_id: str | None = None) -> Iterator[AuditContext]:
    """Run a block as `actor` under a request id (a new one unless given)."""
    token = _current.set(AuditContext(actor=actor, request_id=request_id or new_request_id()))
    try:
        yield current()
    finally:
        _current.reset(token)


def current_actor():
    """Return the acting user of the current unit of work; SYSTEM outside a signed-in person's."""
    actor = current().actor
    resolve = getattr(actor, "resolve", None)
    actor = resolve() if resolve is not None else actor
    return SYSTEM if actor is None else actor
