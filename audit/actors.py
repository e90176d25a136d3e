"""Who acts: a person or principal (a user row), or SYSTEM, Steward itself.

Every public service function takes its actor as a required keyword. The engine, the sweeper,
beat tasks and seeding pass SYSTEM; commands pass it only when run with `--system`. No form,
request or lookup yields SYSTEM (it is no user row), so no user-facing path can act as it.
`None` is no actor: a service called with one refuses it (TypeError), so a forgotten actor can
never turn into the system's unchecked rights.
"""

from __future__ import annotations

import functools
import inspect

# The keyword that names the actor, by the name each operation gives it.
ACTOR_PARAMETERS = ("actor", "user", "started_by", "sent_by", "raised_by", "requested_by")


class _System:
    """Steward itself acting: the engine, the sweeper, beat tasks and seeding."""

    __slots__ = ()
    _instance: _System | None = None

    pk = None
    id = None
    username = "system"
    is_agent = False
    is_authenticated = False
    is_active = False
    is_superuser = False
    is_staff = False

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "system"

    __str__ = __repr__

    def __reduce__(self):
        return "SYSTEM"

    def get_username(self) -> str:
        """Return the name audit entries and history give the system."""
        return "system"


SYSTEM = _System()


def is_system(actor) -> bool:
    """Tell whether an actor is the system."""
    return actor is SYSTEM


def as_user(actor):
    """Return the user row behind an actor for a foreign key: None for the system."""
    if actor is None:
        raise TypeError("No actor given: pass a user or SYSTEM.")
    return None if actor is SYSTEM else actor


def actor_parameter(func) -> str:
    """Return the name of a function's actor keyword (keyword-only, required)."""
    for name, parameter in inspect.signature(func).parameters.items():
        if (
            name in ACTOR_PARAMETERS
            and parameter.kind is inspect.Parameter.KEYWORD_ONLY
            and parameter.default is inspect.Parameter.empty
        ):
            return name
    raise TypeError(f"{func.__qualname__} has no required keyword-only actor ({ACTOR_PARAMETERS}).")


def requires_actor(func):
    """Make a service refuse a call without its actor, or with None for one (TypeError)."""
    name = actor_parameter(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if kwargs.get(name) is None:
            raise TypeError(
                f"{func.__qualname__}() needs an actor: pass {name}=<user> or {name}=SYSTEM."
            )
        return func(*args, **kwargs)

    wrapper.actor_parameter = name
    return wrapper
