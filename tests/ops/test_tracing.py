"""When tracing is on (the ``OTEL_*`` variables, worker.ops.tracing), what it costs when off, and how it stops a
worker whose variables it cannot honour.

* The decision is a pure function of the environment: off by default, on for ``OTEL_TRACES_EXPORTER`` or an OTLP
  endpoint, off again for ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``.
* Off, a worker that processes events never imports OpenTelemetry (checked in a fresh interpreter).
* A variable that asks for tracing without the extra, an unknown exporter, an unsupported OTLP protocol: the worker
  process stops at start with exit 2 and a message naming the variable.
* On, the SDK reads its own variables: the service name, the sampler.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from worker.dev.harness.env import worker_env
from worker.dev.harness.topics import Topics
from worker.ops import tracing
from worker.ops.tracing import TracingConfigError, TracingPlan, plan
from worker.runtime.exits import ExitCode
from worker.runtime.observer import NO_TRACE, Tracer

ROOT = Path(__file__).resolve().parents[2]


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* variable of the machine running the tests leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


# -- the decision -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "w", "OTEL_TRACES_SAMPLER": "always_on"}, None),  # no exporter asked for
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp_proto_http",)),  # the extra's transport, the spec's default
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ("otlp_proto_http", "console")),
        ({"OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ("otlp_proto_http",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ("otlp_proto_http",)),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, ("otlp_proto_grpc",)),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",  # the signal's own variable wins
            },
            ("otlp_proto_http",),
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, ("otlp_proto_http",)),
    ],
)
def test_tracing_is_on_only_when_a_variable_asks_for_an_exporter(
    env: dict[str, str], expected: tuple[str, ...] | None
) -> None:
    p = plan(env)
    assert (p.exporters if p else None) == expected


def test_the_plan_names_the_variable_that_turned_tracing_on() -> None:
    assert plan({"OTEL_TRACES_EXPORTER": "otlp"}) == TracingPlan(("otlp_proto_http",), "OTEL_TRACES_EXPORTER=otlp")
    p = plan({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert p is not None and p.because.startswith("OTEL_EXPORTER_OTLP_ENDPOINT")


def test_an_unsupported_otlp_protocol_is_refused_naming_the_variable() -> None:
    with pytest.raises(TracingConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        plan({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_without_the_extra_a_variable_asking_for_tracing_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setattr(tracing, "extra_installed", lambda: False)
    with pytest.raises(TracingConfigError) as refused:
        tracing.start()
    message = str(refused.value)
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in message and "multidentify-worker[tracing]" in message


def test_the_extra_is_found_installed_here() -> None:
    assert tracing.extra_installed()  # the dev extra includes it: the tests above are not vacuous


# -- off: nothing of OpenTelemetry -------------------------------------------------------------------------


def test_off_the_tracer_is_the_no_op_one(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    tracer = tracing.start()
    assert type(tracer) is Tracer
    assert tracer.event(None) is NO_TRACE  # type: ignore[arg-type]


def test_off_processing_events_never_imports_opentelemetry() -> None:
    # A fresh interpreter: the whole product imported, the tracer started from a clean environment, events run
    # through the real pipeline (in-memory Kafka) to results, dead letters and invalid-event dead letters.
    code = """
import pkgutil, importlib, sys
import worker
for m in pkgutil.walk_packages(worker.__path__, "worker."):
    if not m.name.startswith(("worker.dev", "worker.emulator", "worker.ops.otel")) and not m.name.endswith("__main__"):
        importlib.import_module(m.name)
from worker.ops import tracing
from tests.support.contract import IN, OK, build, err
tracer = tracing.start(group_id="g")
h = build(partitions=1, tracer=tracer)
h.api.answer = lambda url: err(-1101) if url.endswith("bad.jpg") else OK
h.publish(3)
h.publish(1, url="http://img.test/bad.jpg")
parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
h.broker.append(IN, 0, b"{not json", headers=[("traceparent", parent)])
h.assign(0)
h.run_until(lambda: len(h.results()) == 3 and len(h.dead_letters()) == 2, within_s=10)
tracer.close()
print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}  # no OTEL_* variable
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


# -- the worker process stops at start -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("otel", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "no-such-exporter"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_PROPAGATORS": "no-such-propagator"}, "OTEL_PROPAGATORS"),
    ],
)
def test_the_worker_stops_at_start_naming_the_variable(otel: dict[str, str], named: str) -> None:
    # Nothing listens on port 9: the worker must stop before it ever connects.
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        **worker_env("127.0.0.1:9", "http://127.0.0.1:9", Topics.unique(), group_ids="demo"),
        **otel,
    }
    done = subprocess.run(
        [sys.executable, "-m", "worker", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == ExitCode.INVALID_CONFIG, done.stderr
    assert "invalid configuration" in done.stderr and named in done.stderr


# -- on: the SDK's own variables ------------------------------------------------------------------------------


def test_on_the_sdk_reads_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "faces-eu")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    from worker.ops.otel import OtelTracer

    tracer = tracing.start(group_id="g")
    try:
        assert isinstance(tracer, OtelTracer)
        assert tracer.provider.resource.attributes["service.name"] == "faces-eu"
        sampler = tracer.provider.sampler
        assert isinstance(sampler, TraceIdRatioBased) and sampler.rate == 0.25
    finally:
        tracer.close()


def test_the_service_name_defaults_to_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    from worker.ops.otel import resource

    attributes = resource().attributes
    assert attributes["service.name"] == "multidentify-worker" and attributes["service.version"]
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,deployment.environment=prod")
    attributes = resource().attributes
    assert attributes["service.name"] == "from-attrs" and attributes["deployment.environment"] == "prod"
