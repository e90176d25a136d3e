"""How governance refusals and invalid bodies become API errors (the problem handler renders).

A decision the eligibility rule refuses is 403, with the rule's code in the problem's `type`
(`.../refused/<code>`) and its reason in `detail`.
A request that is no longer open (decided, expired, resolved, its target gone) is 409. A digest
that no longer matches is 409 when the body carried it and 412 when `If-Match` did. Invalid
content, including a rejection without a reason (the decision service's `reason` refusal), is
422 with per-field `errors`.
"""

from __future__ import annotations

from rest_framework import exceptions, status

STATE_CONFLICTS = frozenset(
    {
        "already_decided",
        "already_decided_by_you",
        "already_resolved",
        "deadline_passed",
        "target_gone",
        "unknown",
    }
)
DIGEST_CHANGED = "arguments_changed"
INVALID_CONTENT = frozenset({"no_result", "reason"})
# The body field a content refusal is about, so the problem names it in `errors`.
FIELD_OF = {"no_result": "result", "reason": "reason"}


class Unprocessable(exceptions.ValidationError):
    """Content that is well-formed but invalid: 422 with per-field errors."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY


class Refused(exceptions.APIException):
    """A governance refusal answered with the status its code means."""

    def __init__(self, refusal, status_code: int):
        super().__init__(str(refusal))
        self.status_code = status_code
        self.problem_type = f"refused/{getattr(refusal, 'code', '') or type(refusal).__name__}"


def valid(serializer_class, data, **kwargs) -> dict:
    """Return a body's validated data, or raise 422 naming each invalid field."""
    serializer = serializer_class(data=data, **kwargs)
    if not serializer.is_valid():
        raise Unprocessable(serializer.errors)
    return serializer.validated_data


def refused(refusal, *, precondition: bool = False) -> exceptions.APIException:
    """Map a decision's or resolution's refusal to its API error (see the module docstring)."""
    code = getattr(refusal, "code", "")
    if code == DIGEST_CHANGED:
        return Refused(
            refusal,
            status.HTTP_412_PRECONDITION_FAILED if precondition else status.HTTP_409_CONFLICT,
        )
    if code in STATE_CONFLICTS:
        return Refused(refusal, status.HTTP_409_CONFLICT)
    if code in INVALID_CONTENT:
        invalid = Unprocessable({FIELD_OF[code]: [str(refusal)]})
        invalid.problem_type = f"refused/{code}"
        return invalid
    return Refused(refusal, status.HTTP_403_FORBIDDEN)


def if_match(request) -> str | None:
    """Return the entity tag an `If-Match` header names (quotes and weakness stripped), or None."""
    header = request.headers.get("If-Match", "").strip()
    if not header or header == "*":
        return None
    tag = header.split(",", 1)[0].strip().removeprefix("W/")
    return tag.strip('"')
