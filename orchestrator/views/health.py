"""Probes for the process supervisor: `/healthz` (the process answers) and `/readyz` (it can work).

Both are unauthenticated and cheap, write no audit entry, and are kept out of the request log:
an orchestrator probes them every few seconds, and a 503 while the database restarts is the
answer it asked for, not an incident to log on every probe.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _quiet(response: JsonResponse) -> JsonResponse:
    """Mark a response as logged, so django.request does not log a probe's 503."""
    response._has_been_logged = True  # Django's own flag (django.utils.log.log_response)
    return response


@never_cache
@require_GET
def healthz(request):
    """The process lives and answers: no database, no broker."""
    return _quiet(JsonResponse({"status": "ok"}))


def _database() -> str | None:
    """Return why the database cannot be reached, or None when it answers."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not ready"; say which
        return f"{type(exc).__name__}: {exc}".strip()[:300]
    return None


def _broker() -> str | None:
    """Return why the broker cannot be reached, or None (Redis answers PING; the folder exists)."""
    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
            try:
                client.ping()
            finally:
                client.close()
        except Exception as exc:  # connection refused, timeout, auth: all mean "not ready"
            return f"{type(exc).__name__}: {exc}".strip()[:300]
        return None
    if url.startswith("filesystem://"):
        folder = Path(settings.BROKER_DIR)
        if not folder.is_dir():
            return f"broker folder {folder} is missing"

        if not os.access(folder, os.W_OK):
            return f"broker folder {folder} is not writable"
        return None
    return f"no readiness check for broker {url.split(':', 1)[0]}://"


@never_cache
@require_GET
def readyz(request):
    """The database and the broker are reachable: 200, or 503 naming what failed."""
    checks = {"database": _database(), "broker": _broker()}
    failed = {name: reason for name, reason in checks.items() if reason is not None}
    body = {
        "status": "unavailable" if failed else "ok",
        "checks": {name: ("ok" if reason is None else "failed") for name, reason in checks.items()},
    }
    if failed:
        body["failed"] = failed
    return _quiet(JsonResponse(body, status=503 if failed else 200))
