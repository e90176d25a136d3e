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


UNSAFE_METHODS = frozenset({"post", "put", "patch", "delete"})
PROBLEM_REFERENCE = {"$ref": "#/components/schemas/Problem"}  # ProblemSerializer's component


def _problems_an_operation_can_answer(method: str, operation: dict) -> set[int]:
    """Return the statuses the shared machinery answers for an operation, whatever its view.

    A malformed cursor is 400 (audit/api/pagination.py); an unknown or hidden path object 404.
    Where DRF authenticates and parses (not the signed inbound hooks, which read raw bytes and
    declare their own): a read-only token on an unsafe method is 403 (TokenScope), a body the
    parsers cannot read 400 and one in a media type they do not take 415.
    """
    statuses = {401, 429}
    parameters = operation.get("parameters", [])
    if any(p["in"] == "query" and p["name"] == "cursor" for p in parameters):
        statuses.add(400)
    if any(p["in"] == "path" for p in parameters):
        statuses.add(404)
    if operation.get("security"):
        if method in UNSAFE_METHODS:
            statuses.add(403)
        if "requestBody" in operation:
            statuses.update({400, 415})
    return statuses


def declare_problems(result, generator, request, public):
    """Declare on every operation the problems it can answer by the shared API machinery.

    A postprocessing hook (SPECTACULAR_SETTINGS), so that no view has to remember them: each
    view's `extend_schema` declares only what its own service can refuse (409, 412, 422...).
    """
    for methods in result.get("paths", {}).values():
        for method, operation in methods.items():
            if method not in UNSAFE_METHODS | {"get", "head"}:
                continue
            responses = operation.setdefault("responses", {})
            for status in _problems_an_operation_can_answer(method, operation):
                responses.setdefault(
                    str(status),
                    {
                        "content": {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_REFERENCE}},
                        "description": _MEANINGS[status],
                    },
                )
            operation["responses"] = dict(sorted(responses.items()))
    return result
