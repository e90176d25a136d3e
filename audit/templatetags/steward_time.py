"""Times as people read them: in their own zone, with the UTC instant on hover.

`{% moment value %}` renders a <time> element in the active (viewer's) zone whose title is the
UTC time; `{% countdown value %}` renders how long until (or since) a moment, from the
injectable clock, which the page's script keeps ticking.
"""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils import timezone
from django.utils.html import format_html

from audit import clock

register = template.Library()


def _utc(value: dt.datetime) -> dt.datetime:
    """Return an aware datetime in UTC."""
    if timezone.is_naive(value):
        value = timezone.make_aware(value, dt.UTC)
    return value.astimezone(dt.UTC)


@register.simple_tag
def moment(value, style: str = "full"):
    """Render a moment in the viewer's zone, its UTC time on hover ('' for none)."""
    if not value:
        return "—"
    utc = _utc(value)
    local = timezone.localtime(utc)
    shown = local.strftime("%H:%M") if style == "time" else local.strftime("%Y-%m-%d %H:%M")
    return format_html(
        '<time datetime="{}" title="{} UTC">{} <small>{}</small></time>',
        utc.isoformat().replace("+00:00", "Z"),
        utc.strftime("%Y-%m-%d %H:%M:%S"),
        shown,
        local.tzname() or "UTC",
    )


def humanise(seconds: float) -> str:
    """Say a span of seconds in the largest fitting unit pair: '2 h 05 min', '40 s'."""
    seconds = int(abs(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


@register.simple_tag
def countdown(value):
    """Render 'in 42 min' or '5 min overdue' until `value`, marked for the ticking script."""
    if not value:
        return "—"
    left = (_utc(value) - clock.now()).total_seconds()
    words = f"in {humanise(left)}" if left > 0 else f"{humanise(left)} overdue"
    return format_html(
        '<time class="countdown{}" datetime="{}" title="{} UTC" data-countdown>{}</time>',
        "" if left > 0 else " overdue",
        _utc(value).isoformat().replace("+00:00", "Z"),
        _utc(value).strftime("%Y-%m-%d %H:%M:%S"),
        words,
    )
