"""The viewer's time zone: read from the `steward_tz` cookie a tiny script sets from the
browser (Intl.DateTimeFormat), UTC when there is none or it names no known zone.

Pages render times in this zone (Django's `localtime`), each with its UTC instant on hover
(audit/templatetags/steward_time.py). No profile field: the browser knows where its person is.
"""

from __future__ import annotations

import zoneinfo
from urllib.parse import unquote

from django.utils import timezone

COOKIE = "steward_tz"


def viewer_zone(request) -> zoneinfo.ZoneInfo | None:
    """Return the zone the request's cookie names, or None (UTC) when absent or unknown."""
    name = unquote(request.COOKIES.get(COOKIE, ""))
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


class ViewerTimeZoneMiddleware:
    """Activate the viewer's time zone for the request (UTC without a usable cookie)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        zone = viewer_zone(request)
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
