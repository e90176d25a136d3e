"""Request rates per API token (or per person's session), shared by every web process."""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from governance.models import ApiToken


class PerTokenThrottle(SimpleRateThrottle):
    """Limit each token to STEWARD_API_RATE requests (each session user likewise)."""

    scope = "token"

    def get_rate(self):
        """Return the configured rate, e.g. '1200/min'."""
        return getattr(settings, "STEWARD_API_RATE", "1200/min")

    def get_cache_key(self, request, view):
        """Key by the token's prefix, or by the user for a session; anonymous callers by address."""
        if isinstance(request.auth, ApiToken):
            ident = f"token:{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"anon:{self.get_ident(request)}"
        return f"steward-throttle:{self.scope}:{ident}"
