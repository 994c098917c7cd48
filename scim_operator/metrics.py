"""Prometheus metrics of the operator, served on ``--metrics-port``."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

_P = "litellm_scim_operator"

RECONCILES = Counter(f"{_P}_reconciles_total", "Reconciliations run", ["kind", "result"])
FAILURES = Counter(f"{_P}_reconcile_failures_total", "Reconciliations that failed", ["kind", "reason"])
LITELLM_CALLS = Counter(f"{_P}_litellm_calls_total", "LiteLLM admin API calls made", ["endpoint", "status"])
LITELLM_ERRORS = Counter(
    f"{_P}_litellm_errors_total",
    "LiteLLM admin API calls that failed (status or 'unreachable')",
    ["endpoint", "status"],
)
LITELLM_LATENCY = Histogram(
    f"{_P}_litellm_call_seconds",
    "Latency of LiteLLM admin API calls",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 30.0),
)
DRIFT_FOUND = Counter(
    f"{_P}_drift_found_total", "Differences found between LiteLLM and the resources", ["kind"]
)
DRIFT_CORRECTED = Counter(f"{_P}_drift_corrected_total", "Drift corrected in LiteLLM", ["kind"])
MANAGED = Gauge(
    f"{_P}_managed_objects",
    "LiteLLM users and teams this replica currently manages (verified ours)",
    ["kind"],
)


def track_managed(users: Callable[[], int], teams: Callable[[], int]) -> None:
    MANAGED.labels("user").set_function(users)
    MANAGED.labels("team").set_function(teams)


def serve(port: int) -> None:
    """Start the /metrics HTTP server in a background thread (port 0 disables it)."""
    if port:
        start_http_server(port)
