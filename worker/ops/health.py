"""Liveness and readiness as an observer, and the one small HTTP server of /metrics, /healthz, /readyz.

Liveness (/healthz): the poll loop turned within ``liveness_timeout_s`` and the pipeline has not
stopped. A stalled loop is the one failure a restart fixes.

Readiness (/readyz), in the order the reasons are reported: not stopped, no fatal error, not
stopping, live, a first snapshot seen, broker reachable, breaker not away from ``closed`` for longer
than ``breaker_grace_s`` (measured from leaving ``closed``, so an open → half-open → open cycle
does not restart the clock), and at least one partition assigned.

Choice on assignment: /readyz follows assignment. A replica beyond the partition
count is idle but otherwise fine, and reports "no partitions assigned" (503). That keeps the
Service/PodMonitor view honest (only members doing work are ready) at the cost that surplus replicas
never turn ready; pass ``require_assignment=False`` where that matters more (e.g. a rollout gated on
readiness with more replicas than partitions).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from worker.runtime.observer import Observer, Snapshot

log = logging.getLogger("worker.ops.health")

Check = Callable[[], tuple[bool, str]]


class HealthState(Observer):
    """Liveness and readiness from pipeline hooks. Thread-safe; ``clock`` is injectable (monotonic seconds).

    ``loop_turned``'s ``now`` argument is ignored: the heartbeat is stamped with ``clock`` so that the
    comparison never mixes two clocks. Construction counts as the first heartbeat (start-up grace).
    """

    def __init__(
        self,
        *,
        liveness_timeout_s: float = 30.0,
        breaker_grace_s: float = 60.0,
        require_assignment: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = liveness_timeout_s
        self._grace = breaker_grace_s
        self._require_assignment = require_assignment
        self._clock = clock
        self._lock = threading.Lock()
        self._last_turn = clock()
        self._snap: Snapshot | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._breaker_not_closed_since: float | None = None
        self._stopped: str | None = None

    # --- hooks ----------------------------------------------------------------------------------

    def loop_turned(self, now: float) -> None:
        t = self._clock()
        with self._lock:
            self._last_turn = t

    def rebalance(self, kind: str, partitions: Sequence[tuple[str, int]]) -> None:
        with self._lock:
            if kind == "assigned":
                self._assigned.update(partitions)
            else:
                self._assigned.difference_update(partitions)

    def snapshot(self, snap: Snapshot) -> None:
        t = self._clock()
        with self._lock:
            self._snap = snap
            self._assigned = set(snap.assigned)
            if snap.breaker_state == "closed":
                self._breaker_not_closed_since = None
            elif self._breaker_not_closed_since is None:
                self._breaker_not_closed_since = t

    def stopped(self, exit_code: int, reason: str) -> None:
        with self._lock:
            self._stopped = f"stopped (exit {exit_code}): {reason}"

    # --- checks ---------------------------------------------------------------------------------

    def seconds_since_loop_turn(self) -> float:
        with self._lock:
            return max(0.0, self._clock() - self._last_turn)

    def healthy(self) -> tuple[bool, str]:
        """(True, "ok") while the loop turns and the pipeline has not stopped; else (False, reason)."""
        with self._lock:
            if self._stopped is not None:
                return False, self._stopped
            stalled = self._clock() - self._last_turn
        if stalled >= self._timeout:
            return False, f"poll loop has not turned for {stalled:.1f}s (limit {self._timeout:g}s)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """(True, "ready") when this member should receive traffic-like attention; else (False, reason)."""
        live, why = self.healthy()
        with self._lock:
            if self._stopped is not None:
                return False, self._stopped
            snap = self._snap
            if snap is not None and snap.fatal:
                return False, f"fatal: {snap.fatal}"
            if snap is not None and snap.stopping:
                return False, "stopping"
            if not live:
                return False, why
            if snap is None:
                return False, "starting: no pipeline snapshot yet"
            if not snap.broker_reachable:
                return False, "broker unreachable"
            if snap.guard_tripped:
                return False, "dead-letter guard: nearly every recent event went to the DLQ; holding"
            since = self._breaker_not_closed_since
            if since is not None and self._clock() - since > self._grace:
                return False, f"circuit breaker {snap.breaker_state} for more than {self._grace:g}s"
            if self._require_assignment and not self._assigned:
                return False, "no partitions assigned"
        return True, "ready"


class OpsServer:
    """GET /metrics (``registry``), /healthz and /readyz (``health``) on one HTTP server; 404 otherwise.

    ``port=0`` binds a free port; ``.port`` tells which once constructed (the socket is bound in the
    constructor). ``start()`` serves from a daemon thread; ``stop()`` shuts down, closes and joins.
    """

    def __init__(self, registry: CollectorRegistry, health: HealthState, *, host: str = "127.0.0.1", port: int = 0):
        routes: dict[str, Check | None] = {"/healthz": health.healthy, "/readyz": health.ready, "/metrics": None}
        handler = type("_BoundHandler", (_Handler,), {"registry": registry, "routes": routes})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    def start(self) -> OpsServer:
        if self._thread is None:
            # A short poll interval keeps stop() quick (shutdown waits for the serve loop's next check).
            serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
            self._thread = threading.Thread(target=serve, name="ops-http", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout_s)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OpsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    routes: dict[str, Check | None]
    timeout = 10  # a stuck client must not pin a thread forever
    server_version = "multidentify-worker-ops"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path not in self.routes:
            status, ctype, body = 404, "text/plain; charset=utf-8", b"not found\n"
        elif path == "/metrics":
            encoder, ctype = choose_encoder(self.headers.get("Accept", ""))
            status, body = 200, encoder(self.registry)
        else:
            check = self.routes[path]
            assert check is not None
            ok, reason = check()
            status, ctype, body = (200 if ok else 503), "text/plain; charset=utf-8", (reason + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Probes hit every few seconds: access lines stay at debug level, out of stderr.
        log.debug("ops http: " + format, *args)
