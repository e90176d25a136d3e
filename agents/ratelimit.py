"""Rate limits per caller and tool, shared by every worker: Redis when configured, else the DB.

A caller is an agent, a person (a tool step acts for its run's initiator) or the system.
Fixed windows: a call counts in the window its time falls in, and is refused when the count
goes over the tool's limit. Refused calls count too, so a model that keeps trying stays refused
until the window ends. If Redis does not answer, the database counts instead (never no limit).
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F

from agents.models import RateCounter

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def _redis(url: str):
    """Return a Redis client for a URL (one per process)."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def window_start(now: dt.datetime, window: int) -> int:
    """Return the Unix time at which the window holding `now` starts."""
    return int(now.timestamp()) // window * window


def hit(caller: str, tool: str, *, limit: int, window: int, now: dt.datetime) -> tuple[bool, int]:
    """Count one call; return whether it is within the limit, and the count so far."""
    start = window_start(now, window)
    count = None
    url = getattr(settings, "REDIS_URL", None)
    if url:
        try:
            count = _redis_hit(url, caller, tool, start, window)
        except Exception:  # Redis down: the database still counts
            log.warning("rate limit: Redis unavailable, counting in the database", exc_info=True)
    if count is None:
        count = _db_hit(caller, tool, start)
    return count <= limit, count


def _redis_hit(url: str, caller: str, tool: str, start: int, window: int) -> int:
    """Increment the window's counter in Redis (it expires after the window)."""
    prefix = getattr(settings, "STEWARD_RATE_LIMIT_PREFIX", "steward:rate")
    key = f"{prefix}:{connection.settings_dict['NAME']}:{caller}:{tool}:{start}"
    pipe = _redis(url).pipeline()
    pipe.incr(key)
    pipe.expire(key, window * 2)
    count, _ = pipe.execute()
    return int(count)


def _db_hit(caller: str, tool: str, start: int) -> int:
    """Increment the window's counter row (the row lock orders concurrent callers)."""
    rows = RateCounter.objects.filter(caller=caller, tool=tool, window_start=start)
    if not rows.update(count=F("count") + 1):
        try:
            with transaction.atomic():
                RateCounter.objects.create(caller=caller, tool=tool, window_start=start, count=1)
        except IntegrityError:
            rows.update(count=F("count") + 1)
    return rows.values_list("count", flat=True).get()


def purge_old(before: dt.datetime) -> int:
    """Delete database counters of windows that ended before a moment."""
    deleted, _ = RateCounter.objects.filter(window_start__lt=int(before.timestamp())).delete()
    return deleted
