"""`/metrics`: Prometheus's text format, for a bearer token or an allowed network only."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator import metrics


def _token_matches(request) -> bool:
    """Tell whether the request carries the metrics token (compared in constant time)."""
    expected = settings.STEWARD_METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), expected.encode())
    )


def _network_allowed(request) -> bool:
    """Tell whether the direct peer's address is in an allowed network."""
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    for network in settings.STEWARD_METRICS_ALLOWED_NETWORKS:
        try:
            if address in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:  # the settings refuse to start on one; a test may still set it
            continue
    return False


def _refused(status: int, text: str) -> HttpResponse:
    """A plain-text refusal (scrapers read text, not problem+json)."""
    response = HttpResponse(text + "\n", status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    response._has_been_logged = True  # a misconfigured scraper would log on every scrape
    return response


@never_cache
@require_GET
def metrics_view(request):
    """Serve the metrics to a scraper holding the token or calling from an allowed network."""
    if not (settings.STEWARD_METRICS_TOKEN or settings.STEWARD_METRICS_ALLOWED_NETWORKS):
        return _refused(
            403, "Metrics are off: set STEWARD_METRICS_TOKEN or STEWARD_METRICS_ALLOWED_NETWORKS."
        )
    if not (_token_matches(request) or _network_allowed(request)):
        if settings.STEWARD_METRICS_TOKEN:
            return _refused(401, "A valid bearer token is required.")
        return _refused(403, "This address may not read the metrics.")
    return HttpResponse(generate_latest(metrics.registry()), content_type=CONTENT_TYPE_LATEST)
