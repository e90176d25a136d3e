"""Process metrics of model calls (prometheus_client), exposed by the orchestrator's /metrics.

They are counted where the call is made, in the worker's process. With PROMETHEUS_MULTIPROC_DIR
set (docs/metrics.md), every process writes them to files the web process adds up at scrape time.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MODEL_CALL_SECONDS = Histogram(
    "steward_model_call_duration_seconds",
    "Model call latency as the provider client measured it (retries included), by provider.",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
)
MODEL_CALLS = Counter(
    "steward_model_calls",
    "Model calls by provider and outcome (ok: a reply; error: the client gave up).",
    ["provider", "outcome"],
)
MODEL_CALL_RETRIES = Counter(
    "steward_model_call_retries",
    "Attempts the provider client retried (timeouts, 429, 5xx) before its final answer.",
    ["provider"],
)


def observe_reply(provider: str, latency_ms: float, attempts: int) -> None:
    """Count a model reply: its latency and the attempts retried to get it."""
    MODEL_CALL_SECONDS.labels(provider or "unknown").observe(max(latency_ms, 0.0) / 1000.0)
    MODEL_CALLS.labels(provider or "unknown", "ok").inc()
    if attempts > 1:
        MODEL_CALL_RETRIES.labels(provider or "unknown").inc(attempts - 1)


def observe_failure(provider: str, attempts: int) -> None:
    """Count a model call the client gave up on, and the attempts it retried first."""
    MODEL_CALLS.labels(provider or "unknown", "error").inc()
    if attempts > 1:
        MODEL_CALL_RETRIES.labels(provider or "unknown").inc(attempts - 1)
