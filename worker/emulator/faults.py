"""Fault injection: the configuration (JSON in and out) and the per-request decision, with a seedable RNG.

JSON shape (every key optional; ``POST /__admin/faults`` takes it, ``GET`` returns it with defaults)::

    {"latency": {"kind": "fixed", "ms": 200}          # or {"kind": "uniform", "min_ms": 50, "max_ms": 300}
                                                      # or {"kind": "lognormal", "median_ms": 200, "sigma": 0.5,
                                                      #     "max_ms": 5000}; {"kind": "none"} (default)
     "latency_ms": 200,                               # shorthand for a fixed latency
     "error_rates": {"213": 0.02, "15": 0.01},        # answer this business code (HTTP 200) with this probability
     "applied_error_rates": {"213": 0.5},             # carry the request out, then answer this code instead of
                                                      # its result: a server fault after the write took effect
     "http_error_rates": {"503": 0.5},                # answer this HTTP status with a non-JSON body
     "drop_rate": 0.0,                                # close the connection without an answer
     "malformed_json_rate": 0.0,                      # HTTP 200 with a truncated JSON body
     "slow_body_rate": 0.0, "slow_body_ms": 2000,     # send headers, then trickle the body over slow_body_ms
     "late_answer_rate": 0.0, "late_answer_ms": 2000, # carry the request out, then hold the whole answer (headers
                                                      # too) for late_answer_ms: a client with a shorter read
                                                      # timeout sees a timeout for a call that took effect
     "qps_limit": null, "qps_burst": null,            # token bucket; above it answer code 15 at once
     "seed": null,                                    # seeds the RNG (reproducible sequence of decisions)
     "apply_to_management": false,                    # also fault /face/newperson etc. (IAI: all but the
                                                      # SearchFaces/SearchPersons actions)
     "actions": null}                                 # or a list: fault these actions only, whatever
                                                      # apply_to_management says (v1 "addface", IAI "CreateFace")

One model serves both APIs: codes are v1's, and IAI (``POST /``) answers each in its own words
(``worker.emulator.iai_wire.V1_TO_IAI``: 15 → ``RequestLimitExceeded``, 213 → ``InternalError``, …; the QPS
limit → ``RequestLimitExceeded``).

Each faulted request draws exactly two numbers, one for its latency and one for its outcome; the
outcomes are mutually exclusive slices of [0, 1), so the rates are honoured exactly in expectation and
a seeded sequence of requests gets the same sequence of decisions.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

LATENCY_KINDS = ("none", "fixed", "uniform", "lognormal")
_STD_NORMAL = NormalDist()


@dataclass(frozen=True)
class Latency:
    kind: str = "none"
    ms: float = 0.0
    min_ms: float = 0.0
    max_ms: float | None = None
    median_ms: float = 0.0
    sigma: float = 0.5

    def sample_ms(self, u: float) -> float:
        """The latency for a uniform draw ``u`` in [0, 1) (inverse CDF, so one draw per request)."""
        if self.kind == "fixed":
            value = self.ms
        elif self.kind == "uniform":
            hi = self.max_ms if self.max_ms is not None else self.min_ms
            value = self.min_ms + (hi - self.min_ms) * u
        elif self.kind == "lognormal":
            z = _STD_NORMAL.inv_cdf(min(max(u, 1e-12), 1 - 1e-12))
            value = self.median_ms * math.exp(self.sigma * z)
            if self.max_ms is not None:
                value = min(value, self.max_ms)
        else:
            value = 0.0
        return max(0.0, value)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "fixed":
            return {"kind": "fixed", "ms": self.ms}
        if self.kind == "uniform":
            return {"kind": "uniform", "min_ms": self.min_ms, "max_ms": self.max_ms}
        if self.kind == "lognormal":
            return {"kind": "lognormal", "median_ms": self.median_ms, "sigma": self.sigma, "max_ms": self.max_ms}
        return {"kind": "none"}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Latency:
        if not data:
            return cls()
        kind = str(data.get("kind", "fixed"))
        if kind not in LATENCY_KINDS:
            raise ValueError(f"latency.kind must be one of {LATENCY_KINDS}")
        max_ms = data.get("max_ms")
        lat = cls(
            kind=kind,
            ms=float(data.get("ms", 0.0)),
            min_ms=float(data.get("min_ms", 0.0)),
            max_ms=None if max_ms is None else float(max_ms),
            median_ms=float(data.get("median_ms", 0.0)),
            sigma=float(data.get("sigma", 0.5)),
        )
        if min(lat.ms, lat.min_ms, lat.median_ms, lat.sigma) < 0 or (lat.max_ms is not None and lat.max_ms < 0):
            raise ValueError("latency values must not be negative")
        if kind == "uniform" and lat.max_ms is not None and lat.max_ms < lat.min_ms:
            raise ValueError("latency.max_ms must be ≥ min_ms")
        return lat


def _rate(name: str, value: Any) -> float:
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {rate}")
    return rate


@dataclass(frozen=True)
class FaultConfig:
    latency: Latency = field(default_factory=Latency)
    error_rates: dict[int, float] = field(default_factory=dict)
    applied_error_rates: dict[int, float] = field(default_factory=dict)
    http_error_rates: dict[int, float] = field(default_factory=dict)
    drop_rate: float = 0.0
    malformed_json_rate: float = 0.0
    slow_body_rate: float = 0.0
    slow_body_ms: float = 2000.0
    late_answer_rate: float = 0.0
    late_answer_ms: float = 2000.0
    qps_limit: float | None = None
    qps_burst: float | None = None
    seed: int | None = None
    apply_to_management: bool = False
    actions: frozenset[str] | None = None

    @property
    def total_rate(self) -> float:
        return (
            sum(self.error_rates.values())
            + sum(self.applied_error_rates.values())
            + sum(self.http_error_rates.values())
            + self.drop_rate
            + self.malformed_json_rate
            + self.slow_body_rate
            + self.late_answer_rate
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "latency": self.latency.to_json(),
            "error_rates": {str(k): v for k, v in self.error_rates.items()},
            "applied_error_rates": {str(k): v for k, v in self.applied_error_rates.items()},
            "http_error_rates": {str(k): v for k, v in self.http_error_rates.items()},
            "drop_rate": self.drop_rate,
            "malformed_json_rate": self.malformed_json_rate,
            "slow_body_rate": self.slow_body_rate,
            "slow_body_ms": self.slow_body_ms,
            "late_answer_rate": self.late_answer_rate,
            "late_answer_ms": self.late_answer_ms,
            "qps_limit": self.qps_limit,
            "qps_burst": self.qps_burst,
            "seed": self.seed,
            "apply_to_management": self.apply_to_management,
            "actions": None if self.actions is None else sorted(self.actions),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> FaultConfig:
        """Validate the JSON shape above; ValueError names the offending key."""
        if not data:
            return cls()
        known = set(cls().to_json()) | {"latency_ms"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        if data.get("latency_ms") is not None:
            latency = Latency(kind="fixed", ms=float(data["latency_ms"]))
            if latency.ms < 0:
                raise ValueError("latency_ms must not be negative")
        else:
            latency = Latency.from_json(data.get("latency"))
        error_rates = {int(k): _rate(f"error_rates[{k}]", v) for k, v in (data.get("error_rates") or {}).items()}
        if 0 in error_rates:
            raise ValueError("error_rates cannot inject code 0")
        applied_rates = {
            int(k): _rate(f"applied_error_rates[{k}]", v) for k, v in (data.get("applied_error_rates") or {}).items()
        }
        if 0 in applied_rates:
            raise ValueError("applied_error_rates cannot inject code 0")
        http_rates = {
            int(k): _rate(f"http_error_rates[{k}]", v) for k, v in (data.get("http_error_rates") or {}).items()
        }
        for status in http_rates:
            if not 400 <= status <= 599:
                raise ValueError(f"http_error_rates: {status} is not an HTTP error status")
        qps_limit = data.get("qps_limit")
        qps_burst = data.get("qps_burst")
        seed = data.get("seed")
        actions = data.get("actions")
        if actions is not None and (not isinstance(actions, list) or not all(isinstance(a, str) for a in actions)):
            raise ValueError("actions must be a list of action names (or null)")
        config = cls(
            latency=latency,
            error_rates=error_rates,
            applied_error_rates=applied_rates,
            http_error_rates=http_rates,
            drop_rate=_rate("drop_rate", data.get("drop_rate", 0.0)),
            malformed_json_rate=_rate("malformed_json_rate", data.get("malformed_json_rate", 0.0)),
            slow_body_rate=_rate("slow_body_rate", data.get("slow_body_rate", 0.0)),
            slow_body_ms=float(data.get("slow_body_ms", 2000.0)),
            late_answer_rate=_rate("late_answer_rate", data.get("late_answer_rate", 0.0)),
            late_answer_ms=float(data.get("late_answer_ms", 2000.0)),
            qps_limit=None if qps_limit is None else float(qps_limit),
            qps_burst=None if qps_burst is None else float(qps_burst),
            seed=None if seed is None else int(seed),
            apply_to_management=bool(data.get("apply_to_management", False)),
            actions=None if actions is None else frozenset(actions),
        )
        if config.total_rate > 1.0 + 1e-9:
            raise ValueError(f"fault rates add up to {config.total_rate:.3f} > 1")
        if config.qps_limit is not None and config.qps_limit <= 0:
            raise ValueError("qps_limit must be positive (or null for no limit)")
        if config.slow_body_ms < 0:
            raise ValueError("slow_body_ms must not be negative")
        if config.late_answer_ms < 0:
            raise ValueError("late_answer_ms must not be negative")
        return config


@dataclass(frozen=True)
class FaultPlan:
    """What to do to one request. ``action``: none | qps | drop | http | code | malformed | slow | late | applied
    (carried out, then answered ``code``)."""

    action: str = "none"
    latency_s: float = 0.0
    http_status: int = 0
    code: int = 0


NO_FAULT = FaultPlan()


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class FaultInjector:
    """Turns a FaultConfig into one FaultPlan per request. Call from one thread (the event loop)."""

    def __init__(self, config: FaultConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self._rng = random.Random(config.seed)
        self._bucket = (
            TokenBucket(config.qps_limit, config.qps_burst or config.qps_limit, self._clock)
            if config.qps_limit
            else None
        )
        slices: list[tuple[float, FaultPlan]] = []
        edge = 0.0
        for action, rate, status, code in (
            [("drop", config.drop_rate, 0, 0)]
            + [("http", r, s, 0) for s, r in sorted(config.http_error_rates.items())]
            + [("code", r, 0, c) for c, r in sorted(config.error_rates.items())]
            + [("malformed", config.malformed_json_rate, 0, 0), ("slow", config.slow_body_rate, 0, 0)]
            + [("late", config.late_answer_rate, 0, 0)]
            + [("applied", r, 0, c) for c, r in sorted(config.applied_error_rates.items())]  # last: seeds keep
        ):
            if rate > 0:
                edge += rate
                slices.append((edge, FaultPlan(action=action, http_status=status, code=code)))
        self._slices = slices
        self._active = bool(slices) or config.latency.kind != "none" or self._bucket is not None

    def applies_to(self, management: bool, action: str | None = None) -> bool:
        """Whether a request of ``action`` (a management one or a search) is faulted: ``actions``, when set, names
        the faulted actions (so a test can fault the writes and not the reads that check on them)."""
        if not self._active:
            return False
        if self.config.actions is not None:
            return action in self.config.actions
        return not management or self.config.apply_to_management

    def plan(self) -> FaultPlan:
        if not self._active:
            return NO_FAULT
        if self._bucket is not None and not self._bucket.take():
            return FaultPlan(action="qps", code=15)
        latency_s = self.config.latency.sample_ms(self._rng.random()) / 1000.0
        u = self._rng.random()
        for edge, plan in self._slices:
            if u < edge:
                return FaultPlan(plan.action, latency_s, plan.http_status, plan.code)
        return FaultPlan("none", latency_s) if latency_s else NO_FAULT
