"""What the commands share: acting as a named user (or the system), parsing times, refusals."""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.actors import SYSTEM
from governance import services

SYSTEM_HELP = (
    "Act as Steward itself (SYSTEM: unchecked, recorded as 'system'), for operators' "
    "housekeeping; a person acts with --as."
)


def user_named(username: str | None, option: str = "--as"):
    """Return the active user called `username`; refuse a missing or inactive one."""
    if not username:
        raise CommandError(f"{option} names the user who acts; it is required.")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise CommandError(f"No user is called {username!r}.")
    if not user.is_active:
        raise CommandError(f"{username!r} is not an active user.")
    return user


def add_actor_options(parser) -> None:
    """Add the required choice of who acts: `--as USER` or `--system`."""
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--as", dest="username", help="Act as this user (recorded as the actor).")
    who.add_argument("--system", action="store_true", help=SYSTEM_HELP)


def actor_of(command: str, username: str | None, system: bool):
    """Return who a command acts as: the user named by --as, or SYSTEM for --system."""
    if system:
        return SYSTEM
    if not username:
        raise CommandError(
            f"{command} needs to know who acts: pass --as USER (checked against that user's "
            "permissions and recorded as them), or --system to act as Steward itself."
        )
    return user_named(username)


def moment(text: str, option: str) -> dt.datetime:
    """Parse an ISO date or date-time (UTC when it names no zone)."""
    value = parse_datetime(text)
    if value is None:
        day = parse_date(text)
        value = dt.datetime.combine(day, dt.time()) if day is not None else None
    if value is None:
        raise CommandError(f"{option}: {text!r} is not an ISO date or date-time.")
    if timezone.is_naive(value):
        value = value.replace(tzinfo=dt.UTC)
    return value


def json_value(text: str | None, option: str):
    """Parse a JSON value given on the command line (None when not given)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{option} is not valid JSON: {exc}") from exc


@contextmanager
def refusals_as_errors():
    """Turn a governance refusal (already rolled back and audited) into a failing command."""
    try:
        yield
    except services.GovernanceError as exc:
        raise CommandError(f"Refused ({exc.code}): {exc}") from exc
    except services.NotVisible as exc:
        raise CommandError(f"Not found: {exc}") from exc
    except services.AccessDenied as exc:
        raise CommandError(f"Forbidden: {exc}") from exc
