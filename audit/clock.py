"""The clock every time-dependent decision reads, so tests can move time instead of sleeping.

It lives in the lowest app so every layer shares it. In one process a test freezes it with
`frozen()`. Across processes (a real worker in an integration test) a test points
STEWARD_CLOCK_OFFSET_FILE at a file holding seconds to add to the real time.
"""

from __future__ import annotations

import datetime as dt
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.utils import timezone

_override: dt.datetime | None = None
_rng = random.Random()
_offset_file = os.environ.get("STEWARD_CLOCK_OFFSET_FILE")
_offset_cache: tuple[float, float] = (-1.0, 0.0)  # (file mtime, offset seconds)


def _file_offset() -> float:
    """Return the offset in the clock file, re-reading it only when it changes."""
    global _offset_cache
    try:
        mtime = os.stat(_offset_file).st_mtime
    except OSError:
        return 0.0
    if mtime != _offset_cache[0]:
        try:
            _offset_cache = (mtime, float(Path(_offset_file).read_text().strip() or 0))
        except ValueError:
            _offset_cache = (mtime, 0.0)
    return _offset_cache[1]


def now() -> dt.datetime:
    """Return the current time, or the time a test has set."""
    if _override is not None:
        return _override
    if _offset_file:
        return timezone.now() + dt.timedelta(seconds=_file_offset())
    return timezone.now()


def rng() -> random.Random:
    """Return the random source used for backoff jitter (seedable in tests)."""
    return _rng


def set_offset_file(path: str | None) -> None:
    """Point this process at a clock offset file (None: real time)."""
    global _offset_file, _offset_cache
    _offset_file = path
    _offset_cache = (-1.0, 0.0)


class FrozenClock:
    """A clock a test moves by hand."""

    def __init__(self, start: dt.datetime):
        self.current = start

    def advance(self, seconds: float) -> dt.datetime:
        """Move the clock forward and return the new time."""
        global _override
        self.current = self.current + dt.timedelta(seconds=seconds)
        _override = self.current
        return self.current


@contextmanager
def frozen(start: dt.datetime | None = None, seed: int | None = None) -> Iterator[FrozenClock]:
    """Freeze the clock (and optionally seed the jitter) for the duration of a block."""
    global _override
    previous, state = _override, _rng.getstate()
    clock = FrozenClock(start or timezone.now())
    _override = clock.current
    if seed is not None:
        _rng.seed(seed)
    try:
        yield clock
    finally:
        _override = previous
        _rng.setstate(state)
