"""Middleware giving each request a request id and making its user the acting user for audit."""

from __future__ import annotations

import re

from audit import context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class AuditContextMiddleware:
    """Set the audit context (user, request id) for the request; echo the id as X-Request-ID."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else context.new_request_id()
        request.request_id = request_id
        user = getattr(request, "user", None)
        actor = _LazyUser(request) if user is not None else None
        with context.acting_as(actor, request_id=request_id):
            response = self.get_response(request)
        response.headers.setdefault("X-Request-ID", request_id)
        return response


class _LazyUser:
    """Resolve request.user only when an audit receiver needs it (it may change during login)."""

    def __init__(self, request):
        self._request = request

    def resolve(self):
        """Return the request's authenticated user, or None."""
        user = getattr(self._request, "user", None)
        return user if user is not None and user.is_authenticated else None
