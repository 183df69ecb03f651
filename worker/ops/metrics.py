"""Prometheus metrics as an observer of the pipeline.

Every metric lives in the observer's own ``CollectorRegistry`` (never the global one), so tests and
several pipelines in one process do not collide. Names are ``mdw_*``, unit-suffixed; labels stay
low-cardinality: ``topic``, ``partition`` (gauges only, never on histograms), ``kind`` and ``code``
(capped, see ``max_codes``).

Per-partition gauges (``mdw_consumer_lag``, ``mdw_commit_gap``, ``mdw_committed_offset``) exist only
for partitions currently assigned: the assignment comes from ``rebalance`` hooks and is replaced by
every ``snapshot``; series of partitions that leave it are removed at once, so a revoked partition
never shows a stale lag.

Consumer lag comes from librdkafka statistics (``topics → partitions → consumer_lag``), not from
ListOffsets, which is wrong on the Tansu broker (docs/api-notes.md#broker-notes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from worker.runtime.observer import Observer, Snapshot

if TYPE_CHECKING:
    from worker.ops.health import HealthState

# 10 ms … 10 s, denser where real multidentify calls land (≈100 ms – 2 s); timeouts fall in +Inf.
API_LATENCY_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
)  # fmt: skip

BREAKER_STATES: dict[str, int] = {"closed": 0, "half_open": 1, "open": 2}
OTHER = "other"

TP = tuple[str, int]


class _LabelCap:
    """Passes the first ``limit`` distinct values through and maps later new ones to ``other``."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = value[:64]
        with self._lock:
            if value in self._seen:
                return value
            if len(self._seen) < self._limit:
                self._seen.add(value)
                return value
        return OTHER


class _PartitionGauge:
    """A ``{topic, partition}`` gauge whose series set is managed explicitly (set / drop / keep only)."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._present: set[TP] = set()

    def set(self, tp: TP, value: float) -> None:
        self._gauge.labels(tp[0], str(tp[1])).set(value)
        self._present.add(tp)

    def drop(self, tp: TP) -> None:
        if tp in self._present:
            self._present.discard(tp)
            self._gauge.remove(tp[0], str(tp[1]))

    def keep_only(self, wanted: Iterable[TP]) -> None:
        for tp in self._present - set(wanted):
            self.drop(tp)


class PrometheusObserver(Observer):
    """Turns pipeline hooks into Prometheus metrics in ``self.registry``.

    ``registry``: where to register (a fresh private one by default). ``max_codes``: distinct values
    kept per ``code``/``outcome``/``topic`` label before new ones are counted as ``other``.
    ``health``: when given, ``mdw_ready`` and ``mdw_seconds_since_loop_turn`` are computed from it at
    scrape time (one source of truth with /readyz); without it those two metrics are not exported.
    ``mdw_up`` is 1 from construction until ``stopped``.

    Thread-safe: ``api_call``/``retried`` may come from HTTP threads, everything else from the poll loop.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        max_codes: int = 100,
        health: HealthState | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self._lock = threading.Lock()  # guards the assignment and the per-partition series sets
        self._codes = {name: _LabelCap(max_codes) for name in ("dead", "retry", "api", "topic", "kind")}
        self._assigned: set[TP] = set()

        self.events_consumed = Counter("mdw_events_consumed", "Records read from input topics", ["topic"], registry=r)
        self.results = Counter("mdw_results", "Result records acknowledged by the broker", registry=r)
        self.faces = Counter("mdw_faces_identified", "Faces in acknowledged result records", registry=r)
        self.dead_letters = Counter(
            "mdw_dead_letters", "Dead-letter records acknowledged by the broker, by code", ["code"], registry=r
        )
        self.retries = Counter(
            "mdw_retries", "API attempts that failed and will be retried, by code", ["code"], registry=r
        )
        self.api_calls = Counter("mdw_api_calls", "API attempts by outcome (ok or error code)", ["outcome"], registry=r)
        self.api_latency = Histogram(
            "mdw_api_latency_seconds",
            "Duration of one API attempt; status is ok or error",
            ["status"],
            buckets=API_LATENCY_BUCKETS,
            registry=r,
        )
        self.rebalances = Counter("mdw_rebalances", "Rebalance events by kind", ["kind"], registry=r)

        self.in_flight = Gauge("mdw_in_flight", "Events being processed (API call running or waiting)", registry=r)
        self.queued = Gauge("mdw_queued", "Events consumed and waiting for a worker slot", registry=r)
        self.oldest_age = Gauge(
            "mdw_oldest_in_flight_age_seconds", "Age of the oldest event still in flight", registry=r
        )
        self.rate_limit_qps = Gauge("mdw_rate_limit_qps", "Current client-side API rate limit", registry=r)
        self.breaker_state = Gauge("mdw_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", registry=r)
        self.breaker = Gauge(
            "mdw_breaker", "Circuit breaker state as a label: 1 for the current state", ["state"], registry=r
        )
        self.partitions_assigned = Gauge("mdw_partitions_assigned", "Partitions assigned to this member", registry=r)
        self.paused = Gauge("mdw_paused", "1 while consumption is paused (backpressure or breaker)", registry=r)
        self.up = Gauge("mdw_up", "1 while the pipeline runs, 0 after it stopped", registry=r)
        self.guard_tripped = Gauge(
            "mdw_dlq_guard_tripped", "1 while the dead-letter guard holds the worker (takes no new events)", registry=r
        )
        self.structures = Gauge(
            "mdw_structure_entries",
            "Entries held by each long-lived in-memory structure (bounded whatever the traffic)",
            ["structure"],
            registry=r,
        )
        labels = ["topic", "partition"]
        self._lag = _PartitionGauge(
            Gauge("mdw_consumer_lag", "Records behind the high watermark (librdkafka stats)", labels, registry=r)
        )
        self._gap = _PartitionGauge(
            Gauge("mdw_commit_gap", "Processed positions not yet committed (processed − committed)", labels, registry=r)
        )
        self._committed = _PartitionGauge(
            Gauge("mdw_committed_offset", "Last committed offset (next record to read)", labels, registry=r)
        )

        for state in BREAKER_STATES:
            self.breaker.labels(state).set(1 if state == "closed" else 0)
        self.up.set(1)
        if health is not None:
            _function_gauge("mdw_ready", "1 when /readyz answers 200", r, lambda: float(health.ready()[0]))
            _function_gauge(
                "mdw_seconds_since_loop_turn",
                "Time since the poll loop last turned (liveness)",
                r,
                health.seconds_since_loop_turn,
            )

    # --- counters -------------------------------------------------------------------------------

    def consumed(self, topic: str, count: int) -> None:
        self.events_consumed.labels(self._codes["topic"](topic)).inc(count)

    def api_call(self, outcome: str, latency_s: float) -> None:
        self.api_calls.labels(self._codes["api"](outcome)).inc()
        self.api_latency.labels("ok" if outcome == "ok" else "error").observe(latency_s)

    def retried(self, code: str) -> None:
        self.retries.labels(self._codes["retry"](code)).inc()

    def result(self, faces: int) -> None:
        self.results.inc()
        if faces > 0:
            self.faces.inc(faces)

    def dead_letter(self, code: str) -> None:
        self.dead_letters.labels(self._codes["dead"](code)).inc()

    # --- per-partition state --------------------------------------------------------------------

    def rebalance(self, kind: str, partitions: Sequence[tuple[str, int]]) -> None:
        self.rebalances.labels(self._codes["kind"](kind)).inc()
        with self._lock:
            if kind == "assigned":
                self._assigned.update(partitions)
            else:  # revoked or lost: these partitions are no longer ours
                self._assigned.difference_update(partitions)
            self._prune()

    def committed(self, positions: Mapping[tuple[str, int], int]) -> None:
        with self._lock:
            for tp, offset in positions.items():
                if tp in self._assigned:  # a late async-commit callback must not revive a revoked series
                    self._committed.set(tp, offset)

    def kafka_stats(self, stats: Mapping[str, object]) -> None:
        # Producer statistics carry consumer_lag -1 everywhere; they must not erase the consumer's series.
        if stats.get("type", "consumer") != "consumer":
            return
        lags = consumer_lags(stats)
        with self._lock:
            for tp in self._assigned:
                if tp in lags:
                    self._lag.set(tp, lags[tp])
                else:  # unknown lag (-1) or missing: a stale value would mislead more than a gap
                    self._lag.drop(tp)

    def snapshot(self, snap: Snapshot) -> None:
        self.in_flight.set(snap.in_flight)
        self.queued.set(snap.queued)
        self.oldest_age.set(snap.oldest_in_flight_age_s)
        self.rate_limit_qps.set(snap.rate_limit_qps)
        self.paused.set(1 if snap.paused else 0)
        self.guard_tripped.set(1 if snap.guard_tripped else 0)
        for name, size in snap.structures.items():
            self.structures.labels(name).set(size)
        self.partitions_assigned.set(len(snap.assigned))
        state = snap.breaker_state if snap.breaker_state in BREAKER_STATES else "open"
        self.breaker_state.set(BREAKER_STATES[state])
        for name in BREAKER_STATES:
            self.breaker.labels(name).set(1 if name == state else 0)
        with self._lock:
            self._assigned = set(snap.assigned)
            self._prune()
            for tp in self._assigned:
                self._gap.set(tp, snap.commit_gap.get(tp, 0))

    def stopped(self, exit_code: int, reason: str) -> None:
        self.up.set(0)

    def _prune(self) -> None:
        """Drops every per-partition series of a partition no longer assigned (caller holds the lock)."""
        for family in (self._lag, self._gap, self._committed):
            family.keep_only(self._assigned)


def consumer_lags(stats: Mapping[str, object]) -> dict[TP, int]:
    """Per-partition ``consumer_lag`` from librdkafka statistics, skipping partition -1 and unknown lag (-1)."""
    out: dict[TP, int] = {}
    topics = stats.get("topics")
    if not isinstance(topics, Mapping):
        return out
    for topic, tstats in topics.items():
        parts = tstats.get("partitions") if isinstance(tstats, Mapping) else None
        if not isinstance(parts, Mapping):
            continue
        for key, pstats in parts.items():
            if not isinstance(pstats, Mapping):
                continue
            try:
                partition = int(pstats.get("partition", key))
            except (TypeError, ValueError):
                continue
            lag = pstats.get("consumer_lag")
            if partition < 0 or not isinstance(lag, int) or isinstance(lag, bool) or lag < 0:
                continue
            out[(str(topic), partition)] = lag
    return out


def _function_gauge(name: str, doc: str, registry: CollectorRegistry, fn: Callable[[], float]) -> None:
    Gauge(name, doc, registry=registry).set_function(fn)
