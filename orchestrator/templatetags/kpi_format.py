"""Filters the KPI page formats its figures with: durations, shares and changes."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """Write seconds as the largest sensible units: 42 s, 3 min 5 s, 2 h 10 min, 1 d 4 h."""
    if seconds is None or seconds == "":  # "" is what the template gives for a missing figure
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@register.filter
def share(value) -> str:
    """Write a fraction as a percentage."""
    return "–" if value is None else f"{value:.1%}"


@register.filter
def change(value) -> str:
    """Write a relative change with its sign (– when there is nothing to compare with)."""
    if value is None:
        return "–"
    return f"{value:+.0%}"


@register.filter
def figure(value, kind: str) -> str:
    """Write a KPI figure by its kind: count, share or seconds."""
    if kind == "share":
        return share(value)
    if kind == "seconds":
        return duration(value)
    return "–" if value is None else str(value)


@register.filter
def change_from(now, before) -> str:
    """Write the relative change of a figure from its previous period's value."""
    if now is None or not before:
        return "–"
    return change((now - before) / before)
