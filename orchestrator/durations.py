"""Durations written as seconds or as text such as "90s", "5m", "1h30m", "2d"."""

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(value) -> float:
    """Return a duration in seconds; raise ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like '5m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = _PART.findall(text)
        if parts and "".join(number + unit for number, unit in parts) == text:
            return sum(float(number) * _UNITS[unit] for number, unit in parts)
    raise ValueError(f"{value!r} is not a duration (use seconds or text like '90s', '5m', '2d')")
