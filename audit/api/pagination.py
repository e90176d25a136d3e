"""The cursor pagination every API list uses: a cursor the API did not write is a 400.

It lives in audit, the lowest app, so that every app's API can subclass it (each names its
own ordering).
"""

from __future__ import annotations

from rest_framework import exceptions, pagination


class CursorPagination(pagination.CursorPagination):
    """DRF's cursor pages, answering a malformed cursor as a malformed request (400, not 404)."""

    def decode_cursor(self, request):
        """Read the cursor; one this API did not write is a malformed request (400), not a 404."""
        try:
            return super().decode_cursor(request)
        except exceptions.NotFound:
            raise exceptions.ValidationError({"cursor": [self.invalid_cursor_message]}) from None
