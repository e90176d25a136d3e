"""What the governance commands share: acting as a named user, parsing times, refusals."""

from __future__ import annotations

import datetime as dt
import json
from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from governance import services


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
