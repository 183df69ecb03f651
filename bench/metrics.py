"""A worker's ``/metrics``, parsed: every series as (name, labels, value), and the figures the scenarios read.

:func:`scrape` asks one worker (loopback, bounded by a timeout) and answers an empty :class:`Scrape` when it
does not answer. :func:`assigned_partitions` reads the partitions a member holds from its per-partition
``mdw_commit_gap`` series; :func:`wait_for_assignment` waits until a group has settled.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from worker.dev.harness.processes import WorkerProcess

STRUCTURE_GAUGE = "mdw_structure_entries"
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{([^}]*)\})? (\S+)", re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Scrape:
    """One /metrics text, parsed: (name, labels, value) per series. Empty when the scrape failed."""

    samples: tuple[tuple[str, tuple[tuple[str, str], ...], float], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Scrape:
        out = []
        for name, labels, value in _SAMPLE.findall(text):
            with contextlib.suppress(ValueError):
                out.append((name, tuple(sorted(_LABEL.findall(labels or ""))), float(value)))
        return cls(tuple(out))

    @property
    def ok(self) -> bool:
        return bool(self.samples)

    def value(self, name: str, **labels: str) -> float:
        """Sum of the series called ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for n, ls, v in self.samples if n == name and want <= set(ls))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, ls, v in self.samples:
            key = dict(ls).get(label)
            if n == name and key is not None:
                out[key] = out.get(key, 0.0) + v
        return out


def scrape(worker: WorkerProcess, timeout: float = 1.0) -> Scrape:
    """The worker's /metrics now; empty when it does not answer within ``timeout``."""
    return Scrape.parse(worker.metrics(timeout))


def api_calls(s: Scrape) -> dict[str, float]:
    """API attempts so far by outcome (``ok``, ``15``, ``http_503``, ``timeout``, …), from mdw_api_calls_total."""
    return s.by_label("mdw_api_calls_total", "outcome")


def structures(s: Scrape) -> dict[str, float]:
    """Entries per long-lived structure, when the worker exposes ``mdw_structure_entries{structure=…}``."""
    return s.by_label(STRUCTURE_GAUGE, "structure")


def assigned_partitions(worker: WorkerProcess) -> set[int]:
    """Partitions this member holds, from the per-partition ``mdw_commit_gap`` series of /metrics."""
    return {int(p) for p in scrape(worker, 2.0).by_label("mdw_commit_gap", "partition")}


def wait_for_assignment(workers: Sequence[WorkerProcess], partitions: int, timeout: float) -> dict[int, set[int]]:
    """Until every worker holds ≥ 1 partition and together they hold all, unchanged for 1 s."""
    deadline = time.monotonic() + timeout
    stable_since: float | None = None
    last: dict[int, set[int]] = {}
    while time.monotonic() < deadline:
        now = {i: assigned_partitions(w) for i, w in enumerate(workers)}
        complete = all(now.values()) and set().union(*now.values()) == set(range(partitions))
        if complete and now == last:
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since >= 1.0:
                return now
        else:
            stable_since = None
        last = now
        if not all(w.alive() for w in workers):
            raise RuntimeError("a worker exited while joining: " + " | ".join(w.tail(500) for w in workers))
        time.sleep(0.2)
    raise TimeoutError(f"group did not settle within {timeout:.0f} s: {last}")
