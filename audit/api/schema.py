"""How every API operation declares its error responses in the OpenAPI schema.

It lives in audit, the lowest app, so that every app's API can import it.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ProblemSerializer(serializers.Serializer):
    """An RFC 9457 problem document, as every API error is answered."""

    type = serializers.URLField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    instance = serializers.CharField()
    request_id = serializers.CharField()
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()), required=False
    )
    retry_after = serializers.IntegerField(required=False)


_MEANINGS = {
    400: "The request is malformed.",
    401: "No valid credentials: a missing, unknown, expired or revoked token.",
    403: "The caller may see this but not do it (or its token is read-only).",
    404: "No such object, or one the caller may not see.",
    405: "The method is not allowed here.",
    409: "The operation conflicts with the object's state.",
    412: "The object changed since the caller read it.",
    415: "The body's media type is not JSON.",
    422: "The content is invalid or a rule refused the operation.",
    429: "Too many requests: wait the Retry-After seconds.",
}

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Keyed by (status, media type): errors are served as problem+json, and the schema says so.
PROBLEM_RESPONSES = {
    (status, PROBLEM_CONTENT_TYPE): OpenApiResponse(ProblemSerializer, description=meaning)
    for status, meaning in _MEANINGS.items()
}


def problems(*statuses: int) -> dict[tuple[int, str], OpenApiResponse]:
    """Return the problem responses for the given statuses, plus 401 and 429 (every operation)."""
    wanted = {401, 429, *statuses}
    return {
        (status, PROBLEM_CONTENT_TYPE): PROBLEM_RESPONSES[status, PROBLEM_CONTENT_TYPE]
        for status in sorted(wanted)
    }
