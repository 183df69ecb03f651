"""Observability: Prometheus metrics, /healthz and /readyz, structured logs, hung off the observer hooks."""

from __future__ import annotations

from worker.ops.health import HealthState, OpsServer
from worker.ops.logs import LogObserver, configure_logging, redact
from worker.ops.metrics import PrometheusObserver, consumer_lags

__all__ = [
    "HealthState",
    "LogObserver",
    "OpsServer",
    "PrometheusObserver",
    "configure_logging",
    "consumer_lags",
    "redact",
]
