"""Whether the worker traces events with OpenTelemetry, decided from the standard ``OTEL_*`` variables.

Tracing is optional (the ``tracing`` extra) and off by default. It is on when

* ``OTEL_TRACES_EXPORTER`` names an exporter other than ``none`` (``otlp``, ``console``, any exporter installed
  under the SDK's ``opentelemetry_traces_exporter`` entry points), or
* ``OTEL_TRACES_EXPORTER`` is unset and an OTLP endpoint is (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_ENDPOINT``): the specification's default exporter is ``otlp``;

and never when ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``. A variable that asks for tracing
while the extra is not installed stops the worker at start, naming the variable and the extra. ``otlp`` means
OTLP over HTTP/protobuf, the transport the extra installs (the specification's default), unless
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` asks for ``grpc`` (then the gRPC exporter
package must be installed as well).

Everything else (service name and resource, sampler, endpoint, headers, timeouts, batching, propagators) is the
SDK's own handling of its variables. This module imports no OpenTelemetry: with tracing off nothing of it is ever
imported, and the pipeline's per-event hooks are the no-op :class:`worker.runtime.observer.Tracer`.
``worker.ops.otel`` is the one module that imports OpenTelemetry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from worker.runtime.observer import Tracer

log = logging.getLogger("worker.tracing")

EXPORTER_VAR = "OTEL_TRACES_EXPORTER"
DISABLED_VAR = "OTEL_SDK_DISABLED"
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
INSTALL_HINT = "pip install 'multidentify-worker[tracing]'"
# The distributions the extra installs: tracing needs all three (checked without importing any of them).
EXTRA_DISTRIBUTIONS = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")
# OTLP's transports, by the protocol variables' values, as the SDK's exporter entry points name them.
_OTLP_BY_PROTOCOL = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}


class TracingConfigError(ValueError):
    """The ``OTEL_*`` variables ask for something the worker cannot do; the message names the variable."""


@dataclass(frozen=True)
class TracingPlan:
    """Tracing is on: the exporters to load (entry point names) and the variable that asked for it."""

    exporters: tuple[str, ...]
    because: str  # e.g. "OTEL_TRACES_EXPORTER=otlp": named by the start log and by every error


def plan(environ: Mapping[str, str]) -> TracingPlan | None:
    """The tracing the variables ask for, or None (off). Pure; raises TracingConfigError naming the variable."""
    if environ.get(DISABLED_VAR, "").strip().lower() == "true":
        return None
    raw = environ.get(EXPORTER_VAR, "").strip()
    if raw:
        names = [n.strip().lower() for n in raw.split(",") if n.strip()]
        because = f"{EXPORTER_VAR}={raw}"
    else:
        endpoint = next((v for v in ENDPOINT_VARS if environ.get(v, "").strip()), None)
        if endpoint is None:
            return None
        names = ["otlp"]
        because = f"{endpoint} (with {EXPORTER_VAR} unset the exporter is otlp)"
    names = [n for n in names if n != "none"]
    if not names:
        return None
    exporters = []
    for name in names:
        if name == "otlp":
            var = next((v for v in PROTOCOL_VARS if environ.get(v, "").strip()), PROTOCOL_VARS[-1])
            protocol = environ.get(var, "").strip().lower() or "http/protobuf"  # the specification's default
            if protocol not in _OTLP_BY_PROTOCOL:
                raise TracingConfigError(
                    f"{var}={environ[var]!r} is not supported; expected one of {sorted(_OTLP_BY_PROTOCOL)}"
                )
            name = _OTLP_BY_PROTOCOL[protocol]
        if name not in exporters:
            exporters.append(name)
    return TracingPlan(tuple(exporters), because)


def missing_extra_message(p: TracingPlan) -> str:
    return (
        f"{p.because} asks for OpenTelemetry tracing, but the tracing extra is not installed: install it"
        f" ({INSTALL_HINT}) or unset the variable"
    )


def extra_installed() -> bool:
    """Are the extra's distributions installed? Asks the package metadata: nothing is imported."""
    from importlib import metadata

    try:
        for name in EXTRA_DISTRIBUTIONS:
            metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def check(environ: Mapping[str, str]) -> TracingPlan | None:
    """What `check` and `run` both refuse: :func:`plan`, plus the extra the plan needs. Imports nothing."""
    p = plan(environ)
    if p is not None and not extra_installed():
        raise TracingConfigError(missing_extra_message(p))
    return p


def start(*, group_id: str = "") -> Tracer:
    """The worker's tracer: the no-op one when tracing is off, else OpenTelemetry's, set up by the SDK from the
    process environment. Raises TracingConfigError when the variables cannot be honoured."""
    p = check(os.environ)
    if p is None:
        return Tracer()
    try:
        from worker.ops import otel  # only now: OpenTelemetry is imported when tracing is on, never otherwise
    except ValueError as exc:  # the API reads OTEL_PROPAGATORS on import and refuses an unknown propagator
        raise TracingConfigError(f"OTEL_PROPAGATORS={os.environ.get('OTEL_PROPAGATORS', '')!r}: {exc}") from None

    tracer = otel.OtelTracer.from_plan(p, group_id=group_id)
    log.info("tracing every event with OpenTelemetry (%s; exporters %s)", p.because, ", ".join(p.exporters))
    return tracer
