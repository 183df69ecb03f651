"""PrometheusObserver: counters move by what the hooks report; per-partition gauges follow the assignment."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest

from worker.ops.health import HealthState
from worker.ops.metrics import PrometheusObserver, consumer_lags
from worker.runtime.observer import Snapshot


def _partition(p: int, lag: int, hi: int, committed: int) -> dict[str, object]:
    # The field layout of librdkafka's STATISTICS.md (a subset of the ~40 per-partition fields).
    return {
        "partition": p,
        "broker": 1,
        "leader": 1,
        "desired": p >= 0,
        "unknown": False,
        "fetch_state": "active" if p >= 0 else "none",
        "query_offset": -1001,
        "next_offset": hi,
        "app_offset": hi,
        "stored_offset": committed,
        "committed_offset": committed,
        "eof_offset": hi,
        "lo_offset": 0,
        "hi_offset": hi,
        "ls_offset": hi,
        "consumer_lag": lag,
        "consumer_lag_stored": lag,
        "msgs": 0,
        "rxmsgs": hi,
        "rxbytes": 30000,
    }


def _stats(parts: dict[str, dict[str, object]], kind: str = "consumer") -> dict[str, object]:
    return {
        "name": "rdkafka#consumer-1",
        "client_id": "mdw",
        "type": kind,
        "ts": 123456789,
        "time": 1760000000,
        "brokers": {},
        "topics": {"images": {"topic": "images", "age": 1000, "metadata_age": 900, "partitions": parts}},
        "cgrp": {"state": "up", "join_state": "steady", "assignment_size": 2},
    }


def _value(obs: PrometheusObserver, name: str, **labels: str) -> float | None:
    return obs.registry.get_sample_value(name, labels)


def test_each_observer_has_its_own_registry() -> None:
    a, b = PrometheusObserver(), PrometheusObserver()  # would raise "Duplicated timeseries" on a shared registry
    a.result(2)
    assert _value(a, "mdw_results_total") == 1
    assert _value(b, "mdw_results_total") == 0


def test_counters_move_by_the_reported_amounts() -> None:
    obs = PrometheusObserver()
    obs.consumed("images", 5)
    obs.consumed("images", 3)
    obs.result(2)
    obs.result(0)
    obs.dead_letter("-1308")
    obs.dead_letter("-1308")
    obs.dead_letter("timeout")
    obs.retried("15")
    obs.api_call("ok", 0.2)
    obs.api_call("ok", 0.03)
    obs.api_call("15", 12.0)
    obs.rebalance("assigned", [("images", 0)])
    obs.rebalance("revoked", [("images", 0)])
    obs.rebalance("lost", [])

    assert _value(obs, "mdw_events_consumed_total", topic="images") == 8
    assert _value(obs, "mdw_results_total") == 2
    assert _value(obs, "mdw_faces_identified_total") == 2
    assert _value(obs, "mdw_dead_letters_total", code="-1308") == 2
    assert _value(obs, "mdw_dead_letters_total", code="timeout") == 1
    assert _value(obs, "mdw_retries_total", code="15") == 1
    assert _value(obs, "mdw_api_calls_total", outcome="ok") == 2
    assert _value(obs, "mdw_api_calls_total", outcome="15") == 1
    assert _value(obs, "mdw_api_latency_seconds_count", status="ok") == 2
    assert _value(obs, "mdw_api_latency_seconds_bucket", status="ok", le="0.05") == 1
    assert _value(obs, "mdw_api_latency_seconds_bucket", status="error", le="10.0") == 0
    assert _value(obs, "mdw_api_latency_seconds_bucket", status="error", le="+Inf") == 1
    for kind in ("assigned", "revoked", "lost"):
        assert _value(obs, "mdw_rebalances_total", kind=kind) == 1


def test_latency_histogram_has_no_partition_label_and_spans_10ms_to_10s() -> None:
    obs = PrometheusObserver()
    obs.api_call("ok", 0.1)
    text = generate_latest(obs.registry).decode()
    buckets = [line for line in text.splitlines() if line.startswith("mdw_api_latency_seconds_bucket")]
    assert buckets and not any("partition" in line for line in buckets)
    assert any('le="0.01"' in line for line in buckets)
    assert any('le="10.0"' in line for line in buckets)


def test_code_labels_are_capped() -> None:
    obs = PrometheusObserver(max_codes=3)
    for code in ("a", "b", "c", "d", "e", "a"):
        obs.dead_letter(code)
    assert _value(obs, "mdw_dead_letters_total", code="a") == 2
    assert _value(obs, "mdw_dead_letters_total", code="c") == 1
    assert _value(obs, "mdw_dead_letters_total", code="d") is None
    assert _value(obs, "mdw_dead_letters_total", code="other") == 2


def test_api_hooks_are_thread_safe() -> None:
    obs = PrometheusObserver()

    def hammer() -> None:
        for _ in range(1000):
            obs.api_call("ok", 0.1)
            obs.retried("15")

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert _value(obs, "mdw_api_calls_total", outcome="ok") == 4000
    assert _value(obs, "mdw_retries_total", code="15") == 4000


def test_consumer_lags_reads_the_stats_layout_and_skips_unknowns() -> None:
    stats = _stats(
        {
            "0": _partition(0, lag=70, hi=100, committed=30),
            "1": _partition(1, lag=-1, hi=-1, committed=-1001),  # lag not known yet
            "-1": _partition(-1, lag=-1, hi=-1, committed=-1001),  # librdkafka's internal UA partition
        }
    )
    assert consumer_lags(stats) == {("images", 0): 70}
    assert consumer_lags({"topics": "garbage"}) == {}


def test_lag_gauge_from_stats_and_removed_when_the_partition_goes() -> None:
    obs = PrometheusObserver()
    obs.rebalance("assigned", [("images", 0), ("images", 1)])
    obs.kafka_stats(
        _stats(
            {
                "0": _partition(0, lag=70, hi=100, committed=30),
                "1": _partition(1, lag=5, hi=50, committed=45),
                "-1": _partition(-1, lag=-1, hi=-1, committed=-1001),
            }
        )
    )
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="0") == 70
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="1") == 5
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="-1") is None

    obs.rebalance("revoked", [("images", 1)])
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="1") is None
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="0") == 70

    # Stats still listing the revoked partition do not bring it back.
    obs.kafka_stats(_stats({"0": _partition(0, 60, 100, 40), "1": _partition(1, 9, 50, 41)}))
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="0") == 60
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="1") is None

    # A snapshot is authoritative about the assignment.
    obs.snapshot(Snapshot(assigned=()))
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="0") is None


def test_lag_turning_unknown_drops_the_series_and_producer_stats_are_ignored() -> None:
    obs = PrometheusObserver()
    obs.rebalance("assigned", [("images", 0)])
    obs.kafka_stats(_stats({"0": _partition(0, 70, 100, 30)}))
    obs.kafka_stats(_stats({"0": _partition(0, -1, -1, -1001)}, kind="producer"))
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="0") == 70
    obs.kafka_stats(_stats({"0": _partition(0, -1, 100, -1001)}))
    assert _value(obs, "mdw_consumer_lag", topic="images", partition="0") is None


def test_snapshot_gauges_and_commit_gap() -> None:
    obs = PrometheusObserver()
    snap = Snapshot(
        assigned=(("images", 0), ("images", 1)),
        paused=True,
        in_flight=7,
        queued=3,
        oldest_in_flight_age_s=4.5,
        commit_gap={("images", 0): 12},
        breaker_state="half_open",
        rate_limit_qps=18.0,
    )
    obs.snapshot(snap)
    assert _value(obs, "mdw_in_flight") == 7
    assert _value(obs, "mdw_queued") == 3
    assert _value(obs, "mdw_oldest_in_flight_age_seconds") == 4.5
    assert _value(obs, "mdw_paused") == 1
    assert _value(obs, "mdw_rate_limit_qps") == 18
    assert _value(obs, "mdw_partitions_assigned") == 2
    assert _value(obs, "mdw_breaker_state") == 1
    assert _value(obs, "mdw_breaker", state="half_open") == 1
    assert _value(obs, "mdw_breaker", state="closed") == 0
    assert _value(obs, "mdw_commit_gap", topic="images", partition="0") == 12
    assert _value(obs, "mdw_commit_gap", topic="images", partition="1") == 0

    obs.snapshot(Snapshot(assigned=(("images", 0),), breaker_state="open"))
    assert _value(obs, "mdw_breaker_state") == 2
    assert _value(obs, "mdw_paused") == 0
    assert _value(obs, "mdw_commit_gap", topic="images", partition="0") == 0
    assert _value(obs, "mdw_commit_gap", topic="images", partition="1") is None


def test_committed_offsets_only_for_assigned_partitions() -> None:
    obs = PrometheusObserver()
    obs.rebalance("assigned", [("images", 0), ("images", 1)])
    obs.committed({("images", 0): 30, ("images", 1): 45})
    assert _value(obs, "mdw_committed_offset", topic="images", partition="0") == 30
    obs.rebalance("lost", [("images", 1)])
    assert _value(obs, "mdw_committed_offset", topic="images", partition="1") is None
    obs.committed({("images", 1): 50})  # a late async-commit callback
    assert _value(obs, "mdw_committed_offset", topic="images", partition="1") is None


def test_up_and_ready_follow_the_pipeline() -> None:
    now = [100.0]
    health = HealthState(clock=lambda: now[0])
    obs = PrometheusObserver(CollectorRegistry(), health=health)
    assert _value(obs, "mdw_up") == 1
    assert _value(obs, "mdw_ready") == 0
    health.snapshot(Snapshot(assigned=(("images", 0),)))
    assert _value(obs, "mdw_ready") == 1
    now[0] += 7
    assert _value(obs, "mdw_seconds_since_loop_turn") == 7
    obs.stopped(0, "signal")
    assert _value(obs, "mdw_up") == 0
