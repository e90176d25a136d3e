"""`Idempotency-Key` on unsafe API requests (IETF draft-ietf-httpapi-idempotency-key-header).

A client that may retry a POST sends `Idempotency-Key: <unique string>`. The key is the
calling principal's own (two principals never share one) and is kept STEWARD_IDEMPOTENCY_TTL
seconds (24 h by default), with the request's method, path and a fingerprint of its body (the
SHA-256 of its canonical JSON, RFC 8785):

* the first request with a key claims it (committed at once, "in flight"), then does its work;
  its response is stored in the same transaction as the work's effects, so a stored response
  always means the effect happened, and an effect never happened without its stored response;
* the same key with the same method, path and body, once the first is done: the first response
  again, with `Idempotent-Replayed: true`, and nothing done twice;
* the same key with another body (or on another operation): 422;
* the same key while the first is still in flight: 409 (retry later);
* a request that failed (an error response) leaves no effect and releases its key: a retry
  with the key is carried out afresh. A claim left in flight by a crashed process (older than
  STEWARD_IDEMPOTENCY_ABANDONED_AFTER seconds; its transaction never committed) is free again.

Use it by decorating a view method with `@idempotent`.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json

from django.conf import settings
from django.db import IntegrityError, transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import exceptions, status
from rest_framework.response import Response

from audit import clock
from orchestrator.models import IdempotencyKey, IdempotencyState

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_CHARS = 255

PARAMETER = OpenApiParameter(
    HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="A unique string per intended operation (e.g. a UUID). Retrying with the same "
    "key and body replays the first response (`Idempotent-Replayed: true`); another body is "
    "422; while the first is still in flight, 409. Kept 24 hours, per principal.",
)


class KeyInFlight(exceptions.APIException):
    """A request with this Idempotency-Key is still being carried out."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = (
        "A request with this Idempotency-Key is still in flight; retry once it has finished."
    )
    problem_type = "idempotency/in-flight"


class KeyReused(exceptions.APIException):
    """The Idempotency-Key was used for another request (another body or operation)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used with another request body or operation."
    problem_type = "idempotency/key-reused"


def fingerprint(data) -> str:
    """Return the SHA-256 of a request body, keys sorted, so equal bodies compare equal.

    Not RFC 8785: that refuses what JSON may still carry (integers beyond 2**53, lone
    surrogates), and a body the services will refuse must get their answer, not a 500 here.
    """
    if hasattr(data, "dict"):
        data = data.dict()  # a form body: its last value per field, as DRF reads it
    text = json.dumps({} if data is None else data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _valid_key(key: str) -> str:
    """Return the key, or refuse one that is empty, too long or not printable ASCII."""
    if not 0 < len(key) <= MAX_KEY_CHARS or not all(" " <= ch <= "~" for ch in key):
        raise exceptions.ValidationError(
            {HEADER: [f"An {HEADER} is 1 to {MAX_KEY_CHARS} printable ASCII characters."]}
        )
    return key


def _claim(user, key: str, method: str, path: str, print_: str) -> tuple[IdempotencyKey, bool]:
    """Claim a key for this request (True), or return the row of the request that holds it."""
    for _ in range(3):
        now = clock.now()
        try:
            with transaction.atomic():
                row = IdempotencyKey.objects.create(
                    principal=user,
                    key=key,
                    method=method,
                    path=path,
                    fingerprint=print_,
                    created_at=now,
                    expires_at=now + dt.timedelta(seconds=settings.STEWARD_IDEMPOTENCY_TTL),
                )
            return row, True
        except IntegrityError:
            pass
        held = IdempotencyKey.objects.filter(principal=user, key=key).first()
        if held is None:
            continue  # released meanwhile: claim it again
        abandoned = now - dt.timedelta(seconds=settings.STEWARD_IDEMPOTENCY_ABANDONED_AFTER)
        if held.expires_at <= now or (
            held.state == IdempotencyState.IN_FLIGHT and held.created_at <= abandoned
        ):
            # Conditional, so of two requests freeing the same stale row only one succeeds.
            IdempotencyKey.objects.filter(
                pk=held.pk, state=held.state, created_at=held.created_at
            ).delete()
            continue
        return held, False
    raise KeyInFlight()


def _release(row: IdempotencyKey) -> None:
    """Free a key whose request failed, so that a retry is carried out afresh."""
    IdempotencyKey.objects.filter(pk=row.pk, state=IdempotencyState.IN_FLIGHT).delete()


def _replay(row: IdempotencyKey) -> Response:
    """Answer with the stored response of the request that first used the key."""
    response = Response(row.response_body, status=row.response_status)
    response[REPLAYED_HEADER] = "true"
    if row.response_location:
        response["Location"] = row.response_location
    return response


def idempotent(view_method):
    """Make an unsafe view method honour the `Idempotency-Key` header (see the module)."""

    @functools.wraps(view_method)
    def wrapper(view, request, *args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return view_method(view, request, *args, **kwargs)
        key = _valid_key(key)
        print_ = fingerprint(request.data)
        row, mine = _claim(request.user, key, request.method, request.path, print_)
        if not mine:
            if (row.method, row.path, row.fingerprint) != (request.method, request.path, print_):
                raise KeyReused()
            if row.state == IdempotencyState.IN_FLIGHT:
                raise KeyInFlight()
            return _replay(row)
        try:
            with transaction.atomic():
                response = view_method(view, request, *args, **kwargs)
                if response.status_code < 400:
                    row.state = IdempotencyState.DONE
                    row.response_status = response.status_code
                    row.response_body = response.data
                    row.response_location = response.get("Location", "")
                    row.save(
                        update_fields=[
                            "state",
                            "response_status",
                            "response_body",
                            "response_location",
                        ]
                    )
        except Exception as exc:
            _release(row)
            audit = getattr(exc, "audit", None)
            if callable(audit):
                audit()  # a refusal's entry went with the rolled-back transaction
            raise
        if response.status_code >= 400:
            _release(row)
        return response

    return wrapper
