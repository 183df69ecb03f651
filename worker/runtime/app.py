"""``multidentify-worker run``: build the pipeline from settings, serve /metrics and probes, run until stopped."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from worker.api.client import ClientOptions, MultidentifyClient
from worker.api.iai_client import IaiClient, IaiOptions
from worker.api.iai_wire import MIN_FACE_SIZE, SearchOptions
from worker.config import Settings
from worker.core.breaker import CircuitBreaker
from worker.core.outcomes import RetryPolicy
from worker.core.ratelimit import AimdRateLimiter
from worker.runtime.exits import ExitCode
from worker.runtime.identify import FaceApi, Identifier, ImageSource
from worker.runtime.observer import Observer, Observers, Tracer
from worker.runtime.pipeline import Pipeline
from worker.runtime.stopping import STOP_MARGIN_S, StopWatchdog, install_stop_handlers

if TYPE_CHECKING:
    from worker.fetch import FetchOptions

log = logging.getLogger("worker.app")


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=settings.max_attempts,
        deadline_s=settings.retry_deadline_s,
        backoff_initial_s=settings.backoff_initial_s,
        backoff_max_s=settings.backoff_max_s,
    )


def client_options(settings: Settings) -> ClientOptions:
    """The face API client's options: every setting it reads, read here."""
    return ClientOptions(
        appid=settings.appid,
        secret_id=settings.secret_id,
        secret_key=settings.secret_key,
        base_url=settings.api_base_url,
        bucket=settings.bucket,
        signature_lifetime=settings.signature_lifetime_s,
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        pool_size=settings.max_in_flight + 1,  # one connection for the breaker's probe
        verify=settings.tls_verify,
    )


def iai_options(settings: Settings) -> IaiOptions:
    """The IAI client's options (``api = "iai"``): every setting it reads, read here. Knobs left at IAI's own
    default are not sent."""
    return IaiOptions(
        secret_id=settings.secret_id,
        secret_key=settings.secret_key,
        token=settings.iai_token,
        endpoint=settings.iai_endpoint,
        region=settings.iai_region,
        search=SearchOptions(
            max_face_num=settings.iai_max_face_num,
            max_person_num=settings.iai_max_person_num,
            min_face_size=settings.iai_min_face_size if settings.iai_min_face_size != MIN_FACE_SIZE else None,
            face_match_threshold=settings.iai_face_match_threshold or None,
            quality_control=settings.iai_quality_control or None,
            need_person_info=settings.iai_need_person_info,
        ),
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        pool_size=settings.max_in_flight + 1,  # one connection for the breaker's probe
        verify=settings.tls_verify,
    )


def face_api(settings: Settings) -> FaceApi:
    """The client of the API ``settings.api`` names."""
    if settings.api == "iai":
        return IaiClient(iai_options(settings))
    return MultidentifyClient(client_options(settings))


def fetch_options(settings: Settings) -> FetchOptions:
    """Fetch mode's options: every setting the image fetcher reads but its memory budget, read here."""
    from worker.fetch import FetchOptions  # only in fetch mode

    return FetchOptions(
        max_bytes=settings.fetch_max_bytes,
        connect_timeout=min(settings.connect_timeout_s, settings.fetch_timeout_s),
        read_timeout=settings.fetch_timeout_s,
        total_timeout=settings.fetch_timeout_s,
        allowed_networks=settings.fetch_allowed_networks,
        verify=settings.fetch_tls_verify,
        pool_size=settings.max_in_flight,  # one connection per HTTP thread
    )


def build_pipeline(
    settings: Settings,
    *,
    observers: Sequence[Observer] = (),
    consumer_config: dict[str, object] | None = None,
    producer_config: dict[str, object] | None = None,
    tracer: Tracer | None = None,
) -> Pipeline:
    """Everything `run` wires together, without signal handlers or the ops server (tests use this too)."""
    client = face_api(settings)
    fetcher: ImageSource | None = None
    if settings.image_mode == "fetch":
        from worker.config import MIB
        from worker.core.budget import ByteBudget
        from worker.fetch import ImageFetcher

        # The budget bounds the images held at once, API retries included.
        fetcher = ImageFetcher(fetch_options(settings), budget=ByteBudget(settings.fetch_memory_mb * MIB))
    breaker = CircuitBreaker(failure_ratio=settings.breaker_failure_ratio, open_s=settings.breaker_open_s)
    rate = settings.rate_limit_qps
    limiter = AimdRateLimiter(rate, min_rate=min(1.0, rate) if rate else None)
    observer = Observers(list(observers))
    identifier = Identifier(
        client,
        default_groups=settings.group_ids,
        policy=retry_policy(settings),
        limiter=limiter,
        breaker=breaker,
        observer=observer,
        fetcher=fetcher,
    )
    return Pipeline(
        settings,
        identifier,
        breaker=breaker,
        observer=observer,
        consumer_config=dict(consumer_config) if consumer_config else None,
        producer_config=dict(producer_config) if producer_config else None,
        tracer=tracer,
    )


def run(settings: Settings) -> int:
    """Run the worker until SIGTERM/SIGINT or a fatal condition; return the process exit code.

    The stop handlers are installed first, before anything slow: a stop asked for before the pipeline
    exists returns 0 without starting it, one asked for later drains it (``drain_timeout_s``). Either
    way a watchdog ends the process at the latest ``drain_timeout_s`` + ``STOP_MARGIN_S`` after the
    request (exit 6). Callers end the process with :func:`worker.runtime.stopping.exit_process`.
    """
    stop = install_stop_handlers()  # first: see worker.runtime.stopping
    from worker.ops import HealthState, LogObserver, OpsServer, PrometheusObserver, configure_logging, tracing

    configure_logging(
        settings.log_level,
        settings.log_format,
        secrets=settings.secret_values(),
    )
    try:
        # OTEL_* variables (docs/tracing.md); off, this imports no OpenTelemetry and traces nothing.
        tracer = tracing.start(group_id=settings.group_id)
    except tracing.TracingConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return ExitCode.INVALID_CONFIG
    budget = settings.drain_timeout_s + STOP_MARGIN_S
    watchdog = StopWatchdog(stop, budget, drain_s=settings.drain_timeout_s).start()
    server = None
    try:
        log.info(
            "starting",
            extra={"group": settings.group_id, "topic": settings.input_topic, "max_in_flight": settings.max_in_flight},
        )
        if stop.requested:
            log.info("stopped before the pipeline was built (%s)", stop.reason)
            return 0
        health = HealthState(liveness_timeout_s=settings.liveness_timeout_s)
        metrics = PrometheusObserver(health=health)
        pipeline = build_pipeline(settings, observers=[metrics, health, LogObserver()], tracer=tracer)
        stop.on_request(pipeline.request_stop)  # from here on a stop drains the pipeline
        if stop.requested:
            log.info("stopped before the pipeline ran (%s)", stop.reason)
            return 0
        if settings.metrics_port:
            server = OpsServer(metrics.registry, health, host=settings.metrics_host, port=settings.metrics_port).start()
        code = pipeline.run()
    finally:
        if server is not None:
            server.stop()
        tracer.close()  # bounded (worker.ops.otel): within the watchdog's budget
        watchdog.disarm()
    if code:
        print(f"multidentify-worker: {pipeline.fatal_reason}", file=sys.stderr)
    return code
