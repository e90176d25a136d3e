"""Every API error as RFC 9457 problem details (`application/problem+json`).

A problem carries `type`, `title`, `status`, `detail` and `instance` (the request's path),
plus `request_id` (the id on the audit entries the request wrote) and, for invalid input,
`errors`: per field, a list of messages. DRF's exceptions, Django's 404 and permission
refusals, governance's refusals and the engine's errors all end here; headers such as
`Retry-After` (429) and `WWW-Authenticate` (401) are kept.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from governance.actions.common import GovernanceError
from orchestrator.definitions import DefinitionError
from orchestrator.engine import EngineError, InvalidInput

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://steward.dev/problems/"

_TITLES = {
    400: "Invalid request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    412: "Precondition failed",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
}
_TYPES = {
    400: "invalid-request",
    401: "not-authenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    412: "precondition-failed",
    415: "unsupported-media-type",
    422: "unprocessable",
    429: "throttled",
    500: "server-error",
}


def problem(
    request, status_code: int, detail: str, *, kind: str = "", errors: dict | None = None, **extra
) -> dict[str, Any]:
    """Return the problem document for an error of a request."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + (kind or _TYPES.get(status_code, "error")),
        "title": _TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
        "instance": request.get_full_path() if request is not None else "",
        "request_id": getattr(request, "request_id", "") if request is not None else "",
    }
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def _field_errors(detail) -> dict[str, list[str]]:
    """Flatten DRF's nested validation detail into {"field.sub": [messages]}."""
    flat: dict[str, list[str]] = {}

    def walk(value, path: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            for index, inner in enumerate(value):
                walk(inner, f"{path}[{index}]")
        else:
            messages = value if isinstance(value, list) else [value]
            flat.setdefault(path or "non_field_errors", []).extend(str(m) for m in messages)

    walk(detail, "")
    return flat


def exception_handler(exc, context):
    """DRF's exception handler, answering every error as problem details."""
    request = context.get("request")
    # Content the services found invalid (a definition, a run's input) is 422; a body DRF could
    # not even read into its fields stays 400.
    if isinstance(exc, DefinitionError):
        exc = _unprocessable(_definition_errors(exc))
    elif isinstance(exc, InvalidInput):
        exc = _unprocessable({"input": list(exc.errors)})
    if isinstance(exc, GovernanceError):
        exc = _refused(exc, status.HTTP_422_UNPROCESSABLE_ENTITY)
    elif isinstance(exc, EngineError) and not isinstance(exc, (Http404, PermissionDenied)):
        exc = _refused(exc, status.HTTP_409_CONFLICT)
    response = drf_exception_handler(exc, context)
    if response is None:
        log.exception("unhandled API error", exc_info=exc)
        body = problem(request, 500, "The server failed to handle this request.")
        return Response(body, status=500, content_type=PROBLEM_CONTENT_TYPE)
    detail = response.data
    errors = None
    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(detail)
        text = "The request's content is invalid; see errors."
    elif isinstance(detail, dict) and "detail" in detail:
        text = str(detail["detail"])
    else:
        text = str(detail)
    kind = getattr(exc, "problem_type", "") or ""
    extra = getattr(exc, "problem_extra", None) or {}
    body = problem(request, response.status_code, text, kind=kind, errors=errors, **extra)
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        body["retry_after"] = int(exc.wait)
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def _refused(exc, status_code: int) -> exceptions.APIException:
    """Turn an operation a rule refused (governance 422, engine 409) into an API error."""
    error = exceptions.APIException(str(exc))
    error.status_code = status_code
    error.problem_type = f"refused/{getattr(exc, 'code', '') or type(exc).__name__}"
    run = getattr(exc, "run", None)
    if run is not None and getattr(run, "pk", None) is not None:
        error.problem_extra = {"run_id": run.pk}  # the run a business-key conflict names
    return error


def _unprocessable(errors: dict[str, list[str]]) -> exceptions.ValidationError:
    """Return a validation error answered as 422 (Unprocessable content)."""
    error = exceptions.ValidationError(errors)
    error.status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    return error


def _definition_errors(exc: DefinitionError) -> dict[str, list[str]]:
    """Key a definition's problems by where they are: `definition.steps.<step>.<field>`."""
    errors: dict[str, list[str]] = {}
    for found in exc.problems:
        where = "definition"
        if found.step:
            where += f".steps.{found.step}"
        if found.field:
            where += f".{found.field}"
        errors.setdefault(where, []).append(found.message)
    return errors


def django_error(request, status_code: int, detail: str) -> JsonResponse:
    """Answer an error Django raised before any API view (an unknown URL) as a problem."""
    return JsonResponse(
        problem(request, status_code, detail), status=status_code, content_type=PROBLEM_CONTENT_TYPE
    )
