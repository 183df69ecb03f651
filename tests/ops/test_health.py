"""HealthState rules and the OpsServer over real HTTP on 127.0.0.1 (port 0)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from worker.ops.health import HealthState, OpsServer
from worker.ops.metrics import PrometheusObserver
from worker.runtime.observer import Observers, Snapshot

TP0 = ("images", 0)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _get(port: int, path: str, accept: str | None = None) -> tuple[int, str, str]:
    # http.client, not urllib/requests: no proxy environment variable can reroute loopback traffic.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Accept": accept} if accept else {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp.getheader("Content-Type") or ""
    finally:
        conn.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def health(clock: Clock) -> HealthState:
    return HealthState(liveness_timeout_s=30, breaker_grace_s=60, clock=clock)


@pytest.fixture
def metrics(health: HealthState) -> PrometheusObserver:
    return PrometheusObserver(health=health)


@pytest.fixture
def server(metrics: PrometheusObserver, health: HealthState) -> Iterator[OpsServer]:
    srv = OpsServer(metrics.registry, health, host="127.0.0.1", port=0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_liveness_follows_the_loop_heartbeat(health: HealthState, clock: Clock) -> None:
    assert health.healthy() == (True, "ok")  # start-up grace
    clock.t += 29
    health.loop_turned(0.0)
    clock.t += 29
    assert health.healthy()[0]
    clock.t += 2
    ok, reason = health.healthy()
    assert not ok and "not turned" in reason
    health.loop_turned(0.0)
    assert health.healthy()[0]
    health.stopped(3, "config error: code 11")
    ok, reason = health.healthy()
    assert not ok and "code 11" in reason


def test_readiness_rules(health: HealthState, clock: Clock) -> None:
    ok, reason = health.ready()
    assert not ok and "snapshot" in reason
    health.snapshot(Snapshot(assigned=()))
    assert health.ready() == (False, "no partitions assigned")
    health.rebalance("assigned", [TP0])
    assert health.ready() == (True, "ready")
    health.rebalance("revoked", [TP0])
    assert not health.ready()[0]

    health.snapshot(Snapshot(assigned=(TP0,), broker_reachable=False))
    assert health.ready() == (False, "broker unreachable")
    health.snapshot(Snapshot(assigned=(TP0,), breaker_state="open"))
    assert health.ready()[0]  # a short open breaker is a normal reaction to a blip
    clock.t += 40
    health.loop_turned(0.0)
    health.snapshot(Snapshot(assigned=(TP0,), breaker_state="half_open"))
    clock.t += 21
    health.loop_turned(0.0)
    health.snapshot(Snapshot(assigned=(TP0,), breaker_state="open"))
    ok, reason = health.ready()
    assert not ok and "breaker" in reason  # 61 s away from closed, across an open → half-open → open cycle
    health.snapshot(Snapshot(assigned=(TP0,), breaker_state="closed"))
    assert health.ready()[0]

    health.snapshot(Snapshot(assigned=(TP0,), fatal="code 11: secret id does not exist"))
    ok, reason = health.ready()
    assert not ok and reason.startswith("fatal")
    health.snapshot(Snapshot(assigned=(TP0,), stopping=True))
    assert health.ready() == (False, "stopping")


def test_readiness_can_ignore_assignment(clock: Clock) -> None:
    idle_ok = HealthState(require_assignment=False, clock=clock)
    idle_ok.snapshot(Snapshot(assigned=()))
    assert idle_ok.ready()[0]


def test_http_endpoints(server: OpsServer, metrics: PrometheusObserver, health: HealthState, clock: Clock) -> None:
    assert server.port > 0
    pipeline = Observers([metrics, health])
    pipeline.consumed("images", 4)
    pipeline.rebalance("assigned", [TP0])
    pipeline.snapshot(Snapshot(assigned=(TP0,), in_flight=2))

    status, body, ctype = _get(server.port, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("mdw_events_consumed_total", (("topic", "images"),))] == 4
    assert samples[("mdw_in_flight", ())] == 2
    assert samples[("mdw_ready", ())] == 1

    status, _, ctype = _get(server.port, "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert status == 200 and ctype.startswith("application/openmetrics-text")

    assert _get(server.port, "/healthz")[:2] == (200, "ok\n")
    assert _get(server.port, "/readyz")[:2] == (200, "ready\n")
    assert _get(server.port, "/nope")[0] == 404
    assert _get(server.port, "/healthz?verbose=1")[0] == 200

    # The loop stalls: liveness fails, and readiness with it.
    clock.t += 31
    status, body, _ = _get(server.port, "/healthz")
    assert status == 503 and "not turned" in body
    assert _get(server.port, "/readyz")[0] == 503
    pipeline.loop_turned(clock.t)
    assert _get(server.port, "/healthz")[0] == 200

    # Readiness follows assignment, breaker and stopping.
    pipeline.rebalance("revoked", [TP0])
    status, body, _ = _get(server.port, "/readyz")
    assert (status, body) == (503, "no partitions assigned\n")
    pipeline.snapshot(Snapshot(assigned=(TP0,), breaker_state="open"))
    assert _get(server.port, "/readyz")[0] == 200
    clock.t += 61
    pipeline.loop_turned(clock.t)
    status, body, _ = _get(server.port, "/readyz")
    assert status == 503 and "breaker open" in body
    pipeline.snapshot(Snapshot(assigned=(TP0,), stopping=True))
    assert _get(server.port, "/readyz")[:2] == (503, "stopping\n")
    assert _get(server.port, "/healthz")[0] == 200  # draining is alive


def test_stop_releases_the_port(metrics: PrometheusObserver, health: HealthState) -> None:
    srv = OpsServer(metrics.registry, health).start()
    port = srv.port
    assert _get(port, "/healthz")[0] == 200
    srv.stop()
    with pytest.raises(OSError):
        _get(port, "/healthz")
